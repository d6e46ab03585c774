"""Stateless pico sign-in challenges (``POST /api/v1/auth/challenge``; web/pico.py).

A challenge is ``hex(issued_ms[8] || random[16] || mac[16])``, ``mac`` = HMAC-SHA256
truncated to 16 bytes over a domain label, the two fields and the address: it
authenticates itself and is bound to the address it was asked for. The MAC key is derived
from each configured secret under a label of its own. Single use is enforced by the caller
(the nonce store), not here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

from authgate.errors import LoginRefused
from authgate.stores.base import Clock

CHALLENGE_TTL_SECONDS = 60
CHALLENGE_REFUSED = "challenge is invalid, expired or already used"

_KEY_LABEL = b"authgate-pico-challenge-key-v1"
_MAC_LABEL = b"authgate-pico-challenge-v1\x00"
_RANDOM_BYTES = 16
_MAC_BYTES = 16
_CHALLENGE = re.compile(r"[0-9a-f]{80}")


class ChallengeCodec:
    """Issues and checks self-authenticating, address-bound challenges (no state kept)."""

    def __init__(self, secrets_: Sequence[bytes], *, clock: Clock, skew_seconds: int) -> None:
        if not secrets_:
            raise ValueError("at least one challenge secret is needed")
        self._keys = tuple(hmac.new(s, _KEY_LABEL, hashlib.sha256).digest() for s in secrets_)
        self._clock = clock
        self._skew_ms = skew_seconds * 1000

    @staticmethod
    def _mac(key: bytes, head: bytes, address: str) -> bytes:
        message = _MAC_LABEL + head + address.encode("utf-8")
        return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, address: str) -> str:
        """A fresh challenge for ``address``."""
        head = self._clock.now_ms().to_bytes(8, "big") + secrets.token_bytes(_RANDOM_BYTES)
        return (head + self._mac(self._keys[0], head, address)).hex()

    def check(self, address: str, challenge: str) -> int:
        """The challenge's issue time (ms) if it is ours, for ``address`` and fresh."""
        if _CHALLENGE.fullmatch(challenge) is None:
            raise LoginRefused(CHALLENGE_REFUSED, detail="challenge malformed")
        raw = bytes.fromhex(challenge)
        head, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not any(hmac.compare_digest(self._mac(k, head, address), mac) for k in self._keys):
            raise LoginRefused(CHALLENGE_REFUSED, detail="challenge MAC or address")
        issued_ms = int.from_bytes(head[:8], "big")
        now = self._clock.now_ms()
        if now - issued_ms > CHALLENGE_TTL_SECONDS * 1000 or issued_ms > now + self._skew_ms:
            raise LoginRefused(CHALLENGE_REFUSED, detail="challenge expired")
        return issued_ms

    def remaining_ms(self, issued_ms: int) -> int:
        """How long a challenge issued at ``issued_ms`` may still be presented."""
        return max(
            1, issued_ms + CHALLENGE_TTL_SECONDS * 1000 + self._skew_ms - self._clock.now_ms()
        )
