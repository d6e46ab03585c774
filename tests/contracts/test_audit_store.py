"""AuditStore contract: capped trails, newest first."""

from __future__ import annotations

import time
from typing import Any

import pytest

from authgate.stores.base import ManualClock, Stores
from authgate.stores.memory import MemoryStores


async def append_numbered(stores: Stores, stream: str, count: int, *, cap: int) -> None:
    """Append entries ``{"n": 0}`` .. ``{"n": count - 1}`` in order."""
    for n in range(count):
        await stores.audit.append(stream, {"n": n, "event": "decision"}, cap=cap)


def numbers(entries: list[dict[str, object]]) -> list[object]:
    """The ``n`` of each entry."""
    return [entry["n"] for entry in entries]


async def test_recent_is_newest_first(stores: Stores) -> None:
    """Entries come back newest first, each equal to what was appended."""
    await append_numbered(stores, "admin", 3, cap=10)
    entries = await stores.audit.recent("admin", 10)
    assert entries == [
        {"n": 2, "event": "decision"},
        {"n": 1, "event": "decision"},
        {"n": 0, "event": "decision"},
    ]


async def test_cap_keeps_only_the_newest(stores: Stores) -> None:
    """A stream never holds more than ``cap`` entries; the oldest are dropped."""
    await append_numbered(stores, "admin", 10, cap=4)
    assert numbers(await stores.audit.recent("admin", 100)) == [9, 8, 7, 6]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(2, [4, 3]), (5, [4, 3, 2, 1, 0]), (50, [4, 3, 2, 1, 0]), (0, []), (-1, [])],
    ids=["fewer", "exact", "more", "zero", "negative"],
)
async def test_recent_returns_at_most_limit(
    stores: Stores, limit: int, expected: list[int]
) -> None:
    """``recent`` returns the ``limit`` newest entries (none for a limit below one)."""
    await append_numbered(stores, "admin", 5, cap=10)
    assert numbers(await stores.audit.recent("admin", limit)) == expected


async def test_streams_are_separate(stores: Stores) -> None:
    """Each stream has its own trail; an unknown stream is empty."""
    await append_numbered(stores, "a", 2, cap=10)
    await append_numbered(stores, "b", 1, cap=10)
    assert numbers(await stores.audit.recent("a", 10)) == [1, 0]
    assert numbers(await stores.audit.recent("b", 10)) == [0]
    assert await stores.audit.recent("unknown", 10) == []


async def test_entries_are_copies(stores: Stores) -> None:
    """Mutating an entry after appending it, or one returned, changes nothing stored."""
    entry: dict[str, object] = {"n": 0, "tags": ["x"]}
    await stores.audit.append("admin", entry, cap=10)
    entry["n"] = 99
    first = (await stores.audit.recent("admin", 1))[0]
    first["n"] = 42
    assert await stores.audit.recent("admin", 1) == [{"n": 0, "tags": ["x"]}]


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ],
    indirect=True,
)
async def test_lowering_the_cap_keeps_the_newest(stores: Stores) -> None:
    """When a smaller cap is given, the newest entries survive, not the oldest."""
    await append_numbered(stores, "admin", 5, cap=5)
    await stores.audit.append("admin", {"n": 5}, cap=3)
    assert numbers(await stores.audit.recent("admin", 10)) == [5, 4, 3]


async def test_a_stream_given_an_expiry_is_dropped_at_it(stores: Stores, clock: Any) -> None:
    """``expires_at_ms`` drops the whole stream at that moment; each append sets it again.

    The moments are chosen so that they are past (or future) both for the test's manual
    clock (memory) and for the real clock Redis keeps.
    """
    future = max(clock.now_ms(), int(time.time() * 1000)) + 3_600_000
    past = min(clock.now_ms(), int(time.time() * 1000)) - 1_000
    await stores.audit.append("family:a", {"n": 0}, cap=5, expires_at_ms=future)
    await stores.audit.append("family:a", {"n": 1}, cap=5, expires_at_ms=future)
    assert numbers(await stores.audit.recent("family:a", 10)) == [1, 0]
    await stores.audit.append("family:b", {"n": 0}, cap=5, expires_at_ms=future)
    await stores.audit.append("family:b", {"n": 1}, cap=5, expires_at_ms=past)
    assert await stores.audit.recent("family:b", 10) == []
    assert numbers(await stores.audit.recent("family:a", 10)) == [1, 0]


async def test_memory_streams_expire_with_the_clock() -> None:
    """In memory the stream goes when the clock passes its expiry (swept, not kept)."""
    clock = ManualClock()
    stores = MemoryStores(clock)
    await stores.audit.append("f", {"n": 0}, cap=5, expires_at_ms=clock.now_ms() + 10_000)
    await stores.audit.append("kept", {"n": 0}, cap=5)
    clock.advance(9_000)
    assert numbers(await stores.audit.recent("f", 10)) == [0]
    clock.advance(2_000)
    assert await stores.audit.recent("f", 10) == []
    assert numbers(await stores.audit.recent("kept", 10)) == [0]
