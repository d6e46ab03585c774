"""BPC v1.0 signed-request verifier (docs/protocols.md §1, with the authgate rules).

Order, cheapest first, and nothing unauthenticated touches shared state:

1. the four ``X-BPC-*`` headers, the version, the strict canonical payload;
2. the timestamp window; method and path against the request target *including its query*
   (a route may opt out of the query with ``allow_unsigned_query``);
3. the pair (local cache, invalidated over the event bus) and its status;
4. the ECDSA P-256 signature (strict DER) over the exact signed bytes;
5. the body hash, which the signed bytes carry (the body is buffered only here, once the
   device key is proven, bounded by ``bpc.max_body_bytes``);
6. ``secret_hmac`` against the pair's envelope-sealed secret, in constant time;
7. the pair's scope against the method;
8. one atomic nonce consumption, keyed ``(pair_id, nonce)``, which also appends the
   audit entry: one store round trip for an accepted request.

Lock-out counts only wrong-secret requests that carry a valid device-key signature
(they prove possession of the key) and a fresh nonce: such a request spends its nonce,
so a captured one replayed is ``replay_detected``, never counted twice. Every other
failure is charged to the client address's failure budget (``bpc.failures_per_minute``),
then answered 429, so nobody can lock a victim's pair out by naming it.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature

from authgate.config.model import BPCSettings
from authgate.crypto.bpc_wire import (
    EMPTY_BODY_HASH,
    PAIR_ID,
    VERSION,
    WireError,
    b64url_decode,
    body_hash,
    parse_signed_data,
    secret_hmac,
)
from authgate.crypto.keys import verify_p256_der
from authgate.errors import (
    AuthGateError,
    BodyHashMismatch,
    BPCError,
    BPCMissingHeaders,
    InvalidSignedData,
    MethodPathMismatch,
    PairExpired,
    PairLockedOut,
    PairPending,
    PairRevoked,
    RateLimited,
    ReplayDetected,
    ScopeDenied,
    SecretProofInvalid,
    SignatureInvalid,
    TimestampExpired,
    UnknownPair,
    UnsupportedVersion,
)
from authgate.models import CredentialType, Principal, RequestContext, Spend
from authgate.pairs.directory import LoadedPair, PairDirectory
from authgate.pairs.records import PairRecordError, PairStatus
from authgate.pairs.service import PairService
from authgate.policy.rules import CompiledRule
from authgate.stores.base import Clock, NonceOutcome, NonceStore, RateLimitStore

log = logging.getLogger(__name__)

HEADERS = ("x-bpc-pair-id", "x-bpc-signed-data", "x-bpc-signature", "x-bpc-version")
_HEADER_NAMES = dict(
    zip(
        HEADERS,
        ("X-BPC-Pair-ID", "X-BPC-Signed-Data", "X-BPC-Signature", "X-BPC-Version"),
        strict=True,
    )
)
MAX_SIGNATURE_CHARS = 128  # DER P-256 is at most 72 bytes (96 base64url characters)


@dataclass(frozen=True, slots=True)
class BPCCredential:
    """The raw BPC headers (some may be missing: ``verify`` names which)."""

    pair_id: str | None
    signed_data: str | None
    signature: str | None
    version: str | None


class BPCVerifier:
    """Verifies BPC signed requests."""

    credential_type = CredentialType.BPC

    def __init__(
        self,
        *,
        settings: BPCSettings,
        directory: PairDirectory,
        pairs: PairService,
        nonces: NonceStore,
        rate_limits: RateLimitStore,
        clock: Clock,
    ) -> None:
        self._s = settings
        self._directory = directory
        self._pairs = pairs
        self._nonces = nonces
        self._rate_limits = rate_limits
        self._clock = clock
        self._nonce_ttl_ms = 2 * settings.window_ms + 10_000

    def extract(self, context: RequestContext) -> BPCCredential | None:
        """The BPC headers when any is present; ``None`` when the request is not BPC."""
        h = context.headers
        if (
            "x-bpc-pair-id" not in h
            and "x-bpc-signed-data" not in h
            and "x-bpc-signature" not in h
            and "x-bpc-version" not in h
        ):  # every request of another credential type asks: four lookups, no allocation
            return None
        return BPCCredential(*(h.get(name) for name in HEADERS))

    async def verify(
        self, credential: BPCCredential, context: RequestContext, rule: CompiledRule | None = None
    ) -> Principal:
        """A principal for the pair, or a :class:`BPCError` leaf (or 429)."""
        pair: LoadedPair | None = None
        try:
            pair = await self._pair_for(credential)
            return await self._verify(credential, context, rule, pair)
        except (BPCError, ScopeDenied) as exc:
            await self._refused(exc, pair, context)
            raise

    async def _refused(
        self, exc: BPCError | ScopeDenied, pair: LoadedPair | None, context: RequestContext
    ) -> None:
        """Charge the failure to the client's address and write it to the pair's trail."""
        if isinstance(exc, BPCError) and not exc.proves_device_key:
            # Charged before the audit write: an address over its budget gets 429 and
            # writes nothing, so it cannot flush a victim's capped trail.
            await self._charge_failure(context.client_ip)
        if pair is not None:
            await self._audit_failure(pair, context, exc.reason)

    async def _pair_for(self, credential: BPCCredential) -> LoadedPair | None:
        """Look the named pair up early only to attribute failures to its trail."""
        pair_id = credential.pair_id
        if pair_id is None or PAIR_ID.fullmatch(pair_id) is None:
            return None
        try:
            return await self._directory.get(pair_id)
        except PairRecordError:
            log.exception("stored pair unreadable", extra={"event": "pair_unreadable"})
            return None

    async def _verify(
        self,
        credential: BPCCredential,
        context: RequestContext,
        rule: CompiledRule | None,
        pair: LoadedPair | None,
    ) -> Principal:
        missing = [
            _HEADER_NAMES[name]
            for name, value in zip(
                HEADERS,
                (
                    credential.pair_id,
                    credential.signed_data,
                    credential.signature,
                    credential.version,
                ),
                strict=True,
            )
            if not value
        ]
        if missing or not (credential.pair_id and credential.signed_data and credential.signature):
            raise BPCMissingHeaders(f"missing {', '.join(missing)}")
        if credential.version != VERSION:
            raise UnsupportedVersion(f"X-BPC-Version must be {VERSION}")
        try:
            payload = parse_signed_data(credential.signed_data)
        except WireError as exc:
            raise InvalidSignedData(str(exc)) from None
        if payload.version != VERSION:
            raise UnsupportedVersion(f"signed version must be {VERSION}")
        # The header is checked for shape first: compare_digest refuses non-ASCII text
        # with TypeError, which would turn a hostile header into a 500.
        if PAIR_ID.fullmatch(credential.pair_id) is None or not hmac.compare_digest(
            payload.pair_id, credential.pair_id
        ):
            raise InvalidSignedData("signed pair_id differs from X-BPC-Pair-ID")

        now = self._clock.now_ms()
        if abs(now - payload.timestamp) > self._s.window_ms:
            raise TimestampExpired()
        if payload.method != context.method:
            raise MethodPathMismatch("signed method differs from the request's")
        if payload.path != context.raw_target:
            unsigned_query_ok = (
                rule is not None
                and rule.allow_unsigned_query
                and payload.path == context.raw_target.partition("?")[0]
            )
            if not unsigned_query_ok:
                raise MethodPathMismatch(
                    "signed path differs from the request target (path and query)"
                )

        if pair is None:
            raise UnknownPair()
        record = pair.record
        if record.status is PairStatus.PENDING:
            raise PairPending()
        if record.status is PairStatus.REVOKED:
            raise PairRevoked()
        if record.status is PairStatus.LOCKED:
            raise PairLockedOut()
        if record.expires_at is not None and record.expires_at <= now:
            raise PairExpired()

        try:
            signature = b64url_decode(credential.signature, what="X-BPC-Signature")
            if len(credential.signature) > MAX_SIGNATURE_CHARS:
                raise SignatureInvalid("signature too long")
            verify_p256_der(pair.public_key, payload.raw, signature)
        except (WireError, InvalidSignature):
            raise SignatureInvalid() from None

        # Only now, with the device key proven, is the body read: the signed data carries its
        # hash, so nobody can make authgate buffer bpc.max_body_bytes by naming a pair.
        await self._check_body(payload.body_hash, context, rule)

        if pair.secret is not None:
            expected = secret_hmac(pair.secret, payload.nonce, payload.timestamp)
            if not hmac.compare_digest(expected, payload.secret_hmac):
                # Only a fresh signature proves the device key: spend the nonce first, so a
                # captured wrong-secret request replayed ten times cannot lock the pair out.
                await self._spend_wrong_secret_nonce(
                    record.pair_id, payload.nonce, payload.timestamp
                )
                if await self._pairs.record_wrong_secret(record):
                    raise PairLockedOut("too many requests with a wrong secret")
                raise SecretProofInvalid()

        if (rule is None or rule.enforce_pair_scope) and not record.allows_method(context.method):
            raise ScopeDenied(f"pair scope {record.scope!r} does not allow {context.method}")

        async def refuse(outcome: str) -> Exception:
            exc = (
                ReplayDetected()
                if outcome == NonceOutcome.REPLAYED.value
                else TimestampExpired(
                    "signed before the nonce store's epoch; sign the request again"
                )
            )
            await self._refused(exc, pair, context)
            return exc

        spend = Spend(
            scope=record.pair_id,
            nonce=payload.nonce,
            ttl_ms=self._nonce_ttl_ms,
            signed_at_ms=payload.timestamp,
            refuse=refuse,
            audit=self._entry(context, "ok", now),
            audit_cap=self._s.audit_cap,
        )
        return Principal(
            subject=record.pair_id,
            credential_type=CredentialType.BPC,
            scopes=record.scopes,
            credential_id=record.pair_id,
            claims={
                "name": record.name,
                "scope": record.scope,
                "fingerprint": record.fingerprint,
                "device_key_only": record.device_key_only,
            },
            spend=spend,
        )

    async def _spend_wrong_secret_nonce(self, pair_id: str, nonce: str, signed_at: int) -> None:
        """Consume the nonce of a wrong-secret request; a replay of one is not counted."""
        outcome = await self._nonces.consume(
            pair_id, nonce, ttl_ms=self._nonce_ttl_ms, signed_at_ms=signed_at
        )
        if outcome is NonceOutcome.REPLAYED:
            raise ReplayDetected()
        if outcome is NonceOutcome.BEFORE_EPOCH:
            raise TimestampExpired("signed before the nonce store's epoch; sign the request again")

    async def _check_body(
        self, signed_hash: str, context: RequestContext, rule: CompiledRule | None
    ) -> None:
        if context.read_body is None:
            if signed_hash == EMPTY_BODY_HASH or (rule is not None and rule.allow_unverified_body):
                return
            raise BodyHashMismatch(
                "the proxy did not forward the request body, so its signed hash cannot be "
                "checked (nginx auth_request never does; use the sidecar, Traefik forwardBody "
                "or Envoy with_request_body, or set allow_unverified_body on the route)"
            )
        body = await context.read_body()
        if not hmac.compare_digest(body_hash(body), signed_hash):
            raise BodyHashMismatch()

    def _entry(self, context: RequestContext, outcome: str, now: int) -> dict[str, object]:
        return {
            "ts": now,
            "method": context.method,
            "path": context.raw_target[:512],
            "outcome": outcome,
            "client_ip": context.client_ip,
        }

    async def _audit_failure(self, pair: LoadedPair, context: RequestContext, reason: str) -> None:
        try:
            await self._pairs.audit(
                pair.record.pair_id,
                **self._entry(context, reason, self._clock.now_ms()),
            )
        except AuthGateError:
            log.warning("audit write failed", extra={"event": "audit_failed", "reason": reason})

    async def _charge_failure(self, client_ip: str) -> None:
        result = await self._rate_limits.hit(
            f"bpc-fail:{client_ip}", limit=self._s.failures_per_minute, period_ms=60_000
        )
        if not result.allowed:
            raise RateLimited(
                "too many failed BPC requests from this address",
                retry_after_seconds=-(-result.retry_after_ms // 1000),
            )
