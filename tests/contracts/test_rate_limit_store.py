"""RateLimitStore contract: GCRA with burst = limit, identical numbers on every back end."""

from __future__ import annotations

import asyncio
import random

import pytest

from authgate.stores.base import (
    ManualClock,
    NonceOutcome,
    RateLimitCheck,
    RateLimitResult,
    Stores,
    SystemClock,
)
from authgate.stores.memory import MemoryStores

from .conftest import REDIS_ONLY, StoreFactory


def result(
    allowed: bool, remaining: int, retry_after: int, reset_after: int, limit: int
) -> RateLimitResult:
    """A RateLimitResult, positionally."""
    return RateLimitResult(
        allowed=allowed,
        limit=limit,
        remaining=remaining,
        retry_after_ms=retry_after,
        reset_after_ms=reset_after,
    )


@pytest.mark.parametrize(
    ("limit", "period_ms", "expected"),
    [
        (
            5,
            1000,
            [
                (True, 4, 0, 200),
                (True, 3, 0, 400),
                (True, 2, 0, 600),
                (True, 1, 0, 800),
                (True, 0, 0, 1000),
                (False, 0, 200, 1000),
                (False, 0, 200, 1000),
            ],
        ),
        (
            3,
            1000,
            [(True, 2, 0, 334), (True, 1, 0, 667), (True, 0, 0, 1000), (False, 0, 334, 1000)],
        ),
        (1, 60_000, [(True, 0, 0, 60_000), (False, 0, 60_000, 60_000)]),
    ],
    ids=["5-per-second", "fractional-interval", "1-per-minute"],
)
async def test_burst_of_limit_then_refusal(
    stores: Stores,
    limit: int,
    period_ms: int,
    expected: list[tuple[bool, int, int, int]],
) -> None:
    """At one instant, exactly ``limit`` hits pass; the rest are refused with a retry time."""
    got = [
        await stores.rate_limits.hit("client-1", limit=limit, period_ms=period_ms) for _ in expected
    ]
    assert got == [result(*row, limit=limit) for row in expected]


async def test_refills_over_the_period(stores: Stores, clock: ManualClock) -> None:
    """One slot returns per ``period / limit``; the whole burst after a full period."""
    hit = stores.rate_limits.hit
    for _ in range(5):
        await hit("client-1", limit=5, period_ms=1000)
    assert (await hit("client-1", limit=5, period_ms=1000)).allowed is False
    clock.advance(200)
    assert await hit("client-1", limit=5, period_ms=1000) == result(True, 0, 0, 1000, limit=5)
    assert (await hit("client-1", limit=5, period_ms=1000)).allowed is False
    clock.advance(1000)
    allowed = [(await hit("client-1", limit=5, period_ms=1000)).allowed for _ in range(6)]
    assert allowed == [True] * 5 + [False]


async def test_cost_counts_several_units(stores: Stores) -> None:
    """A hit of cost n uses n units; one that does not fit is refused and uses none."""
    hit = stores.rate_limits.hit
    assert await hit("c", limit=5, period_ms=1000, cost=3) == result(True, 2, 0, 600, limit=5)
    assert await hit("c", limit=5, period_ms=1000, cost=3) == result(False, 2, 200, 600, limit=5)
    assert await hit("c", limit=5, period_ms=1000, cost=2) == result(True, 0, 0, 1000, limit=5)


async def test_keys_are_separate(stores: Stores) -> None:
    """Exhausting one key leaves another untouched."""
    for _ in range(2):
        await stores.rate_limits.hit("a", limit=2, period_ms=1000)
    assert (await stores.rate_limits.hit("a", limit=2, period_ms=1000)).allowed is False
    assert (await stores.rate_limits.hit("b", limit=2, period_ms=1000)).allowed is True


