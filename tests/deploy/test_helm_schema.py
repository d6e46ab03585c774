"""The ``config`` section of ``helm/authgate/values.schema.json`` is generated from the model.

``python -m authgate.config.helm_schema --write helm/authgate/values.schema.json`` writes it
(and ``definitions.secretEnvName``); the committed file must be exactly what it writes, so a
model change without regenerating fails here. The section is closed at every object level:
a typo anywhere under ``config`` is refused at ``helm install``, naming the key, by the
``jsonschema`` package and by Helm's own validator alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from authgate.config import helm_schema
from authgate.config.loader import SECRET_KEYS
from authgate.config.model import Settings
from tests.deploy.test_helm_values import CHART, SCHEMA, _render, coalesce, errors

CONFIG = SCHEMA["properties"]["config"]
# A value laid at an object level to build a valid tree down to it (required keys).
REQUIRED_STAND_INS: dict[str, dict[str, Any]] = {
    "policy.rules[]": {"id": "r", "path_prefix": "/"},
    "policy.rules[].rate_limits[]": {"by": "client", "limit": 1, "period_seconds": 1},
    "jwt.external_issuers[]": {
        "issuer": "https://i.example",
        "jwks_url": "https://i.example/jwks",
        "audiences": ["a"],
    },
}


def _objects(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema under ``node``, with its dotted path (``[]`` for list items)."""
    if node.get("type") == "object" or "properties" in node:
        yield path, node
        for key, sub in node.get("properties", {}).items():
            yield from _objects(sub, f"{path}.{key}" if path else key)
    items = node.get("items")
    if isinstance(items, dict):
        yield from _objects(items, path + "[]")


OBJECTS = list(_objects(CONFIG))


def test_committed_schema_is_what_the_generator_writes() -> None:
    """Byte for byte: regenerate with python -m authgate.config.helm_schema --write."""
    path = CHART / "values.schema.json"
    committed = path.read_text()
    expected = helm_schema.dumps(helm_schema.rewrite(json.loads(committed)))
    assert committed == expected, (
        "values.schema.json is stale: python -m authgate.config.helm_schema "
        "--write helm/authgate/values.schema.json"
    )


