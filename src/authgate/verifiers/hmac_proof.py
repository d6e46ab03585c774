"""HMAC challenge-proof verifier (``Authorization: AGProof v1....``).

Checks, in order: the challenge signature (constant time, current then previous secrets),
freshness (``now - issue_ts <= ttl``, ``issue_ts <= now + skew``), the API key by public
id (O(1), cached), the proof over method, target with query, nonce, timestamp, key id,
optional client X25519 key and (on routes that bind it) the body hash; then the nonce is
spent atomically until the challenge expires. Every failure raises the same
:class:`ProofInvalid` (same status, same body); only the log says which check failed.
"""

from __future__ import annotations

from authgate.apikeys import ApiKeyService
from authgate.config.model import HMACSettings
from authgate.crypto.bpc_wire import body_hash
from authgate.crypto.hmac_proof import (
    SCHEME,
    ProofFormatError,
    challenge_issued_at_ms,
    challenge_signature,
    check_client_pubkey,
    equal,
    new_challenge,
    parse_credentials,
    proof,
    proof_message,
)
from authgate.errors import ProofInvalid
from authgate.models import CredentialType, Principal, RequestContext, Spend
from authgate.policy.rules import CompiledRule
from authgate.stores.base import Clock


class HMACProofVerifier:
    """Verifies ``AGProof`` challenge proofs made with API keys."""

    credential_type = CredentialType.HMAC

    def __init__(
        self,
        *,
        settings: HMACSettings,
        secrets: tuple[bytes, ...],
        api_keys: ApiKeyService,
        clock: Clock,
    ) -> None:
        if not secrets:
            raise ValueError("at least one challenge secret is needed")
        self._s = settings
        self._secrets = secrets
        self._keys = api_keys
        self._clock = clock

    @property
    def signing_secret(self) -> bytes:
        """The secret that signs new challenges."""
        return self._secrets[0]

    def issue_challenge(self) -> dict[str, object]:
        """A fresh challenge, stamped by the same clock its freshness is checked against."""
        return new_challenge(
            self.signing_secret,
            self._clock.now_ms(),
            self._s.ttl_seconds,
            prefix=self._s.prefix,
        )

    def extract(self, context: RequestContext) -> str | None:
        """The credentials after ``AGProof``, or ``None`` for other schemes."""
        header = context.headers.get("authorization")
        if header is None:
            return None
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != SCHEME.lower():
            return None
        return rest.strip(" ")

    async def verify(
        self, credential: str, context: RequestContext, rule: CompiledRule | None = None
    ) -> Principal:
        """A principal for the API key, or :class:`ProofInvalid`."""
        try:
            header = parse_credentials(credential)
        except ProofFormatError as exc:
            raise ProofInvalid(detail=f"malformed: {exc}") from None
        prefix = self._s.prefix
        if not any(
            equal(
                challenge_signature(secret, header.nonce, header.issue_ts, prefix=prefix),
                header.sig,
            )
            for secret in self._secrets
        ):
            raise ProofInvalid(detail="challenge signature")
        now_ms = self._clock.now_ms()
        now_s = now_ms // 1000
        if now_s - header.issue_ts > self._s.ttl_seconds:
            raise ProofInvalid(detail="challenge expired")
        if header.issue_ts > now_s + self._s.clock_skew_seconds:
            raise ProofInvalid(detail="challenge from the future")

        key = await self._keys.get(header.key_id)
        if key is None or not key.active:
            raise ProofInvalid(detail="unknown or revoked key")

        client_pubkey = context.headers.get("x-client-pubkey", "")
        if client_pubkey:
            try:
                check_client_pubkey(client_pubkey)
            except ProofFormatError:
                raise ProofInvalid(detail="X-Client-Pubkey malformed") from None
        bound_hash: str | None = None
        if rule is not None and rule.hmac_bind_body:
            if context.read_body is None:
                raise ProofInvalid(detail="route binds the body but it was not forwarded")
            bound_hash = body_hash(await context.read_body())
        message = proof_message(
            method=context.method,
            target=context.raw_target,
            nonce=header.nonce,
            issue_ts=header.issue_ts,
            key_id=header.key_id,
            client_pubkey=client_pubkey,
            body_hash=bound_hash,
            prefix=prefix,
        )
        if not equal(proof(key.raw_key, message), header.proof):
            raise ProofInvalid(detail="proof")

        # The challenge stays fresh while now_s - issue_ts <= ttl, i.e. until the END of
        # second issue_ts + ttl; keep the nonce spent past that (plus the skew, for replicas
        # whose clocks lag), or a replay in that last second would find it already expired.
        expires_ms = (header.issue_ts + self._s.ttl_seconds + 1 + self._s.clock_skew_seconds) * 1000
        spend = Spend(
            scope=f"hmac:{header.key_id}",
            nonce=header.nonce,
            ttl_ms=max(1, expires_ms - now_ms),
            # issue_ts has one-second resolution; the nonce carries the millisecond (or, for
            # a nonce without the stamp, the start of the second: a challenge that may
            # predate the epoch may have been spent in data that was lost).
            signed_at_ms=challenge_issued_at_ms(header.nonce, header.issue_ts),
            refuse=_nonce_refused,
        )
        return Principal(
            subject=f"apikey:{key.key_id}",
            credential_type=CredentialType.HMAC,
            scopes=key.scopes,
            credential_id=key.key_id,
            claims={"name": key.name},
            spend=spend,
        )


async def _nonce_refused(outcome: str) -> Exception:
    """A challenge nonce already spent (or spent before the store's epoch)."""
    return ProofInvalid(detail=f"nonce {outcome}")
