"""Generate ``docs/configuration.md`` from the config model.

``python -m authgate.config.reference > docs/configuration.md``; a test fails when the
committed file differs from what this prints.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from collections.abc import Iterator
from enum import Enum
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from authgate.config.model import Settings

HEADER = """# Configuration reference

Generated from `src/authgate/config/model.py` by `python -m authgate.config.reference`;
a test fails when this file drifts from the model. Do not edit by hand.

authgate reads one YAML file (`authgate serve --config FILE`, or `$AUTHGATE_CONFIG`) and
then environment variables: `AUTHGATE_<SECTION>__<KEY>` (double underscore between levels,
case-insensitive), for example `AUTHGATE_STORES__BACKEND=redis` or
`AUTHGATE_SERVER__TRUSTED_PROXIES='[10.0.0.0/8]'`. Values are parsed as YAML. Command-line
flags (`--host`, `--port`, `--workers`) win over both. Unknown keys are refused; every
problem is reported at once with its key. `authgate check-config FILE` prints the effective
configuration with secrets masked.

Start-up is refused, and `authgate check-config` fails the same way (every problem at once,
each with its key and the fix, exit code 2), when: a key is unknown or invalid; a config
file that holds a secret (a Redis URL) is readable by group or others; `server.workers > 1`
with in-memory stores; `server.max_header_bytes` below `jwt.max_token_bytes` + 64 (the HTTP
parser would refuse a token the JWT limit allows); a policy rule names an unknown HTTP
method, repeats another rule's id, or is proxied (sidecar) under `tokens.admin_prefix` while
the admin API is on; a signing key file is missing, unreadable, readable by others or
writable by anyone but its owner, or not a PEM private key of an algorithm `jwt.algorithms`
lists. `authgate serve` also refuses, before starting, a `server.host`/`server.port` it
cannot listen on.

"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is SecretStr:
        return "secret string"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (types.UnionType, typing.Union):
        names = [_type_name(a) for a in args if a is not type(None)]
        suffix = " or null" if type(None) in args else ""
        return " \\| ".join(names) + suffix
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, SecretStr):
        return "(secret)" if value.get_secret_value() else '""'
    if isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
        return f"{len(value)} item(s), see below"
    plain = json.loads(json.dumps(value, default=lambda v: getattr(v, "value", str(v))))
    return f"`{json.dumps(plain)}`"


def _constraints(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sym} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"pattern `{pattern}`")
    return "; ".join(parts)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is tuple:
        inner = typing.get_args(annotation)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    args = typing.get_args(annotation)
    if type(None) in args and len(args) == 2:  # an optional section: ``Model | None``
        inner = next(a for a in args if a is not type(None))
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return None


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_of(field.annotation)
        optional = sub is not None and type(None) in typing.get_args(field.annotation)
        if sub is not None and typing.get_origin(field.annotation) is not tuple and not optional:
            nested.append((key + ".", sub))
            continue
        if sub is not None:
            nested.append((key + ("." if optional else "[]."), sub))
        description = (field.description or "").replace("|", "\\|")
        constraints = _constraints(field)
        if constraints:
            description = f"{description} ({constraints})" if description else constraints
        yield key, _type_name(field.annotation), _default(field), description
    for sub_prefix, sub in nested:
        yield from _rows(sub, sub_prefix)


def render() -> str:
    """The whole reference page."""
    lines = [HEADER, "| key | type | default | description |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {desc} |" for k, t, d, desc in _rows(Settings, "")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
