"""Store-managed signing keys: published before they sign, retired after their tokens expire."""

from __future__ import annotations

import asyncio

import pytest

from authgate.crypto.envelope import Envelope
from authgate.errors import RotationRefused
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryEventBus, MemoryStores
from authgate.tokens.keys import KeyManager, KeysUnreadable

LEAD_MS = 600_000
RETIRE_MS = 3_600_000


def manager(stores: MemoryStores, clock: ManualClock, envelope: Envelope) -> KeyManager:
    return KeyManager(
        store=stores.signing_keys,
        events=stores.events,
        envelope=envelope,
        clock=clock,
        publish_lead_ms=LEAD_MS,
        retire_after_ms=RETIRE_MS,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def stores(clock: ManualClock) -> MemoryStores:
    return MemoryStores(clock)


@pytest.fixture
def envelope() -> Envelope:
    return Envelope.ephemeral()


async def test_bootstrap_publishes_a_next_key_that_does_not_sign(
    stores: MemoryStores, clock: ManualClock, envelope: Envelope
) -> None:
    """A fresh store gets a current key and a published next key."""
    keys = manager(stores, clock, envelope)
    await keys.load()
    kids = [k["kid"] for k in keys.jwks()["keys"]]
    assert len(kids) == 2
    assert keys.current.kid == kids[0]
    states = {k["kid"]: k["state"] for k in keys.states()}
    assert sorted(states.values()) == ["current", "next"]


async def test_rotation_waits_for_the_publication_lead(
    stores: MemoryStores, clock: ManualClock, envelope: Envelope
) -> None:
    """The next key may not sign until verifiers have had time to fetch it."""
    keys = manager(stores, clock, envelope)
    await keys.load()
    with pytest.raises(RotationRefused, match="published for"):
        await keys.rotate()
    clock.advance(LEAD_MS)
    before = keys.current.kid
    upcoming = next(k["kid"] for k in keys.states() if k["state"] == "next")
    result = await keys.rotate()
    assert result["current"] == upcoming
    assert keys.current.kid == upcoming
    assert result["retired"] == before
    assert before in [k["kid"] for k in keys.jwks()["keys"]], "the retired key stays published"


async def test_forced_rotation_skips_the_lead(
    stores: MemoryStores, clock: ManualClock, envelope: Envelope
) -> None:
    """An incident may force rotation at once."""
    keys = manager(stores, clock, envelope)
    await keys.load()
    before = keys.current.kid
    await keys.rotate(force=True)
    assert keys.current.kid != before


async def test_retired_key_leaves_after_its_tokens_expire(
    stores: MemoryStores, clock: ManualClock, envelope: Envelope
) -> None:
    """A retired key is published until publish_until, then deleted."""
    keys = manager(stores, clock, envelope)
    await keys.load()
    old = keys.current.kid
    await keys.rotate(force=True)
    clock.advance(RETIRE_MS - 1)
    await keys.load()
    assert keys.verification_key(old) is not None
    clock.advance(1)
    await keys.load()
    assert keys.verification_key(old) is None
    assert old not in await stores.signing_keys.list_ids()


async def test_replicas_sign_with_the_same_key(
    stores: MemoryStores, clock: ManualClock, envelope: Envelope
) -> None:
    """Two managers bootstrapping one store at once converge on one current key."""
    a, b = manager(stores, clock, envelope), manager(stores, clock, envelope)
    await asyncio.gather(a.load(), b.load())
    await a.load()
    await b.load()
    assert a.current.kid == b.current.kid
    assert sum(1 for k in a.states() if k["state"] == "current") == 1


async def test_keys_are_sealed_at_rest(
    stores: MemoryStores, clock: ManualClock, envelope: Envelope
) -> None:
    """The store never holds a private key in clear."""
    keys = manager(stores, clock, envelope)
    await keys.load()
    for kid in await stores.signing_keys.list_ids():
        record = await stores.signing_keys.get(kid)
        assert record is not None
        assert "PRIVATE KEY" not in str(record)
    other = KeyManager(
        store=stores.signing_keys, events=stores.events, envelope=Envelope.ephemeral(), clock=clock
    )
    with pytest.raises(KeysUnreadable, match="key_encryption_key"):
        await other.load()
    assert len(await stores.signing_keys.list_ids()) == 2, "a wrong KEK creates no keys of its own"


async def test_a_resubscription_triggers_a_reload(
    stores: MemoryStores, clock: ManualClock, envelope: Envelope
) -> None:
    """A rotation announced while a replica was not subscribed is picked up at its resync."""
    writer = manager(stores, clock, envelope)
    await writer.load()
    missed = MemoryEventBus()  # the reader's own bus: the writer's announcement never reaches it
    reader = KeyManager(
        store=stores.signing_keys,
        events=missed,
        envelope=envelope,
        clock=clock,
        publish_lead_ms=LEAD_MS,
        retire_after_ms=RETIRE_MS,
    )
    await reader.load()
    await writer.rotate(force=True)
    await reader.reload_if_changed()
    assert reader.current.kid != writer.current.kid, "the announcement was missed"
    await missed.start()  # (re)subscribed: resync handlers run
    await reader.reload_if_changed()
    assert reader.current.kid == writer.current.kid
