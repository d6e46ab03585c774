"""Exactly once survives Redis losing data, on real ``redis-server`` processes.

Each test accepts a nonce, makes Redis lose it the way production loses data (a restart from
an RDB snapshot or AOF older than the nonce, a flush, the promotion of a replica that had not
received it), and replays the same request: it must never be ``FRESH`` again. The marker
that recorded the store epoch comes back with the old data in most of these cases, so only
the server's changed replication id tells authgate to move the epoch forward.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from authgate.config.model import RedisSettings
from authgate.errors import StoreUnavailable
from authgate.stores.base import NonceOutcome
from authgate.stores.redis import RedisStores

from .conftest import RedisServer

pytestmark = pytest.mark.redis

TTL_MS = 60_000
SCOPE = "pair-1"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def open_stores(server: RedisServer, **overrides: Any) -> RedisStores:
    """authgate's stores on ``server`` (a long deadline: these tests count outcomes only)."""
    overrides.setdefault("deadline_seconds", 2.0)
    settings = RedisSettings(url=SecretStr(server.url), key_prefix="loss:", **overrides)
    return RedisStores(settings)


async def consume_when_back(stores: RedisStores, nonce: str, signed_at_ms: int) -> NonceOutcome:
    """Consume, retrying while the server comes back (connections to the old process fail)."""
    for _ in range(100):
        try:
            return await stores.nonces.consume(
                SCOPE, nonce, ttl_ms=TTL_MS, signed_at_ms=signed_at_ms
            )
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("the store did not come back")


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, decode_responses=True)


@pytest.fixture
def persistent_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A dedicated server with the persistence named by the test's parameter."""
    args = {
        "rdb": ("--save", "3600 1"),
        "aof": ("--appendonly", "yes", "--appendfsync", "everysec"),
    }[request.param]
    server = RedisServer(tmp_path, *args).start()
    try:
        yield server
    finally:
        server.terminate()


@pytest.fixture
async def stores_on() -> AsyncIterator[list[RedisStores]]:
    """A list the test fills with the stores it opens; all closed afterwards."""
    opened: list[RedisStores] = []
    yield opened
    for stores in opened:
        await asyncio.wait_for(stores.close(), 10)


@pytest.mark.parametrize("persistent_redis", ["rdb", "aof"], indirect=True)
async def test_replay_refused_after_restart_from_older_persistence(
    persistent_redis: RedisServer, stores_on: list[RedisStores]
) -> None:
    """Restarted from an RDB snapshot or AOF taken before the nonce was spent: still refused."""
    server = persistent_redis
    stores = open_stores(server)
    stores_on.append(stores)
    await stores.nonces.prime()
    signed_at = now_ms()
    backup = server.directory.parent / f"{server.directory.name}-backup"
    with admin(server) as client:
        client.save()  # the RDB file, or the AOF up to here, is the "older" data set
        assert client.get("loss:epoch"), "the marker is in the data that comes back"
    shutil.copytree(server.directory, backup)
    assert await consume_when_back(stores, "n", signed_at) is NonceOutcome.FRESH

    server.kill()
    shutil.rmtree(server.directory)
    shutil.copytree(backup, server.directory)
    server.start()
    with admin(server) as client:
        assert client.get("loss:epoch"), "the old marker came back"
        assert not client.exists("loss:nonce:{pair-1}:n"), "the spent nonce did not"

    assert await consume_when_back(stores, "n", signed_at) is NonceOutcome.BEFORE_EPOCH
    assert await consume_when_back(stores, "n", signed_at) is NonceOutcome.BEFORE_EPOCH
    # Requests signed from now on are served as usual.
    assert await consume_when_back(stores, "n2", now_ms() + 1) is NonceOutcome.FRESH


