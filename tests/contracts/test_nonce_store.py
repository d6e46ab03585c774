"""NonceStore contract: each nonce is admitted once, even under concurrency and data loss."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from authgate.stores.base import ManualClock, NonceOutcome, Stores, SystemClock
from authgate.stores.redis import RedisStores, hash_tag

from .conftest import REDIS_ONLY, LoseData, StoreFactory

TTL_MS = 60_000


async def test_first_consume_is_fresh_then_replayed(stores: Stores, clock: ManualClock) -> None:
    """A nonce is FRESH the first time and REPLAYED every time after."""
    now = clock.now_ms()
    consume = stores.nonces.consume
    assert await consume("pair-1", "n1", ttl_ms=TTL_MS, signed_at_ms=now) is NonceOutcome.FRESH
    assert await consume("pair-1", "n1", ttl_ms=TTL_MS, signed_at_ms=now) is NonceOutcome.REPLAYED
    assert await consume("pair-1", "n1", ttl_ms=TTL_MS, signed_at_ms=now) is NonceOutcome.REPLAYED


async def test_same_nonce_in_another_scope_is_fresh(stores: Stores, clock: ManualClock) -> None:
    """Scopes are independent: one nonce value may be used once in each."""
    now = clock.now_ms()
    consume = stores.nonces.consume
    assert await consume("pair-a", "n", ttl_ms=TTL_MS, signed_at_ms=now) is NonceOutcome.FRESH
    assert await consume("pair-b", "n", ttl_ms=TTL_MS, signed_at_ms=now) is NonceOutcome.FRESH


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a", "b:c"), ("a:b", "c")),
        (("a}:b", "c"), ("a", "b}:c")),
        (("{a}", "b"), ("a", "b")),
        (("a%7D", "b"), ("a}", "b")),
    ],
    ids=["colon", "closing-brace", "braces", "percent-encoding"],
)
async def test_scope_and_nonce_never_run_together(
    stores: Stores, clock: ManualClock, first: tuple[str, str], second: tuple[str, str]
) -> None:
    """Different (scope, nonce) pairs never share a slot, whatever characters they hold."""
    now = clock.now_ms()
    for scope, nonce in (first, second):
        outcome = await stores.nonces.consume(scope, nonce, ttl_ms=TTL_MS, signed_at_ms=now)
        assert outcome is NonceOutcome.FRESH


async def test_concurrent_consumes_admit_exactly_one(stores: Stores, clock: ManualClock) -> None:
    """Fifty simultaneous copies of one request: exactly one is FRESH."""
    now = clock.now_ms()
    outcomes = await asyncio.gather(
        *(
            stores.nonces.consume("pair-1", "race", ttl_ms=TTL_MS, signed_at_ms=now)
            for _ in range(50)
        )
    )
    assert outcomes.count(NonceOutcome.FRESH) == 1
    assert outcomes.count(NonceOutcome.REPLAYED) == 49


@REDIS_ONLY
async def test_concurrent_consumes_across_replicas_admit_exactly_one(
    store_factory: StoreFactory, clock: ManualClock
) -> None:
    """Copies of one request spread over two replicas sharing Redis: exactly one is FRESH."""
    replicas = [store_factory(clock), store_factory(clock)]
    now = clock.now_ms()
    outcomes = await asyncio.gather(
        *(
            replicas[i % 2].nonces.consume("pair-1", "race", ttl_ms=TTL_MS, signed_at_ms=now)
            for i in range(50)
        )
    )
    assert outcomes.count(NonceOutcome.FRESH) == 1


async def test_signed_before_epoch_is_refused_and_nonce_left_unspent(
    stores: Stores, clock: ManualClock
) -> None:
    """A request signed before the store's epoch is BEFORE_EPOCH and does not spend its nonce."""
    now = clock.now_ms()
    consume = stores.nonces.consume
    outcome = await consume("pair-1", "n", ttl_ms=TTL_MS, signed_at_ms=now - 1)
    assert outcome is NonceOutcome.BEFORE_EPOCH
    assert await consume("pair-1", "n", ttl_ms=TTL_MS, signed_at_ms=now) is NonceOutcome.FRESH


async def test_replay_after_data_loss_is_refused(
    stores: Stores, clock: ManualClock, lose_data: LoseData
) -> None:
    """After the store forgets its nonces, a replay of an earlier request is still refused."""
    signed_at = clock.now_ms()
    consume = stores.nonces.consume
    assert await consume("pair-1", "n", ttl_ms=TTL_MS, signed_at_ms=signed_at) is NonceOutcome.FRESH
    clock.advance(5_000)
    stores = await lose_data(stores)
    consume = stores.nonces.consume
    replay = await consume("pair-1", "n", ttl_ms=TTL_MS, signed_at_ms=signed_at)
    assert replay is NonceOutcome.BEFORE_EPOCH
    late = await consume("pair-1", "other", ttl_ms=TTL_MS, signed_at_ms=clock.now_ms() - 1)
    assert late is NonceOutcome.BEFORE_EPOCH
    fresh = await consume("pair-1", "new", ttl_ms=TTL_MS, signed_at_ms=clock.now_ms())
    assert fresh is NonceOutcome.FRESH


