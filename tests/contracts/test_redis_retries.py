"""A nonce write whose reply is lost, then re-sent by redis-py, recognises itself.

redis-py re-sends a command (or a whole pipeline) once after a connection error
(``stores.redis.retries``). When the first send ran on the server and only its reply was
lost (a killed connection, a failover, a network blip), the retry finds the nonce already
spent. Each store call stores a token of its own as the nonce's value, so the retry is
fresh again, audited and charged once, while any other call with that nonce is a replay.

A proxy of the test's own sits between the client and a dedicated master with one replica
(so the acknowledged path really ``WAIT``s): armed, it lets the server run the next script
and closes the client's connection instead of relaying the reply. The three code paths of
:class:`~authgate.stores.redis.RedisConnection` are each exercised: a plain call, the
auto-pipeline, and the acknowledged pipeline (script plus ``WAIT``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from authgate.errors import StoreUnavailable
from authgate.stores.base import ManualClock, NonceOutcome, RateLimitCheck, Stores
from authgate.stores.redis import NONCE_CONSUME_SCRIPT, NONCE_LIMIT_SCRIPT, RedisStores
from tests.redis_topology import RedisNode, wait_until

from .conftest import redis_settings

# Every allowed redis-py re-sends once after a lost reply: redis-py 5 only because the
# client options list the error in retry_on_error too (stores/redis/topology.py).
pytestmark = [pytest.mark.redis]

TTL_MS = 60_000
SCOPE = "pair-1"
LIMIT = RateLimitCheck(key="credential", limit=5, period_ms=60_000)

# The three ways RedisConnection sends a nonce script: its own call, the auto-pipeline,
# and the pipeline of the script with its WAIT (replica_acks).
PATHS = [
    pytest.param({"auto_pipeline": False}, id="plain"),
    pytest.param({"auto_pipeline": True}, id="auto-pipelined"),
    pytest.param(
        # The WAIT's timeout below the socket timeout (0.5 s), generous for a busy runner.
        {"auto_pipeline": True, "replica_acks": 1, "replica_ack_timeout_seconds": 0.4},
        id="acked",
    ),
]


class ReplyLosingProxy:
    """A TCP proxy to Redis that, when armed, loses the reply of the next script run.

    The server receives and runs the script; its reply reaches the proxy, which then closes
    both connections without relaying it (``NOSCRIPT`` answers pass: no script ran). The
    client sees a closed connection, redis-py reconnects through the proxy and re-sends.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = False
        self.lost = 0  # replies lost so far
        self.on_lost: Callable[[], Awaitable[None]] | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 (``port``)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every relayed connection."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers |= {client_w, server_w}
        script_sent = False  # the last bytes from the client held a script call

        async def upstream() -> None:
            nonlocal script_sent
            while data := await client_r.read(65536):
                script_sent = b"\r\nEVALSHA\r\n" in data
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            nonlocal script_sent
            while data := await server_r.read(65536):
                # The first bytes of the answer to a script call: its reply.
                ran = script_sent and not data.startswith(b"-NOSCRIPT")
                script_sent = False
                if self.armed and ran:
                    self.armed = False
                    self.lost += 1
                    if self.on_lost is not None:
                        await self.on_lost()
                    return  # the reply dies with the connection
                client_w.write(data)
                await client_w.drain()

        relays = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            for writer in (client_w, server_w):
                writer.close()
                self._writers.discard(writer)
            self._tasks.discard(task)


def acknowledged(master: RedisNode) -> bool:
    """Whether a write to ``master`` is acknowledged by a replica at once: the replica is
    linked and online (after a sync the master waits for its first acknowledgement, up to
    a second, before ``WAIT`` counts it)."""
    client = master.client()
    try:
        client.set("authgate-test:retries:probe", "1", px=1000)
        return int(client.wait(1, 100)) == 1
    finally:
        client.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisNode, RedisNode]]:
    """A master of this module's own and its one linked replica."""
    directory: Path = tmp_path_factory.mktemp("retries")
    master = RedisNode(directory).start()
    replica = RedisNode(directory, args=["--replicaof", "127.0.0.1", str(master.port)])
    try:
        replica.start()
        wait_until(lambda: acknowledged(master), timeout=20, what="replica acknowledging")
        yield master, replica
    finally:
        replica.terminate()
        master.terminate()


@pytest.fixture
async def proxy(servers: tuple[RedisNode, RedisNode]) -> AsyncIterator[ReplyLosingProxy]:
    """The reply-losing proxy in front of the master."""
    losing = ReplyLosingProxy(servers[0].port)
    await losing.start()
    try:
        yield losing
    finally:
        await losing.close()


