"""Narrow store Protocols shared by the in-memory and Redis back ends.

Every method may raise :class:`authgate.errors.StoreUnavailable` when the back end cannot
answer in time; callers let it propagate so the request fails closed (503). Nothing here
imports ``redis`` or ``aiohttp``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

JSONRecord = dict[str, Any]


class Clock(Protocol):
    """Wall-clock milliseconds; tests substitute a clock they can fast-forward."""

    def now_ms(self) -> int: ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms`` milliseconds."""
        self._now += ms


class NonceOutcome(Enum):
    """Result of one atomic nonce consumption."""

    FRESH = "fresh"
    REPLAYED = "replayed"
    BEFORE_EPOCH = "before_epoch"
    RATE_LIMITED = "rate_limited"


class NonceStore(Protocol):
    """Single-use nonces, consumed atomically across every replica."""

    async def consume(
        self,
        scope: str,
        nonce: str,
        *,
        ttl_ms: int,
        signed_at_ms: int,
        audit: Mapping[str, Any] | None = None,
        audit_cap: int = 0,
    ) -> NonceOutcome:
        """Mark ``nonce`` spent within ``scope`` for ``ttl_ms``.

        Returns ``FRESH`` exactly once per ``(scope, nonce)`` while it is live,
        ``REPLAYED`` after that, and ``BEFORE_EPOCH`` when ``signed_at_ms`` predates the
        store's current epoch (the store lost its data after the request was signed, so
        its nonce may have been forgotten).

        When ``audit`` is given and the nonce is fresh, the entry is appended to the audit
        stream named ``scope`` (capped at ``audit_cap``) in the same atomic operation, so
        an accepted request costs one round trip.
        """
        ...

    async def prime(self) -> None:
        """Write the epoch marker if it is missing (at start-up), so requests signed just
        before the first nonce is ever consumed are not refused as pre-epoch."""
        ...

    async def consume_limited(
        self,
        scope: str,
        nonce: str,
        *,
        ttl_ms: int,
        signed_at_ms: int,
        limits: Sequence[RateLimitCheck],
        audit: Mapping[str, Any] | None = None,
        audit_cap: int = 0,
    ) -> tuple[NonceOutcome, list[RateLimitResult]]:
        """``consume`` plus the credential's rate limits (tag ``scope``) in one operation.

        The limits are charged only when the nonce is fresh; when one refuses, the nonce
        is left unspent (the client may retry it) and the outcome is ``RATE_LIMITED``.
        """
        ...


