"""No secret reaches authgate through a plain value of the chart, whatever its spelling.

authgate's loader reads ``AUTHGATE_<A>__<B>__<C>`` as the config path ``a.b.c``, each part
lower-cased, and parses the value as YAML, so one variable can carry a whole section
(``AUTHGATE_HMAC='{challenge_secret: ...}'``). The chart refuses, in ``extraEnv``, every
name that could put a secret into the config this way, in the values schema
(``definitions.secretEnvName``, generated from the model) and again in the templates (for
installs that skip the schema). Each refusal here is checked against the loader itself: a
name is refused exactly when the loader would read a secret from it.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.config import helm_schema
from authgate.config.loader import load_settings
from authgate.config.model import Settings
from authgate.errors import ConfigError
from tests.deploy.test_helm_values import CHART, SCHEMA, _render, errors

SECRET_PATHS = helm_schema.secret_paths()
SECRET_ENV = re.compile(SCHEMA["definitions"]["secretEnvName"]["pattern"])


def _spellings(parts: tuple[str, ...]) -> Iterator[str]:
    """``AUTHGATE_`` + the path in several spellings: upper, lower, mixed per part."""
    joined = "__".join(parts)
    yield f"AUTHGATE_{joined.upper()}"
    yield f"AUTHGATE_{joined.lower()}"
    yield "AUTHGATE_" + "__".join(p.capitalize() for p in parts)
    yield "AUTHGATE_" + "__".join(
        "".join(c.upper() if i % 2 else c for i, c in enumerate(p)) for p in parts
    )


def _candidates() -> Iterator[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(name, path named, the secret path it relates to) for every prefix of every secret
    path and one level below each secret key."""
    for secret in SECRET_PATHS:
        for depth in range(1, len(secret) + 1):
            for name in _spellings(secret[:depth]):
                yield name, secret[:depth], secret
        for name in _spellings((*secret, "x")):
            yield name, (*secret, "x"), secret


CANDIDATES = sorted({name for name, _, _ in _candidates()})
# Names that carry no secret, in the sections that hold some.
HARMLESS = [
    "AUTHGATE_STORES__BACKEND",
    "authgate_stores__backend",
    "AUTHGATE_STORES__REDIS__MODE",
    "AUTHGATE_STORES__REDIS__URL_STYLE",
    "AUTHGATE_HMAC__ENABLED",
    "AUTHGATE_BPC__REGISTRATION",
    "AUTHGATE_TOKENS__PICO_FLEET_TTL_SECONDS",
    "AUTHGATE_LOGGING__LEVEL",
    "AUTHGATE_SECRETSX",
    "HTTPS_PROXY",
    "TZ",
]


def _section_value(path: tuple[str, ...], secret: tuple[str, ...]) -> str:
    """A YAML value for the variable naming ``path`` that sets ``secret`` below it."""
    value: Any = "c" * 40
    for part in reversed(secret[len(path) :]):
        value = {part: value}
    return yaml.safe_dump(value, default_flow_style=True).strip()


def _secrets_read(name: str, value: str) -> list[tuple[str, ...]]:
    """The secret paths the loader's merged tree holds for ``{name: value}`` (via a check,
    which sees the raw tree even when the settings do not validate)."""
    trees: list[Mapping[str, Any]] = []

    def capture(_: Settings | None, tree: Mapping[str, Any]) -> list[tuple[str, str]]:
        trees.append(tree)
        return []

    with contextlib.suppress(ConfigError):  # the tree is what matters, valid or not
        load_settings(environ={name: value}, checks=(capture,))
    (tree,) = trees
    found = []
    for secret in SECRET_PATHS:
        node: Any = tree
        for part in secret:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node not in (None, {}):
            found.append(secret)
    return found


@pytest.mark.parametrize(("name", "path", "secret"), sorted(set(_candidates())))
def test_every_name_the_loader_reads_a_secret_from_is_refused(
    name: str, path: tuple[str, ...], secret: tuple[str, ...]
) -> None:
    """For each spelling of a secret key, a section above it or a key below it: if the
    loader reads a secret from it (upper-case AUTHGATE_ prefix), the schema refuses it; the
    schema also refuses the lower-case prefix the loader ignores today."""
    value = _section_value(path, secret) if len(path) < len(secret) else "c" * 40
    if name.startswith("AUTHGATE_") and len(path) <= len(secret):
        assert _secrets_read(name, value) == [secret], "the loader must read the secret"
    assert SECRET_ENV.match(name)
    found = errors({"extraEnv": [{"name": name, "value": value}]})
    assert any(p == "extraEnv.0.name" for p, _ in found), found


@pytest.mark.parametrize("name", HARMLESS)
def test_names_that_carry_no_secret_are_allowed(name: str) -> None:
    """A non-secret key of a section that holds secrets, or any other variable, passes; and
    the loader indeed reads no secret from it."""
    assert errors({"extraEnv": [{"name": name, "value": "x"}]}) == []
    assert _secrets_read(name, "{url: redis://x:1, challenge_secret: " + "c" * 40 + "}") == []


