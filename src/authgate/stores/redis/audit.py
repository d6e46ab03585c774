"""The audit store: capped lists of JSON entries, newest first, one per stream."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from authgate.stores.base import JSONRecord
from authgate.stores.redis.connection import RedisConnection
from authgate.stores.redis.keys import audit_key


class RedisAuditStore:
    """Capped lists: ``LPUSH``, ``LTRIM`` (and ``PEXPIREAT``) in one transaction (one key,
    so one slot)."""

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn

    def _key(self, stream: str) -> str:
        return audit_key(self._conn, stream)

    async def append(
        self, stream: str, entry: Mapping[str, Any], *, cap: int, expires_at_ms: int | None = None
    ) -> None:
        value = json.dumps(dict(entry), separators=(",", ":"))
        key = self._key(stream)

        async def write() -> None:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                if cap > 0:
                    pipe.lpush(key, value)
                    pipe.ltrim(key, 0, cap - 1)
                    if expires_at_ms is not None:
                        pipe.pexpireat(key, expires_at_ms)
                else:
                    pipe.delete(key)  # LTRIM 0 -1 would keep everything
                await pipe.execute()

        await self._conn.run(write)

    async def recent(self, stream: str, limit: int) -> list[JSONRecord]:
        if limit <= 0:
            return []  # LRANGE 0 -1 would return everything
        key = self._key(stream)
        raw = await self._conn.run(lambda: self._conn.client.lrange(key, 0, limit - 1))
        return [cast(JSONRecord, json.loads(item)) for item in raw]
