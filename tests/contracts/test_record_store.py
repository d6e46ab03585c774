"""RecordStore and PairStore contract: JSON records by id, and atomic lock-out counters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from authgate.stores.base import ManualClock, RecordStore, Stores

RECORD_STORES = pytest.mark.parametrize(
    "store_name", ["api_keys", "signing_keys", "pairs"], ids=["api-keys", "signing-keys", "pairs"]
)

RECORD: dict[str, Any] = {
    "id": "k1",
    "scopes": ["read", "write"],
    "nested": {"hash": "argon2id$...", "created_at": 1_700_000_000_000, "ok": True, "x": None},
    "ratio": 0.25,
    "name": "caf\u00e9 \u2603",
}

HOUR_MS = 3_600_000


def record_store(stores: Stores, name: str) -> RecordStore:
    """The record store called ``name``."""
    store: RecordStore = getattr(stores, name)
    return store


@RECORD_STORES
async def test_put_then_get_round_trips(stores: Stores, store_name: str) -> None:
    """``get`` returns a record equal to the one put, nested values included."""
    store = record_store(stores, store_name)
    await store.put("k1", RECORD)
    assert await store.get("k1") == RECORD


@RECORD_STORES
async def test_records_are_copies(stores: Stores, store_name: str) -> None:
    """Mutating the dict put, or one returned, never changes what is stored."""
    store = record_store(stores, store_name)
    original: dict[str, Any] = {"scopes": ["read"], "nested": {"n": 1}}
    await store.put("k1", original)
    original["scopes"].append("admin")
    fetched = await store.get("k1")
    assert fetched == {"scopes": ["read"], "nested": {"n": 1}}
    fetched["nested"]["n"] = 2
    assert await store.get("k1") == {"scopes": ["read"], "nested": {"n": 1}}


@RECORD_STORES
async def test_get_of_unknown_id_is_none(stores: Stores, store_name: str) -> None:
    """An id never put reads as ``None``."""
    assert await record_store(stores, store_name).get("missing") is None


@RECORD_STORES
async def test_put_replaces_the_record(stores: Stores, store_name: str) -> None:
    """A second ``put`` of one id replaces the whole record."""
    store = record_store(stores, store_name)
    await store.put("k1", {"a": 1, "b": 2})
    await store.put("k1", {"c": 3})
    assert await store.get("k1") == {"c": 3}
    assert await store.list_ids() == ["k1"]


@RECORD_STORES
async def test_delete_reports_whether_the_record_existed(stores: Stores, store_name: str) -> None:
    """``delete`` is True for a stored record, False afterwards, and the record is gone."""
    store = record_store(stores, store_name)
    await store.put("k1", RECORD)
    assert await store.delete("k1") is True
    assert await store.delete("k1") is False
    assert await store.get("k1") is None
    assert await store.delete("never") is False


@RECORD_STORES
async def test_list_ids_is_sorted_and_follows_deletes(stores: Stores, store_name: str) -> None:
    """``list_ids`` returns every stored id, sorted, without deleted ones."""
    store = record_store(stores, store_name)
    assert await store.list_ids() == []
    for record_id in ("b", "c", "a", "{weird}:id"):
        await store.put(record_id, {"id": record_id})
    assert await store.list_ids() == ["a", "b", "c", "{weird}:id"]
    await store.delete("b")
    assert await store.list_ids() == ["a", "c", "{weird}:id"]
    assert await store.get("{weird}:id") == {"id": "{weird}:id"}


async def test_record_stores_are_separate(stores: Stores) -> None:
    """API keys, signing keys and pairs do not see each other's records."""
    await stores.api_keys.put("same-id", {"kind": "api"})
    await stores.signing_keys.put("same-id", {"kind": "signing"})
    assert await stores.pairs.get("same-id") is None
    assert await stores.api_keys.get("same-id") == {"kind": "api"}
    assert await stores.signing_keys.get("same-id") == {"kind": "signing"}
    assert await stores.pairs.list_ids() == []


async def test_concurrent_failures_are_all_counted(stores: Stores) -> None:
    """Twenty simultaneous failures count 1..20, each exactly once."""
    counts = await asyncio.gather(
        *(stores.pairs.record_failure("pair-1", window_ms=HOUR_MS) for _ in range(20))
    )
    assert sorted(counts) == list(range(1, 21))
    assert await stores.pairs.record_failure("pair-1", window_ms=HOUR_MS) == 21


async def test_reset_failures_starts_the_count_again(stores: Stores) -> None:
    """After ``reset_failures`` the next failure counts 1; other pairs are untouched."""
    for _ in range(3):
        await stores.pairs.record_failure("pair-1", window_ms=HOUR_MS)
    await stores.pairs.record_failure("pair-2", window_ms=HOUR_MS)
    await stores.pairs.reset_failures("pair-1")
    await stores.pairs.reset_failures("never-failed")
    assert await stores.pairs.record_failure("pair-1", window_ms=HOUR_MS) == 1
    assert await stores.pairs.record_failure("pair-2", window_ms=HOUR_MS) == 2


async def test_deleting_a_pair_clears_its_failures(stores: Stores) -> None:
    """A deleted pair leaves no failure count behind for a pair re-created under its id."""
    await stores.pairs.put("pair-1", {"id": "pair-1"})
    for _ in range(3):
        await stores.pairs.record_failure("pair-1", window_ms=HOUR_MS)
    assert await stores.pairs.delete("pair-1") is True
    assert await stores.pairs.record_failure("pair-1", window_ms=HOUR_MS) == 1


async def test_failures_older_than_the_window_no_longer_count(
    stores: Stores, clock: ManualClock
) -> None:
    """Only failures within ``window_ms`` count: mistakes spread over months never add up."""
    for _ in range(3):
        assert await stores.pairs.record_failure("pair-1", window_ms=HOUR_MS) >= 1
        clock.advance(HOUR_MS // 2)
    # Recorded at 0, 30 and 60 min; at 90 min only 60 and 90 are within the hour.
    assert await stores.pairs.record_failure("pair-1", window_ms=HOUR_MS) == 2
    clock.advance(HOUR_MS + 1)
    assert await stores.pairs.record_failure("pair-1", window_ms=HOUR_MS) == 1
    for _ in range(30):
        clock.advance(HOUR_MS * 24 * 3)  # ten wrong secrets a month, for a year
        assert await stores.pairs.record_failure("pair-1", window_ms=HOUR_MS) == 1
