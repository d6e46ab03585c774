"""The local denylist: zero store calls while the bus is live, the store whenever it is not."""

from __future__ import annotations

import time

from authgate.stores.base import ManualClock, SystemClock
from authgate.stores.memory import MemoryEventBus, MemoryRevocationStore
from authgate.tokens.revocation import RevocationList


class CountingStore(MemoryRevocationStore):
    """Counts is_revoked calls (each would be a Redis round trip)."""

    def __init__(self) -> None:
        super().__init__(SystemClock())
        self.lookups = 0

    async def is_revoked(self, jti: str) -> bool:
        self.lookups += 1
        return await super().is_revoked(jti)


def later(seconds: int = 60) -> int:
    return int(time.time() * 1000) + seconds * 1000


async def test_live_bus_answers_from_the_local_copy() -> None:
    """Once resynchronised, lookups never reach the store."""
    store, bus = CountingStore(), MemoryEventBus()
    await store.revoke("old", expires_at_ms=later())
    revocations = RevocationList(store=store, events=bus)
    await bus.start()  # resync loads "old"
    assert await revocations.is_revoked("old")
    assert not await revocations.is_revoked("fresh")
    assert store.lookups == 0


async def test_a_revocation_from_another_replica_arrives_by_message() -> None:
    """A published revocation lands in the local copy."""
    store, bus = CountingStore(), MemoryEventBus()
    revocations = RevocationList(store=store, events=bus)
    await bus.start()
    await bus.publish("revocations", f"jti-9 {later()}")
    assert await revocations.is_revoked("jti-9")


async def test_not_live_means_every_lookup_asks_the_store() -> None:
    """Before the subscription is up (or after it drops), the store decides."""
    store, bus = CountingStore(), MemoryEventBus()
    revocations = RevocationList(store=store, events=bus)
    await store.revoke("x", expires_at_ms=later())
    assert await revocations.is_revoked("x")
    assert not await revocations.is_revoked("y")
    assert store.lookups == 2


async def test_expired_entries_stop_counting() -> None:
    """A revocation past the token's expiry is forgotten locally too."""
    store, bus = CountingStore(), MemoryEventBus()
    revocations = RevocationList(store=store, events=bus)
    await bus.start()
    await bus.publish("revocations", f"gone {int(time.time() * 1000) - 1}")
    assert not await revocations.is_revoked("gone")
    assert revocations.local_size == 0


async def test_local_expiry_follows_the_injected_clock() -> None:
    """Expiry is judged by the application's clock, the one tokens are checked against."""
    clock = ManualClock(1_700_000_000_000)
    store, bus = MemoryRevocationStore(clock), MemoryEventBus()
    revocations = RevocationList(store=store, events=bus, clock=clock)
    await bus.start()
    await revocations.revoke("j", expires_at_ms=clock.now_ms() + 1_000)
    assert revocations.revoked_locally("j") is True
    clock.advance(1_000)
    assert revocations.revoked_locally("j") is False


async def test_revoked_locally_declines_while_not_live() -> None:
    store, bus = CountingStore(), MemoryEventBus()
    revocations = RevocationList(store=store, events=bus)
    assert revocations.revoked_locally("anything") is None
    await bus.start()
    assert revocations.revoked_locally("anything") is False
