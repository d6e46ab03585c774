"""``helm/authgate/values.schema.json``: good values pass, bad ones fail with the key at fault.

Values are validated as Helm does, after laying the file over the chart's ``values.yaml``:
with the ``jsonschema`` package (draft-07), and, when ``helm-python-sdk`` is installed, by
Helm's own Go validator and template engine too, so a schema feature Helm reads differently
(Go's regexp has no look-around, for one) cannot slip through.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from authgate.config.loader import SECRET_KEYS
from authgate.config.model import ServerSettings, Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "authgate"
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
CI_FILES = sorted((CHART / "ci").glob("*.yaml"))


def coalesce(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over chart defaults: maps merge, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def errors(overrides: dict[str, Any]) -> list[tuple[str, str]]:
    """(dotted path, message) of every schema violation of defaults + ``overrides``."""
    validator = jsonschema.Draft7Validator(SCHEMA)
    found = validator.iter_errors(coalesce(DEFAULTS, overrides))
    return sorted((".".join(str(p) for p in e.absolute_path), e.message) for e in found)


def test_schema_is_valid_draft_07() -> None:
    """The schema itself is a valid draft-07 document."""
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_default_values_are_valid() -> None:
    """values.yaml alone passes."""
    assert errors({}) == []


@pytest.mark.parametrize("path", CI_FILES, ids=[p.name for p in CI_FILES])
def test_ci_values_are_valid(path: Path) -> None:
    """Each ci values file passes (chart.yml renders each of them with helm)."""
    assert errors(yaml.safe_load(path.read_text())) == []


REDIS = {
    "config": {"stores": {"backend": "redis"}},
    "secrets": {"redisUrl": {"existingSecret": "redis", "key": "url"}},
}

# (id, values laid over the defaults, the path at fault, a fragment of the message)
BAD_VALUES: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown-mode", {"mode": "daemonset"}, "mode", "is not one of ['standalone', 'sidecar']"),
    ("zero-replicas", {"replicaCount": 0}, "replicaCount", "less than the minimum of 1"),
    ("numeric-image-tag", {"image": {"tag": 1.0}}, "image.tag", "is not of type 'string'"),
    ("port-too-high", {"port": 70000}, "port", "greater than the maximum of 65535"),
    ("port-zero", {"service": {"port": 0}}, "service.port", "less than the minimum of 1"),
    ("typo-top-level", {"replicas": 3}, "", "('replicas' was unexpected)"),
    ("typo-config-section", {"config": {"sever": {}}}, "config", "('sever' was unexpected)"),
    (
        "two-replicas-on-memory",
        {"replicaCount": 2},
        "config.stores.backend",
        "'redis' was expected",
    ),
    (
        "autoscaling-on-memory",
        {"autoscaling": {"enabled": True}},
        "config.stores.backend",
        "'redis' was expected",
    ),
    (
        "workers-on-memory",
        {"config": {"server": {"workers": 4}}},
        "config.stores.backend",
        "'redis' was expected",
    ),
    (
        "redis-without-url-secret",
        {"config": {"stores": {"backend": "redis"}}},
        "secrets.redisUrl.existingSecret",
        "should be non-empty",
    ),
    (
        "redis-url-in-configmap",
        coalesce(REDIS, {"config": {"stores": {"redis": {"url": "redis://:pw@r:6379"}}}}),
        "config.stores.redis.url",
        "name a Kubernetes Secret in secrets.redisUrl",
    ),
    (
        "challenge-secret-in-configmap",
        {"config": {"hmac": {"challenge_secret": "x" * 40}}},
        "config.hmac.challenge_secret",
        "name a Kubernetes Secret in secrets.challengeSecret",
    ),
    (
        "kek-in-configmap",
        {"config": {"secrets": {"key_encryption_key": "AAAA"}}},
        "config.secrets",
        "name a Kubernetes Secret in secrets.keyEncryptionKey",
    ),
    (
        "operator-token-in-configmap",
        {"config": {"bpc": {"operator_token": "t"}}},
        "config.bpc.operator_token",
        "name a Kubernetes Secret in secrets.operatorToken",
    ),
    (
        "chart-owned-port-in-config",
        {"config": {"server": {"port": 9000}}},
        "config.server.port",
        "the chart sets server.port from port",
    ),
    (
        "signing-key-files-in-config",
        {"config": {"jwt": {"signing_key_files": ["/k.pem"]}}},
        "config.jwt.signing_key_files",
        "the chart sets jwt.signing_key_files from signingKeys",
    ),
    (
        "sidecar-without-app-image",
        {"mode": "sidecar"},
        "app.image.repository",
        "should be non-empty",
    ),
    (
        "sidecar-sets-proxy-upstream",
        {
            "mode": "sidecar",
            "app": {"image": {"repository": "app"}},
            "config": {"proxy": {"upstream": "http://elsewhere:80"}},
        },
        "config.proxy.upstream",
        "the chart sets proxy.upstream to http://127.0.0.1:<app.port>",
    ),
    (
        "secret-as-extra-env",
        {"extraEnv": [{"name": "AUTHGATE_HMAC__CHALLENGE_SECRET", "value": "x"}]},
        "extraEnv.0.name",
        "should not be valid under",
    ),
    (
        "root-container",
        {"securityContext": {"runAsNonRoot": False}},
        "securityContext.runAsNonRoot",
        "True was expected",
    ),
    (
        "secret-name-not-dns",
        {"secrets": {"keyEncryptionKey": {"existingSecret": "My_Secret", "key": "k"}}},
        "secrets.keyEncryptionKey.existingSecret",
        "does not match",
    ),
    (
        "lifecycle-typo",
        {"lifecycle": {"preStopp": {"sleep": {"seconds": 5}}}},
        "lifecycle",
        "('preStopp' was unexpected)",
    ),
    (
        "negative-shutdown-delay",
        {"config": {"server": {"shutdown_delay_seconds": -1}}},
        "config.server.shutdown_delay_seconds",
        "less than the minimum of 0",
    ),
    (
        "unknown-redis-mode",
        coalesce(REDIS, {"config": {"stores": {"redis": {"mode": "ring"}}}}),
        "config.stores.redis.mode",
        "is not one of ['standalone', 'sentinel', 'cluster']",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "path", "message"),
    [case[1:] for case in BAD_VALUES],
    ids=[case[0] for case in BAD_VALUES],
)
def test_bad_values_are_rejected_naming_the_key(
    overrides: dict[str, Any], path: str, message: str
) -> None:
    """The violation is reported at the key at fault, with the expected reason."""
    found = errors(overrides)
    assert any(p == path and message in m for p, m in found), found


# --- the schema and authgate's config model agree ---------------------------------------


def _schema_config_keys(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in node.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        yield dotted
        if isinstance(sub, dict):
            yield from _schema_config_keys(sub, dotted + ".")


def _model_has(dotted: str) -> bool:
    model: Any = Settings
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) else None
    return True


# --- termination: the grace period covers authgate's whole shutdown -----------------------


def _shutdown_seconds(values: dict[str, Any]) -> float:
    """What authgate may take from the start of termination: a preStop sleep, then
    ``server.shutdown_delay_seconds`` + ``server.drain_timeout_seconds`` + 1 s (the bound
    ``src/authgate/web/drain.py`` enforces), with authgate's own defaults for unset keys."""
    merged = coalesce(DEFAULTS, values)
    server = ServerSettings.model_validate(merged["config"].get("server", {}))
    pre_stop = merged.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    return float(pre_stop) + server.shutdown_delay_seconds + server.drain_timeout_seconds + 1