@pytest.fixture
async def admin(servers: tuple[RedisNode, RedisNode]) -> AsyncIterator[Redis]:
    """A client of the master that bypasses the proxy."""
    client = Redis(port=servers[0].port, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


OpenStores = Callable[..., Awaitable[RedisStores]]


@pytest.fixture
async def open_stores(
    proxy: ReplyLosingProxy, admin: Redis, clock: ManualClock
) -> AsyncIterator[OpenStores]:
    """Opens primed stores through the proxy, all under one fresh key prefix; afterwards
    closes them and deletes the prefix's keys."""
    opened: list[RedisStores] = []
    prefix = f"authgate-test:{uuid4().hex}:"

    async def open_(**overrides: Any) -> RedisStores:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        stores = RedisStores(redis_settings(url, prefix, deadline_seconds=2.0, **overrides), clock)
        opened.append(stores)
        await stores.nonces.prime()  # the epoch script's reply is not the one to lose
        return stores

    try:
        yield open_
    finally:
        for stores in opened:
            await stores.close()
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)


Spend = Callable[[Stores, str, int], Awaitable[NonceOutcome]]


async def consume(stores: Stores, nonce: str, signed_at_ms: int) -> NonceOutcome:
    """Spend ``nonce`` of ``SCOPE`` with an audit entry."""
    return await stores.nonces.consume(
        SCOPE,
        nonce,
        ttl_ms=TTL_MS,
        signed_at_ms=signed_at_ms,
        audit={"nonce": nonce},
        audit_cap=10,
    )


async def consume_limited(stores: Stores, nonce: str, signed_at_ms: int) -> NonceOutcome:
    """Spend ``nonce`` of ``SCOPE`` with the credential's limit and an audit entry."""
    outcome, _ = await stores.nonces.consume_limited(
        SCOPE,
        nonce,
        ttl_ms=TTL_MS,
        signed_at_ms=signed_at_ms,
        limits=[LIMIT],
        audit={"nonce": nonce},
        audit_cap=10,
    )
    return outcome


SPENDS = [
    pytest.param(consume, id="consume"),
    pytest.param(consume_limited, id="consume-limited"),
]


@pytest.mark.parametrize("scripts", ["loaded", "flushed"])
@pytest.mark.parametrize("spend", SPENDS)
@pytest.mark.parametrize("path", PATHS)
async def test_a_call_whose_reply_was_lost_is_fresh_on_its_retry(
    open_stores: OpenStores,
    proxy: ReplyLosingProxy,
    admin: Redis,
    clock: ManualClock,
    path: dict[str, Any],
    spend: Spend,
    scripts: str,
) -> None:
    """The server spent the nonce, the reply was lost, redis-py re-sent: FRESH, not REPLAYED.

    ``flushed``: the server has no scripts, so the call meets ``NOSCRIPT``, loads the script
    and runs it again before the reply that is lost.
    """
    stores = await open_stores(**path)
    if scripts == "flushed":
        await admin.script_flush()
    else:
        for script in (NONCE_CONSUME_SCRIPT, NONCE_LIMIT_SCRIPT):
            await admin.script_load(script)
    proxy.armed = True
    assert await spend(stores, "n", clock.now_ms()) is NonceOutcome.FRESH
    assert proxy.lost == 1


@pytest.mark.parametrize("lost", [False, True], ids=["delivered", "lost"])
@pytest.mark.parametrize("spend", SPENDS)
@pytest.mark.parametrize("path", PATHS)
async def test_another_call_with_the_same_nonce_is_still_a_replay(
    open_stores: OpenStores,
    proxy: ReplyLosingProxy,
    clock: ManualClock,
    path: dict[str, Any],
    spend: Spend,
    lost: bool,
) -> None:
    """Whether or not the first call's reply was lost, a second call is REPLAYED, on
    this replica of authgate and on another."""
    here, there = await open_stores(**path), await open_stores(**path)
    proxy.armed = lost
    assert await spend(here, "n", clock.now_ms()) is NonceOutcome.FRESH
    assert proxy.lost == int(lost)
    assert await spend(here, "n", clock.now_ms()) is NonceOutcome.REPLAYED
    assert await spend(there, "n", clock.now_ms()) is NonceOutcome.REPLAYED


@pytest.mark.parametrize("spend", SPENDS)
@pytest.mark.parametrize("path", PATHS)
async def test_concurrent_copies_admit_exactly_one_when_a_reply_is_lost(
    open_stores: OpenStores,
    proxy: ReplyLosingProxy,
    clock: ManualClock,
    path: dict[str, Any],
    spend: Spend,
) -> None:
    """Twenty copies of one request at once, one reply lost (auto-pipelined: the whole
    pipeline's, and redis-py re-sends every script in it): exactly one FRESH."""
    stores = await open_stores(**path)
    proxy.armed = True
    outcomes = await asyncio.gather(*(spend(stores, "race", clock.now_ms()) for _ in range(20)))
    assert proxy.lost == 1
    assert outcomes.count(NonceOutcome.FRESH) == 1
    assert outcomes.count(NonceOutcome.REPLAYED) == 19


