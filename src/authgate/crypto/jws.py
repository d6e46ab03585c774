"""Compact JWS (RFC 7515 §7.1), decoded strictly; nothing here verifies a signature.

Base64url must be canonical and unpadded, JSON strict UTF-8 without duplicate members or
NaN/Infinity (:mod:`authgate.strict_json`). Used by the bearer-JWT verifier and by the
token issuer (decoding its own access and refresh tokens).
"""

from __future__ import annotations

import base64
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


def _b64decode(segment: str, what: str, *, allow_empty: bool = False) -> bytes:
    if not segment and allow_empty:
        return b""
    if not segment or _B64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise TokenMalformed(f"token {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenMalformed(f"token {what} is not base64url") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != segment:
        raise TokenMalformed(f"token {what} is not canonical base64url")
    return data


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
