"""One contract suite, two back ends.

Every test that takes ``stores`` (or ``store_factory``) runs once on the in-memory stores and
once on the real Redis, under a fresh random key prefix whose keys are deleted afterwards.
Tests that only make sense on one back end narrow ``backend`` with ``indirect``
parametrisation (see :data:`REDIS_ONLY`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from uuid import uuid4

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from authgate.config.model import RedisSettings
from authgate.stores.base import Clock, ManualClock, Stores
from authgate.stores.memory import MemoryStores
from authgate.stores.redis import RedisStores

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]

REDIS_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("redis", id="redis", marks=pytest.mark.redis)], indirect=True
)

# The functional tests get a generous deadline so that they do not flake on a slow runner;
# the failure tests use the shipped defaults.
CONTRACT_DEADLINE_SECONDS = 2.0


def redis_settings(url: str, key_prefix: str, **overrides: Any) -> RedisSettings:
    """Settings for a test client of the real (or an unreachable) Redis."""
    return RedisSettings(url=SecretStr(url), key_prefix=key_prefix, **overrides)


class StoreFactory:
    """Opens stores of one back end (all sharing one Redis key prefix) and closes them all.

    On Redis it also holds ``admin``, a plain client used to inspect and clean the prefix.
    """

    def __init__(self, backend: str, redis_url: str, key_prefix: str) -> None:
        self.backend = backend
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.admin: Redis | None = None
        if backend == "redis":
            self.admin = Redis.from_url(redis_url, decode_responses=True)
        self._opened: list[Stores] = []

    def __call__(self, clock: Clock | None = None, **redis_overrides: Any) -> Stores:
        """New stores; on Redis, another client of the same data (another replica)."""
        stores: Stores
        if self.backend == "memory":
            stores = cast(Stores, MemoryStores(clock))
        else:
            redis_overrides.setdefault("deadline_seconds", CONTRACT_DEADLINE_SECONDS)
            settings = redis_settings(self.redis_url, self.key_prefix, **redis_overrides)
            stores = RedisStores(settings, clock)
        self._opened.append(stores)
        return stores

    async def delete_keys(self) -> None:
        """Delete every Redis key under the prefix (no-op on memory)."""
        if self.admin is None:
            return
        keys = [k async for k in self.admin.scan_iter(match=f"{self.key_prefix}*", count=1000)]
        if keys:
            await self.admin.delete(*keys)

    async def close_all(self) -> None:
        """Close every store opened, delete the test's keys, close the admin client."""
        try:
            for stores in self._opened:
                await stores.close()
            await self.delete_keys()
        finally:
            if self.admin is not None:
                await self.admin.aclose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``memory`` or ``redis``."""
    return cast(str, request.param)


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"authgate-test:{uuid4().hex}:"


@pytest.fixture
async def store_factory(
    backend: str, redis_url: str, key_prefix: str
) -> AsyncIterator[StoreFactory]:
    """Opens stores of the back end under test; closes them and cleans Redis afterwards."""
    factory = StoreFactory(backend, redis_url, key_prefix)
    try:
        yield factory
    finally:
        await factory.close_all()


@pytest.fixture
def redis_admin(store_factory: StoreFactory) -> Redis:
    """A plain client of the test Redis (Redis-only tests)."""
    assert store_factory.admin is not None, "redis_admin needs the redis back end"
    return store_factory.admin


@pytest.fixture
def clock() -> ManualClock:
    """A clock that only moves when the test says so."""
    return ManualClock()


@pytest.fixture
def stores(store_factory: StoreFactory, clock: ManualClock) -> Stores:
    """The back end under test, driven by ``clock``."""
    return store_factory(clock)


LoseData = Callable[[Stores], Awaitable[Stores]]


@pytest.fixture
def lose_data(store_factory: StoreFactory, clock: ManualClock) -> LoseData:
    """Simulate the store forgetting everything; returns the stores to use from then on.

    Memory: the process restarts (new stores). Redis: every key under the prefix is
    deleted, as a restart without persistence would do, and the same client carries on.
    """

    async def forget(stores: Stores) -> Stores:
        if store_factory.backend == "memory":
            return store_factory(clock)
        await store_factory.delete_keys()
        return stores

    return forget
