"""DPoP proofs sent to ``/token`` (RFC 9449 §5): checked, and their ``jti`` spent once.

The token endpoint is not behind the gate (its clients authenticate by grant), so its
proofs are spent here, in one nonce-store operation per proof, under the key's own scope
(``dpop-token:<jkt>``): a proof replayed to any replica is refused. Refusals are answered
in the OAuth shape: ``invalid_dpop_proof``, or ``use_dpop_nonce`` with a fresh nonce.
"""

from __future__ import annotations

from collections.abc import Collection

from authgate.errors import DPoPError, DPoPNonceRequired, OAuthInvalidDPoPProof, OAuthUseDPoPNonce
from authgate.stores.base import Clock, NonceOutcome, NonceStore
from authgate.verifiers.dpop_proof import ProofChecker


class TokenProofs:
    """The token endpoint's DPoP proofs."""

    def __init__(self, *, checker: ProofChecker, nonces: NonceStore, clock: Clock) -> None:
        self._checker = checker
        self._nonces = nonces
        self._clock = clock

    async def key_of(self, proof: str, *, method: str, urls: Collection[str]) -> str:
        """The RFC 7638 thumbprint of the proof's key, once the proof passed every check
        and its ``jti`` was spent; else an OAuth refusal."""
        now = self._clock.now_ms() / 1000
        try:
            checked = self._checker.check(proof, method=method, urls=urls, now=now)
        except DPoPNonceRequired as exc:
            raise OAuthUseDPoPNonce(exc.message, nonce=exc.nonce, detail=exc.detail) from None
        except DPoPError as exc:
            raise OAuthInvalidDPoPProof(exc.message, detail=exc.reason) from None
        until_ms = (checked.iat + self._checker.window_seconds + 1) * 1000
        outcome = await self._nonces.consume(
            f"dpop-token:{checked.jkt}",
            checked.jti,
            ttl_ms=max(1, until_ms - int(now * 1000)),
            signed_at_ms=checked.iat * 1000,
        )
        if outcome is not NonceOutcome.FRESH:
            raise OAuthInvalidDPoPProof(
                "DPoP proof already used", detail=f"proof jti {outcome.value}"
            )
        return checked.jkt
