"""The bounded-cache helper every per-replica cache is built on (authgate.cache)."""

from __future__ import annotations

import pytest

from authgate.cache import BoundedCache, ExpiringCache, LRUCache


def test_bounded_cache_reads_like_a_dict_and_empties_when_full() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    for i, key in enumerate("abc"):
        cache.put(key, i)
    assert cache.get("b") == 1 and cache.get("z") is None and len(cache) == 3
    cache.put("b", 10)  # replacing an entry never evicts
    assert dict(cache) == {"a": 0, "b": 10, "c": 2}
    cache.put("d", 3)  # one more: everything else goes
    assert dict(cache) == {"d": 3}


def test_bounded_cache_get_is_dicts_own() -> None:
    """The request path's read is ``dict.get`` itself, no Python frame in between."""
    assert BoundedCache.get is dict.get
    assert isinstance(BoundedCache(1), dict)


def test_lru_cache_evicts_the_least_recently_used() -> None:
    cache: LRUCache[str, int] = LRUCache(3)
    for i, key in enumerate("abc"):
        cache.put(key, i)
    assert cache.get("a") == 0
    cache.move_to_end("a")  # a hit the caller counts as a use
    cache.put("d", 3)
    assert list(cache) == ["c", "a", "d"]  # "b" was the least recently used
    cache.put("c", 20)  # putting is a use too
    cache.put("e", 4)
    assert list(cache) == ["d", "c", "e"] and cache["c"] == 20


def test_lru_cache_get_alone_is_not_a_use() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 0)
    cache.put("b", 1)
    assert cache.get("a") == 0
    cache.put("c", 2)
    assert "a" not in cache and list(cache) == ["b", "c"]


@pytest.mark.parametrize("cache", [BoundedCache[str, int](0), LRUCache[str, int](0)])
def test_size_zero_holds_nothing(cache: BoundedCache[str, int] | LRUCache[str, int]) -> None:
    cache.put("a", 1)
    assert len(cache) == 0 and cache.get("a") is None


@pytest.mark.parametrize("kind", [BoundedCache, LRUCache])
def test_a_negative_bound_is_refused(
    kind: type[BoundedCache[str, int]] | type[LRUCache[str, int]],
) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        kind(-1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_expiring_cache_entries_age_out() -> None:
    clock = Clock()
    cache: ExpiringCache[str, int | None] = ExpiringCache(10, ttl_seconds=60, monotonic=clock)
    cache.put("a", 1)
    cache.put("none", None)
    assert cache.fresh("a") == (1000.0, 1)
    assert cache.fresh("none") == (1000.0, None)  # a cached None is a hit, not a miss
    assert cache.fresh("missing") is None
    clock.now += 59.999
    assert cache.fresh("a") is not None
    clock.now += 0.001
    assert cache.fresh("a") is None and "a" in cache  # expired, not read, still held
    cache.put("a", 2)
    assert cache.fresh("a") == (clock.now, 2)


def test_expiring_cache_is_lru_bounded_and_can_forget() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(2, ttl_seconds=60)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.fresh("a") is not None  # a fresh hit is a use
    cache.put("c", 3)
    assert "b" not in cache and "a" in cache and len(cache) == 2
    cache.discard("a")
    cache.discard("never-there")
    assert "a" not in cache and cache.max_entries == 2
    cache.clear()
    assert len(cache) == 0


def test_expiring_cache_of_size_zero_holds_nothing() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(0, ttl_seconds=60)
    cache.put("a", 1)
    assert cache.fresh("a") is None and len(cache) == 0