def test_generator_prints_the_generated_parts(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --write the module prints the config section and the env-name pattern."""
    assert helm_schema.main([]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"config": CONFIG, "secretEnvName": SCHEMA["definitions"]["secretEnvName"]}


def test_every_object_level_is_closed() -> None:
    """additionalProperties: false at every object level of config, list items included."""
    open_levels = [p for p, node in OBJECTS if node.get("additionalProperties") is not False]
    assert open_levels == []
    assert len(OBJECTS) > 15  # the walk reached the nested sections and list items


def test_every_model_key_is_in_the_schema() -> None:
    """Each key of every section of the model is there (allowed or refused with a reason)."""
    for section, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            assert (
                set(CONFIG["properties"][section].get("properties", {}))
                == set(annotation.model_fields)
                or CONFIG["properties"][section].get("not") == {}
            ), section


def _model_secrets(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the model's ``SecretStr`` fields, read from the annotations."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _model_secrets(annotation, f"{prefix}{name}.")
        elif "SecretStr" in str(annotation):
            yield f"{prefix}{name}"


def test_secret_paths_are_every_secret_key_of_the_model() -> None:
    """The generator finds every SecretStr key (a section of secrets only, whole), each
    has a chart value, and the loader's SECRET_KEYS (what makes a file secret-bearing)
    names the same keys."""
    model = set(_model_secrets(Settings))
    generated = {".".join(p) for p in helm_schema.secret_paths()}
    assert generated == set(helm_schema.SECRET_VALUES)
    for path in model:
        assert path in generated or path.split(".")[0] in generated, path
    assert {p.rsplit(".", 1)[-1] for p in model} == SECRET_KEYS


def _lookup(path: str) -> dict[str, Any]:
    node: dict[str, Any] = CONFIG
    for part in path.split("."):
        list_item = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if list_item:
            node = node["items"]
    return node


@pytest.mark.parametrize(
    "path",
    [*helm_schema.CHART_OWNED, *helm_schema.SECRET_VALUES],
)
def test_chart_owned_and_secret_keys_are_refused_with_a_reason(path: str) -> None:
    """Each is present in the schema as a refusal whose message names what to do."""
    node = _lookup(path)
    assert node["not"] == {}
    assert node["const"].startswith("not allowed here: ")


@pytest.mark.parametrize("path", list(helm_schema.REFINEMENTS))
def test_every_refinement_names_a_real_key(path: str) -> None:
    """A refinement of a key the model no longer has would silently check nothing."""
    node = _lookup(path)
    for key, value in helm_schema.REFINEMENTS[path].items():
        assert node[key] == value


def _typo_values(path: str) -> tuple[dict[str, Any], str]:
    """Values with an unknown key ``tpyo`` at ``path``, and the dotted path reported."""
    inner: Any = {"tpyo": 1}
    reported = ["config"]
    parts = path.split(".") if path else []
    for part in parts:
        reported.append(part.removesuffix("[]"))
        if part.endswith("[]"):
            reported.append("0")
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        if part.endswith("[]"):
            inner = [{**REQUIRED_STAND_INS.get(".".join(parts[: i + 1]), {}), **inner}]
        inner = {part.removesuffix("[]"): inner}
    tree: dict[str, Any] = {"config": inner}
    if path.startswith("stores"):
        tree = coalesce(
            {
                "config": {"stores": {"backend": "redis"}},
                "secrets": {"redisUrl": {"existingSecret": "r", "key": "url"}},
            },
            tree,
        )
    return tree, ".".join(reported)


@pytest.mark.parametrize("path", [p for p, _ in OBJECTS], ids=[p or "(config)" for p, _ in OBJECTS])
def test_a_typo_at_any_level_fails_naming_the_key(path: str) -> None:
    """An unknown key at any object level of config is refused at that level, by name."""
    values, where = _typo_values(path)
    found = errors(values)
    assert (where, "Additional properties are not allowed ('tpyo' was unexpected)") in found, found


@pytest.mark.parametrize("path", [p for p, _ in OBJECTS], ids=[p or "(config)" for p, _ in OBJECTS])
def test_helm_refuses_a_typo_at_any_level_naming_the_key(helm: Any, path: str) -> None:
    """Helm's own validator (the one `helm install` runs) refuses it at the same place."""
    values, where = _typo_values(path)
    with pytest.raises(helm.HelmValuesError) as caught:
        _render(helm, values)
    assert f"at '/{where.replace('.', '/')}'" in str(caught.value)
    assert "tpyo" in str(caught.value)


@pytest.mark.parametrize(
    ("config", "path", "fragment"),
    [
        ({"server": {"workers": "2"}}, "config.server.workers", "is not of type 'integer'"),
        ({"proxy": {"read_timeout_seconds": 0}}, "config.proxy.read_timeout_seconds", "less"),
        ({"logging": {"format": "xml"}}, "config.logging.format", "is not one of"),
        ({"logging": {"level": "verbose"}}, "config.logging.level", "does not match"),
        ({"tokens": {"admin_prefix": "admin"}}, "config.tokens.admin_prefix", "does not match"),
        ({"policy": {"rules": [{"path_prefix": "/"}]}}, "config.policy.rules.0", "'id' is a req"),
        (
            {"identity": {"identity_jwt": {"ttl_seconds": 1}}},
            "config.identity.identity_jwt.ttl_seconds",
            "less than the minimum of 5",
        ),
    ],
    ids=["type", "bound", "enum", "case-insensitive-enum", "pattern", "required", "nested"],
)
def test_the_models_constraints_reach_the_schema(
    config: dict[str, Any], path: str, fragment: str
) -> None:
    """Types, bounds, enums, patterns and required keys come from the model's fields."""
    found = errors({"config": config})
    assert any(p == path and fragment in m for p, m in found), found


def test_a_level_in_any_case_is_accepted() -> None:
    """logging.level: the model upper-cases it, so the schema accepts any case."""
    assert errors({"config": {"logging": {"level": "debug"}}}) == []


@pytest.fixture(scope="module")
def helm() -> Any:
    """``helm_python`` (Helm's Go SDK), or skip."""
    return pytest.importorskip("helm_python", reason="helm-python-sdk is in the test extra")
