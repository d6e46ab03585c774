"""The Redis back end as a whole: :class:`RedisStores`, every store on one connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from authgate.stores.base import (
    AuditStore,
    Clock,
    EventBus,
    NonceStore,
    PairStore,
    RateLimitStore,
    RecordStore,
    RevocationStore,
    SystemClock,
)
from authgate.stores.redis.audit import RedisAuditStore
from authgate.stores.redis.autopipeline import AutoPipeline
from authgate.stores.redis.connection import RedisConnection
from authgate.stores.redis.events import RedisEventBus
from authgate.stores.redis.nonces import RedisNonceStore
from authgate.stores.redis.rate_limits import RedisRateLimitStore
from authgate.stores.redis.records import RedisPairStore, RedisRecordStore
from authgate.stores.redis.revocations import RedisRevocationStore

if TYPE_CHECKING:
    from authgate.config.model import RedisSettings


class RedisStores:
    """Every store on one Redis deployment (standalone, Sentinel or Cluster)."""

    backend = "redis"

    def __init__(self, settings: RedisSettings, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        self._conn = RedisConnection(settings)
        self.nonces: NonceStore = RedisNonceStore(self._conn, clock)
        self.revocations: RevocationStore = RedisRevocationStore(self._conn, clock)
        self.pairs: PairStore = RedisPairStore(self._conn, clock)
        self.api_keys: RecordStore = RedisRecordStore(self._conn, "apikey")
        self.signing_keys: RecordStore = RedisRecordStore(self._conn, "signingkey")
        self.users: RecordStore = RedisRecordStore(self._conn, "user")
        self.rate_limits: RateLimitStore = RedisRateLimitStore(self._conn, clock)
        self.audit: AuditStore = RedisAuditStore(self._conn)
        self._events = RedisEventBus(self._conn, heartbeat_seconds=settings.event_heartbeat_seconds)
        self.events: EventBus = self._events

    @property
    def auto_pipeline(self) -> AutoPipeline | None:
        """The auto-pipeline of this back end's commands (``None`` when it is off)."""
        return self._conn.auto

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless Redis answers within the deadline."""
        await self._conn.run(self._conn.client.ping)

    async def close(self) -> None:
        """Stop the event listener; close the client and its connection pool."""
        await self._events.close()
        await self._conn.close()
