"""Event bus: messages reach every replica; loss of the subscription is visible as not live."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from authgate.config.model import RedisSettings
from authgate.stores.redis import RedisStores
from tests.contracts.conftest import StoreFactory
from tests.support import free_port, wait_for


async def test_publish_reaches_subscribers_after_resync(store_factory: StoreFactory) -> None:
    """Resync runs before the bus is live; then published messages are delivered."""
    stores = store_factory()
    received: list[str] = []
    order: list[str] = []

    async def resync() -> None:
        order.append("resync" if not stores.events.live else "late")

    stores.events.subscribe("pairs", received.append)
    stores.events.on_resync(resync)
    await stores.events.start()
    await wait_for(lambda: stores.events.live)
    assert order == ["resync"]
    await stores.events.publish("pairs", "p-1")
    await wait_for(lambda: received == ["p-1"])


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_message_from_one_replica_reaches_another(store_factory: StoreFactory) -> None:
    """A message published on one replica's bus reaches another's subscriber."""
    listener, sender = store_factory(), store_factory()
    received: list[str] = []
    listener.events.subscribe("revocations", received.append)
    await listener.events.start()
    await wait_for(lambda: listener.events.live)
    await sender.events.publish("revocations", "jti-1")
    await sender.events.publish("other-channel", "ignored")
    await wait_for(lambda: received == ["jti-1"])


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
async def test_bus_stays_live_on_a_healthy_server(
    store_factory: StoreFactory, protocol: int
) -> None:
    """Once live, the bus never flaps on a healthy server: 40 heartbeats, no loss, no resync.

    Regression: with redis-py 8 the watchdog mistook every reply to its subscribed PING for
    silence and resubscribed about once a second, so caches were bypassed most of the time.
    """
    stores = store_factory(event_heartbeat_seconds=0.05, protocol=protocol)
    resyncs: list[int] = []

    async def resync() -> None:
        resyncs.append(1)

    stores.events.subscribe("revocations", lambda _message: None)
    stores.events.on_resync(resync)
    await stores.events.start()
    await wait_for(lambda: stores.events.live)
    samples_not_live = 0
    for _ in range(200):  # 200 samples 10 ms apart: about 40 heartbeat periods
        await asyncio.sleep(0.01)
        samples_not_live += not stores.events.live
    assert samples_not_live == 0
    assert stores.events.resubscriptions == 0
    assert resyncs == [1]


@pytest.fixture
def dedicated_redis(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A Redis of its own, so stopping it disturbs no other test."""
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


@pytest.mark.redis
async def test_frozen_server_turns_the_bus_not_live_and_recovery_resyncs(
    dedicated_redis: tuple[int, subprocess.Popen[bytes]],
) -> None:
    """A server that stops answering is noticed by the heartbeat; on return, resync runs again."""
    port, proc = dedicated_redis
    settings = RedisSettings(url=SecretStr(f"redis://127.0.0.1:{port}/0"), key_prefix="ev:")
    stores = RedisStores(settings)
    resyncs: list[int] = []

    async def resync() -> None:
        resyncs.append(1)

    stores.events.on_resync(resync)
    try:
        await stores.events.start()
        await wait_for(lambda: stores.events.live, timeout=10)
        proc.send_signal(signal.SIGSTOP)
        await wait_for(lambda: not stores.events.live, timeout=10)
        proc.send_signal(signal.SIGCONT)
        await wait_for(lambda: stores.events.live, timeout=15)
        assert len(resyncs) >= 2
    finally:
        proc.send_signal(signal.SIGCONT)
        await asyncio.wait_for(stores.close(), 10)
