"""Load YAML plus ``AUTHGATE_<SECTION>__<KEY>`` overrides into :class:`Settings`.

Every problem is reported at once, each with the dotted key that caused it. A config file
that carries a secret must not be readable by group or others.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from authgate.config.model import Settings
from authgate.errors import ConfigError

ENV_PREFIX = "AUTHGATE_"
# Keys whose presence in a file makes the file secret-bearing.
SECRET_KEYS = frozenset(
    {
        "url",
        "password",
        "sentinel_password",
        "key_encryption_key",
        "previous_key_encryption_keys",
        "operator_token",
        "challenge_secret",
        "previous_challenge_secrets",
    }
)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (YAML silently keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise ConfigError([(str(key), f"duplicate key (line {key_node.start_mark.line + 1})")])
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``AUTHGATE_STORES__REDIS__URL=...`` -> ``{"stores": {"redis": {"url": ...}}}``.

    Values are parsed as YAML scalars or flow collections, so ``8080`` is an int and
    ``[a, b]`` a list; anything unparsable stays a string.
    """
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "AUTHGATE_CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if any(not p for p in path):
            raise ConfigError([(name, "empty path segment in environment variable name")])
        try:
            value = yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
        except yaml.YAMLError:
            value = raw
        if value is None:
            value = raw
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError([(name, f"conflicts with another variable at {part!r}")])
            node = child
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _has_secret(tree: Any, key: str = "") -> bool:
    if isinstance(tree, Mapping):
        return any(_has_secret(v, str(k)) for k, v in tree.items())
    if isinstance(tree, list):
        return any(_has_secret(v, key) for v in tree)
    return key in SECRET_KEYS and tree not in (None, "")


def _check_permissions(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        raise ConfigError(
            [
                (
                    str(path),
                    f"holds secrets but is readable by group or others (mode "
                    f"{stat.S_IMODE(mode):04o}); chmod 600 it or pass secrets by environment",
                )
            ]
        )


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([(str(path), "not UTF-8")]) from exc
    try:
        tree = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([(str(path), f"invalid YAML: {exc}")]) from exc
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError([(str(path), "top level must be a mapping")])
    if _has_secret(tree):
        _check_permissions(path)
    return tree


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        key = ".".join(str(p) for p in err["loc"])
        if not key:
            # Cross-section checks name their key first ("server.workers > 1 needs ...").
            first = msg.split(" ", 1)[0]
            key = first if "." in first else "(root)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append((key, msg))
    return problems


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated settings from an optional file and the environment."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get("AUTHGATE_CONFIG"):
        path = environ["AUTHGATE_CONFIG"]
    tree: dict[str, Any] = _read_file(Path(path)) if path is not None else {}
    overrides = _env_overrides(environ)
    tree = _merge(tree, overrides)
    if "development" not in tree:
        # Development mode (ephemeral keys, auto-approved development pairs, a loud
        # warning) only on true zero-config: no file and no AUTHGATE_* variable. A real
        # deployment missing a key gets start-up warnings instead, never dev behaviour.
        tree["development"] = path is None and not overrides
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None
    return settings


def effective_config(settings: Settings) -> str:
    """The settings as YAML with every secret masked (``authgate check-config``)."""

    def mask(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "**********" if value.get_secret_value() else ""
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [mask(v) for v in value]
        return value

    data = mask(settings.model_dump(mode="python"))
    # json round trip turns enums and tuples into plain YAML-friendly values.
    plain = json.loads(json.dumps(data, default=str))
    return yaml.safe_dump(plain, sort_keys=False)
