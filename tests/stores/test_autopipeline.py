"""Auto-pipelining on a real ``redis-server`` of the test's own: concurrent decisions share a
round trip, yet each gets its own atomic answer, exactly once, and failures fail closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError, ResponseError

from authgate.errors import StoreUnavailable
from authgate.stores.base import NonceOutcome, RateLimitCheck, SystemClock
from authgate.stores.redis import RedisStores
from authgate.stores.redis.autopipeline import AutoPipeline, pack_command
from tests.contracts.conftest import redis_settings
from tests.integration.conftest import RedisServer

pytestmark = pytest.mark.redis

TTL = 60_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path).start()
    try:
        yield redis
    finally:
        redis.kill()


async def _stores(server: RedisServer, **overrides: object) -> RedisStores:
    stores = RedisStores(redis_settings(server.url, "ap:", **overrides))
    await stores.nonces.prime()
    return stores


@pytest.fixture
async def stores(server: RedisServer) -> AsyncIterator[RedisStores]:
    # Hundreds of calls at once on a busy two-core machine: a deadline that counts
    # outcomes, not time (the deadline tests below set their own).
    opened = await _stores(server, deadline_seconds=10, socket_timeout_seconds=10)
    try:
        yield opened
    finally:
        await opened.close()


def _pipelines(stores: RedisStores) -> tuple[int, int]:
    auto = stores.auto_pipeline
    assert auto is not None
    return auto.pipelines, auto.commands


async def _consume(stores: RedisStores, scope: str, nonce: str, now: int) -> NonceOutcome:
    return await stores.nonces.consume(scope, nonce, ttl_ms=TTL, signed_at_ms=now)


async def test_concurrent_nonces_share_round_trips_and_each_is_spent_exactly_once(
    stores: RedisStores,
) -> None:
    now = SystemClock().now_ms()
    before = _pipelines(stores)
    # 400 distinct nonces, each sent twice at once, by 800 concurrent "requests".
    calls = [_consume(stores, f"pair-{i % 7}", f"n{i}", now) for i in range(400) for _ in (0, 1)]
    outcomes = await asyncio.gather(*calls)
    pipelines, commands = (a - b for a, b in zip(_pipelines(stores), before, strict=True))
    assert commands == 800
    assert pipelines < 800 // 8, "concurrent calls must share pipelines"
    for i in range(400):
        pair = sorted(o.value for o in outcomes[2 * i : 2 * i + 2])
        assert pair == sorted([NonceOutcome.FRESH.value, NonceOutcome.REPLAYED.value]), i


async def test_a_rate_limit_batched_with_others_is_charged_once_per_call(
    stores: RedisStores,
) -> None:
    check = RateLimitCheck("per-minute", limit=10, period_ms=60_000)
    results = await asyncio.gather(*(stores.rate_limits.hit_many("c", [check]) for _ in range(25)))
    assert sum(r[0].allowed for r in results) == 10


async def test_scripts_lost_by_the_server_are_loaded_again(
    server: RedisServer, stores: RedisStores
) -> None:
    now = SystemClock().now_ms()
    assert await _consume(stores, "p", "warm", now) is NonceOutcome.FRESH
    admin = Redis.from_url(server.url)
    try:
        await admin.script_flush()
    finally:
        await admin.aclose()
    outcomes = await asyncio.gather(*(_consume(stores, "p", f"after-{i}", now) for i in range(50)))
    assert outcomes == [NonceOutcome.FRESH] * 50
    assert await _consume(stores, "p", "after-3", now) is NonceOutcome.REPLAYED


async def test_a_frozen_server_fails_every_waiting_caller_within_the_deadline(
    server: RedisServer,
) -> None:
    stores = await _stores(server, deadline_seconds=0.3)
    try:
        now = SystemClock().now_ms()
        server.freeze()
        results = await asyncio.gather(
            *(_consume(stores, "p", f"f{i}", now) for i in range(40)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        server.thaw()
        # The nonces the frozen server took while no caller waited are spent: a retry of
        # the same bytes is a replay or fresh, never a second acceptance.
        again = await asyncio.gather(*(_consume(stores, "p", f"f{i}", now) for i in range(40)))
        assert set(again) <= {NonceOutcome.FRESH, NonceOutcome.REPLAYED}
        assert (
            await asyncio.gather(*(_consume(stores, "p", f"f{i}", now) for i in range(40)))
            == [NonceOutcome.REPLAYED] * 40
        )
    finally:
        if server.stopped:
            server.thaw()
        await stores.close()


async def test_a_killed_server_fails_the_batch_closed_and_no_caller_hangs(
    server: RedisServer,
) -> None:
    stores = await _stores(server, deadline_seconds=0.5)
    try:
        now = SystemClock().now_ms()
        server.kill()
        results = await asyncio.gather(
            *(_consume(stores, "p", f"k{i}", now) for i in range(40)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results), results
    finally:
        await stores.close()


async def test_auto_pipelining_can_be_turned_off(server: RedisServer) -> None:
    stores = await _stores(server, auto_pipeline=False)
    try:
        assert stores.auto_pipeline is None
        now = SystemClock().now_ms()
        outcomes = await asyncio.gather(*(_consume(stores, "p", "same", now) for _ in range(20)))
        assert sorted(o.value for o in outcomes) == sorted(
            [NonceOutcome.FRESH.value] + [NonceOutcome.REPLAYED.value] * 19
        )
    finally:
        await stores.close()


async def test_after_a_deadline_cut_a_read_short_no_caller_gets_another_callers_reply(
    server: RedisServer,
) -> None:
    # The replies a frozen server sends once thawed belong to callers who stopped waiting:
    # a connection holding them unread must never serve the next pipeline.
    stores = await _stores(server, deadline_seconds=0.3)
    try:
        now = SystemClock().now_ms()
        assert await _consume(stores, "d", "spent", now) is NonceOutcome.FRESH
        server.freeze()
        cut = await asyncio.gather(
            *(_consume(stores, "d", f"cut{i}", now) for i in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in cut), cut
        server.thaw()
        await asyncio.sleep(0.2)  # the frozen server's replies arrive on the old socket
        names = [f"new{i}" if i % 2 else "spent" for i in range(40)]
        outcomes = await asyncio.gather(*(_consume(stores, "d", n, now) for n in names))
        assert outcomes == [
            NonceOutcome.FRESH if i % 2 else NonceOutcome.REPLAYED for i in range(40)
        ]
    finally:
        if server.stopped:
            server.thaw()
        await stores.close()


async def test_an_error_reply_fails_only_its_own_caller(server: RedisServer) -> None:
    client = Redis.from_url(server.url, decode_responses=True)
    auto = AutoPipeline(client, deadline=10)
    script = client.register_script(
        "if ARGV[1] == 'bad' then return redis.error_reply('ERR refused ' .. KEYS[1]) end "
        "return KEYS[1] .. ':' .. ARGV[1]"
    )
    await client.script_load(script.script)
    try:
        futures = [
            auto.script(script, [f"k{i}"], ["bad" if i % 3 == 0 else f"v{i}"]) for i in range(30)
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 3 == 0:
                assert isinstance(result, ResponseError) and f"refused k{i}" in str(result)
            else:
                assert result == f"k{i}:v{i}"
        assert auto.pipelines == 1
    finally:
        await auto.close()
        await client.aclose()


# Arguments of every kind the scripts could be given: what redis-py itself would write.
PACKED = [
    ("EVALSHA", "0" * 40, 2, "k:{tag}:1", "k:{tag}:epoch", 0, -1, 2**70, -(2**70)),
    ("SET", "ünïcödé ✓ 🙂", b"\x00\xffraw", memoryview(b"mv")),
    ("EVAL", "return 1", 0, 1.5, -0.25, 1e300, ""),
]


@pytest.mark.parametrize("args", PACKED)
def test_commands_are_packed_byte_for_byte_as_redis_py_packs_them(args: tuple[Any, ...]) -> None:
    expected = b"".join(Connection().pack_command(*args))
    assert pack_command(args) == expected


@pytest.mark.parametrize("value", [True, False, None, object(), [1], {"a": 1}])
def test_values_redis_py_refuses_are_refused(value: Any) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", value)
    with pytest.raises(DataError):
        pack_command(("SET", "k", value))