@pytest.mark.parametrize(
    "name",
    ["AUTHGATE_STORES__REDIS__URL", "authgate_Hmac", "AUTHGATE_SECRETS", "AUTHGATE_BPC"],
)
def test_a_secret_name_is_refused_even_from_a_secret_ref(name: str) -> None:
    """extraEnv is not the place for secrets at all: secrets.* names the Secret."""
    env = {"name": name, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    assert any(p == "extraEnv.0.name" for p, _ in errors({"extraEnv": [env]}))


def test_env_names_are_kubernetes_names() -> None:
    """Only names Kubernetes accepts: no look-alike Unicode (the loader lower-cases
    'K' to 'k') and no '='."""
    for name in ("AUTHGATE_TO\u212aENS__PICO_FLEET_SECRET", "A=B", "1X"):
        found = errors({"extraEnv": [{"name": name, "value": "x"}]})
        assert any(p == "extraEnv.0.name" for p, _ in found), name


def test_env_from_takes_secrets_only() -> None:
    """A ConfigMap's variables cannot be checked here: envFrom.configMapRef is refused."""
    found = errors({"envFrom": [{"configMapRef": {"name": "cm"}}]})
    assert any(p == "envFrom.0.configMapRef" for p, _ in found), found
    assert errors({"envFrom": [{"secretRef": {"name": "more-secrets"}}]}) == []


# --- Helm: the schema, and the templates when the schema is skipped ------------------------


@pytest.fixture(scope="module")
def helm() -> Any:
    """``helm_python`` (Helm's Go SDK), or skip."""
    return pytest.importorskip("helm_python", reason="helm-python-sdk is in the test extra")


@pytest.fixture(scope="module")
def chart_without_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart without values.schema.json: as `helm install
    --skip-schema-validation` sees it."""
    target = tmp_path_factory.mktemp("chart") / "authgate"
    shutil.copytree(CHART, target)
    (target / "values.schema.json").unlink()
    return target


def _render_at(helm: Any, chart: Path, values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(str(chart)) as loaded:
        rendered: dict[str, str] = loaded.render(values, name="authgate", namespace="authgate")
        return rendered


SAMPLE = ["AUTHGATE_HMAC", "authgate_stores__Redis__url", "AUTHGATE_SECRETS__X", "AUTHGATE_Tokens"]


@pytest.mark.parametrize("name", SAMPLE)
def test_helm_refuses_secret_names(helm: Any, name: str) -> None:
    """Helm's validator refuses them at extraEnv[0].name."""
    with pytest.raises(helm.HelmValuesError, match="at '/extraEnv/0/name'"):
        _render(helm, {"extraEnv": [{"name": name, "value": "x"}]})


@pytest.mark.parametrize("name", CANDIDATES)
def test_templates_refuse_secret_names_without_the_schema(
    helm: Any, chart_without_schema: Path, name: str
) -> None:
    """Every candidate spelling fails the render itself, naming secrets.*."""
    with pytest.raises(helm.HelmError, match="could carry a secret into authgate's config"):
        _render_at(helm, chart_without_schema, {"extraEnv": [{"name": name, "value": "x"}]})


@pytest.mark.parametrize("secret", SECRET_PATHS, ids=[".".join(p) for p in SECRET_PATHS])
def test_templates_refuse_secret_config_keys_without_the_schema(
    helm: Any, chart_without_schema: Path, secret: tuple[str, ...]
) -> None:
    """A secret key (or a key of an all-secret section) in config fails the render."""
    leaf = secret if len(secret) > 1 else (*secret, "key_encryption_key")
    value: Any = "c" * 40
    for part in reversed(leaf):
        value = {part: value}
    with pytest.raises(helm.HelmError, match="is a secret: it must not go in the ConfigMap"):
        _render_at(helm, chart_without_schema, {"config": value})


def test_templates_refuse_a_config_map_env_from_without_the_schema(
    helm: Any, chart_without_schema: Path
) -> None:
    """envFrom of a ConfigMap fails the render too."""
    with pytest.raises(helm.HelmError, match="envFrom of authgate takes Secrets only"):
        _render_at(helm, chart_without_schema, {"envFrom": [{"configMapRef": {"name": "cm"}}]})


def test_harmless_names_render(helm: Any) -> None:
    """The names that carry no secret reach the container as given."""
    env = [{"name": n, "value": "x"} for n in HARMLESS]
    rendered = yaml.safe_load(
        _render(helm, {"extraEnv": env})["authgate/templates/deployment.yaml"]
    )
    (authgate,) = rendered["spec"]["template"]["spec"]["containers"]
    assert [e["name"] for e in authgate["env"]][-len(HARMLESS) :] == HARMLESS


def test_the_chart_passes_every_secret_from_a_secret(helm: Any) -> None:
    """authgate.secretVars covers every secret path of the model: with each secrets.* value
    set, each arrives as its AUTHGATE_* variable from a secretKeyRef, never as a value."""
    named = itertools.chain.from_iterable(
        re.findall(r"secrets\.(\w+)", v) for v in helm_schema.SECRET_VALUES.values()
    )
    values = {name: {"existingSecret": "s", "key": name} for name in named}
    assert set(values) == set(SCHEMA["properties"]["secrets"]["properties"])
    rendered = _render(helm, {"secrets": values})
    deployment = yaml.safe_load(rendered["authgate/templates/deployment.yaml"])
    (authgate,) = deployment["spec"]["template"]["spec"]["containers"]
    from_secrets = {e["name"] for e in authgate["env"] if "valueFrom" in e}
    paths = {tuple(n.removeprefix("AUTHGATE_").lower().split("__")) for n in from_secrets}
    covered = {p for p in SECRET_PATHS if any(q[: len(p)] == p for q in paths)}
    assert covered == set(SECRET_PATHS)
    assert all("secretKeyRef" in e["valueFrom"] for e in authgate["env"] if "valueFrom" in e)
    plain = [e["name"] for e in authgate["env"] if "value" in e]
    assert not [n for n in plain if SECRET_ENV.match(n)]