@pytest.mark.parametrize("path", [None, *CI_FILES], ids=["defaults", *(p.name for p in CI_FILES)])
def test_grace_period_outlasts_the_shutdown(path: Path | None) -> None:
    """Defaults and each ci file give Kubernetes' grace period more than authgate's
    delay + drain + 1 s (and the app's preStop sleep): SIGKILL never cuts a drain."""
    values = yaml.safe_load(path.read_text()) if path else {}
    merged = coalesce(DEFAULTS, values)
    grace = merged["terminationGracePeriodSeconds"]
    assert grace > _shutdown_seconds(values)
    app_sleep = merged["app"].get("lifecycle", {}).get("preStop", {}).get("sleep", {})
    assert grace > app_sleep.get("seconds", 0)


def test_every_config_key_in_the_schema_is_a_real_authgate_key() -> None:
    """A key the schema names under ``config`` exists in authgate's Settings model."""
    keys = list(_schema_config_keys(SCHEMA["properties"]["config"]))
    assert keys
    missing = [k for k in keys if not _model_has(k)]
    assert missing == []


def test_every_authgate_section_is_allowed_in_config() -> None:
    """The schema knows every top-level section of authgate's config (or the chart would
    refuse a valid one): a new section in the model fails here until the schema lists it."""
    listed = set(SCHEMA["properties"]["config"]["properties"])
    assert set(Settings.model_fields) == listed


def test_every_secret_key_is_refused_in_config() -> None:
    """Each key that makes a config file secret-bearing is refused under ``config``."""
    config = SCHEMA["properties"]["config"]["properties"]
    refused = {"secrets"}  # the whole section

    def walk(node: dict[str, Any]) -> None:
        for key, sub in node.get("properties", {}).items():
            if sub.get("not") == {}:
                refused.add(key)
            walk(sub)

    walk({"properties": config})
    section_keys = {"key_encryption_key", "previous_key_encryption_keys"}
    assert SECRET_KEYS - section_keys <= refused
    assert config["secrets"]["not"] == {}


# --- Helm itself ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Any:
    """``helm_python`` (Helm's Go SDK), or skip."""
    return pytest.importorskip("helm_python", reason="helm-python-sdk is in the test extra")


