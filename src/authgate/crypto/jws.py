"""Compact JWS (RFC 7515 §7.1), decoded strictly; nothing here verifies a signature.

Base64url must be canonical and unpadded, JSON strict UTF-8 without duplicate members or
NaN/Infinity (:mod:`authgate.strict_json`). Used by the bearer-JWT verifier and by the
token issuer (decoding its own access and refresh tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from authgate.crypto import b64url
from authgate.errors import TokenMalformed
from authgate.strict_json import StrictJSONError, loads_object


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """A compact JWS decoded strictly; nothing in it is verified yet."""

    header: Mapping[str, Any]  # read-only (shared by every token with this header)
    alg: str
    kid: str
    payload: bytes
    signing_input: bytes
    signature: bytes


def _b64decode(segment: str, what: str, *, allow_empty: bool = False) -> bytes:
    if not segment and not allow_empty:
        raise TokenMalformed(f"token {what} is not base64url")
    try:
        return b64url.decode(segment)
    except b64url.NotCanonical:
        raise TokenMalformed(f"token {what} is not canonical base64url") from None
    except b64url.NotBase64url:
        raise TokenMalformed(f"token {what} is not base64url") from None


def strict_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object, refusing duplicates and NaN/Infinity."""
    try:
        return loads_object(data, f"token {what}")
    except StrictJSONError as exc:
        raise TokenMalformed(str(exc)) from None


# Decoded protected headers by their segment: every token of one key carries the same header
# (alg, kid, typ), so most tokens, each new, skip its base64 and JSON. Only headers that
# passed are kept, read-only; a full table is emptied (the segment is the sender's).
_HEADERS: dict[str, tuple[Mapping[str, Any], str, str]] = {}
_HEADERS_KEPT = 256


def _parse_header(segment: str) -> tuple[Mapping[str, Any], str, str]:
    header = strict_json_object(_b64decode(segment, "header"), "header")
    if "crit" in header:
        raise TokenMalformed("token header 'crit' is not supported")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenMalformed("token header 'alg' is missing")
    kid = header.get("kid", "")
    if not isinstance(kid, str) or len(kid) > 256:
        raise TokenMalformed("token header 'kid' must be a string")
    return MappingProxyType(header), alg, kid


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
    parsed = _HEADERS.get(parts[0])
    if parsed is None:
        parsed = _parse_header(parts[0])
        if len(_HEADERS) >= _HEADERS_KEPT:
            _HEADERS.clear()
        _HEADERS[parts[0]] = parsed
    header, alg, kid = parsed
    payload = _b64decode(parts[1], "payload", allow_empty=True)
    signature = _b64decode(parts[2], "signature")
    return CompactJWS(
        header=header,
        alg=alg,
        kid=kid,
        payload=payload,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=signature,
    )
