"""Load YAML plus ``AUTHGATE_<SECTION>__<KEY>`` overrides into :class:`Settings`.

Every problem is reported at once, each with the key that caused it
(``policy.rules[2].methods[0]``) and in plain words: pydantic's wording (``Input should
be a valid tuple``, a regex) is translated into what the value must be. A config file that
carries a secret must not be readable by group or others. Checks beyond the model (the
files a setting names) are passed in as ``checks`` and reported together with the rest.
"""

from __future__ import annotations

import json
import os
import stat
import types
import typing
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from authgate.config import model
from authgate.config.model import Problems, Settings, duplicate_rule_ids, suggestion
from authgate.errors import ConfigError

Problem = tuple[str, str]
# A check beyond the model: gets the settings (``None`` when they did not validate) and the
# merged raw tree, returns its problems.
Check = Callable[[Settings | None, Mapping[str, Any]], list[Problem]]

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
        "pico_fleet_secret",
        "nonce_secret",
    }
)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (YAML silently keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            # `? [a, b]: c` (a list or mapping as a key), as SafeLoader's own check says.
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found an unhashable key",
                key_node.start_mark,
            )
        if key in mapping:
            raise ConfigError([(str(key), f"duplicate key (line {key_node.start_mark.line + 1})")])
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _load_yaml(text: str) -> Any:
    """``text`` as YAML (duplicate keys refused); :class:`yaml.YAMLError` for any fault.

    PyYAML's scalar constructors raise plain ``ValueError``, ``KeyError``, ``IndexError`` or
    ``AttributeError`` for a scalar they cannot read (``!!int x``, ``!!bool x``, an empty
    ``!!float``, ``!!timestamp x``, ``2001-13-01``, an integer of more than 4,300 digits)
    (an unhashable key is refused by ``_construct_mapping`` itself), and its composer recurses
    once per nesting level (``[[[[...``): each is a fault of the YAML, never a traceback
    (found by fuzzing, fuzz/fuzz_config.py).
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError as exc:
        raise yaml.YAMLError("nested too deeply") from exc
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        raise yaml.YAMLError(f"a value cannot be read as its type or tag ({exc})") from exc


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[Problem]]:
    """``AUTHGATE_STORES__REDIS__URL=...`` -> ``{"stores": {"redis": {"url": ...}}}``.

    Values are parsed as YAML scalars or flow collections, so ``8080`` is an int and
    ``[a, b]`` a list; anything unparsable stays a string.
    """
    tree: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "AUTHGATE_CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if any(not p for p in path):
            problems.append((name, "empty path segment in the variable's name (two _ in a row?)"))
            continue
        try:
            value = _load_yaml(raw)
        except yaml.YAMLError:
            value = raw
        if value is None:
            value = raw
        node: dict[str, Any] | None = tree
        for part in path[:-1]:
            assert node is not None
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append((name, f"conflicts with another variable at {part!r}"))
                node = None
                break
            node = child
        if node is not None:
            node[path[-1]] = value
    return tree, problems


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


def _permission_problems(path: Path) -> list[Problem]:
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return [
            (
                str(path),
                f"holds secrets but is readable by group or others (mode "
                f"{stat.S_IMODE(mode):04o}); chmod 600 it or pass secrets by environment",
            )
        ]
    return []


def _read_file(path: Path) -> tuple[dict[str, Any], list[Problem]]:
    """The file's tree and the problems that do not stop reading it (its mode); a file that
    cannot be read or parsed raises."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([(str(path), "not UTF-8")]) from exc
    try:
        tree = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([(str(path), f"invalid YAML: {exc}")]) from exc
    if tree is None:
        return {}, []
    if not isinstance(tree, dict):
        raise ConfigError([(str(path), "top level must be a mapping")])
    return tree, _permission_problems(path) if _has_secret(tree) else []


