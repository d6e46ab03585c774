"""RevocationStore contract: a revoked ``jti`` stays revoked until its token would expire."""

from __future__ import annotations

import asyncio

from authgate.stores.base import ManualClock, Stores, SystemClock

from .conftest import StoreFactory

HOUR_MS = 3_600_000


async def test_revoked_jti_is_revoked_and_others_are_not(
    stores: Stores, clock: ManualClock
) -> None:
    """``is_revoked`` is true for a revoked jti and false for any other."""
    await stores.revocations.revoke("jti-1", expires_at_ms=clock.now_ms() + HOUR_MS)
    assert await stores.revocations.is_revoked("jti-1") is True
    assert await stores.revocations.is_revoked("jti-2") is False


async def test_list_revoked_returns_each_jti_with_its_expiry(
    stores: Stores, clock: ManualClock
) -> None:
    """``list_revoked`` maps every live revoked jti to its expiry in ms."""
    now = clock.now_ms()
    assert await stores.revocations.list_revoked() == {}
    await stores.revocations.revoke("jti-1", expires_at_ms=now + HOUR_MS)
    await stores.revocations.revoke("jti-2", expires_at_ms=now + 2 * HOUR_MS)
    assert await stores.revocations.list_revoked() == {
        "jti-1": now + HOUR_MS,
        "jti-2": now + 2 * HOUR_MS,
    }


async def test_revoking_again_replaces_the_expiry(stores: Stores, clock: ManualClock) -> None:
    """A second revocation of one jti keeps one entry, with the latest expiry."""
    now = clock.now_ms()
    await stores.revocations.revoke("jti-1", expires_at_ms=now + HOUR_MS)
    await stores.revocations.revoke("jti-1", expires_at_ms=now + 2 * HOUR_MS)
    assert await stores.revocations.list_revoked() == {"jti-1": now + 2 * HOUR_MS}


async def test_revoking_an_expired_token_is_a_no_op(stores: Stores, clock: ManualClock) -> None:
    """A jti whose token has already expired is neither stored nor listed."""
    await stores.revocations.revoke("jti-1", expires_at_ms=clock.now_ms() - 1)
    await stores.revocations.revoke("jti-2", expires_at_ms=clock.now_ms())
    assert await stores.revocations.is_revoked("jti-1") is False
    assert await stores.revocations.is_revoked("jti-2") is False
    assert await stores.revocations.list_revoked() == {}


async def test_revocation_ends_when_the_token_expires(store_factory: StoreFactory) -> None:
    """Once the expiry has passed (real time), the jti is neither revoked nor listed."""
    clock = SystemClock()
    stores = store_factory(clock)
    await stores.revocations.revoke("short", expires_at_ms=clock.now_ms() + 200)
    await stores.revocations.revoke("long", expires_at_ms=clock.now_ms() + HOUR_MS)
    assert await stores.revocations.is_revoked("short") is True
    await asyncio.sleep(0.4)
    assert await stores.revocations.is_revoked("short") is False
    assert await stores.revocations.is_revoked("long") is True
    assert set(await stores.revocations.list_revoked()) == {"long"}
