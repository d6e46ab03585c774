"""The rate-limit store: GCRA in Lua, for one key or for several at once (all or nothing),
and the decoding of a script's per-limit results, shared with the nonce store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from authgate.stores.base import Clock, RateLimitCheck, RateLimitResult
from authgate.stores.redis.connection import RedisConnection
from authgate.stores.redis.keys import hash_tag


class RedisRateLimitStore:
    """GCRA in one Lua script, with the arithmetic of :func:`authgate.stores.memory.gcra`."""

    def __init__(self, conn: RedisConnection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock

    async def hit(self, key: str, *, limit: int, period_ms: int, cost: int = 1) -> RateLimitResult:
        if limit < 1 or period_ms < 1:
            raise ValueError("limit and period_ms must be positive")
        redis_key = self._conn.key(f"rl:{hash_tag(key)}")
        args = [self._clock.now_ms(), limit, period_ms, cost]
        allowed, remaining, retry_after, reset_after = await self._conn.run_script(
            self._conn.gcra_script, [redis_key], args
        )
        return RateLimitResult(
            allowed=bool(allowed),
            limit=limit,
            remaining=int(remaining),
            retry_after_ms=int(retry_after),
            reset_after_ms=int(reset_after),
        )

    async def hit_many(self, tag: str, checks: Sequence[RateLimitCheck]) -> list[RateLimitResult]:
        if not checks:
            return []
        for check in checks:
            if check.limit < 1 or check.period_ms < 1:
                raise ValueError("limit and period_ms must be positive")
        htag = hash_tag(tag)
        keys = [self._conn.key(f"rl:{htag}:{c.key}") for c in checks]
        args: list[Any] = [self._clock.now_ms()]
        for check in checks:
            args += [check.limit, check.period_ms]
        reply = await self._conn.run_script(self._conn.gcra_many_script, keys, args)
        return limit_results(reply[1:], checks)


def limit_results(flat: Sequence[Any], checks: Sequence[RateLimitCheck]) -> list[RateLimitResult]:
    """The per-limit results of a GCRA script's flat reply (four numbers per limit)."""
    return [
        RateLimitResult(
            allowed=bool(int(flat[4 * i])),
            limit=check.limit,
            remaining=int(flat[4 * i + 1]),
            retry_after_ms=int(flat[4 * i + 2]),
            reset_after_ms=int(flat[4 * i + 3]),
        )
        for i, check in enumerate(checks)
        if 4 * i + 3 < len(flat)
    ]
