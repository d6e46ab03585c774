"""Route rate limits across two authgate replicas (separate processes) sharing the real Redis.

The budget is one budget, however the requests are spread: 40 concurrent requests split
over both replicas admit exactly the limit, and every refusal is a 429 with Retry-After and
the ``RateLimit-*`` fields. A short period refills; per-credential budgets are per API key;
a rate-limited proof keeps its nonce; X-Forwarded-For from the trusted proxy gives each
client address its own budget. Waits are bounded and only outcomes are asserted.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from authgate.apikeys import ApiKeyService
from authgate.client.hmac_proof import proof_header
from authgate.config.model import RedisSettings
from authgate.crypto.envelope import Envelope, parse_kek
from authgate.stores.base import SystemClock
from authgate.stores.redis import RedisStores
from tests.integration.conftest import Authgate, redis_stores_config, running

pytestmark = pytest.mark.redis

CHALLENGE_SECRET = "rate-limit-replicas-challenge-secret-0123"
KEK = base64.b64encode(os.urandom(32)).decode()
WAIT_BOUND_SECONDS = 5.0


def rule(rule_id: str, prefix: str, by: str, limit: int, period: float, **options: Any) -> Any:
    """A rule on ``prefix`` with one limit."""
    return {
        "id": rule_id,
        "path_prefix": prefix,
        "rate_limits": [{"by": by, "limit": limit, "period_seconds": period}],
        **options,
    }


RULES = [
    rule("burst", "/burst", "client", 10, 60, anonymous=True),
    rule("refill", "/refill", "client", 3, 1, anonymous=True),
    rule("xff", "/xff", "client", 2, 60, anonymous=True),
    rule("keyed", "/keyed", "credential", 3, 60, credentials=["hmac"]),
    rule("once", "/once", "credential", 1, 2, credentials=["hmac"]),
]


@pytest.fixture(scope="module")
def replicas(
    redis_url: str, key_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Authgate, Authgate]]:
    """Two authgate processes (forward-auth only) on one Redis prefix."""
    config = {
        "stores": redis_stores_config(redis_url, key_prefix),
        "secrets": {"key_encryption_key": KEK},
        "hmac": {"challenge_secret": CHALLENGE_SECRET},
        "policy": {"rules": RULES},
        "logging": {"level": "WARNING", "access_log": False},
    }
    directory = tmp_path_factory.mktemp("rate-limit-replicas")
    with running(config, directory) as a, running(config, directory) as b:
        yield a, b


async def ask(
    session: aiohttp.ClientSession,
    gate: Authgate,
    target: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str]]:
    """nginx-style ``GET /auth`` for ``target`` from 127.0.0.1: status and headers."""
    forwarded = {"X-Original-Method": "GET", "X-Original-URI": target, **(headers or {})}
    async with session.get(gate.url + "/auth", headers=forwarded) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


def assert_limited(status: int, headers: dict[str, str], *, limit: int, window: int) -> None:
    """A 429 with Retry-After and every RateLimit-* field."""
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit-Limit"] == str(limit)
    assert headers["RateLimit-Remaining"] == "0"
    assert int(headers["RateLimit-Reset"]) >= 1
    assert headers["RateLimit-Policy"] == f"{limit};w={window}"


async def new_key(redis_url: str, key_prefix: str) -> str:
    """An API key written straight to Redis under the replicas' KEK."""
    stores = RedisStores(RedisSettings.model_validate({"url": redis_url, "key_prefix": key_prefix}))
    try:
        service = ApiKeyService(
            store=stores.api_keys,
            events=stores.events,
            envelope=Envelope(parse_kek(KEK)),
            clock=SystemClock(),
        )
        _, raw = await service.create(name="limits", scopes=[])
        return raw
    finally:
        await stores.close()


async def proof_for(
    session: aiohttp.ClientSession, gate: Authgate, key: str, target: str
) -> dict[str, str]:
    """An Authorization header over a challenge from ``gate``."""
    async with session.get(gate.url + "/challenge") as resp:
        challenge = await resp.json()
    return {"Authorization": proof_header(challenge, key, "GET", target)}


async def warm_epoch(
    session: aiohttp.ClientSession, gate: Authgate, redis_url: str, key_prefix: str
) -> None:
    """Spend one proof so the store epoch exists: on a fresh prefix the first nonce writes
    it, and a challenge issued in an earlier second would be refused."""
    key = await new_key(redis_url, key_prefix)
    for _ in range(3):
        status, _ = await ask(session, gate, "/once", await proof_for(session, gate, key, "/once"))
        if status == 200:
            return
    raise AssertionError("the store epoch was never written")


