"""Redis key hygiene: everything under the prefix, every time-bounded key with a TTL."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from authgate.stores.base import ManualClock, NonceOutcome, Stores
from authgate.stores.redis import RedisStores

from .conftest import REDIS_ONLY

TIME_BOUNDED = ("nonce:", "revoked:", "rl:")


async def exercise(stores: Stores, clock: ManualClock) -> None:
    """One call of every store operation that writes."""
    now = clock.now_ms()
    assert await stores.nonces.consume("p", "n", ttl_ms=60_000, signed_at_ms=now) is (
        NonceOutcome.FRESH
    )
    await stores.revocations.revoke("jti", expires_at_ms=now + 60_000)
    # A long period: the key must outlive a SCAN past Cluster's 16,384 epoch markers.
    await stores.rate_limits.hit("client", limit=5, period_ms=60_000)
    await stores.api_keys.put("k", {"a": 1})
    await stores.signing_keys.put("k", {"a": 1})
    await stores.pairs.put("p", {"a": 1})
    await stores.pairs.record_failure("p", window_ms=60_000)
    await stores.audit.append("admin", {"a": 1}, cap=10)


@REDIS_ONLY
async def test_time_bounded_keys_have_a_ttl(
    stores: Stores, clock: ManualClock, redis_admin: Redis, key_prefix: str
) -> None:
    """Nonce, revocation and rate-limit keys all carry an expiry (PTTL > 0)."""
    await exercise(stores, clock)
    keys = [key async for key in redis_admin.scan_iter(match=f"{key_prefix}*")]
    bounded = [k for k in keys if k.removeprefix(key_prefix).startswith(TIME_BOUNDED)]
    kinds = {k.removeprefix(key_prefix).split(":", 1)[0] for k in bounded}
    assert kinds == {"nonce", "revoked", "rl"}
    for key in bounded:
        assert await redis_admin.pttl(key) > 0, key


@REDIS_ONLY
async def test_every_key_is_under_the_prefix(
    stores: Stores, clock: ManualClock, redis_admin: Redis, key_prefix: str
) -> None:
    """The documented key layout, all under the configured prefix."""
    await exercise(stores, clock)
    keys = {k.removeprefix(key_prefix) async for k in redis_admin.scan_iter(match=f"{key_prefix}*")}
    markers = {k for k in keys if k.startswith("epoch")}
    if isinstance(stores, RedisStores) and stores._conn.cluster:
        # One store-epoch marker per hash slot, each in its slot.
        assert len(markers) == 16384
        assert {key_slot(m.encode()) for m in markers} == set(range(16384))
    else:
        assert markers == {"epoch"}
    assert keys - markers == {
        "nonce:{p}:n",
        "revoked:jti",
        "revoked-index",
        "rl:{client}",
        "apikey:{k}",
        "apikey:index",
        "signingkey:{k}",
        "signingkey:index",
        "pair:{p}",
        "pair:index",
        "pairfail:{p}",
        "audit:{admin}",
    }


@pytest.mark.parametrize(
    ("value", "tag"),
    [("p1", "{p1}"), ("", "{}"), ("a}b", "{a%7Db}"), ("{a", "{%7Ba}"), ("50%", "{50%25}")],
    ids=["plain", "empty", "closing-brace", "opening-brace", "percent"],
)
def test_hash_tag_encodes_braces(value: str, tag: str) -> None:
    """Hash tags percent-encode ``%``, ``{`` and ``}`` so the tag is exactly the value."""
    from authgate.stores.redis import hash_tag

    assert hash_tag(value) == tag