@pytest.mark.parametrize("path", PATHS)
async def test_a_retried_call_is_audited_and_charged_once(
    open_stores: OpenStores, proxy: ReplyLosingProxy, clock: ManualClock, path: dict[str, Any]
) -> None:
    """The retry appends no second audit entry and charges the limit once; it reports the
    limit as the lost reply did."""
    stores = await open_stores(**path)

    async def spend(nonce: str) -> tuple[NonceOutcome, list[Any]]:
        return await stores.nonces.consume_limited(
            SCOPE,
            nonce,
            ttl_ms=TTL_MS,
            signed_at_ms=clock.now_ms(),
            limits=[LIMIT],
            audit={"nonce": nonce},
            audit_cap=10,
        )

    proxy.armed = True
    outcome, results = await spend("first")
    assert proxy.lost == 1
    assert outcome is NonceOutcome.FRESH
    assert [(r.allowed, r.remaining, r.retry_after_ms) for r in results] == [(True, 4, 0)]
    assert results[0].reset_after_ms == LIMIT.period_ms // LIMIT.limit
    outcome, results = await spend("second")
    assert outcome is NonceOutcome.FRESH
    assert [r.remaining for r in results] == [3]  # two charges in all, not three
    assert await stores.audit.recent(SCOPE, 10) == [{"nonce": "second"}, {"nonce": "first"}]

    proxy.armed = True
    assert await consume(stores, "third", clock.now_ms()) is NonceOutcome.FRESH
    assert proxy.lost == 2
    assert [e["nonce"] for e in await stores.audit.recent(SCOPE, 10)] == [
        "third",
        "second",
        "first",
    ]


@pytest.mark.parametrize("spend", SPENDS)
@pytest.mark.parametrize("path", PATHS)
async def test_a_retry_after_the_epoch_moved_still_holds_its_own_write(
    open_stores: OpenStores,
    proxy: ReplyLosingProxy,
    admin: Redis,
    clock: ManualClock,
    path: dict[str, Any],
    spend: Spend,
) -> None:
    """A failover that kept the write moves the epoch past the request before the retry
    arrives: the retry is FRESH (its write is held), another call BEFORE_EPOCH as ever."""
    stores = await open_stores(**path)
    marker_key = stores._conn.epoch_key("")
    clock.advance(1_000)
    signed_at = clock.now_ms() - 1  # after the epoch, a moment before authgate's now

    async def another_history() -> None:
        # The marker as written under another replication id: the next script moves the
        # epoch to its now, past the request.
        at = str(await admin.get(marker_key)).split(":")[0]
        await admin.set(marker_key, f"{at}:{'0' * 40}")

    proxy.on_lost = another_history
    proxy.armed = True
    assert await spend(stores, "n", signed_at) is NonceOutcome.FRESH
    assert proxy.lost == 1
    clock.advance(1_000)
    assert await spend(stores, "n", signed_at) is NonceOutcome.BEFORE_EPOCH
    assert await spend(stores, "m", clock.now_ms()) is NonceOutcome.FRESH


@pytest.mark.parametrize("spend", SPENDS)
async def test_a_retry_still_waits_for_a_replica_to_hold_the_write(
    open_stores: OpenStores,
    proxy: ReplyLosingProxy,
    servers: tuple[RedisNode, RedisNode],
    clock: ManualClock,
    spend: Spend,
) -> None:
    """Acknowledged writes: the retry's WAIT covers the write made on the lost connection.

    The replica is frozen, so nothing is acknowledged: the retry must fail closed (503),
    not admit a write no replica holds. A WAIT only counts its own connection's writes, so
    the retry writes the key again before it.
    """
    stores = await open_stores(auto_pipeline=True, replica_acks=1)
    _, replica = servers
    assert await spend(stores, "warm", clock.now_ms()) is NonceOutcome.FRESH  # acks expected
    replica.freeze()
    try:
        proxy.armed = True
        with pytest.raises(StoreUnavailable):
            await spend(stores, "n", clock.now_ms())
        assert proxy.lost == 1
    finally:
        replica.thaw()
    # The write stands: the same call's bytes sent again are a replay, as for any 503.
    assert await spend(stores, "n", clock.now_ms()) is NonceOutcome.REPLAYED
