"""Bounded in-process caches: the one helper every per-replica cache is built on.

* :class:`BoundedCache` (a ``dict``): when full, the next new entry empties it. No order is
  kept, so a read is exactly ``dict.get``; for small caches of answers that are cheap to
  recompute (trusted-peer checks, identity headers).
* :class:`LRUCache` (an ``OrderedDict``): when full, the least recently used entry goes.
  ``get`` is ``OrderedDict.get`` and does not count as a use: call ``move_to_end(key)``
  on a hit (both C methods). For large caches of answers that are dear to recompute
  (verified tokens).
* :class:`ExpiringCache`: an :class:`LRUCache` whose entries also age out after
  ``ttl_seconds`` (records read from the shared store: API keys, BPC pairs).

The classes subclass the built-in mappings rather than wrapping one so that a read on the
request path costs what a plain dictionary read costs. Everything that adds an entry goes
through ``put`` (which applies the bound); writing ``cache[key] = value`` directly would
bypass it. ``max_entries`` 0 means the cache never holds anything.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _check_bound(max_entries: int) -> int:
    if max_entries < 0:
        raise ValueError("max_entries must be 0 or more")
    return max_entries


class BoundedCache(dict[K, V]):
    """At most ``max_entries`` entries; adding one more first empties the cache."""

    __slots__ = ("max_entries",)

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = _check_bound(max_entries)

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` under ``key``; everything is forgotten first when full."""
        if len(self) >= self.max_entries and key not in self:
            self.clear()
        if self.max_entries:
            self[key] = value


class LRUCache(OrderedDict[K, V]):
    """At most ``max_entries`` entries; adding one more evicts the least recently used.

    An entry counts as used when it is put and when the caller calls ``move_to_end(key)``
    (after a ``get`` that hit); ``get`` alone changes nothing.
    """

    __slots__ = ("max_entries",)

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = _check_bound(max_entries)

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` under ``key`` as the most recently used entry."""
        if not self.max_entries:
            return
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.max_entries:
            self.popitem(last=False)


class ExpiringCache(Generic[K, V]):
    """An :class:`LRUCache` whose entries count for ``ttl_seconds`` after they were put
    (``monotonic`` is the clock; with a TTL of 0 nothing is ever fresh).

    Expired entries are not read; they are replaced by the next ``put`` of their key or
    evicted as the least recently used.
    """

    __slots__ = ("_entries", "_monotonic", "_ttl")

    def __init__(
        self,
        max_entries: int,
        *,
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: LRUCache[K, tuple[float, V]] = LRUCache(max_entries)
        self._ttl = ttl_seconds
        self._monotonic = monotonic

    @property
    def max_entries(self) -> int:
        """The bound (0: the cache holds nothing)."""
        return self._entries.max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def fresh(self, key: K) -> tuple[float, V] | None:
        """The entry ``(stored_at, value)`` when ``key`` holds one younger than the TTL
        (marking it used), else ``None``; so a cached ``None`` value is not a miss."""
        entry = self._entries.get(key)
        if entry is None or self._monotonic() - entry[0] >= self._ttl:
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` under ``key`` for the next ``ttl_seconds``."""
        self._entries.put(key, (self._monotonic(), value))

    def discard(self, key: K) -> None:
        """Forget ``key`` (nothing happens when it is not held)."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
