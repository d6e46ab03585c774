"""HMAC challenge proofs (docs/protocols.md §2, authgate form): challenge, proof, header.

Challenge (``GET /challenge``)::

    {"nonce": b64(32 random bytes), "issue_ts": <unix s>, "ttl": 60,
     "sig": b64(HMAC-SHA256(challenge_secret, "<prefix>-chal-v1.<nonce>.<issue_ts>"))}

Request::

    Authorization: AGProof v1.<key_id>.<nonce>.<issue_ts>.<sig>.<proof>
    proof = b64(HMAC-SHA256(api_key, "<prefix>-v1.<METHOD>.<target>.<nonce>.<issue_ts>.
                                      <key_id>.<client_pubkey_b64>[.<body_hash>]"))

``b64`` is standard base64 (never contains ``.``); ``target`` is the path with its query as
sent; ``client_pubkey_b64`` is the optional ``X-Client-Pubkey`` (X25519, 32 bytes) or
empty; ``.<body_hash>`` (BPC's ``sha256:...`` form) is appended only on routes that bind
the body. The key id travels in the header so the key is found in O(1), and inside the
MAC so a proof cannot be moved to another key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass

from authgate.crypto.stamps import issued_at_ms, stamped

SCHEME = "AGProof"
DEFAULT_PREFIX = "authgate"
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_KEY_ID = re.compile(r"[a-z0-9]{12}")
# Canonical decimal only: a leading zero would give one timestamp two spellings.
_TS = re.compile(r"0|[1-9][0-9]{0,11}")


class ProofFormatError(ValueError):
    """The proof header is malformed (callers answer the one uniform 401)."""


def b64(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


# Canonical standard base64 of exactly 32 bytes: 43 characters and one "=", the last
# character carrying 4 bits of data and 2 zero bits (so it is one of these 16).
_B64_32 = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")


def _b64decode(text: str, *, length: int | None = None) -> bytes:
    if length == 32:  # nonces, signatures and proofs: canonical form read off the text
        if _B64_32.fullmatch(text) is None:
            raise ProofFormatError("not canonical base64 of the right length")
        return base64.b64decode(text)
    if _B64.fullmatch(text) is None:
        raise ProofFormatError("not base64")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProofFormatError("not base64") from None
    if b64(data) != text or (length is not None and len(data) != length):
        raise ProofFormatError("not canonical base64 of the right length")
    return data


def _mac(key: bytes, message: str) -> bytes:
    # hmac.digest: the one-shot C implementation (no HMAC object per call).
    return hmac.digest(key, message.encode("utf-8"), "sha256")


def challenge_signature(
    secret: bytes, nonce: str, issue_ts: int, *, prefix: str = DEFAULT_PREFIX
) -> str:
    """The server's signature over one challenge."""
    return b64(_mac(secret, f"{prefix}-chal-v1.{nonce}.{issue_ts}"))


def new_challenge(
    secret: bytes, now_ms: int, ttl: int, *, prefix: str = DEFAULT_PREFIX
) -> dict[str, object]:
    """A fresh challenge document; the server stores nothing.

    The nonce (32 bytes, opaque to clients) begins with the issue time in milliseconds
    (:mod:`authgate.crypto.stamps`), which :func:`challenge_issued_at_ms` reads back.
    """
    now_s = now_ms // 1000
    nonce = b64(stamped(now_ms, 24))
    return {
        "nonce": nonce,
        "issue_ts": now_s,
        "sig": challenge_signature(secret, nonce, now_s, prefix=prefix),
        "ttl": ttl,
    }


def challenge_issued_at_ms(nonce: str, issue_ts: int) -> int:
    """When a challenge whose signature checked out was issued, to the millisecond if its
    nonce carries the stamp, else the start of ``issue_ts``."""
    try:
        raw = _b64decode(nonce)
    except ProofFormatError:
        return issue_ts * 1000
    return issued_at_ms(raw, issue_ts)


def proof_message(
    *,
    method: str,
    target: str,
    nonce: str,
    issue_ts: int,
    key_id: str,
    client_pubkey: str = "",
    body_hash: str | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> str:
    """The exact string both sides MAC."""
    message = f"{prefix}-v1.{method.upper()}.{target}.{nonce}.{issue_ts}.{key_id}.{client_pubkey}"
    return message if body_hash is None else f"{message}.{body_hash}"


def proof(api_key: str, message: str) -> str:
    """b64(HMAC-SHA256(api_key, message))."""
    return b64(_mac(api_key.encode("utf-8"), message))


def authorization_header(
    *, key_id: str, nonce: str, issue_ts: int, sig: str, proof_b64: str
) -> str:
    """``AGProof v1.<key_id>.<nonce>.<issue_ts>.<sig>.<proof>``."""
    return f"{SCHEME} v1.{key_id}.{nonce}.{issue_ts}.{sig}.{proof_b64}"


@dataclass(frozen=True, slots=True)
class ProofHeader:
    """A parsed ``AGProof`` credential."""

    key_id: str
    nonce: str
    issue_ts: int
    sig: str
    proof: str


def parse_credentials(value: str) -> ProofHeader:
    """Parse the part after ``AGProof ``; raises :class:`ProofFormatError`."""
    parts = value.split(".")
    if len(parts) != 6 or parts[0] != "v1":
        raise ProofFormatError("expected v1.<key_id>.<nonce>.<issue_ts>.<sig>.<proof>")
    _, key_id, nonce, ts, sig, mac = parts
    if _KEY_ID.fullmatch(key_id) is None or _TS.fullmatch(ts) is None:
        raise ProofFormatError("bad key id or timestamp")
    _b64decode(nonce, length=32)
    _b64decode(sig, length=32)
    _b64decode(mac, length=32)
    return ProofHeader(key_id=key_id, nonce=nonce, issue_ts=int(ts), sig=sig, proof=mac)


def check_client_pubkey(value: str) -> str:
    """``X-Client-Pubkey`` must be standard base64 of a 32-byte X25519 key."""
    _b64decode(value, length=32)
    return value


def equal(a: str, b: str) -> bool:
    """Constant-time comparison after a length check."""
    return len(a) == len(b) and hmac.compare_digest(a.encode(), b.encode())