def key_of(loc: Sequence[int | str]) -> str:
    """``("policy", "rules", 0, "id")`` -> ``policy.rules[0].id``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _join(key: str, sub: str) -> str:
    if not sub:
        return key
    if not key or sub.startswith("["):
        return key + sub
    return f"{key}.{sub}"


# What each pattern in the model allows, in words (a test keeps this complete).
PATTERN_WORDS = {
    model.HEADER_NAME_PATTERN: "must be an HTTP header name: letters, digits and '-', "
    "at most 64 characters, not starting with '-'",
    r"^[A-Za-z0-9:_.-]{0,64}$": "may hold letters, digits and ': _ . -' only, at most 64 "
    "characters",
    r"^https?://": "must be an http:// or https:// URL",
    r"^[A-Za-z0-9_.-]{1,64}$": "must be 1 to 64 letters, digits or '_ . -' (no spaces)",
    r"^https?://[^/?#]+/?$": "must be an origin: http:// or https://, a host and an optional "
    "port, nothing after (e.g. http://127.0.0.1:3000)",
    model.RESOURCE_URL_PATTERN: "must be an http:// or https:// URL without a query or "
    "fragment (e.g. https://api.example.com/mcp)",
    r"^[a-z0-9-]{1,32}$": "must be 1 to 32 lower-case letters, digits or '-'",
    r"^/[A-Za-z0-9_.~-]+(?:/[A-Za-z0-9_.~-]+)*$": "must be a path such as /admin: '/' and "
    "segments of letters, digits or '_ . ~ -', no '/' at the end",
}

_TYPE_WORDS = {
    "tuple_type": "must be a list, e.g. [a, b] (one item still needs the brackets)",
    "list_type": "must be a list, e.g. [a, b] (one item still needs the brackets)",
    "set_type": "must be a list, e.g. [a, b]",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number, without a fraction",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text (quote it in YAML if it looks like a number or true/false)",
    "model_type": "must be a mapping of keys (key: value), not a single value",
    "model_attributes_type": "must be a mapping of keys (key: value), not a single value",
    "dict_type": "must be a mapping of keys (key: value), not a single value",
    "missing": "is required; add it",
    "none_required": "must be empty (null)",
    "finite_number": "must be a finite number",
}


def _fields_at(loc: Sequence[int | str]) -> list[str]:
    """The keys the model allows at ``loc`` (a mapping's path), for a did-you-mean."""
    current: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return []
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (tuple, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _words(err: ErrorDetails) -> str:
    """One pydantic error as what the value must be, in plain words."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    if kind == "extra_forbidden":
        loc = err["loc"]
        return "unknown key" + suggestion(str(loc[-1]), _fields_at(loc[:-1]))
    if kind == "string_pattern_mismatch":
        return PATTERN_WORDS.get(str(ctx.get("pattern")), "is not in the form this key allows")
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected')}"
    bounds = {
        "greater_than": "must be more than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
    }
    if kind in bounds:
        return bounds[kind].format(**ctx)
    if kind == "too_short":
        return f"must list at least {_plural(int(ctx.get('min_length', 1)), 'item')}"
    if kind == "too_long":
        return f"must list at most {_plural(int(ctx.get('max_length', 0)), 'item')}"
    if kind == "string_too_short":
        n = int(ctx.get("min_length", 1))
        return "must not be empty" if n == 1 else f"must be at least {n} characters long"
    if kind == "string_too_long":
        return f"must be at most {_plural(int(ctx.get('max_length', 0)), 'character')} long"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    for jargon, plain in (("Input should be", "must be"), ("Input should", "must")):
        msg = msg.replace(jargon, plain)
    return msg


def _problems(exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        key = key_of(err["loc"])
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, Problems):
            problems += [(_join(key, sub), msg) for sub, msg in error.problems]
            continue
        msg = _words(err)
        if not key:
            # Cross-section checks name their key first ("server.workers > 1 needs ...").
            first = msg.split(" ", 1)[0].rstrip(":")
            key = first if "." in first else "(root)"
        problems.append((key, msg))
    return problems


def _tree_problems(tree: Mapping[str, Any]) -> list[Problem]:
    """Checks the model makes only once every rule is valid, made on the raw tree too, so
    they are reported together with every other problem."""
    policy = tree.get("policy")
    rules = policy.get("rules") if isinstance(policy, Mapping) else None
    if not isinstance(rules, list):
        return []
    return [(_join("policy.rules", sub), msg) for sub, msg in duplicate_rule_ids(rules)]


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    checks: Sequence[Check] = (),
) -> Settings:
    """Build validated settings from an optional file and the environment.

    Raises :class:`ConfigError` with every problem found: the file's, the environment's,
    the model's and those of ``checks`` (which run whether or not the model validated).
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get("AUTHGATE_CONFIG"):
        path = environ["AUTHGATE_CONFIG"]
    tree: dict[str, Any] = {}
    problems: list[Problem] = []
    if path is not None:
        tree, problems = _read_file(Path(path))
    overrides, more = _env_overrides(environ)
    problems += more
    tree = _merge(tree, overrides)
    if "development" not in tree:
        # Development mode (ephemeral keys, auto-approved development pairs, a loud
        # warning) only on true zero-config: no file and no AUTHGATE_* variable. A real
        # deployment missing a key gets start-up warnings instead, never dev behaviour.
        tree["development"] = path is None and not overrides
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        problems += _problems(exc)
    problems += _tree_problems(tree)
    for check in checks:
        problems += check(settings, tree)
    if problems or settings is None:
        raise ConfigError(list(dict.fromkeys(problems)))  # each problem once, in order
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
