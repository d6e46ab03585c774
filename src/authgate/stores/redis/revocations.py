"""The revocation store: a key per revoked token id that expires with the token, and a
sorted index of them for listing."""

from __future__ import annotations

from typing import Any

from authgate.stores.base import Clock
from authgate.stores.redis.connection import RedisConnection


class RedisRevocationStore:
    """Revoked ``jti`` keys with ``PX`` until expiry, plus a sorted index for listing."""

    def __init__(self, conn: RedisConnection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock
        self._index = conn.key("revoked-index")

    def _key(self, jti: str) -> str:
        return self._conn.key(f"revoked:{jti}")

    async def revoke(self, jti: str, *, expires_at_ms: int) -> None:
        now = self._clock.now_ms()
        ttl_ms = expires_at_ms - now
        if ttl_ms <= 0:
            return

        async def write() -> None:
            # The key and the index live in different slots: no transaction in Cluster.
            async with self._conn.client.pipeline(transaction=not self._conn.cluster) as pipe:
                pipe.set(self._key(jti), expires_at_ms, px=ttl_ms)
                pipe.zadd(self._index, {jti: expires_at_ms})
                pipe.zremrangebyscore(self._index, "-inf", now)
                await pipe.execute()

        await self._conn.run(write)

    async def is_revoked(self, jti: str) -> bool:
        count = await self._conn.run(lambda: self._conn.client.exists(self._key(jti)))
        return int(count) > 0

    async def list_revoked(self) -> dict[str, int]:
        now = self._clock.now_ms()

        async def read() -> list[Any]:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(self._index, "-inf", now)
                pipe.zrangebyscore(self._index, f"({now}", "+inf", withscores=True)
                return await pipe.execute()

        results = await self._conn.run(read)
        return {str(jti): int(score) for jti, score in results[1]}
