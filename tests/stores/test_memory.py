"""In-memory specifics: expired entries are actually released, in one-second buckets."""

from __future__ import annotations

from authgate.stores.base import ManualClock, NonceOutcome
from authgate.stores.memory import ExpiringMap, MemoryStores


def test_expired_entries_are_released() -> None:
    """After expiry both the values and their buckets are gone (memory does not grow)."""
    clock = ManualClock()
    entries = ExpiringMap(clock)
    for i in range(10_000):
        entries.set(f"k{i}", i, clock.now_ms() + 1_000 + i)
    assert len(entries) == 10_000
    clock.advance(12_000)
    assert len(entries) == 0
    assert not entries._buckets
    assert not entries._values


def test_long_idle_sweep_visits_only_filed_buckets() -> None:
    """A day of idleness is swept by visiting filed buckets, not every elapsed second."""
    clock = ManualClock()
    entries = ExpiringMap(clock)
    entries.set("a", 1, clock.now_ms() + 500)
    clock.advance(86_400_000)
    assert entries.get("a") is None
    assert len(entries) == 0


def test_reinserted_key_is_not_dropped_by_its_old_bucket() -> None:
    """A key set again with a later expiry survives the sweep of its earlier bucket."""
    clock = ManualClock()
    entries = ExpiringMap(clock)
    entries.set("k", "old", clock.now_ms() + 1_000)
    entries.set("k", "new", clock.now_ms() + 10_000)
    clock.advance(2_000)
    assert entries.get("k") == "new"


async def test_nonce_signed_before_process_start_is_refused() -> None:
    """The in-memory epoch is the store's birth: earlier requests may be replays it forgot."""
    clock = ManualClock()
    stores = MemoryStores(clock)
    before = clock.now_ms() - 1
    outcome = await stores.nonces.consume("p", "n", ttl_ms=130_000, signed_at_ms=before)
    assert outcome is NonceOutcome.BEFORE_EPOCH
    outcome = await stores.nonces.consume("p", "n", ttl_ms=130_000, signed_at_ms=clock.now_ms())
    assert outcome is NonceOutcome.FRESH