async def test_forty_concurrent_requests_over_two_replicas_admit_exactly_ten(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession
) -> None:
    """10 per 60 s per client, 40 requests racing over both replicas: 10 pass, 30 are 429."""
    a, b = replicas
    start = asyncio.Event()

    async def one(gate: Authgate) -> tuple[int, dict[str, str]]:
        await start.wait()
        return await ask(session, gate, "/burst")

    tasks = [asyncio.create_task(one(a if i % 2 else b)) for i in range(40)]
    await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks)
    assert sorted(status for status, _ in results) == [200] * 10 + [429] * 30
    for status, headers in results:
        if status == 429:
            assert_limited(status, headers, limit=10, window=60)
    for gate in (a, b):  # still spent, on either replica
        assert (await ask(session, gate, "/burst"))[0] == 429


async def test_a_short_period_refills_the_shared_budget(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession
) -> None:
    """3 per 1 s: spent across both replicas, refused, then after RateLimit-Reset the whole
    burst passes again."""
    a, b = replicas
    deadline = time.monotonic() + WAIT_BOUND_SECONDS
    sent = 0
    while True:  # on a slow machine a slot may refill meanwhile: spend until refused
        status, headers = await ask(session, (a, b)[sent % 2], "/refill")
        sent += 1
        if status == 429:
            break
        assert status == 200
        assert time.monotonic() < deadline, "never refused"
    assert sent >= 4
    assert_limited(status, headers, limit=3, window=1)
    await asyncio.sleep(int(headers["RateLimit-Reset"]) + 0.05)
    statuses = [(await ask(session, gate, "/refill"))[0] for gate in (a, b, a)]
    assert statuses == [200, 200, 200]


async def test_each_api_key_has_its_own_budget_across_replicas(
    replicas: tuple[Authgate, Authgate],
    session: aiohttp.ClientSession,
    redis_url: str,
    key_prefix: str,
) -> None:
    """3 per 60 s per key: key A is refused on its fourth request wherever it goes; key B
    still has its own three."""
    a, b = replicas
    await warm_epoch(session, a, redis_url, key_prefix)
    first, second = await new_key(redis_url, key_prefix), await new_key(redis_url, key_prefix)
    for key in (first, second):
        statuses = []
        for gate in (a, b, a, b):
            other = b if gate is a else a  # challenge from one replica, request to the other
            header = await proof_for(session, other, key, "/keyed")
            status, headers = await ask(session, gate, "/keyed", header)
            statuses.append(status)
        assert statuses == [200, 200, 200, 429]
        assert_limited(status, headers, limit=3, window=60)


async def test_a_rate_limited_proof_keeps_its_nonce_across_replicas(
    replicas: tuple[Authgate, Authgate],
    session: aiohttp.ClientSession,
    redis_url: str,
    key_prefix: str,
) -> None:
    """1 per 2 s per key, limit and nonce in one script: a proof refused with 429 on A is
    admitted later on B, then refused as a replay on A (401, not 429: the nonce check
    comes first)."""
    a, b = replicas
    await warm_epoch(session, a, redis_url, key_prefix)
    key = await new_key(redis_url, key_prefix)
    first = await proof_for(session, a, key, "/once")
    second = await proof_for(session, b, key, "/once")
    assert (await ask(session, a, "/once", first))[0] == 200
    status, headers = await ask(session, a, "/once", second)
    assert_limited(status, headers, limit=1, window=2)
    deadline = time.monotonic() + WAIT_BOUND_SECONDS
    while (status := (await ask(session, b, "/once", second))[0]) == 429:
        assert time.monotonic() < deadline, "the window never passed"
        await asyncio.sleep(0.1)
    assert status == 200
    assert (await ask(session, a, "/once", second))[0] == 401


async def test_forwarded_for_from_the_trusted_proxy_gives_each_address_its_budget(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession
) -> None:
    """127.0.0.1 is a trusted proxy: each X-Forwarded-For client has 2 per 60 s of its own,
    shared across replicas."""
    a, b = replicas
    for address in ("198.51.100.10", "198.51.100.11"):
        xff = {"X-Forwarded-For": address}
        statuses = [(await ask(session, gate, "/xff", xff))[0] for gate in (a, b, a)]
        assert statuses == [200, 200, 429]
