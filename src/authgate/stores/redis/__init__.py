"""Redis stores: state shared by every replica, on one server, Sentinel or Cluster.

Every call runs under :meth:`RedisConnection.run`: a deadline of ``deadline_seconds`` around
the whole operation, and any Redis error or timeout turned into
:class:`~authgate.errors.StoreUnavailable`, so callers fail closed. Clients are built with
explicit connect and socket timeouts, at most one retry (on connection errors only) and a
bounded pool: redis-py's defaults would wait five seconds per socket operation and retry
ten times with back-off.

Key layout (``<p>`` is ``stores.redis.key_prefix``; ``{...}`` is a Cluster hash tag, and
``%``, ``{`` and ``}`` inside a tagged value are percent-encoded so the tag ends where we
mean it to and distinct values stay distinct keys)::

    <p>nonce:{<scope>}:<nonce>   spent nonce, PX ttl_ms            (NONCE_CONSUME_SCRIPT)
    <p>epoch                     store epoch marker (standalone, Sentinel)
    <p>epoch:{<slot tag>}        store epoch marker of one hash slot (Cluster)
    <p>revoked:<jti>             revoked token id, PX until the token expires
    <p>revoked-index             sorted set jti -> expiry ms, pruned on each revoke / list
    <p>apikey:{<id>}             JSON record; ids in the set <p>apikey:index
    <p>signingkey:{<id>}         JSON record; ids in the set <p>signingkey:index
    <p>user:{<name>}             JSON record (argon2id hash); ids in the set <p>user:index
    <p>pair:{<id>}               JSON record; ids in the set <p>pair:index
    <p>pairfail:{<id>}           lock-out failure counter (INCR)
    <p>rl:{<key>}                GCRA theoretical arrival time, PX just past it (GCRA_SCRIPT)
    <p>audit:{<stream>}          capped list of JSON entries, newest first (the nonce script
                                 appends to the stream named by its scope)
    <p>events:<channel>          pub/sub channels; <p>events:_heartbeat:<id> is one
                                 process's own heartbeat

Store epoch. Redis may lose data: a restart without persistence, a flush, a restart from an
RDB snapshot or AOF older than the last accepted nonce, a failover to a replica that had not
received it. The epoch marker (``<epoch_ms>:<replication id>``) records when the current data
set began and which server history wrote it. Every nonce script reads the server's
``master_replid`` (``INFO replication``, inside the script) and moves the epoch forward to
now when the marker is missing or names another replication id; a request signed before
the epoch is refused with ``BEFORE_EPOCH``, since its nonce may have been forgotten. A
restart of any kind and a replica's promotion both change the replication id, and a marker
that comes back from a snapshot carries the old one. In Cluster a Lua script may only touch
keys of one slot, so there is one marker per hash slot (16,384, written by :meth:`prime` at
start-up), shared by every scope in that slot: a credential's first request meets a marker
that already exists. A write the master took but no replica acknowledged (``WAIT``, see
``stores.redis.replica_acks``) is a 503, not an accepted nonce: a manual failover can leave
the old master accepting writes for a moment, and those are lost when it is demoted.

Times come from the injected clock (``clock.now_ms()``, passed to the scripts as ``ARGV``),
not Redis ``TIME``, so a test clock drives both back ends alike. Key expiry (``PX``) is
always real time, however.

Record indexes. On one server or behind Sentinel a record and its index entry are written
in one ``MULTI``/``EXEC`` transaction. Cluster cannot run a transaction across slots, so
there ``put`` adds the id to the index before writing the record, and ``delete`` removes the
record before the index entry: an interrupted call (which raised ``StoreUnavailable``) can
leave an id listed whose record is gone, never a live record that is not listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from authgate.stores.base import (
    AuditStore,
    Clock,
    EventBus,
    EventHandler,
    JSONRecord,
    NonceOutcome,
    NonceStore,
    PairStore,
    RateLimitCheck,
    RateLimitResult,
    RateLimitStore,
    RecordStore,
    ResyncHandler,
    RevocationStore,
    SystemClock,
)
from authgate.stores.redis.connection import RedisConnection
from authgate.stores.redis.keys import audit_key, hash_tag, slot_tag
from authgate.stores.redis.scripts import (
    EPOCH_PRIME_SCRIPT,
    GCRA_MANY_SCRIPT,
    GCRA_SCRIPT,
    NONCE_CONSUME_SCRIPT,
    NONCE_LIMIT_SCRIPT,
)

if TYPE_CHECKING:
    from authgate.config.model import RedisSettings

log = logging.getLogger(__name__)

_NONCE_OUTCOMES = {
    0: NonceOutcome.FRESH,
    1: NonceOutcome.REPLAYED,
    3: NonceOutcome.RATE_LIMITED,
    2: NonceOutcome.BEFORE_EPOCH,
}


class RedisNonceStore:
    """Nonces consumed by one Lua script: epoch check and ``SET NX PX`` together.

    The epoch markers are primed before the first nonce is consumed: at start-up, or, if
    Redis could not be reached then, by the first consume (so a new credential's first
    request in Cluster still meets a marker that predates it).
    """

    def __init__(self, conn: RedisConnection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock
        self._primed = False
        self._priming = asyncio.Lock()

    async def _ensure_primed(self) -> None:
        async with self._priming:
            if not self._primed:
                await self.prime()

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
        if not self._primed:
            await self._ensure_primed()
        tag = hash_tag(scope)
        nonce_key = self._conn.key(f"nonce:{tag}:{nonce}")
        keys = [nonce_key, self._conn.epoch_key(tag)]
        args: list[Any] = [self._clock.now_ms(), max(1, ttl_ms), signed_at_ms]
        if audit is not None and audit_cap > 0:
            keys.append(audit_key(self._conn, scope))
            args += [json.dumps(dict(audit), separators=(",", ":")), audit_cap]
        code = await self._conn.run_acked(self._conn.nonce_script, keys, args)
        return _NONCE_OUTCOMES[int(code)]

    async def prime(self) -> None:
        """Bring every epoch marker up to date: the one marker, or in Cluster each slot's."""
        script = self._conn.epoch_prime_script
        now = self._clock.now_ms()
        if not self._conn.cluster:
            key = self._conn.epoch_key("")
            await self._conn.run(lambda: script(keys=[key, key], args=[now]))
            self._primed = True
            return
        keys = [self._conn.slot_epoch_key(slot) for slot in range(REDIS_CLUSTER_HASH_SLOTS)]

        async def prime_all() -> None:
            # A cluster pipeline refuses EVALSHA: one plain pipeline per slot's master.
            by_node: dict[int, tuple[Redis, list[str]]] = {}
            for key in keys:
                node = await self._conn.acking_client(key)
                by_node.setdefault(id(node), (node, []))[1].append(key)
            for node, node_keys in by_node.values():
                await node.script_load(script.script)
                async with node.pipeline(transaction=False) as pipe:
                    for key in node_keys:
                        pipe.evalsha(script.sha, 2, key, key, now)
                    await pipe.execute()

        # Sixteen thousand small scripts take longer than one call's deadline.
        await self._conn.run(prime_all, deadline=30.0)
        self._primed = True

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
        if not self._primed:
            await self._ensure_primed()
        tag = hash_tag(scope)
        keys = [
            self._conn.key(f"nonce:{tag}:{nonce}"),
            self._conn.epoch_key(tag),
            audit_key(self._conn, scope),
            *(self._conn.key(f"rl:{tag}:{c.key}") for c in limits),
        ]
        cap = audit_cap if audit is not None else 0
        args: list[Any] = [
            self._clock.now_ms(),
            max(1, ttl_ms),
            signed_at_ms,
            json.dumps(dict(audit or {}), separators=(",", ":")),
            cap,
        ]
        for check in limits:
            args += [check.limit, check.period_ms]
        reply = await self._conn.run_acked(self._conn.nonce_limit_script, keys, args)
        return _NONCE_OUTCOMES[int(reply[0])], _limit_results(reply[1:], limits)