async def test_replay_refused_after_a_flush(
    redis_server: RedisServer, stores_on: list[RedisStores]
) -> None:
    """FLUSHALL takes the nonces and the marker: the replay is refused, new requests pass."""
    stores = open_stores(redis_server)
    stores_on.append(stores)
    await stores.nonces.prime()
    signed_at = now_ms()
    assert await consume_when_back(stores, "n", signed_at) is NonceOutcome.FRESH
    with admin(redis_server) as client:
        client.flushall()
    await asyncio.sleep(0.002)  # the replay arrives after the loss, as it would
    assert await consume_when_back(stores, "n", signed_at) is NonceOutcome.BEFORE_EPOCH
    assert await consume_when_back(stores, "n2", now_ms() + 1) is NonceOutcome.FRESH


@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and one replica of it, in sync."""
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    master = RedisServer(tmp_path / "m").start()
    replica = RedisServer(tmp_path / "r", "--replicaof", "127.0.0.1", str(master.port)).start()
    try:
        with admin(replica) as client:
            for _ in range(200):
                if client.info("replication").get("master_link_status") == "up":
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("replica did not link")
        yield master, replica
    finally:
        replica.terminate()
        master.terminate()


def wait_replicated(replica: RedisServer, key: str) -> None:
    with admin(replica) as client:
        for _ in range(200):
            if client.exists(key):
                return
            time.sleep(0.02)
    raise AssertionError(f"{key} never reached the replica")


async def test_promoted_replica_that_lagged_refuses_the_replay(
    master_and_replica: tuple[RedisServer, RedisServer], stores_on: list[RedisStores]
) -> None:
    """A replica that never received the nonce is promoted: the replay is refused there."""
    master, replica = master_and_replica
    on_master = open_stores(master, replica_acks=0)
    stores_on.append(on_master)
    await on_master.nonces.prime()
    wait_replicated(replica, "loss:epoch")
    signed_at = now_ms()

    # The link is cut while the replica cannot reconnect: it lags behind from here on.
    replica.freeze()
    with admin(master) as client:
        client.client_kill_filter(_type="replica")
    assert await consume_when_back(on_master, "n", signed_at) is NonceOutcome.FRESH
    master.kill()
    replica.thaw()
    with admin(replica) as client:
        client.execute_command("REPLICAOF", "NO", "ONE")
        assert client.get("loss:epoch"), "the promoted replica holds the old marker"
        assert not client.exists("loss:nonce:{pair-1}:n"), "but not the nonce"

    on_replica = open_stores(replica, replica_acks=0)
    stores_on.append(on_replica)
    assert await consume_when_back(on_replica, "n", signed_at) is NonceOutcome.BEFORE_EPOCH
    assert await consume_when_back(on_replica, "n2", now_ms() + 1) is NonceOutcome.FRESH


async def test_nonce_no_replica_acknowledged_is_not_accepted(
    master_and_replica: tuple[RedisServer, RedisServer], stores_on: list[RedisStores]
) -> None:
    """With replica_acks 1, a write only the master holds is a 503, never an accepted nonce."""
    master, replica = master_and_replica
    stores = open_stores(master, replica_acks=1, replica_ack_timeout_seconds=0.2)
    stores_on.append(stores)
    await stores.nonces.prime()
    signed_at = now_ms()
    assert await consume_when_back(stores, "a", signed_at) is NonceOutcome.FRESH
    wait_replicated(replica, "loss:nonce:{pair-1}:a")

    replica.freeze()
    with pytest.raises(StoreUnavailable):
        await stores.nonces.consume(SCOPE, "b", ttl_ms=TTL_MS, signed_at_ms=signed_at)
    with pytest.raises(StoreUnavailable):
        await stores.nonces.consume_limited(
            SCOPE, "c", ttl_ms=TTL_MS, signed_at_ms=signed_at, limits=()
        )
    replica.thaw()
    # Once the replica acknowledges again, new nonces are accepted; the unacknowledged one
    # stays spent (a retry of the same bytes is a replay; clients retry with a new nonce).
    assert await consume_when_back(stores, "d", now_ms()) is NonceOutcome.FRESH
    assert await consume_when_back(stores, "b", signed_at) is NonceOutcome.REPLAYED