async def test_nonce_is_forgotten_after_its_ttl(store_factory: StoreFactory) -> None:
    """Once ``ttl_ms`` has passed (real time), the nonce may be used again."""
    clock = SystemClock()
    stores = store_factory(clock)
    signed_at = clock.now_ms() + 60_000  # after any epoch the first call may set
    consume = stores.nonces.consume
    assert await consume("pair-1", "n", ttl_ms=200, signed_at_ms=signed_at) is NonceOutcome.FRESH
    assert await consume("pair-1", "n", ttl_ms=200, signed_at_ms=signed_at) is NonceOutcome.REPLAYED
    await asyncio.sleep(0.4)
    assert await consume("pair-1", "n", ttl_ms=200, signed_at_ms=signed_at) is NonceOutcome.FRESH


async def test_audit_entry_rides_on_a_fresh_nonce_only(stores: Stores, clock: ManualClock) -> None:
    """A fresh nonce appends its audit entry atomically; a replay appends nothing."""
    now = clock.now_ms()
    entry = {"ts": now, "method": "GET", "path": "/x", "outcome": "ok"}
    first = await stores.nonces.consume(
        "pair-a", "n-1", ttl_ms=60_000, signed_at_ms=now, audit=entry, audit_cap=5
    )
    again = await stores.nonces.consume(
        "pair-a", "n-1", ttl_ms=60_000, signed_at_ms=now, audit=entry, audit_cap=5
    )
    assert (first, again) == (NonceOutcome.FRESH, NonceOutcome.REPLAYED)
    assert await stores.audit.recent("pair-a", 10) == [entry]


async def test_first_request_of_a_new_credential_is_not_refused_by_the_epoch(
    stores: Stores, clock: ManualClock
) -> None:
    """After start-up, a scope never seen before is judged against the primed epoch.

    Regression (Cluster): the per-scope marker used to be created at the scope's first use,
    so a new device's first request, signed a moment earlier, was refused as pre-epoch.
    """
    await stores.nonces.prime()
    clock.advance(10)
    signed_at = clock.now_ms()
    clock.advance(2_000)
    for scope in ("pair-new-1", "pair-new-2", "apikey:new", "{odd}scope"):
        outcome = await stores.nonces.consume(scope, "n", ttl_ms=TTL_MS, signed_at_ms=signed_at)
        assert outcome is NonceOutcome.FRESH, scope


async def _marker(admin: Redis | RedisCluster, key: str) -> str:
    """The epoch marker at ``key`` (the admin client decodes responses)."""
    value = await admin.get(key)
    assert isinstance(value, str), f"no epoch marker at {key}"
    return value


@REDIS_ONLY
async def test_marker_of_another_replication_history_moves_the_epoch(
    stores: Stores, clock: ManualClock, store_factory: StoreFactory
) -> None:
    """A marker that came back from another server history is moved forward, not trusted.

    A restart from an RDB or AOF file, or a promoted replica, brings back a marker older
    than nonces that were accepted and lost; the server's replication id then differs from
    the one the marker was written under, and the epoch moves to now.
    """
    admin = store_factory.admin
    assert admin is not None
    await stores.nonces.prime()
    assert isinstance(stores, RedisStores)
    key = stores._conn.epoch_key(hash_tag("p"))  # the marker guarding scope "p"
    primed_at, replid = (await _marker(admin, key)).split(":")[:2]
    assert len(replid) == 40, "the marker names the replication id it was written under"
    clock.advance(1_000)
    signed_at = clock.now_ms()
    clock.advance(1_000)
    # Same history: the epoch stays where it was.
    assert (
        await stores.nonces.consume("p", "a", ttl_ms=TTL_MS, signed_at_ms=signed_at)
        is NonceOutcome.FRESH
    )
    # The marker as a snapshot of another history would bring it back.
    await admin.set(key, f"{primed_at}:{'0' * 40}")
    assert (
        await stores.nonces.consume("p", "b", ttl_ms=TTL_MS, signed_at_ms=signed_at)
        is NonceOutcome.BEFORE_EPOCH
    )
    moved_to, now_replid = (await _marker(admin, key)).split(":")[:2]
    assert int(moved_to) == clock.now_ms()
    assert now_replid == replid
    # A marker from before this change (no replication id) is moved forward the same way.
    await admin.set(key, primed_at)
    clock.advance(1_000)
    await stores.nonces.consume_limited(
        "p", "c", ttl_ms=TTL_MS, signed_at_ms=clock.now_ms() - 1, limits=()
    )
    assert int((await _marker(admin, key)).partition(":")[0]) == clock.now_ms()
    # The epoch never moves backwards, whatever clock wrote the marker.
    await admin.set(key, f"{clock.now_ms() + 60_000}:{'0' * 40}")
    assert (
        await stores.nonces.consume("p", "d", ttl_ms=TTL_MS, signed_at_ms=clock.now_ms())
        is NonceOutcome.BEFORE_EPOCH
    )
    assert int((await _marker(admin, key)).partition(":")[0]) == clock.now_ms() + 60_000
