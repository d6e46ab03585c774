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


def loads_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse ``data`` as a strict JSON object, or raise :class:`StrictJSONError`."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                # The name may be echoed to the client: keep it short.
                raise StrictJSONError(f"{what} repeats member {key[:64]!r}")
            out[key] = value
        return out

    def no_constant(name: str) -> Any:
        raise StrictJSONError(f"{what} holds the non-standard JSON constant {name}")

    def finite_float(text: str) -> float:
        # `1e400` is standard JSON that Python reads as infinity, which json.dumps writes
        # back as the constant refused above (found by fuzzing, fuzz/fuzz_strict_json.py).
        value = float(text)
        if not math.isfinite(value):
            raise StrictJSONError(f"{what} holds a number out of range")
        return value

    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise StrictJSONError(f"{what} is not UTF-8") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=no_duplicates,
            parse_constant=no_constant,
            parse_float=finite_float,
        )
    except StrictJSONError:
        raise
    except (ValueError, RecursionError):
        raise StrictJSONError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise StrictJSONError(f"{what} is not a JSON object")
    return value
