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
    <p>epoch                     store epoch, ms (standalone, Sentinel)
    <p>epoch:{<scope>}           store epoch of one scope, ms (Cluster)
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

Store epoch. Redis may lose its data (a restart without persistence, a flush). The epoch
marker records when the current data set began; a missing marker is rewritten with the
current time by the nonce script itself, and a request signed before the epoch is refused
with ``BEFORE_EPOCH``, since its nonce may have been forgotten. On one server or behind
Sentinel the marker is global (``<p>epoch``). In Cluster mode a Lua script may only touch
keys of one slot, so the marker is per scope (``<p>epoch:{<scope>}``, in the nonce's slot)
and a missing marker is created at the first use of that scope: after data loss the first
request of each scope is refused if it was signed before that moment. The marker cannot see
a *partial* loss (a failover to a replica that had not yet received the latest nonces while
it still holds the old marker); the replay window bounds that exposure.

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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from authgate.errors import StoreUnavailable
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

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from authgate.config.model import RedisSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
Client = Redis | RedisCluster

# Shared Lua: the store-epoch check of both nonce scripts (KEYS[2] the epoch key, ARGV[1]
# now_ms, ARGV[3] signed_at_ms). A missing marker is rewritten with now: the data set began
# now, and anything signed earlier may have been spent in the data that was lost.
_EPOCH_LUA = """
local function signed_before_epoch()
  local epoch = redis.call('GET', KEYS[2])
  if not epoch then
    redis.call('SET', KEYS[2], ARGV[1])
    epoch = ARGV[1]
  end
  return tonumber(ARGV[3]) < tonumber(epoch)
end
"""

# KEYS[1] nonce key, KEYS[2] epoch key (same slot); ARGV now_ms, ttl_ms, signed_at_ms.
# Optional KEYS[3] audit list (same slot: its stream is the nonce's scope) with ARGV[4]
# the JSON entry and ARGV[5] the cap; appended only when the nonce is fresh.
# Returns 0 fresh, 1 replayed, 2 signed before the epoch (the nonce is then left unspent).
NONCE_CONSUME_SCRIPT = (
    _EPOCH_LUA
    + """
if signed_before_epoch() then
  return 2
end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then
  if KEYS[3] then
    redis.call('LPUSH', KEYS[3], ARGV[4])
    redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
  end
  return 0
end
return 1
"""
)

# KEYS[1] rate-limit key; ARGV now_ms, limit, period_ms, cost.
# Mirrors authgate.stores.memory.gcra() operation for operation (Lua numbers are the same
# IEEE doubles as Python floats); the TAT is stored with 17 significant digits so it
# round-trips exactly. Returns {allowed, remaining, retry_after_ms, reset_after_ms}.
GCRA_SCRIPT = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local interval = period / limit
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored), now)
end
local new_tat = tat + interval * cost
local allow_at = new_tat - period
if allow_at > now + 1e-6 then
  local remaining = math.max(0, math.floor((period - (tat - now)) / interval + 1e-9))
  return {0, remaining, math.ceil(allow_at - now), math.ceil(tat - now)}
end
local remaining = math.max(0, math.floor((period - (new_tat - now)) / interval + 1e-9))
local ttl = math.max(1, math.ceil(new_tat) - now + 1)
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', string.format('%d', ttl))
return {1, remaining, 0, math.ceil(new_tat - now)}
"""

# Shared Lua: GCRA over a run of KEYS, all or nothing, with gcra()'s arithmetic. Each
# decision is {allowed, remaining, retry_after_ms, reset_after_ms, new_tat, key}.
_GCRA_MANY_LUA = """
local function gcra_many(now, first, count, argbase)
  local decided = {}
  local ok = true
  for i = 0, count - 1 do
    local key = KEYS[first + i]
    local limit = tonumber(ARGV[argbase + 2 * i])
    local period = tonumber(ARGV[argbase + 2 * i + 1])
    local interval = period / limit
    local tat = now
    local stored = redis.call('GET', key)
    if stored then
      tat = math.max(tonumber(stored), now)
    end
    local new_tat = tat + interval
    local allow_at = new_tat - period
    if allow_at > now + 1e-6 then
      ok = false
      local remaining = math.max(0, math.floor((period - (tat - now)) / interval + 1e-9))
      decided[i + 1] = {0, remaining, math.ceil(allow_at - now), math.ceil(tat - now), new_tat, key}
    else
      local remaining = math.max(0, math.floor((period - (new_tat - now)) / interval + 1e-9))
      decided[i + 1] = {1, remaining, 0, math.ceil(new_tat - now), new_tat, key}
    end
  end
  return ok, decided
end
local function commit(now, decided)
  for _, d in ipairs(decided) do
    local ttl = math.max(1, math.ceil(d[5]) - now + 1)
    redis.call('SET', d[6], string.format('%.17g', d[5]), 'PX', string.format('%d', ttl))
  end