class RevocationStore(Protocol):
    """Revoked token ids (``jti``), each kept until the token would have expired."""

    async def revoke(self, jti: str, *, expires_at_ms: int) -> None:
        """Record ``jti`` as revoked until ``expires_at_ms``."""
        ...

    async def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` is currently revoked."""
        ...

    async def list_revoked(self) -> dict[str, int]:
        """Every live revoked ``jti`` with its expiry in milliseconds."""
        ...


class RecordStore(Protocol):
    """JSON records by id (API keys, signing keys)."""

    async def get(self, record_id: str) -> JSONRecord | None:
        """The record, or ``None``."""
        ...

    async def put(self, record_id: str, record: Mapping[str, Any]) -> None:
        """Create or replace a record."""
        ...

    async def delete(self, record_id: str) -> bool:
        """Remove a record; ``True`` when it existed."""
        ...

    async def list_ids(self) -> list[str]:
        """Every record id, sorted."""
        ...


# The most failures a pair store keeps per pair (bpc.lockout_threshold is at most 1000).
MAX_COUNTED_FAILURES = 1000


class PairStore(RecordStore, Protocol):
    """BPC pair records plus their lock-out failure counters."""

    async def record_failure(self, pair_id: str, *, window_ms: int) -> int:
        """Atomically count one lock-out-relevant failure; returns how many the pair has had
        within the last ``window_ms`` (this one included): older ones no longer count."""
        ...

    async def reset_failures(self, pair_id: str) -> None:
        """Clear the failure counter."""
        ...


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """One GCRA decision, with what the IETF ``RateLimit-*`` fields need."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int
    reset_after_ms: int


@dataclass(frozen=True, slots=True)
class RateLimitCheck:
    """One limit to apply: ``limit`` per ``period_ms`` on ``key``."""

    key: str
    limit: int
    period_ms: int


class RateLimitStore(Protocol):
    """Generic cell rate limiting; one atomic operation per decision."""

    async def hit(self, key: str, *, limit: int, period_ms: int, cost: int = 1) -> RateLimitResult:
        """Admit ``cost`` units against ``limit`` per ``period_ms`` (burst = ``limit``)."""
        ...

    async def hit_many(self, tag: str, checks: Sequence[RateLimitCheck]) -> list[RateLimitResult]:
        """Apply every check atomically, all or nothing: if one refuses, none is charged.

        Keys share ``tag`` (one Cluster slot). Results are in ``checks`` order.
        """
        ...


class AuditStore(Protocol):
    """Capped, append-only trails of JSON entries, newest first."""

    async def append(
        self, stream: str, entry: Mapping[str, Any], *, cap: int, expires_at_ms: int | None = None
    ) -> None:
        """Append ``entry``; keep at most ``cap`` entries in ``stream``.

        With ``expires_at_ms`` the whole stream is dropped at that moment (each such append
        sets it again): for short-lived indexes, such as a refresh family's tokens, that
        must not outlive what they index. Without it the stream lives until capped away.
        """
        ...

    async def recent(self, stream: str, limit: int) -> list[JSONRecord]:
        """Up to ``limit`` newest entries, newest first."""
        ...


EventHandler = Callable[[str], None]
ResyncHandler = Callable[[], Awaitable[None]]


class EventBus(Protocol):
    """Fan-out of small invalidation messages to every replica (Redis pub/sub).

    Delivery is best effort: ``live`` is ``False`` whenever messages may have been missed
    (not yet subscribed, connection lost), and consumers must then check the store on every
    request instead of trusting local copies. After each (re)subscription the resync
    handlers run before ``live`` turns ``True`` again.
    """

    @property
    def live(self) -> bool:
        """Whether every message published since the last resync has been delivered."""
        ...

    @property
    def resubscriptions(self) -> int:
        """Times the bus was lost and became live again (0 while it stays live)."""
        ...

    def subscribe(self, channel: str, handler: EventHandler) -> None:
        """Call ``handler(message)`` for every message on ``channel`` (before ``start``)."""
        ...

    def on_resync(self, handler: ResyncHandler) -> None:
        """Run ``handler`` after every (re)subscription, before ``live`` turns ``True``."""
        ...

    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to every replica, this one included."""
        ...

    async def start(self) -> None:
        """Begin listening (idempotent)."""
        ...


class Stores(Protocol):
    """One back end's set of stores, plus health and shutdown."""

    @property
    def nonces(self) -> NonceStore:
        """Single-use nonces."""
        ...

    @property
    def revocations(self) -> RevocationStore:
        """Revoked token ids."""
        ...

    @property
    def pairs(self) -> PairStore:
        """BPC pairs."""
        ...

    @property
    def api_keys(self) -> RecordStore:
        """API key records (hashed)."""
        ...

    @property
    def signing_keys(self) -> RecordStore:
        """Signing key records (encrypted)."""
        ...

    @property
    def users(self) -> RecordStore:
        """Operator users (argon2id password hashes)."""
        ...

    @property
    def rate_limits(self) -> RateLimitStore:
        """Rate-limit cells."""
        ...

    @property
    def audit(self) -> AuditStore:
        """Capped audit trails."""
        ...

    @property
    def events(self) -> EventBus:
        """Cross-replica invalidation messages."""
        ...

    @property
    def backend(self) -> str:
        """``memory`` or ``redis``."""
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the back end answers."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks."""
        ...
