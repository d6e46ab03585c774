"""HMAC challenge proofs across two authgate replicas (separate processes) sharing the real
Redis, one key prefix, one key-encryption key and one challenge secret.

A challenge issued by one replica is accepted by the other; a proof is admitted exactly once
however many copies race across both; a captured proof replayed anywhere gets the uniform
401; and a replica reads an API key from Redis once, then serves it from its cache.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
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
from tests.integration.conftest import Authgate, Upstream, redis_stores_config, running

pytestmark = pytest.mark.redis

CHALLENGE_SECRET = "replica-shared-challenge-secret-0123456789"
KEK = base64.b64encode(os.urandom(32)).decode()
COPIES = 50
TARGET = "/api/items?page=2"
UNIFORM = b'{"error": {"code": "invalid_proof", "message": "challenge proof rejected"}}'


@pytest.fixture(scope="module")
def replicas(
    redis_url: str,
    key_prefix: str,
    upstream_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Authgate, Authgate]]:
    """Two authgate processes with one Redis prefix, KEK and challenge secret."""
    config = {
        "stores": redis_stores_config(redis_url, key_prefix),
        "secrets": {"key_encryption_key": KEK},
        "hmac": {"challenge_secret": CHALLENGE_SECRET},
        "proxy": {"upstream": f"http://127.0.0.1:{upstream_server.port}"},
        "policy": {"rules": [{"id": "api", "path_prefix": "/"}]},
        "logging": {"level": "WARNING", "access_log": False},
    }
    directory = tmp_path_factory.mktemp("hmac-replicas")
    with running(config, directory) as a, running(config, directory) as b:
        yield a, b


async def new_key(redis_url: str, key_prefix: str) -> str:
    """An API key written straight to Redis under the replicas' KEK, as the CLI would."""
    return await new_key_in(
        RedisSettings.model_validate({"url": redis_url, "key_prefix": key_prefix})
    )


async def new_key_in(settings: RedisSettings) -> str:
    """:func:`new_key` on any Redis deployment (standalone, Sentinel, Cluster), with a set-up
    deadline: a fresh Cluster client's first call also loads the slot map."""
    stores = RedisStores(settings.model_copy(update={"deadline_seconds": 5.0}))
    try:
        service = ApiKeyService(
            store=stores.api_keys,
            events=stores.events,
            envelope=Envelope(parse_kek(KEK)),
            clock=SystemClock(),
        )
        _, raw = await service.create(name="replica-test", scopes=["read"])
        return raw
    finally:
        await stores.close()


async def challenge(session: aiohttp.ClientSession, gate: Authgate) -> dict[str, Any]:
    """``GET /challenge`` on ``gate``."""
    async with session.get(gate.url + "/challenge") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def call(
    session: aiohttp.ClientSession, gate: Authgate, target: str, header: str
) -> tuple[int, bytes, str]:
    """One GET: status, body bytes and WWW-Authenticate."""
    async with session.get(gate.url + target, headers={"Authorization": header}) as resp:
        return resp.status, await resp.read(), resp.headers.get("WWW-Authenticate", "")


async def admitted(
    session: aiohttp.ClientSession, issuer: Authgate, verifier: Authgate, key: str
) -> None:
    """A challenge from ``issuer`` is accepted by ``verifier``.

    On a fresh key prefix the store epoch is written by the first nonce consumption, and a
    challenge issued in an earlier second is refused: retry once with a new challenge.
    """
    for _ in range(3):
        header = proof_header(await challenge(session, issuer), key, "GET", TARGET)
        status, body, _ = await call(session, verifier, TARGET, header)
        if status == 200:
            return
        assert (status, body) == (401, UNIFORM)
    raise AssertionError(f"{verifier.url} never admitted a challenge from {issuer.url}")


async def test_a_challenge_from_one_replica_is_accepted_by_the_other(
    replicas: tuple[Authgate, Authgate],
    session: aiohttp.ClientSession,
    redis_url: str,
    key_prefix: str,
) -> None:
    """The challenge secret is shared configuration: A's challenges pass on B and back."""
    a, b = replicas
    key = await new_key(redis_url, key_prefix)
    await admitted(session, a, b, key)
    await admitted(session, b, a, key)


async def test_fifty_concurrent_copies_admit_exactly_one(
    replicas: tuple[Authgate, Authgate],
    session: aiohttp.ClientSession,
    redis_url: str,
    key_prefix: str,
) -> None:
    """One proof, 50 copies racing on two replicas: one 2xx, 49 identical 401s."""
    a, b = replicas
    key = await new_key(redis_url, key_prefix)
    await admitted(session, a, b, key)
    header = proof_header(await challenge(session, a), key, "GET", TARGET)
    start = asyncio.Event()

    async def copy(gate: Authgate) -> tuple[int, bytes, str]:
        await start.wait()
        return await call(session, gate, TARGET, header)

    tasks = [asyncio.create_task(copy(a if i % 2 else b)) for i in range(COPIES)]
    await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks)
    accepted = [r for r in results if 200 <= r[0] < 300]
    assert len(accepted) == 1, [r[0] for r in results]
    refused = [r for r in results if r not in accepted]
    assert {(status, body) for status, body, _ in refused} == {(401, UNIFORM)}
    assert len({www for _, _, www in refused}) == 1


async def test_a_captured_proof_replayed_anywhere_is_refused(
    replicas: tuple[Authgate, Authgate],
    session: aiohttp.ClientSession,
    redis_url: str,
    key_prefix: str,
) -> None:
    """Accepted by A, then replayed to B and to A: the uniform 401 each time."""
    a, b = replicas
    key = await new_key(redis_url, key_prefix)
    await admitted(session, b, a, key)
    header = proof_header(await challenge(session, b), key, "GET", TARGET)
    assert (await call(session, a, TARGET, header))[0] == 200
    for gate in (b, a, b):
        status, body, www = await call(session, gate, TARGET, header)
        assert (status, body) == (401, UNIFORM)
        assert www.startswith("AGProof ")


async def api_key_reads(session: aiohttp.ClientSession, gate: Authgate) -> float:
    """How many times ``gate`` has read an API key record from Redis (its store metrics)."""
    async with session.get(gate.url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"authgate_store_operation_duration_seconds_count\{(.*)\} (\S+)", line)
        if match and {'store="api_keys"', 'operation="get"'} <= set(match.group(1).split(",")):
            total += float(match.group(2))
    return total


async def test_a_key_is_read_once_per_replica_then_served_from_cache(
    replicas: tuple[Authgate, Authgate],
    session: aiohttp.ClientSession,
    redis_url: str,
    key_prefix: str,
) -> None:
    """Lookup is by id: B's first request for a new key reads one record, later ones none
    (the event bus is live, so revocations would be pushed)."""
    a, b = replicas
    for _ in range(10):  # other keys in the store: lookup must not depend on them
        await new_key(redis_url, key_prefix)
    key = await new_key(redis_url, key_prefix)
    before = await api_key_reads(session, b)
    await admitted(session, a, b, key)
    first = await api_key_reads(session, b)
    assert first == before + 1
    for _ in range(5):
        await admitted(session, a, b, key)
    assert await api_key_reads(session, b) == first
