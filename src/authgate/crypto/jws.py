"""Compact JWS (RFC 7515 §7.1), decoded strictly; nothing here verifies a signature.

Base64url must be canonical and unpadded, JSON strict UTF-8 without duplicate members or
NaN/Infinity (:mod:`authgate.strict_json`). Used by the bearer-JWT verifier and by the
token issuer (decoding its own access and refresh tokens).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any

from authgate.errors import TokenMalformed
from authgate.strict_json import StrictJSONError, loads_object

_B64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """A compact JWS decoded strictly; nothing in it is verified yet."""

    header: dict[str, Any]
    alg: str
    kid: str
    payload: bytes
    signing_input: bytes
    signature: bytes


# The last character of a canonical unpadded segment leaves no bits set beyond the data:
# with 2 characters in the last quantum, its low 4 bits are zero; with 3, its low 2 bits.
_CANONICAL_LAST = {
    2: frozenset("AQgw"),
    3: frozenset("AEIMQUYcgkosw048"),
}
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")


def _b64decode(segment: str, what: str, *, allow_empty: bool = False) -> bytes:
    if not segment and allow_empty:
        return b""
    rest = len(segment) % 4
    if not segment or rest == 1 or _B64URL.fullmatch(segment) is None:
        raise TokenMalformed(f"token {what} is not base64url")
    if rest and segment[-1] not in _CANONICAL_LAST[rest]:
        raise TokenMalformed(f"token {what} is not canonical base64url")
    try:
        return binascii.a2b_base64(
            (segment.encode("ascii") + _PADDING[rest]).translate(_URLSAFE_TO_STANDARD),
            strict_mode=True,
        )
    except (binascii.Error, ValueError):  # pragma: no cover - the checks above admit none
        raise TokenMalformed(f"token {what} is not base64url") from None


def strict_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object, refusing duplicates and NaN/Infinity."""
    try:
        return loads_object(data, f"token {what}")
    except StrictJSONError as exc:
        raise TokenMalformed(str(exc)) from None


def parse_compact_jws(token: str) -> CompactJWS:
    """Split and decode ``token`` strictly, or raise :class:`TokenMalformed`.

    ASCII only; exactly three canonical base64url segments (the payload may be empty, as
    JWS allows; a JWT payload is then refused as not JSON); the header is strict UTF-8
    JSON with a string ``alg``, an optional string ``kid`` and no ``crit``.
    """
    if not token.isascii():
        raise TokenMalformed("bearer token is not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenMalformed("bearer token is not a compact JWS (three segments)")
    header = strict_json_object(_b64decode(parts[0], "header"), "header")
    payload = _b64decode(parts[1], "payload", allow_empty=True)
    signature = _b64decode(parts[2], "signature")
    if "crit" in header:
        raise TokenMalformed("token header 'crit' is not supported")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenMalformed("token header 'alg' is missing")
    kid = header.get("kid", "")
    if not isinstance(kid, str) or len(kid) > 256:
        raise TokenMalformed("token header 'kid' must be a string")
    return CompactJWS(
        header=header,
        alg=alg,
        kid=kid,
        payload=payload,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=signature,
    )
