"""Pico wallet sign-in: a wallet signature over an address-bound challenge, spent once,
buys a token pair (``docs/protocols.md`` §3; the HTTP surface is ``web/pico.py``).

The challenge codec and the signature checks live in ``crypto/``; this service puts them
in order: challenge authentic and fresh, signature verifies (the identity is the verified
key), challenge spent exactly once in the nonce store, tokens issued with the wallet role.
"""

from __future__ import annotations

import hashlib

from authgate.config.model import WALLET_ROLE
from authgate.crypto.pico_challenge import CHALLENGE_REFUSED, ChallengeCodec
from authgate.crypto.wallet import wallet_identity
from authgate.errors import LoginRefused
from authgate.stores.base import NonceOutcome, NonceStore
from authgate.tokens.issuer import Issued, TokenIssuer


class WalletSignIn:
    """Issues wallet challenges and redeems signed ones for tokens."""

    def __init__(
        self, *, challenges: ChallengeCodec, nonces: NonceStore, issuer: TokenIssuer
    ) -> None:
        self._challenges = challenges
        self._nonces = nonces
        self._issuer = issuer

    def challenge(self, address: str) -> str:
        """A fresh challenge bound to ``address``."""
        return self._challenges.issue(address)

    async def sign_in(
        self,
        *,
        algorithm: str,
        address: str,
        public_key: bytes,
        signature: bytes,
        challenge: str,
    ) -> tuple[str, Issued]:
        """The wallet identity (canonical key hex) and its tokens, or a 401 leaf."""
        issued_ms = self._challenges.check(address, challenge)
        identity = wallet_identity(algorithm, public_key, signature, challenge.encode())
        scope = "pico:" + hashlib.sha256(address.encode()).hexdigest()[:32]
        outcome = await self._nonces.consume(
            scope,
            challenge,
            ttl_ms=self._challenges.remaining_ms(issued_ms),
            signed_at_ms=issued_ms,
        )
        if outcome is not NonceOutcome.FRESH:
            raise LoginRefused(CHALLENGE_REFUSED, detail=f"challenge {outcome.value}")
        issued = await self._issuer.issue(
            subject=identity,
            scopes=(),
            refresh=True,
            extra={"role": WALLET_ROLE},
            minted_by=f"pico-wallet:{algorithm}",
        )
        return identity, issued
