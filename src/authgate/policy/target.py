"""Canonicalise a request target once, or refuse it.

The canonical path is what policy rules match and, byte for byte, what the upstream
receives. Anything two parsers could read differently is refused (400) rather than
normalised into acceptance:

* not origin-form (must start with a single ``/``);
* bytes outside printable ASCII, raw ``\\``, ``;`` or ``#``;
* dot segments (``.``, ``..``) and empty segments (``//``); one trailing ``/`` is allowed;
* percent-encoded ``/ \\ . ; #``, NUL or any control byte; malformed escapes;
* a path whose decoded bytes are not UTF-8.

Percent-encoded unreserved characters (letters, digits, ``-``, ``_``, ``~``) are decoded;
every other escape is kept, with upper-case hex. The query is kept as sent after the same
character checks (it is not matched, only forwarded).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from authgate.errors import InvalidTarget

_HEX = frozenset(string.hexdigits)
_PRINTABLE = frozenset(chr(c) for c in range(0x21, 0x7F))
_RAW_FORBIDDEN_PATH = frozenset("\\;#")
_DECODE = frozenset(string.ascii_letters + string.digits + "-_~")
# Decoded bytes that are refused outright: separators and dot, NUL, controls, DEL.
_REFUSED_BYTES = frozenset(b"/\\.;#" + bytes(range(0x20)) + b"\x7f")
MAX_TARGET_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class Target:
    """A canonical path and the raw query (without ``?``)."""

    path: str
    query: str

    def __str__(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


# Already canonical: segments of unreserved and sub-delim characters (no %, no ;), no
# dot-only or empty segment (except one trailing /), and a query without % or #. Such a
# target is returned as is; anything else takes the full, byte-by-byte path below. A dot is
# allowed only when its own segment holds another character: the look-ahead stops at the
# segment's end, `/` or `?` (found by fuzzing: stopping at `/` only let `/a/..?b` through).
_SEGMENT = r"(?:[A-Za-z0-9_~!$&'()*+,=:@-]|\.(?=[^/?]*[A-Za-z0-9_~!$&'()*+,=:@-]))+"
_FAST = re.compile(rf"(/(?:{_SEGMENT}(?:/{_SEGMENT})*/?)?)(?:\?([\x21-\x22\x24-\x7e]*))?")


def canonicalize(raw: str) -> Target:
    """Return the canonical form of ``raw`` or raise :class:`InvalidTarget`."""
    fast = _FAST.fullmatch(raw) if len(raw) <= MAX_TARGET_LENGTH else None
    if fast is not None and "%" not in (fast.group(2) or ""):
        return Target(fast.group(1), fast.group(2) or "")
    if not raw:
        raise InvalidTarget("empty request target")
    if len(raw) > MAX_TARGET_LENGTH:
        raise InvalidTarget("request target too long")
    if not raw.startswith("/"):
        raise InvalidTarget("request target must be origin-form (start with '/')")
    path, sep, query = raw.partition("?")
    canonical = _canonical_path(path)
    if sep:
        _check_query(query)
    return Target(canonical, query)


def _canonical_path(path: str) -> str:
    out: list[str] = []
    decoded = bytearray()
    i, n = 0, len(path)
    while i < n:
        ch = path[i]
        if ch not in _PRINTABLE:
            raise InvalidTarget("request target contains a non-printable or non-ASCII character")
        if ch in _RAW_FORBIDDEN_PATH:
            raise InvalidTarget(f"request path contains {ch!r}")
        if ch == "%":
            hexpair = path[i + 1 : i + 3]
            if len(hexpair) != 2 or not set(hexpair) <= _HEX:
                raise InvalidTarget("malformed percent-encoding in request path")
            byte = int(hexpair, 16)
            if byte in _REFUSED_BYTES:
                raise InvalidTarget(f"request path encodes a forbidden byte (%{byte:02X})")
            decoded.append(byte)
            c = chr(byte)
            out.append(c if c in _DECODE else f"%{byte:02X}")
            i += 3
            continue
        decoded += ch.encode("ascii")
        out.append(ch)
        i += 1
    try:
        bytes(decoded).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidTarget("request path is not valid UTF-8 once decoded") from None
    canonical = "".join(out)
    segments = canonical.split("/")[1:]
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in {".", ".."}:
            raise InvalidTarget("request path contains a dot segment")
        if segment == "" and index != last:
            raise InvalidTarget("request path contains an empty segment")
    return canonical


def _check_query(query: str) -> None:
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch not in _PRINTABLE:
            raise InvalidTarget("query contains a non-printable or non-ASCII character")
        if ch == "#":
            raise InvalidTarget("query contains '#'")
        if ch == "%":
            hexpair = query[i + 1 : i + 3]
            if len(hexpair) != 2 or not set(hexpair) <= _HEX:
                raise InvalidTarget("malformed percent-encoding in query")
            if int(hexpair, 16) < 0x20 or int(hexpair, 16) == 0x7F:
                raise InvalidTarget("query encodes a control byte")
            i += 3
            continue
        i += 1
