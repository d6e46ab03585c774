"""One contract suite, two back ends, three Redis topologies.

Every test that takes ``stores`` (or ``store_factory``) runs on the in-memory stores, on the
real Redis (standalone), on a real Sentinel set and on a real Cluster (both started from
``redis-server`` by :mod:`tests.redis_topology`, once per session), each time under a fresh
random key prefix whose keys are deleted afterwards. Tests that only make sense on one back
end narrow ``backend`` with ``indirect`` parametrisation (see :data:`REDIS_ONLY`); a test
module that narrows to ``["redis"]`` itself is widened to every topology by
:func:`pytest_generate_tests` below, so "runs on Redis" always means "on all three".

Tests that start a dedicated ``redis-server`` of their own and freeze or stop it (the outage
tests in ``test_events.py`` and ``test_redis_failures.py``) do not take ``backend``: they
exercise one server's failure, which is the same code whatever the topology, and freezing a
node of a shared Sentinel set or Cluster would disturb every other test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from uuid import uuid4

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from authgate.config.model import RedisSettings
from authgate.stores.base import Clock, ManualClock, Stores
from authgate.stores.memory import MemoryStores
from authgate.stores.redis import RedisStores
from tests.redis_topology import (
    ClusterSet,
    SentinelSet,
    Topology,
    redis_cluster,
    sentinel_set,
    shared_topology,
)

__all__ = ["redis_cluster", "sentinel_set"]  # session fixtures, shared with tests/integration

REDIS_BACKENDS = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("sentinel", id="sentinel", marks=pytest.mark.redis_topology),
    pytest.param("cluster", id="cluster", marks=pytest.mark.redis_topology),
]
TOPOLOGIES = ("sentinel", "cluster")

BACKENDS = [pytest.param("memory", id="memory"), *REDIS_BACKENDS]

REDIS_ONLY = pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Widen a module's own ``parametrize("backend", [..."redis"...], indirect=True)`` to the
    Sentinel and Cluster topologies too (runs before pytest reads the marks)."""
    markers = metafunc.definition.own_markers
    for index, mark in enumerate(markers):
        if mark.name != "parametrize" or not mark.args or mark.args[0] != "backend":
            continue
        values = list(mark.args[1])
        names = [v.values[0] if hasattr(v, "values") else v for v in values]
        if "redis" not in names or any(t in names for t in TOPOLOGIES):
            continue
        widened = values + [p for p in REDIS_BACKENDS if p.values[0] in TOPOLOGIES]
        markers[index] = pytest.mark.parametrize("backend", widened, **mark.kwargs).mark


# Run on one Cluster node: delete that node's keys matching ARGV[1] (prefixes hold no glob
# characters, see RedisSettings.key_prefix).
DELETE_LOCAL_KEYS_SCRIPT = """#!lua flags=allow-cross-slot-keys
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys do redis.call('UNLINK', keys[i]) end
return #keys
"""

# The functional tests get a generous deadline so that they do not flake on a slow runner;
# the failure tests use the shipped defaults.
CONTRACT_DEADLINE_SECONDS = 2.0


def redis_settings(url: str, key_prefix: str, **overrides: Any) -> RedisSettings:
    """Settings for a test client of the real (or an unreachable) Redis."""
    return RedisSettings(url=SecretStr(url), key_prefix=key_prefix, **overrides)


class StoreFactory:
    """Opens stores of one back end (all sharing one Redis key prefix) and closes them all.

    On Redis it also holds ``admin``, a plain client used to inspect and clean the prefix:
    of the master behind Sentinel, and a cluster client (SCAN on every master) in Cluster.
    """

    def __init__(
        self, backend: str, redis_url: str, key_prefix: str, topology: Topology | None = None
    ) -> None:
        self.backend = backend
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.topology = topology
        self.admin: Redis | RedisCluster | None = None
        if backend == "redis":
            self.admin = Redis.from_url(redis_url, decode_responses=True)
        elif isinstance(topology, SentinelSet):
            self.admin = Redis.from_url(topology.master().url, decode_responses=True)
        elif isinstance(topology, ClusterSet):
            self.admin = RedisCluster.from_url(topology.seed.url, decode_responses=True)
        self._opened: list[Stores] = []

    def settings(self, **overrides: Any) -> RedisSettings:
        """Client settings for this back end's Redis under the test's prefix."""
        if self.topology is not None:
            return self.topology.redis_settings(self.key_prefix, **overrides)
        return redis_settings(self.redis_url, self.key_prefix, **overrides)

    def __call__(self, clock: Clock | None = None, **redis_overrides: Any) -> Stores:
        """New stores; on Redis, another client of the same data (another replica)."""
        stores: Stores
        if self.backend == "memory":
            stores = cast(Stores, MemoryStores(clock))
        else:
            redis_overrides.setdefault("deadline_seconds", CONTRACT_DEADLINE_SECONDS)
            stores = RedisStores(self.settings(**redis_overrides), clock)
        self._opened.append(stores)
        return stores

    async def delete_keys(self) -> None:
        """Delete every Redis key under the prefix (no-op on memory).

        In Cluster the keys lie in many slots (the store primes an epoch marker in every
        slot), so each master deletes its own in one script run (``allow-cross-slot-keys``
        lets one script touch several slots of its node); a key-by-key delete took seconds.
        """
        if self.admin is None:
            return
        if isinstance(self.admin, RedisCluster):
            await self.admin.execute_command(
                "EVAL",
                DELETE_LOCAL_KEYS_SCRIPT,
                0,
                f"{self.key_prefix}*",
                target_nodes=RedisCluster.PRIMARIES,
            )
            return
        keys = {k async for k in self.admin.scan_iter(match=f"{self.key_prefix}*", count=1000)}
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
    """``memory``, ``redis`` (standalone), ``sentinel`` or ``cluster``."""
    return cast(str, request.param)


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"authgate-test:{uuid4().hex}:"


@pytest.fixture
async def store_factory(
    request: pytest.FixtureRequest, backend: str, redis_url: str, key_prefix: str
) -> AsyncIterator[StoreFactory]:
    """Opens stores of the back end under test; closes them and cleans Redis afterwards.

    The session's Sentinel set or Cluster is started the first time a test needs it.
    """
    topology = shared_topology(request, backend) if backend in TOPOLOGIES else None
    factory = StoreFactory(backend, redis_url, key_prefix, topology)
    try:
        yield factory
    finally:
        await factory.close_all()


@pytest.fixture
def redis_admin(store_factory: StoreFactory) -> Redis | RedisCluster:
    """A plain client of the test Redis (Redis-only tests); a cluster client in Cluster."""
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

    Memory: the process restarts (new stores). Redis (any topology): every key under the
    prefix is deleted, on every Cluster master, as a restart without persistence would do,
    and the same client carries on.
    """

    async def forget(stores: Stores) -> Stores:
        if store_factory.backend == "memory":
            return store_factory(clock)
        await store_factory.delete_keys()
        return stores

    return forget