end
local function flatten(code, decided)
  local out = {code}
  for _, d in ipairs(decided) do
    table.insert(out, d[1])
    table.insert(out, d[2])
    table.insert(out, d[3])
    table.insert(out, d[4])
  end
  return out
end
"""

# KEYS: rate-limit keys (one slot); ARGV[1] now_ms, then limit, period_ms per key.
# Returns {1 if all admitted else 0, then allowed, remaining, retry, reset per key}.
GCRA_MANY_SCRIPT = (
    _GCRA_MANY_LUA
    + """
local now = tonumber(ARGV[1])
local ok, decided = gcra_many(now, 1, #KEYS, 2)
if ok then
  commit(now, decided)
  return flatten(1, decided)
end
return flatten(0, decided)
"""
)

# KEYS[1] nonce, KEYS[2] epoch, KEYS[3] audit list, KEYS[4..] rate-limit keys (one slot).
# ARGV[1] now_ms, [2] ttl_ms, [3] signed_at_ms, [4] audit JSON, [5] audit cap (0: none),
# then limit, period_ms per rate-limit key. The limits are charged, and the nonce spent,
# only when the nonce is fresh and every limit admits the request.
# Returns {code, then allowed, remaining, retry, reset per key}; code 0 fresh,
# 1 replayed, 2 before the epoch, 3 rate limited (nonce left unspent).
NONCE_LIMIT_SCRIPT = (
    _EPOCH_LUA
    + _GCRA_MANY_LUA
    + """
local now = tonumber(ARGV[1])
if signed_before_epoch() then
  return {2}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {1}
end
local ok, decided = gcra_many(now, 4, #KEYS - 3, 6)
if not ok then
  return flatten(3, decided)
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
commit(now, decided)
local cap = tonumber(ARGV[5])
if cap > 0 then
  redis.call('LPUSH', KEYS[3], ARGV[4])
  redis.call('LTRIM', KEYS[3], 0, cap - 1)
end
return flatten(0, decided)
"""
)

_NONCE_OUTCOMES = {
    0: NonceOutcome.FRESH,
    1: NonceOutcome.REPLAYED,
    3: NonceOutcome.RATE_LIMITED,
    2: NonceOutcome.BEFORE_EPOCH,
}


def hash_tag(value: str) -> str:
    """``value`` as a Cluster hash tag: ``{value}`` with ``%``, ``{`` and ``}`` encoded."""
    return "{" + value.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") + "}"


class RedisConnection:
    """One client, the key prefix, and the deadline every store call runs under."""

    def __init__(self, settings: RedisSettings) -> None:
        self.prefix = settings.key_prefix
        self.cluster = settings.mode == "cluster"
        self._deadline = settings.deadline_seconds
        self._sentinel: Sentinel | None = None
        self.client: Client = self._build(settings)
        self.nonce_script: AsyncScript = self.client.register_script(NONCE_CONSUME_SCRIPT)
        self.gcra_script: AsyncScript = self.client.register_script(GCRA_SCRIPT)
        self.gcra_many_script: AsyncScript = self.client.register_script(GCRA_MANY_SCRIPT)
        self.nonce_limit_script: AsyncScript = self.client.register_script(NONCE_LIMIT_SCRIPT)

    def _build(self, settings: RedisSettings) -> Client:
        url = settings.url.get_secret_value()
        options: dict[str, Any] = {
            "socket_connect_timeout": settings.connect_timeout_seconds,
            "socket_timeout": settings.socket_timeout_seconds,
            # Retry only on connection errors (a stale pooled connection): retrying after
            # a timeout would repeat a write whose outcome is unknown.
            "retry": Retry(NoBackoff(), settings.retries, (RedisConnectionError,)),
            "max_connections": settings.max_connections,
            "decode_responses": True,
        }
        if settings.mode == "cluster":
            return RedisCluster.from_url(url, **options)
        if settings.mode == "sentinel":
            return self._build_sentinel(settings, url, options)
        pool = BlockingConnectionPool.from_url(url, timeout=settings.deadline_seconds, **options)
        return Redis.from_pool(pool)

    def _build_sentinel(self, settings: RedisSettings, url: str, options: dict[str, Any]) -> Redis:
        # The URL carries the master's credentials, database and scheme; its host is unused.
        parsed = parse_url(url)
        master_options = dict(options)
        for name in ("username", "password", "db"):
            if name in parsed:
                master_options[name] = parsed[name]
        if parsed.get("connection_class") is SSLConnection:
            master_options["ssl"] = True
        # redis-py leaves Sentinel.__init__ unannotated.
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [_host_port(address) for address in settings.sentinels],
            sentinel_kwargs={
                "socket_connect_timeout": settings.connect_timeout_seconds,
                "socket_timeout": settings.socket_timeout_seconds,
                "retry": options["retry"],
                "decode_responses": True,
            },
        )
        return cast(Redis, self._sentinel.master_for(settings.sentinel_service, **master_options))

    def key(self, suffix: str) -> str:
        """``suffix`` under the configured prefix."""
        return self.prefix + suffix

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Await ``operation()`` within the deadline; any Redis failure is ``StoreUnavailable``."""
        try:
            async with asyncio.timeout(self._deadline):
                return await operation()
        except (RedisError, RedisClusterException, OSError) as exc:
            # OSError covers TimeoutError (the deadline) and raw socket errors. The message
            # stays generic: the cause may name the server, never the URL or its password.
            raise StoreUnavailable() from exc

    async def close(self) -> None:
        """Close the client, its pool, and any Sentinel connections."""
        try:
            await self.client.aclose()
        finally:
            if self._sentinel is not None:
                await self._sentinel.aclose()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def audit_key(conn: RedisConnection, stream: str) -> str:
    """An audit list's key; hash-tagged so a nonce of the same scope shares its slot."""
    return conn.key(f"audit:{hash_tag(stream)}")


class RedisNonceStore:
    """Nonces consumed by one Lua script: epoch check and ``SET NX PX`` together."""

    def __init__(self, conn: RedisConnection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock

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
        tag = hash_tag(scope)
        nonce_key = self._conn.key(f"nonce:{tag}:{nonce}")
        epoch_key = self._conn.key(f"epoch:{tag}" if self._conn.cluster else "epoch")
        keys = [nonce_key, epoch_key]
        args: list[Any] = [self._clock.now_ms(), max(1, ttl_ms), signed_at_ms]
        if audit is not None and audit_cap > 0:
            keys.append(audit_key(self._conn, scope))
            args += [json.dumps(dict(audit), separators=(",", ":")), audit_cap]
        code = await self._conn.run(lambda: self._conn.nonce_script(keys=keys, args=args))
        return _NONCE_OUTCOMES[int(code)]

    async def prime(self) -> None:
        if self._conn.cluster:
            return  # per-scope markers are created at first use (see the module docstring)
        epoch_key = self._conn.key("epoch")
        now = self._clock.now_ms()
        await self._conn.run(lambda: self._conn.client.set(epoch_key, now, nx=True))

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
        tag = hash_tag(scope)
        keys = [
            self._conn.key(f"nonce:{tag}:{nonce}"),
            self._conn.key(f"epoch:{tag}" if self._conn.cluster else "epoch"),
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
        reply = await self._conn.run(lambda: self._conn.nonce_limit_script(keys=keys, args=args))
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
    """Pub/sub on ``<p>events:<channel>`` with a watchdog.

    A listener task subscribes, runs the resync handlers, then marks the bus ``live``. It
    PINGs over the subscription every ``heartbeat_seconds``; when a PONG is late (a frozen
    server never raises) or the connection drops, ``live`` turns ``False`` at once and the
    task resubscribes with back-off. Consumers check the store per request while not live.
    """

    def __init__(self, conn: RedisConnection, *, heartbeat_seconds: float = 1.0) -> None:
        self._conn = conn
        self._heartbeat = heartbeat_seconds
        self._handlers: dict[str, list[EventHandler]] = {}
        self._resync: list[ResyncHandler] = []
        self._live = False
        self._task: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        return self._live

    def subscribe(self, channel: str, handler: EventHandler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def on_resync(self, handler: ResyncHandler) -> None:
        self._resync.append(handler)

    def _channel(self, name: str) -> str:
        return self._conn.key(f"events:{name}")

    async def publish(self, channel: str, message: str) -> None:
        target = self._channel(channel)
        await self._conn.run(lambda: self._conn.client.publish(target, message))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="authgate-events")

    async def close(self) -> None:
        """Stop listening."""
        self._live = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen_forever(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: resubscribe
                log.warning(
                    "event subscription lost",
                    extra={"event": "events_lost", "error": type(exc).__name__},
                )
            self._live = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _listen_once(self) -> None:
        names = {self._channel(c): c for c in self._handlers}
        pubsub = self._conn.client.pubsub()
        try:
            async with asyncio.timeout(self._heartbeat * 3):
                if names:
                    await pubsub.subscribe(*names)
                else:
                    await pubsub.subscribe(self._channel("_heartbeat"))
                for handler in self._resync:
                    await handler()
            self._live = True
            loop = asyncio.get_running_loop()
            last_pong = next_ping = loop.time()
            while True:
                now = loop.time()
                if now >= next_ping:
                    await pubsub.ping()
                    next_ping = now + self._heartbeat
                if now - last_pong > self._heartbeat * 3:
                    raise TimeoutError("event subscription heartbeat missed")
                message = await pubsub.get_message(timeout=min(0.2, self._heartbeat))
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "pong" or (kind == "message" and message.get("data") == "PING"):
                    last_pong = loop.time()
                elif kind == "message":
                    last_pong = loop.time()
                    channel = names.get(str(message["channel"]), "")
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
    "hash_tag",
]
