"""BPC v1.0 wire format (docs/protocols.md §1): canonical payload, body hash, secret HMAC.

Shared by the verifier and the SDK so both sides compute byte-identical values. Parsing is
strict: exactly the eight members, the right types, UTF-8, no duplicate keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from authgate.crypto import b64url as b64url_strict
from authgate.strict_json import StrictJSONError, loads_object

VERSION = "1.0"
PAYLOAD_MEMBERS = frozenset(
    {"body_hash", "method", "nonce", "pair_id", "path", "secret_hmac", "timestamp", "version"}
)
MAX_SIGNED_DATA_BYTES = 12_288
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_BODY_HASH = re.compile(r"sha256:[A-Za-z0-9_-]{32}")
_SECRET_HMAC = re.compile(r"[A-Za-z0-9_-]{43}")
PAIR_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class WireError(ValueError):
    """The signed data is not a well-formed BPC v1.0 payload; the message names the field."""


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, what: str) -> bytes:
    """Strict, canonical base64url without padding (:mod:`authgate.crypto.b64url`)."""
    try:
        return b64url_strict.decode(text)
    except b64url_strict.NotCanonical:
        raise WireError(f"{what} is not canonical base64url") from None
    except b64url_strict.NotBase64url:
        raise WireError(f"{what} is not base64url") from None


def body_hash(body: bytes) -> str:
    """``sha256:`` + the first 32 characters of base64url(SHA-256(body))."""
    return "sha256:" + b64url(hashlib.sha256(body).digest())[:32]


EMPTY_BODY_HASH = body_hash(b"")


def secret_hmac(secret: str, nonce: str, timestamp: int) -> str:
    """base64url(HMAC-SHA256(key=secret, msg=nonce + str(timestamp)))."""
    # hmac.digest: the one-shot C implementation (no HMAC object per call).
    mac = hmac.digest(secret.encode("utf-8"), (nonce + str(timestamp)).encode("utf-8"), "sha256")
    return b64url(mac)


def canonical_json(payload: dict[str, Any]) -> bytes:
    """Sorted keys, compact separators, UTF-8 (what the published client signs)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def jwk_fingerprint(jwk: dict[str, Any]) -> str:
    """base64url(SHA-256(compact sorted JSON of the JWK)), first 20 characters."""
    text = json.dumps(jwk, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(text.encode()).digest())[:20]


@dataclass(frozen=True, slots=True)
class SignedPayload:
    """The decoded, type-checked canonical payload."""

    body_hash: str
    method: str
    nonce: str
    pair_id: str
    path: str
    secret_hmac: str
    timestamp: int
    version: str
    raw: bytes


def parse_signed_data(encoded: str) -> SignedPayload:
    """Decode ``X-BPC-Signed-Data``; raise :class:`WireError` naming the field at fault."""
    if len(encoded) > MAX_SIGNED_DATA_BYTES * 4 // 3 + 4:
        raise WireError("signed data is too large")
    raw = b64url_decode(encoded, what="X-BPC-Signed-Data")
    try:
        value = loads_object(raw, "signed data")
    except StrictJSONError as exc:
        raise WireError(str(exc)) from None
    members = set(value)
    if members != PAYLOAD_MEMBERS:
        missing = sorted(PAYLOAD_MEMBERS - members)
        extra = sorted(members - PAYLOAD_MEMBERS)
        detail = f"missing {missing}" if missing else f"unknown {extra}"
        raise WireError(f"signed data members: {detail}")
    for name in ("body_hash", "method", "nonce", "pair_id", "path", "secret_hmac", "version"):
        if not isinstance(value[name], str):
            raise WireError(f"signed data member {name!r} must be a string")
    timestamp = value["timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise WireError("signed data member 'timestamp' must be an integer (milliseconds)")
    if not 0 <= timestamp < 2**53:
        raise WireError("signed data member 'timestamp' is out of range")
    if _UUID4.fullmatch(value["nonce"]) is None:
        raise WireError("signed data member 'nonce' must be a lower-case UUID4")
    if _BODY_HASH.fullmatch(value["body_hash"]) is None:
        raise WireError("signed data member 'body_hash' is malformed")
    if _SECRET_HMAC.fullmatch(value["secret_hmac"]) is None:
        raise WireError("signed data member 'secret_hmac' is malformed")
    if PAIR_ID.fullmatch(value["pair_id"]) is None:
        raise WireError("signed data member 'pair_id' is malformed")
    method = value["method"]
    if not (method.isascii() and method.isalpha() and method.isupper() and len(method) <= 16):
        raise WireError("signed data member 'method' must be an upper-case HTTP method")
    if not value["path"].startswith("/") or len(value["path"]) > 8192:
        raise WireError("signed data member 'path' must be an origin-form path")
    return SignedPayload(
        body_hash=value["body_hash"],
        method=method,
        nonce=value["nonce"],
        pair_id=value["pair_id"],
        path=value["path"],
        secret_hmac=value["secret_hmac"],
        timestamp=timestamp,
        version=value["version"],
        raw=raw,
    )
