"""Generate the ``config`` section of the Helm chart's ``values.schema.json`` from the model.

The configuration model (``config/model.py``) is the one source of truth: ``docs/
configuration.md`` is generated from it (``config/reference.py``) and so is the part of the
chart's values schema that checks ``values.config``::

    python -m authgate.config.helm_schema                      # print the generated parts
    python -m authgate.config.helm_schema --write helm/authgate/values.schema.json

``--write`` replaces, in place, ``properties.config`` and ``definitions.secretEnvName`` (the
``AUTHGATE_*`` names that could carry a secret, which ``extraEnv`` refuses) and leaves the
rest of the file, written by hand, alone. A test fails when the committed file differs from
what this produces, so a model change without regenerating fails CI.

What the generated section holds:

* every key of the model, with its type, bounds, enum and pattern (pydantic's own JSON
  schema of :class:`~authgate.config.model.Settings`, with its references inlined);
* ``additionalProperties: false`` at every object level, so a typo anywhere is refused at
  ``helm install``, naming the key;
* no secret: a key that holds a ``SecretStr`` (a Redis URL, the key-encryption keys, ...) is
  refused with a message naming the chart's ``secrets.*`` value it comes from, and so is a
  key the chart sets itself (``server.port``, ``jwt.signing_key_files``, ...).

Checks the model makes in validators (a CIDR, a cross-field rule) are not repeated here:
``authgate check-config``, which the pod runs at start, reports those.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from authgate.config.model import Settings

# Where each secret-bearing key comes from in the chart (values ``secrets.*``). A secret key
# the model gains without an entry here makes generation fail: the chart must learn it.
SECRET_VALUES: dict[str, str] = {
    "stores.redis.url": "secrets.redisUrl (the URL may carry a password)",
    "stores.redis.password": "secrets.redisPassword",
    "stores.redis.sentinel_password": "secrets.redisSentinelPassword",
    "secrets": "secrets.keyEncryptionKey and secrets.previousKeyEncryptionKeys",
    "bpc.operator_token": "secrets.operatorToken",
    "hmac.challenge_secret": "secrets.challengeSecret",
    "hmac.previous_challenge_secrets": "secrets.previousChallengeSecrets",
    "tokens.pico_fleet_secret": "secrets.picoFleetSecret",
    "jwt.dpop.nonce_secret": "secrets.dpopNonceSecret",
}
# Keys the chart writes itself, from other values.
CHART_OWNED: dict[str, str] = {
    "server.host": "the chart sets server.host from listenHost",
    "server.port": "the chart sets server.port from port",
    "server.ops_host": "the chart sets server.ops_host from listenHost",
    "server.ops_port": "the chart sets server.ops_port from opsPort",
    "jwt.signing_key_files": "the chart sets jwt.signing_key_files from signingKeys "
    "(a Secret mounted as files)",
}
# Enums a validator accepts in any case (``logging.level: debug``).
CASE_INSENSITIVE = frozenset({"logging.level"})
_HOST_PORT = r"([^:\s/@\[\]]+|\[[0-9a-fA-F:.]+\]):[0-9]{1,5}"
# What the chart checks beyond the model's declared constraints: the shape of values that
# the model checks in validators, and paths that only mean something absolute in a pod.
REFINEMENTS: dict[str, dict[str, Any]] = {
    "stores.redis.sentinels[]": {"pattern": f"^{_HOST_PORT}$"},
    "stores.redis.cluster_nodes[]": {
        "pattern": f"^(rediss?://{_HOST_PORT}/?[0-9]*|{_HOST_PORT})$",
    },
    "stores.redis.tls.ca_file": {"pattern": "^/"},
    "stores.redis.tls.cert_file": {"pattern": "^/"},
    "stores.redis.tls.key_file": {"pattern": "^/"},
}
NOT_IN_CONFIGMAP = (
    "a secret never goes in the ConfigMap (authgate refuses a group-readable config file "
    "that holds one): name a Kubernetes Secret in {}"
)
DROPPED = ("title", "default", "format", "writeOnly")
ENV_PREFIX = "AUTHGATE_"


def refused(reason: str) -> dict[str, Any]:
    """A key that must not be set: ``not: {}`` refuses every value; the ``const`` is there
    only so that validators print the reason (``value must be 'not allowed here: ...'``)."""
    return {"description": reason, "const": f"not allowed here: {reason}", "not": {}}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``$ref`` replaced by its definition, pydantic's decoration
    (titles, defaults, the password format) dropped."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    return {k: _inline(v, defs) for k, v in node.items() if k not in DROPPED and k != "$defs"}


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` as X with ``null`` allowed: simpler messages from validators."""
    options = node.get("anyOf")
    if not options or len(options) != 2 or {"type": "null"} not in options:
        return node
    (inner,) = [o for o in options if o != {"type": "null"}]
    if not isinstance(inner.get("type"), str):
        return node
    out = {k: v for k, v in node.items() if k != "anyOf"}
    out.update(inner)
    out["type"] = [inner["type"], "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _is_secret(raw: Any) -> bool:
    """Whether pydantic marked anything under ``raw`` as a ``SecretStr`` (``writeOnly``)."""
    if isinstance(raw, dict):
        return raw.get("writeOnly") is True or any(_is_secret(v) for v in raw.values())
    if isinstance(raw, list):
        return any(_is_secret(v) for v in raw)
    return False


def _all_secret(section: dict[str, Any], defs: dict[str, Any]) -> bool:
    """Whether every key of a section holds a secret (``secrets``): refused as a whole."""
    return all(_is_secret(_resolve_refs(v, defs)) for v in section["properties"].values())


def _walk(raw: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """The chart's schema of one model object at ``path`` (dotted, ``""`` for the root)."""
    out: dict[str, Any] = {"type": "object"}
    if raw.get("description"):
        out["description"] = raw["description"]
    properties: dict[str, Any] = {}
    for key, sub in raw.get("properties", {}).items():
        dotted = f"{path}.{key}" if path else key
        resolved = _resolve_refs(sub, defs)
        section = resolved.get("type") == "object" and "properties" in resolved
        if dotted in CHART_OWNED:
            properties[key] = refused(CHART_OWNED[dotted])
        elif _is_secret(resolved) and (not section or _all_secret(resolved, defs)):
            if dotted not in SECRET_VALUES:
                raise KeyError(
                    f"{dotted} holds a secret but SECRET_VALUES names no chart value for it"
                )
            properties[key] = refused(NOT_IN_CONFIGMAP.format(SECRET_VALUES[dotted]))
        elif section:
            properties[key] = _walk(resolved, defs, dotted)
        else:
            properties[key] = _field(resolved, defs, dotted)
    out["properties"] = properties
    if raw.get("required"):
        out["required"] = list(raw["required"])
    out["additionalProperties"] = False
    return out


def _resolve_refs(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One level of ``$ref`` resolved (the rest is resolved by the walk)."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _field(raw: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """A leaf or a list: its type, bounds, enum and pattern; objects in lists are closed."""
    node = _nullable(_inline(raw, defs))
    items = raw.get("items")
    if isinstance(items, dict):
        item = _resolve_refs(items, defs)
        if item.get("type") == "object" and "properties" in item:
            node["items"] = _walk(item, defs, path + "[]")
    if path in CASE_INSENSITIVE and "enum" in node:
        words = "|".join(str(v) for v in node.pop("enum") if v is not None)
        node["pattern"] = f"^(?i:{words})$"
    node.update(REFINEMENTS.get(path, {}))
    if isinstance(node.get("items"), dict):
        node["items"].update(REFINEMENTS.get(path + "[]", {}))
    return node


def config_schema() -> dict[str, Any]:
    """The schema of ``values.config``: the model, closed everywhere, without secrets."""
    raw = Settings.model_json_schema()
    defs = raw.get("$defs", {})
    schema = _walk(raw, defs, "")
    schema["description"] = (
        "authgate's configuration file (docs/configuration.md), non-secret keys only. "
        "Generated from src/authgate/config/model.py by python -m "
        "authgate.config.helm_schema; do not edit by hand."
    )
    return schema


def secret_paths() -> list[tuple[str, ...]]:
    """Every secret-bearing key of the model, as a path (``("stores", "redis", "url")``)."""

    def walk(raw: dict[str, Any], defs: dict[str, Any], prefix: tuple[str, ...]) -> Iterator[Any]:
        for key, sub in raw.get("properties", {}).items():
            resolved = _resolve_refs(sub, defs)
            section = resolved.get("type") == "object" and "properties" in resolved
            if section and not _all_secret(resolved, defs):
                yield from walk(resolved, defs, (*prefix, key))
            elif _is_secret(resolved):
                yield (*prefix, key)

    raw = Settings.model_json_schema()
    return list(walk(raw, raw.get("$defs", {}), ()))


def secret_env_name_schema() -> dict[str, Any]:
    """The ``AUTHGATE_*`` variable names that could carry a secret into the config.

    The loader reads ``AUTHGATE_<A>__<B>__<C>`` as the path ``a.b.c``, lower-casing each
    part, and parses the value as YAML, so a whole section arrives in one variable
    (``AUTHGATE_HMAC='{challenge_secret: ...}'``). A name is refused when its path is a
    secret key, lies above one (a section holding it) or below one; in any case.
    """
    branches = []
    for path in secret_paths():
        pattern = "(?:__.*)?"
        for part in reversed(path):
            pattern = f"(?:__{part.upper()}{pattern})?"
        branches.append(pattern.removeprefix("(?:__").removesuffix(")?"))
    alternatives = "|".join(branches)
    return {
        "type": "string",
        "description": "An AUTHGATE_* name that could carry a secret into authgate's config "
        "(any case, a whole section in one variable, or a key below it): secrets come from "
        "the chart's secrets.* values. Generated by python -m authgate.config.helm_schema.",
        "pattern": f"^(?i:{ENV_PREFIX}(?:{alternatives}))$",
    }


def rewrite(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (the whole values schema) with its generated parts replaced."""
    out = copy.deepcopy(document)
    out["properties"]["config"] = config_schema()
    out.setdefault("definitions", {})["secretEnvName"] = secret_env_name_schema()
    return out


def dumps(document: dict[str, Any]) -> str:
    """The file's text: two-space indent, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the generated parts, or rewrite them in a values schema file."""
    parser = argparse.ArgumentParser(prog="python -m authgate.config.helm_schema")
    parser.add_argument("--write", type=Path, metavar="VALUES_SCHEMA_JSON")
    args = parser.parse_args(argv)
    if args.write is None:
        parts = {"config": config_schema(), "secretEnvName": secret_env_name_schema()}
        sys.stdout.write(dumps(parts))
        return 0
    path: Path = args.write
    path.write_text(dumps(rewrite(json.loads(path.read_text()))), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
