"""Record stores: JSON records with an index of their ids (API keys, signing keys, users),
and pairs with their lock-out counters.

How a record and its index entry stay consistent without a transaction in Cluster is
described in the package docstring.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any, cast

from authgate.stores.base import MAX_COUNTED_FAILURES, Clock, JSONRecord, SystemClock
from authgate.stores.redis.connection import RedisConnection
from authgate.stores.redis.keys import hash_tag
from authgate.stores.redis.scripts import PAIR_FAILURE_SCRIPT


class RedisRecordStore:
    """JSON records under ``<prefix><namespace>:{<id>}``, ids in ``<prefix><namespace>:index``."""

    def __init__(self, conn: RedisConnection, namespace: str) -> None:
        self._conn = conn
        self._namespace = namespace
        self._index = conn.key(f"{namespace}:index")

    def _key(self, record_id: str) -> str:
        return self._conn.key(f"{self._namespace}:{hash_tag(record_id)}")

    def _companion_keys(self, record_id: str) -> list[str]:
        """Further keys that ``delete`` removes along with the record."""
        del record_id
        return []

    async def get(self, record_id: str) -> JSONRecord | None:
        raw = await self._conn.run(lambda: self._conn.client.get(self._key(record_id)))
        if raw is None:
            return None
        return cast(JSONRecord, json.loads(raw))

    async def put(self, record_id: str, record: Mapping[str, Any]) -> None:
        value = json.dumps(dict(record), separators=(",", ":"))
        key = self._key(record_id)

        async def write() -> None:
            if self._conn.cluster:
                await self._conn.client.sadd(self._index, record_id)
                await self._conn.client.set(key, value)
                return
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.set(key, value)
                pipe.sadd(self._index, record_id)
                await pipe.execute()

        await self._conn.run(write)

    async def delete(self, record_id: str) -> bool:
        key = self._key(record_id)
        companions = self._companion_keys(record_id)

        async def remove() -> bool:
            client = self._conn.client
            if self._conn.cluster:
                existed = int(await client.delete(key)) > 0
                for companion in companions:
                    await client.delete(companion)
                await client.srem(self._index, record_id)
                return existed
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                for companion in companions:
                    pipe.delete(companion)
                pipe.srem(self._index, record_id)
                results = await pipe.execute()
            return int(results[0]) > 0

        return await self._conn.run(remove)

    async def list_ids(self) -> list[str]:
        members = await self._conn.run(lambda: self._conn.client.smembers(self._index))
        return sorted(str(m) for m in members)


class RedisPairStore(RedisRecordStore):
    """Pair records plus their lock-out counters, ``<prefix>pairfail:{<id>}``: a sorted set
    of recent failure times, expiring with the newest one's window."""

    def __init__(self, conn: RedisConnection, clock: Clock | None = None) -> None:
        super().__init__(conn, "pair")
        self._clock = clock or SystemClock()

    def _failures_key(self, pair_id: str) -> str:
        return self._conn.key(f"pairfail:{hash_tag(pair_id)}")

    def _companion_keys(self, record_id: str) -> list[str]:
        return [self._failures_key(record_id)]

    async def record_failure(self, pair_id: str, *, window_ms: int) -> int:
        now = self._clock.now_ms()
        # Rare (each one proves the device key): EVAL, not a registered script.
        args: list[str | int] = [
            now,
            max(1, window_ms),
            f"{now}:{uuid.uuid4().hex}",
            MAX_COUNTED_FAILURES,
        ]
        key = self._failures_key(pair_id)
        count = await self._conn.run(
            lambda: cast(
                "Awaitable[int]", self._conn.client.eval(PAIR_FAILURE_SCRIPT, 1, key, *args)
            )
        )
        return int(count)

    async def reset_failures(self, pair_id: str) -> None:
        await self._conn.run(lambda: self._conn.client.delete(self._failures_key(pair_id)))
