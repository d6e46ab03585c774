"""Random identifiers that carry the millisecond they were issued at.

Credentials authgate issues itself (HMAC challenges, refresh tokens) state their issue time
in whole seconds, which is too coarse for the nonce store's epoch check: a credential issued
in the same second as a data loss may or may not predate it. Comparing the start of the
second is safe but refuses every such credential issued just after an epoch move (and,
with in-memory stores, everything issued in a process's first second). So the random part
of the identifier starts with the issue time in milliseconds; the identifier is covered by
the server's own signature (the challenge signature, the refresh token's JWS), so the stamp
is authentic. An identifier whose stamp does not fall inside its stated second (one issued
before this scheme, say) is judged by the start of that second.
"""

from __future__ import annotations

import secrets

STAMP_BYTES = 8


def stamped(now_ms: int, random_bytes: int) -> bytes:
    """``now_ms`` as 8 big-endian bytes, then ``random_bytes`` random bytes."""
    return now_ms.to_bytes(STAMP_BYTES, "big") + secrets.token_bytes(random_bytes)


def issued_at_ms(raw: bytes, second: int) -> int:
    """When ``raw`` (from :func:`stamped`) was issued, if that lies in ``second``; else the
    start of ``second`` (the earliest it can have been issued)."""
    if len(raw) > STAMP_BYTES:
        stamp = int.from_bytes(raw[:STAMP_BYTES], "big")
        if stamp // 1000 == second:
            return stamp
    return second * 1000
