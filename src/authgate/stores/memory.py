"""In-memory stores: the embedded default for one process.

Expiry is amortised O(1): every timed entry is filed in a one-second bucket, and each call
sweeps only the buckets whose second has passed, so the cost of a call does not grow with
the number of live entries. The epoch is the moment the process started: nothing signed
before then can be checked against nonces the previous process knew, so it is refused.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from authgate.stores.base import (
    MAX_COUNTED_FAILURES,
    Clock,
    EventHandler,
    JSONRecord,
    NonceOutcome,
    RateLimitCheck,
    RateLimitResult,
    ResyncHandler,
    SystemClock,
)


class ExpiringMap:
    """A dict whose entries vanish at their expiry, swept in one-second buckets."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._values: dict[str, tuple[int, Any]] = {}
        self._buckets: dict[int, list[str]] = {}
        self._swept_until = clock.now_ms() // 1000

    def __len__(self) -> int:
        self._sweep()
        return len(self._values)

    def _sweep(self) -> int:
        now = self._clock.now_ms()
        second = now // 1000
        if second > self._swept_until:
            due: list[int] | range
            if second - self._swept_until > len(self._buckets):
                due = [s for s in self._buckets if s < second]
            else:
                due = range(self._swept_until, second)
            for s in due:
                for key in self._buckets.pop(s, ()):
                    entry = self._values.get(key)
                    if entry is not None and entry[0] <= now:
                        del self._values[key]
            self._swept_until = second
        return now

    def get(self, key: str) -> Any | None:
        """The live value under ``key``, or ``None``."""
        if key not in self._values:
            return None  # the common answer (nonce unseen, not revoked): no clock read
        now = self._sweep()
        entry = self._values.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def set(self, key: str, value: Any, expires_at_ms: int) -> None:
        """Store ``value`` until ``expires_at_ms`` (an expiry already past removes ``key``)."""
        now = self._sweep()
        if expires_at_ms <= now:
            self._values.pop(key, None)
            return
        self._values[key] = (expires_at_ms, value)
        self._buckets.setdefault(expires_at_ms // 1000, []).append(key)

    def set_if_absent(self, key: str, value: Any, expires_at_ms: int) -> bool:
        """Store only when no live entry exists; ``True`` when stored."""
        now = self._sweep()
        entry = self._values.get(key)
        if entry is not None and entry[0] > now:
            return False
        if expires_at_ms <= now:
            # Already expired: nothing to keep, and its bucket would never be swept again.
            self._values.pop(key, None)
            return True
        self._values[key] = (expires_at_ms, value)
        self._buckets.setdefault(expires_at_ms // 1000, []).append(key)
        return True

    def items(self) -> list[tuple[str, int, Any]]:
        """Every live ``(key, expires_at_ms, value)``."""
        now = self._sweep()
        return [(k, exp, v) for k, (exp, v) in self._values.items() if exp > now]


class MemoryNonceStore:
    """Nonces in one process; the epoch is the store's creation time."""

    def __init__(self, clock: Clock, audit: MemoryAuditStore, limits: MemoryRateLimitStore) -> None:
        self._clock = clock
        self._spent = ExpiringMap(clock)
        self._audit = audit
        self._limits = limits
        self.epoch_ms = clock.now_ms()

    async def prime(self) -> None:
        return None

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
        if signed_at_ms < self.epoch_ms:
            return NonceOutcome.BEFORE_EPOCH, []
        key = f"{len(scope)}:{scope}:{nonce}"
        if self._spent.get(key) is not None:
            return NonceOutcome.REPLAYED, []
        results = self._limits.apply(scope, limits)
        if not all(r.allowed for r in results):
            return NonceOutcome.RATE_LIMITED, results
        outcome = await self.consume(
            scope, nonce, ttl_ms=ttl_ms, signed_at_ms=signed_at_ms, audit=audit, audit_cap=audit_cap
        )
        return outcome, results

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
        if signed_at_ms < self.epoch_ms:
            return NonceOutcome.BEFORE_EPOCH
        key = f"{len(scope)}:{scope}:{nonce}"  # length prefix: no two (scope, nonce) collide
        if not self._spent.set_if_absent(key, True, self._clock.now_ms() + max(1, ttl_ms)):
            return NonceOutcome.REPLAYED
        if audit is not None:
            await self._audit.append(scope, audit, cap=audit_cap)
        return NonceOutcome.FRESH


class MemoryRevocationStore:
    """Revoked ``jti`` values until their token's expiry."""

    def __init__(self, clock: Clock) -> None:
        self._revoked = ExpiringMap(clock)

    async def revoke(self, jti: str, *, expires_at_ms: int) -> None:
        self._revoked.set(jti, expires_at_ms, expires_at_ms)

    async def is_revoked(self, jti: str) -> bool:
        return self._revoked.get(jti) is not None

    async def list_revoked(self) -> dict[str, int]:
        return {jti: exp for jti, exp, _ in self._revoked.items()}


class MemoryRecordStore:
    """JSON records kept as deep copies, so callers never share mutable state."""

    def __init__(self) -> None:
        self._records: dict[str, JSONRecord] = {}

    async def get(self, record_id: str) -> JSONRecord | None:
        record = self._records.get(record_id)
        return copy.deepcopy(record) if record is not None else None

    async def put(self, record_id: str, record: Mapping[str, Any]) -> None:
        self._records[record_id] = copy.deepcopy(dict(record))

    async def delete(self, record_id: str) -> bool:
        return self._records.pop(record_id, None) is not None

    async def list_ids(self) -> list[str]:
        return sorted(self._records)


class MemoryPairStore(MemoryRecordStore):
    """Pair records plus lock-out counters: the times of recent failures, per pair."""

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__()
        self._clock = clock or SystemClock()
        self._failures: dict[str, list[int]] = {}

    async def record_failure(self, pair_id: str, *, window_ms: int) -> int:
        now = self._clock.now_ms()
        recent = [t for t in self._failures.get(pair_id, ()) if t > now - window_ms]
        recent.append(now)
        recent = recent[-MAX_COUNTED_FAILURES:]
        self._failures[pair_id] = recent
        return len(recent)

    def failure_count(self, pair_id: str) -> int:
        """Failures kept for ``pair_id`` (tests read it without recording one)."""
        return len(self._failures.get(pair_id, ()))

    async def reset_failures(self, pair_id: str) -> None:
        self._failures.pop(pair_id, None)

    async def delete(self, record_id: str) -> bool:
        self._failures.pop(record_id, None)
        return await super().delete(record_id)


class MemoryRateLimitStore:
    """GCRA with the same arithmetic as the Redis script."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tats = ExpiringMap(clock)

    async def hit_many(self, tag: str, checks: Sequence[RateLimitCheck]) -> list[RateLimitResult]:
        return self.apply(tag, checks)

    def apply(self, tag: str, checks: Sequence[RateLimitCheck]) -> list[RateLimitResult]:
        """All-or-nothing GCRA over ``checks`` (synchronous: no await between read and write)."""
        now = self._clock.now_ms()
        decided = [
            (
                f"{tag}\x00{c.key}",
                *gcra(
                    now_ms=now,
                    tat_ms=self._tats.get(f"{tag}\x00{c.key}"),
                    limit=c.limit,
                    period_ms=c.period_ms,
                    cost=1,
                ),
            )
            for c in checks
        ]
        if all(result.allowed for _, result, _ in decided):
            for key, _, new_tat in decided:
                self._tats.set(key, new_tat, math.ceil(new_tat) + 1)
        return [result for _, result, _ in decided]

    async def hit(self, key: str, *, limit: int, period_ms: int, cost: int = 1) -> RateLimitResult:
        now = self._clock.now_ms()
        result, new_tat = gcra(
            now_ms=now, tat_ms=self._tats.get(key), limit=limit, period_ms=period_ms, cost=cost
        )
        if result.allowed:
            self._tats.set(key, new_tat, math.ceil(new_tat) + 1)
        return result


# Theoretical arrival times are fractional milliseconds since the epoch: at that magnitude
# (~1.8e12) a double resolves only ~0.0002 ms, so ``limit`` intervals of ``period / limit``
# can sum past ``period`` by a few ten-thousandths of a millisecond (3 per 2000 ms admitted
# 2 in a burst on the real clock). Half a millisecond of tolerance absorbs that rounding and
# admits nothing a client could notice. The Redis scripts use the same constant.
GCRA_TOLERANCE_MS = 0.5


def gcra(
    *, now_ms: int, tat_ms: float | None, limit: int, period_ms: int, cost: int
) -> tuple[RateLimitResult, float]:
    """Generic cell rate algorithm: burst ``limit``, refilling ``limit`` per ``period_ms``.

    Returns the decision and the new theoretical arrival time (unchanged when refused).
    The emission interval is kept fractional so that exactly ``limit`` requests fit in a
    burst whatever ``period_ms`` is. The Redis Lua script mirrors this arithmetic, and the
    contract tests check both against the same expectations.
    """
    interval = period_ms / limit
    tat = max(tat_ms if tat_ms is not None else now_ms, float(now_ms))
    new_tat = tat + interval * cost
    allow_at = new_tat - period_ms
    if allow_at > now_ms + GCRA_TOLERANCE_MS:
        return (
            RateLimitResult(
                allowed=False,
                limit=limit,
                remaining=max(
                    0, math.floor((period_ms - (tat - now_ms) + GCRA_TOLERANCE_MS) / interval)
                ),
                retry_after_ms=math.ceil(allow_at - now_ms),
                reset_after_ms=math.ceil(tat - now_ms),
            ),
            tat,
        )
    return (
        RateLimitResult(
            allowed=True,
            limit=limit,
            remaining=max(
                0, math.floor((period_ms - (new_tat - now_ms) + GCRA_TOLERANCE_MS) / interval)
            ),
            retry_after_ms=0,
            reset_after_ms=math.ceil(new_tat - now_ms),
        ),
        new_tat,
    )


class MemoryAuditStore:
    """Capped trails per stream; a stream given an expiry lives in an :class:`ExpiringMap`."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._streams: dict[str, deque[JSONRecord]] = {}
        self._expiring = ExpiringMap(clock or SystemClock())

    def _trail(self, stream: str) -> deque[JSONRecord] | None:
        trail: deque[JSONRecord] | None = self._expiring.get(stream)
        return trail if trail is not None else self._streams.get(stream)

    async def append(
        self, stream: str, entry: Mapping[str, Any], *, cap: int, expires_at_ms: int | None = None
    ) -> None:
        if cap <= 0:
            self._streams.pop(stream, None)
            self._expiring.set(stream, None, 0)
            return
        trail = self._trail(stream)
        if trail is None or trail.maxlen != cap:
            # Newest first: keep the newest ``cap - 1`` so the new entry makes ``cap``.
            trail = deque(list(trail or ())[: cap - 1], maxlen=cap)
        trail.appendleft(copy.deepcopy(dict(entry)))
        if expires_at_ms is None:
            self._streams[stream] = trail
        else:
            self._streams.pop(stream, None)
            self._expiring.set(stream, trail, expires_at_ms)

    async def recent(self, stream: str, limit: int) -> list[JSONRecord]:
        trail = self._trail(stream) or deque()
        return [copy.deepcopy(e) for e in list(trail)[: max(0, limit)]]


class MemoryEventBus:
    """In-process delivery: one process has no other replica to tell."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[EventHandler]] = {}
        self._resync: list[ResyncHandler] = []
        self.live = False
        self.resubscriptions = 0  # one process: never lost

    def subscribe(self, channel: str, handler: EventHandler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def on_resync(self, handler: ResyncHandler) -> None:
        self._resync.append(handler)

    async def publish(self, channel: str, message: str) -> None:
        for handler in self._handlers.get(channel, ()):
            handler(message)

    async def start(self) -> None:
        if self.live:
            return
        for handler in self._resync:
            await handler()
        self.live = True


class MemoryStores:
    """Every store in one process. Refused by config when ``workers > 1``."""

    backend = "memory"

    def __init__(self, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        self.audit = MemoryAuditStore(clock)
        self.rate_limits = MemoryRateLimitStore(clock)
        self.nonces = MemoryNonceStore(clock, self.audit, self.rate_limits)
        self.revocations = MemoryRevocationStore(clock)
        self.pairs = MemoryPairStore(clock)
        self.api_keys = MemoryRecordStore()
        self.signing_keys = MemoryRecordStore()
        self.users = MemoryRecordStore()
        self.events = MemoryEventBus()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


__all__ = ["ExpiringMap", "MemoryStores", "gcra"]
