"""Strict JSON objects for everything authgate parses from a client or a token.

UTF-8 only; duplicate members, ``NaN``/``Infinity``, numbers too large for a float (``1e400``,
which Python reads as infinity) and anything but an object at the top are refused (Python's
``json`` accepts all four). Callers turn :class:`StrictJSONError` into their own error leaf;
its message names ``what`` and the fault.
"""

from __future__ import annotations

import json
import math
from typing import Any


class StrictJSONError(ValueError):
    """The bytes are not a strict JSON object; the message says why."""


class _Refused(Exception):
    """A fault found while decoding; :func:`loads_object` names ``what`` in its message."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # The name may be echoed to the client: keep it short.
            raise _Refused(f"repeats member {key[:64]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _Refused(f"holds the non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    # `1e400` is standard JSON that Python reads as infinity, which json.dumps writes
    # back as the constant refused above (found by fuzzing, fuzz/fuzz_strict_json.py).
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("holds a number out of range")
    return value


# One decoder for every call: json.loads() with hooks builds a new decoder (and scanner)
# each time, a measured share of a BPC request's signed-data parse.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite_float
)


def loads_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse ``data`` as a strict JSON object, or raise :class:`StrictJSONError`."""
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise StrictJSONError(f"{what} is not UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except _Refused as exc:
        raise StrictJSONError(f"{what} {exc}") from None
    except (ValueError, RecursionError):
        raise StrictJSONError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise StrictJSONError(f"{what} is not a JSON object")
    return value