@pytest.mark.parametrize(("limit", "period_ms"), [(3, 2000), (7, 1000), (6, 1000), (9, 10_000)])
async def test_a_burst_admits_exactly_the_limit_at_any_period(
    store_factory: StoreFactory, limit: int, period_ms: int
) -> None:
    """Periods the limit does not divide: at today's epoch (milliseconds ~1.8e12, where a
    double resolves ~0.0002 ms) the sum of ``limit`` intervals must not spill past the
    period, or a burst admits one less than the limit. Single and multi-check paths."""
    stores = store_factory(ManualClock(1_796_328_000_123))
    single = [await stores.rate_limits.hit("s", limit=limit, period_ms=period_ms)]
    single += [
        await stores.rate_limits.hit("s", limit=limit, period_ms=period_ms) for _ in range(limit)
    ]
    assert [r.allowed for r in single] == [True] * limit + [False]
    assert [r.remaining for r in single[:limit]] == list(range(limit - 1, -1, -1))
    check = [RateLimitCheck(key="k", limit=limit, period_ms=period_ms)]
    many = [(await stores.rate_limits.hit_many("m", check))[0] for _ in range(limit + 1)]
    assert [r.allowed for r in many] == [True] * limit + [False]


async def test_real_clock_burst_admits_limit(store_factory: StoreFactory) -> None:
    """With the real clock, seven hits in quick succession admit exactly five."""
    stores = store_factory(SystemClock())
    results = [await stores.rate_limits.hit("c", limit=5, period_ms=10_000) for _ in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert all(r.retry_after_ms > 0 for r in results[5:])


async def test_real_clock_refill_after_period(store_factory: StoreFactory) -> None:
    """With the real clock (and Redis expiry), a spent limit is whole again after its period."""
    stores = store_factory(SystemClock())
    # A period long enough that four hits fit in it on a loaded runner (a Cluster round trip
    # there can take tens of milliseconds), short enough to wait out.
    period_ms = 2000
    for _ in range(3):
        await stores.rate_limits.hit("c", limit=3, period_ms=period_ms)
    assert (await stores.rate_limits.hit("c", limit=3, period_ms=period_ms)).allowed is False
    await asyncio.sleep(period_ms / 1000 + 0.2)
    results = [await stores.rate_limits.hit("c", limit=3, period_ms=period_ms) for _ in range(3)]
    assert all(r.allowed for r in results)


@REDIS_ONLY
async def test_replicas_share_one_limit(store_factory: StoreFactory) -> None:
    """Two replicas hitting one key concurrently admit ``limit`` in total, not each."""
    clock = ManualClock()  # one instant: see the next test for real clocks
    replicas = [store_factory(clock), store_factory(clock)]
    results = await asyncio.gather(
        *(replicas[i % 2].rate_limits.hit("shared", limit=5, period_ms=60_000) for i in range(40))
    )
    assert sum(r.allowed for r in results) == 5


@REDIS_ONLY
async def test_replicas_never_admit_more_than_the_limit_on_real_clocks(
    store_factory: StoreFactory,
) -> None:
    """Each replica stamps its call with its own clock, and two connections can deliver
    the stamps to Redis out of order; GCRA then refuses a burst's last request early
    (found as a flaky exact count). That errs on the safe side: never more than
    ``limit``."""
    clock = SystemClock()
    replicas = [store_factory(clock), store_factory(clock)]
    for run in range(5):
        results = await asyncio.gather(
            *(
                replicas[i % 2].rate_limits.hit(f"shared-{run}", limit=5, period_ms=60_000)
                for i in range(40)
            )
        )
        assert 1 <= sum(r.allowed for r in results) <= 5


@REDIS_ONLY
async def test_redis_matches_memory_step_for_step(store_factory: StoreFactory) -> None:
    """The Lua script gives exactly the in-memory numbers over a long mixed sequence."""
    redis_clock, memory_clock = ManualClock(), ManualClock()
    redis_stores = store_factory(redis_clock)
    memory_stores = MemoryStores(memory_clock)
    rng = random.Random(20240601)
    for step in range(600):
        limit = rng.choice([1, 3, 5, 7, 10])
        # Redis expires keys in real time (PX), the clocks here are manual: a period of a
        # few ms let a slow moment of a loaded machine expire a key the memory store kept.
        period_ms = rng.choice([50, 999, 1000, 60_000])
        cost = rng.choice([1, 1, 1, 2, 3])
        key = f"k{rng.randrange(3)}:{limit}:{period_ms}"
        expected = await memory_stores.rate_limits.hit(
            key, limit=limit, period_ms=period_ms, cost=cost
        )
        got = await redis_stores.rate_limits.hit(key, limit=limit, period_ms=period_ms, cost=cost)
        assert got == expected, f"step {step}"
        advance = rng.choice([0, 0, 1, 13, 100, 333, 1000])
        redis_clock.advance(advance)
        memory_clock.advance(advance)


async def test_hit_many_is_all_or_nothing(stores: Stores) -> None:
    """When one limit refuses, no other limit of the same decision is charged."""
    tight = RateLimitCheck("tight", limit=1, period_ms=60_000)
    loose = RateLimitCheck("loose", limit=5, period_ms=60_000)
    first = await stores.rate_limits.hit_many("client-1", [loose, tight])
    assert [r.allowed for r in first] == [True, True]
    assert first[0].remaining == 4
    second = await stores.rate_limits.hit_many("client-1", [loose, tight])
    assert [r.allowed for r in second] == [True, False]
    assert second[1].retry_after_ms > 0
    third = await stores.rate_limits.hit_many("client-1", [loose])
    assert third[0].remaining == 3, "the refused decision must not have charged 'loose'"


async def test_consume_limited_spends_nothing_when_limited(
    stores: Stores, clock: ManualClock
) -> None:
    """A rate-limited request leaves its nonce unspent and charges nothing; fresh ones pass."""
    now = clock.now_ms()
    limit = [RateLimitCheck("cred", limit=1, period_ms=60_000)]
    ok, results = await stores.nonces.consume_limited(
        "pair-x", "n-1", ttl_ms=60_000, signed_at_ms=now, limits=limit
    )
    assert ok is NonceOutcome.FRESH
    assert results[0].allowed
    limited, results = await stores.nonces.consume_limited(
        "pair-x", "n-2", ttl_ms=60_000, signed_at_ms=now, limits=limit
    )
    assert limited is NonceOutcome.RATE_LIMITED
    assert not results[0].allowed
    assert results[0].retry_after_ms > 0
    replay, _ = await stores.nonces.consume_limited(
        "pair-x", "n-1", ttl_ms=60_000, signed_at_ms=now, limits=limit
    )
    assert replay is NonceOutcome.REPLAYED
    # n-2 was not spent: without limits it is still fresh.
    assert (
        await stores.nonces.consume("pair-x", "n-2", ttl_ms=60_000, signed_at_ms=now)
        is NonceOutcome.FRESH
    )


async def test_concurrent_limited_consumes_admit_exactly_the_limit(
    store_factory: StoreFactory, clock: ManualClock
) -> None:
    """Forty concurrent fresh requests against a limit of 7 (two replicas) admit exactly 7."""
    a, b = store_factory(clock), store_factory(clock)
    now = clock.now_ms()
    limit = [RateLimitCheck("cred", limit=7, period_ms=60_000)]
    outcomes = await asyncio.gather(
        *(
            (a if i % 2 else b).nonces.consume_limited(
                "pair-y", f"n-{i}", ttl_ms=60_000, signed_at_ms=now, limits=limit
            )
            for i in range(40)
        )
    )
    fresh = [o for o, _ in outcomes if o is NonceOutcome.FRESH]
    if store_factory.backend == "memory":
        # Two in-memory stores share nothing: each admits its own seven.
        assert len(fresh) == 14
    else:
        assert len(fresh) == 7