def _render(helm: Any, values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(values, name="authgate", namespace="authgate")
        return rendered


def test_helm_lint_is_clean(helm: Any) -> None:
    """``helm lint --strict`` finds no warning or error, on defaults and on each ci file."""
    for values in [None, *(yaml.safe_load(p.read_text()) for p in CI_FILES)]:
        report = helm.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
        serious = [m for m in report["messages"] if m["severity"] >= 2]
        assert serious == [], serious
        assert report["errors"] == []


@pytest.mark.parametrize(
    ("overrides", "path"),
    [case[1:3] for case in BAD_VALUES],
    ids=[case[0] for case in BAD_VALUES],
)
def test_helm_rejects_the_same_bad_values(helm: Any, overrides: dict[str, Any], path: str) -> None:
    """Helm's own validator refuses every bad values case too, at the same key."""
    with pytest.raises(helm.HelmValuesError) as caught:
        _render(helm, overrides)
    pointer = "/" + path.replace(".", "/") if path else ""
    assert f"at '{pointer}'" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"mode": "sidecar", "app": {"image": {"repository": "app", "tag": "1"}, "port": 8080}},
            "app.port and port are both 8080",
        ),
        (
            {"terminationGracePeriodSeconds": 21},
            "terminationGracePeriodSeconds 21 is too short",
        ),
        (
            {"config": {"server": {"drain_timeout_seconds": 30}}},
            "terminationGracePeriodSeconds 25 is too short",
        ),
        (
            {"lifecycle": {"preStop": {"sleep": {"seconds": 10}}}},
            "preStop sleep 10",
        ),
        (
            {
                "mode": "sidecar",
                "app": {
                    "image": {"repository": "app", "tag": "1"},
                    "lifecycle": {"preStop": {"sleep": {"seconds": 25}}},
                },
            },
            "the app's preStop sleep alone is 25",
        ),
    ],
    ids=[
        "sidecar-port-clash",
        "grace-equals-default-shutdown",
        "grace-below-a-longer-drain",
        "grace-below-a-prestop-sleep",
        "grace-below-the-app-prestop-sleep",
    ],
)
def test_template_refuses_what_the_schema_cannot_express(
    helm: Any, overrides: dict[str, Any], message: str
) -> None:
    """Cross-field rules live in the templates, with a message that says what to do."""
    with pytest.raises(helm.HelmError, match=message):
        _render(helm, overrides)


@pytest.mark.parametrize(
    "server",
    [
        {},
        {"shutdown_delay_seconds": 0},
        {"shutdown_delay_seconds": 2.5, "drain_timeout_seconds": 40},
    ],
    ids=["authgate-defaults", "no-delay", "fractional-delay"],
)
def test_template_grace_check_agrees_with_authgate(helm: Any, server: dict[str, Any]) -> None:
    """The template's check uses authgate's own defaults and bound: the smallest whole
    grace period above delay + drain + 1 s renders, the one below it is refused."""
    needed = _shutdown_seconds({"config": {"server": server}})
    smallest = math.floor(needed) + 1
    config = {"config": {"server": server}}
    _render(helm, coalesce(config, {"terminationGracePeriodSeconds": smallest}))
    with pytest.raises(helm.HelmError, match="is too short"):
        _render(helm, coalesce(config, {"terminationGracePeriodSeconds": smallest - 1}))


def test_lifecycle_is_rendered_for_both_containers(helm: Any) -> None:
    """``lifecycle`` and ``app.lifecycle`` reach their containers unchanged."""
    hook = {"preStop": {"sleep": {"seconds": 3}}}
    values = {
        "mode": "sidecar",
        "app": {"image": {"repository": "app", "tag": "1"}, "lifecycle": hook},
        "lifecycle": hook,
        "terminationGracePeriodSeconds": 40,
    }
    deployment = yaml.safe_load(_render(helm, values)["authgate/templates/deployment.yaml"])
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c.get("lifecycle") for c in containers] == [hook, hook]
    defaults = yaml.safe_load(_render(helm, {})["authgate/templates/deployment.yaml"])
    assert "lifecycle" not in defaults["spec"]["template"]["spec"]["containers"][0]


def test_default_values_render_a_working_single_pod(helm: Any) -> None:
    """With no values the chart renders one pod on memory stores, and NOTES warn about it."""
    rendered = _render(helm, {})
    deployment = yaml.safe_load(rendered["authgate/templates/deployment.yaml"])
    assert deployment["spec"]["replicas"] == 1
    notes = rendered["authgate/templates/NOTES.txt"]
    assert "in-memory stores" in notes
    assert "ephemeral key" in notes


def test_notes_name_store_managed_keys_when_only_a_kek_is_given(helm: Any) -> None:
    """Without PEM files but with a key-encryption key, authgate manages its own keys."""
    kek = {"existingSecret": "authgate-secrets", "key": "kek"}
    notes = _render(helm, {"secrets": {"keyEncryptionKey": kek}})["authgate/templates/NOTES.txt"]
    assert "store-managed" in notes
    assert "authgate keys rotate" in notes
    assert "ephemeral key" not in notes