def _limit_results(flat: Sequence[Any], checks: Sequence[RateLimitCheck]) -> list[RateLimitResult]:
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
    """Pair records plus their lock-out counters, ``<prefix>pairfail:{<id>}``."""

    def __init__(self, conn: RedisConnection) -> None:
        super().__init__(conn, "pair")

    def _failures_key(self, pair_id: str) -> str:
        return self._conn.key(f"pairfail:{hash_tag(pair_id)}")

    def _companion_keys(self, record_id: str) -> list[str]:
        return [self._failures_key(record_id)]

    async def record_failure(self, pair_id: str) -> int:
        count = await self._conn.run(lambda: self._conn.client.incr(self._failures_key(pair_id)))
        return int(count)

    async def reset_failures(self, pair_id: str) -> None:
        await self._conn.run(lambda: self._conn.client.delete(self._failures_key(pair_id)))


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
        allowed, remaining, retry_after, reset_after = await self._conn.run(
            lambda: self._conn.gcra_script(keys=[redis_key], args=args)
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
        reply = await self._conn.run(lambda: self._conn.gcra_many_script(keys=keys, args=args))
        return _limit_results(reply[1:], checks)


class RedisAuditStore:
    """Capped lists: ``LPUSH`` then ``LTRIM`` in one transaction (one key, so one slot)."""

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn

    def _key(self, stream: str) -> str:
        return audit_key(self._conn, stream)

    async def append(self, stream: str, entry: Mapping[str, Any], *, cap: int) -> None:
        value = json.dumps(dict(entry), separators=(",", ":"))
        key = self._key(stream)

        async def write() -> None:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                if cap > 0:
                    pipe.lpush(key, value)
                    pipe.ltrim(key, 0, cap - 1)
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


class RedisEventBus:
    """Pub/sub on ``<p>events:<channel>`` with a watchdog that proves delivery end to end.

    A listener task subscribes, runs the resync handlers, then marks the bus ``live``. Every
    ``heartbeat_seconds`` it publishes to a channel of its own through the ordinary client
    and expects that message back over the subscription: a frozen server (the publish
    times out), a dropped connection, or a node that no longer relays, all stop the
    heartbeats, and after three unanswered ones ``live`` turns ``False`` and the task
    resubscribes with back-off.
    Consumers check the store per request while not live.

    The heartbeat is an ordinary published message, not a ``PING`` on the subscription:
    redis-py parses a subscribed ``PING``'s reply differently by version and protocol (8.x
    with RESP3 and ``decode_responses`` turns ``PONG`` into ``{'type': 'P', ...}``), and a
    message that travels the same road as real ones is the better proof.

    In Cluster mode messages are published and subscribed on one node, the master of an
    agreed slot (see :meth:`_publisher`), found again in the slot map at each
    (re)subscription.
    """

    def __init__(self, conn: RedisConnection, *, heartbeat_seconds: float = 1.0) -> None:
        self._conn = conn
        self._heartbeat = heartbeat_seconds
        self._handlers: dict[str, list[EventHandler]] = {}
        self._resync: list[ResyncHandler] = []
        self._live = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_channel = self._channel(f"_heartbeat:{uuid.uuid4().hex}")
        self.subscriptions = 0
        """Subscriptions that became live; every one after the first followed a loss."""

    @property
    def live(self) -> bool:
        return self._live

    @property
    def resubscriptions(self) -> int:
        """Times the bus was lost and became live again."""
        return max(0, self.subscriptions - 1)

    def subscribe(self, channel: str, handler: EventHandler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def on_resync(self, handler: ResyncHandler) -> None:
        self._resync.append(handler)

    def _channel(self, name: str) -> str:
        return self._conn.key(f"events:{name}")

    async def publish(self, channel: str, message: str) -> None:
        target = self._channel(channel)

        async def send() -> None:
            await (await self._publisher()).publish(target, message)

        await self._conn.run(send)

    async def _publisher(self) -> Redis | RedisCluster:
        """Where messages are published and subscriptions are held: the client itself, or
        in Cluster the master of one slot every process agrees on (the slot of the key
        ``<p>events``). ``PUBLISH`` answers once the message is handed to the subscribers
        of the node it ran on, so a revocation reaches every replica before the revoking
        call returns; a message published on another node would cross the cluster bus
        after that."""
        client = self._conn.client
        if not isinstance(client, RedisCluster):
            return client
        return await self._conn.acking_client(self._conn.key("events"))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="authgate-events")

    async def close(self) -> None:
        """Stop listening.

        The listener also checks ``_closing``: a cancellation that lands as a deadline
        fires inside redis-py can come out as ``TimeoutError``, which alone would read as
        "resubscribe" and keep the task alive.
        """
        self._closing = True
        self._live = False
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()  # again if a cancellation was swallowed
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled():
            task.exception()  # retrieved: a listener that ended on an error is not an error now

    async def _listen_forever(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: resubscribe
                if self._closing:
                    return
                log.warning(
                    "event subscription lost",
                    extra={"event": "events_lost", "error": type(exc).__name__},
                )
                self._conn.slot_map_suspect()
            else:
                backoff = 0.05
            self._live = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _listen_once(self) -> None:
        names = {self._channel(c): c for c in self._handlers}
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._heartbeat * 3):
            pubsub = (await self._publisher()).pubsub()
        try:
            async with asyncio.timeout(self._heartbeat * 3):
                await pubsub.subscribe(self._heartbeat_channel, *names)
                for handler in self._resync:
                    await handler()
            self._live = True
            self.subscriptions += 1
            # Heartbeats sent and not yet seen back. Counted in heartbeats, not seconds: an
            # event loop held up by other work sends none meanwhile, so it is not a loss.
            unanswered = 0
            next_beat = loop.time()
            while not self._closing:
                now = loop.time()
                if now >= next_beat:
                    if unanswered >= 3:
                        raise TimeoutError("event subscription heartbeat missed")
                    async with asyncio.timeout(self._heartbeat * 3):
                        await (await self._publisher()).publish(self._heartbeat_channel, "1")
                    unanswered += 1
                    next_beat = now + self._heartbeat
                wait = min(0.2, max(0.001, next_beat - loop.time()))
                message = await pubsub.get_message(timeout=wait)
                if message is None or message.get("type") != "message":
                    continue
                unanswered = 0
                channel = names.get(str(message["channel"]))
                if channel is not None:
                    for deliver in self._handlers.get(channel, ()):
                        deliver(str(message["data"]))
        finally:
            self._live = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py


class RedisStores:
    """Every store on one Redis deployment (standalone, Sentinel or Cluster)."""

    backend = "redis"

    def __init__(self, settings: RedisSettings, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        self._conn = RedisConnection(settings)
        self.nonces: NonceStore = RedisNonceStore(self._conn, clock)
        self.revocations: RevocationStore = RedisRevocationStore(self._conn, clock)
        self.pairs: PairStore = RedisPairStore(self._conn)
        self.api_keys: RecordStore = RedisRecordStore(self._conn, "apikey")
        self.signing_keys: RecordStore = RedisRecordStore(self._conn, "signingkey")
        self.users: RecordStore = RedisRecordStore(self._conn, "user")
        self.rate_limits: RateLimitStore = RedisRateLimitStore(self._conn, clock)
        self.audit: AuditStore = RedisAuditStore(self._conn)
        self._events = RedisEventBus(self._conn, heartbeat_seconds=settings.event_heartbeat_seconds)
        self.events: EventBus = self._events

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless Redis answers within the deadline."""
        await self._conn.run(self._conn.client.ping)

    async def close(self) -> None:
        """Stop the event listener; close the client and its connection pool."""
        await self._events.close()
        await self._conn.close()


__all__ = [
    "EPOCH_PRIME_SCRIPT",
    "GCRA_MANY_SCRIPT",
    "GCRA_SCRIPT",
    "NONCE_CONSUME_SCRIPT",
    "NONCE_LIMIT_SCRIPT",
    "RedisAuditStore",
    "RedisConnection",
    "RedisEventBus",
    "RedisNonceStore",
    "RedisPairStore",
    "RedisRateLimitStore",
    "RedisRecordStore",
    "RedisRevocationStore",
    "RedisStores",
    "audit_key",
    "hash_tag",
    "slot_tag",
]
