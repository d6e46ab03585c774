"""BPC across two authgate replicas (separate processes) sharing the real Redis.

Both replicas use one key prefix and one key-encryption key, so either can open a pair
secret sealed by the other. A pair registered on replica A must be usable on B, a signed
request must be admitted exactly once across both however many copies race, and a
revocation on A must reach B: the propagation time is measured and reported (``pytest -s``
prints it; it is also written to the test's tmp dir), with only "eventually" asserted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bpc_client.crypto import generate_keypair, sign_request  # type: ignore[import-untyped]

from tests.integration.conftest import (
    Authgate,
    Propagation,
    Upstream,
    redis_stores_config,
    report_propagation,
    running,
)

pytestmark = pytest.mark.redis

SECRET = "correct-horse-battery"
COPIES = 50
TRIALS = 20
PROPAGATION_BOUND_SECONDS = 5.0


@dataclass
class Pair:
    """A registered pair and its device key."""

    pair_id: str
    keypair: dict[str, Any]

    def headers(self, method: str, path: str, body: bytes | None = None) -> dict[str, str]:
        """Fresh BPC headers, signed by the published client's own function."""
        headers: dict[str, str] = sign_request(
            self.keypair["private_key"], self.pair_id, SECRET, method, path, body
        )
        return headers


@pytest.fixture(scope="module")
def replicas(
    redis_url: str,
    key_prefix: str,
    upstream_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Authgate, Authgate]]:
    """Two authgate processes on one Redis key prefix with one key-encryption key."""
    config = {
        "stores": redis_stores_config(redis_url, key_prefix),
        "secrets": {"key_encryption_key": base64.b64encode(os.urandom(32)).decode()},
        "proxy": {"upstream": f"http://127.0.0.1:{upstream_server.port}"},
        # Replay refusals are failures too: keep the per-address budget out of the way.
        "bpc": {"auto_approve_development_pairs": True, "failures_per_minute": 100_000},
        "logging": {"level": "WARNING", "access_log": False},
    }
    directory = tmp_path_factory.mktemp("bpc-replicas")
    with running(config, directory) as a, running(config, directory) as b:
        yield a, b


async def call(
    session: aiohttp.ClientSession,
    base: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None = None,
) -> tuple[int, str]:
    """One request: the status and the error code (empty on success)."""
    async with session.request(method, base + path, headers=headers, data=body) as resp:
        data = await resp.json(content_type=None)
        return resp.status, (data.get("error", {}).get("code", "") if resp.status >= 400 else "")


async def register(session: aiohttp.ClientSession, gate: Authgate) -> Pair:
    """Register a development pair on ``gate`` (auto-approved)."""
    keypair: dict[str, Any] = generate_keypair()
    document = {
        "name": "replica-test",
        "scope": "read-write",
        "mode": "development",
        "secret": SECRET,
        "pubJwk": keypair["public_key_jwk"],
    }
    async with session.post(gate.url + "/bpc/register", json=document) as resp:
        body = await resp.json()
        assert resp.status == 201, body
    return Pair(body["pairId"], keypair)


async def admitted(session: aiohttp.ClientSession, gate: Authgate, pair: Pair) -> None:
    """A fresh request is accepted by ``gate``.

    On a fresh key prefix the store epoch is written by the first nonce consumption, and a
    request signed before that moment is refused (timestamp_expired): retry once signed anew.
    """
    for _ in range(3):
        status, code = await call(
            session, gate.url, "GET", "/api/items", pair.headers("GET", "/api/items")
        )
        if status == 200:
            return
        assert (status, code) == (401, "timestamp_expired")
    raise AssertionError(f"{gate.url} never admitted the pair")


async def test_a_pair_registered_on_one_replica_works_on_the_other(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession
) -> None:
    """Registered on A, the pair's sealed secret opens on B (shared key-encryption key)."""
    a, b = replicas
    pair = await register(session, a)
    await admitted(session, b, pair)
    await admitted(session, a, pair)


async def test_fifty_concurrent_copies_admit_exactly_one(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession
) -> None:
    """One signed request, 50 copies racing on two replicas: one 2xx, 49 replay_detected."""
    a, b = replicas
    pair = await register(session, a)
    await admitted(session, b, pair)
    headers = pair.headers("GET", "/api/items")
    start = asyncio.Event()

    async def copy(gate: Authgate) -> tuple[int, str]:
        await start.wait()
        return await call(session, gate.url, "GET", "/api/items", headers)

    tasks = [asyncio.create_task(copy(a if i % 2 else b)) for i in range(COPIES)]
    await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks)
    accepted = [r for r in results if 200 <= r[0] < 300]
    assert len(accepted) == 1, results
    assert sorted(r for r in results if r not in accepted) == [(401, "replay_detected")] * (
        COPIES - 1
    )


async def test_a_captured_request_replayed_anywhere_is_refused(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession
) -> None:
    """A request accepted by A, replayed to A or to B: 401 replay_detected."""
    a, b = replicas
    pair = await register(session, a)
    await admitted(session, a, pair)
    body = b'{"name":"widget"}'
    captured = {**pair.headers("POST", "/api/items", body), "Content-Type": "application/json"}
    assert await call(session, a.url, "POST", "/api/items", captured, body) == (200, "")
    for gate in (b, a, b):
        assert await call(session, gate.url, "POST", "/api/items", captured, body) == (
            401,
            "replay_detected",
        )


async def pair_reads(session: aiohttp.ClientSession, gate: Authgate) -> float:
    """How many times ``gate`` has read a pair record from Redis (its store metrics)."""
    async with session.get(gate.url + "/metrics") as resp:
        text = await resp.text()
    pattern = re.compile(
        r'^authgate_store_operation_duration_seconds_count\{[^}]*operation="get"[^}]*'
        r'store="pairs"[^}]*\} (\S+)$|^authgate_store_operation_duration_seconds_count'
        r'\{[^}]*store="pairs"[^}]*operation="get"[^}]*\} (\S+)$',
        re.MULTILINE,
    )
    match = pattern.search(text)
    return 0.0 if match is None else float(match.group(1) or match.group(2))


async def test_the_other_replica_serves_the_pair_from_its_cache(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession
) -> None:
    """Once B has seen the pair it stops reading it from Redis: revocation must be pushed."""
    a, b = replicas
    pair = await register(session, a)
    await admitted(session, b, pair)
    before = await pair_reads(session, b)
    assert before >= 1  # the first request read it
    for _ in range(5):
        await admitted(session, b, pair)
    assert await pair_reads(session, b) == before


async def revocation_propagation(
    session: aiohttp.ClientSession, a: Authgate, b: Authgate
) -> Propagation:
    """Revoke on A; poll B with fresh requests until it refuses."""
    pair = await register(session, a)
    await admitted(session, b, pair)  # B now holds the pair in its cache
    started = time.perf_counter()
    await admitted(session, b, pair)
    round_trip = time.perf_counter() - started
    revoke = json.dumps({"pairId": pair.pair_id}, separators=(",", ":")).encode()
    headers = {**pair.headers("POST", "/bpc/revoke", revoke), "Content-Type": "application/json"}
    assert await call(session, a.url, "POST", "/bpc/revoke", headers, revoke) == (200, "")
    revoked_at = time.perf_counter()
    stale = 0
    while True:
        status, code = await call(
            session, b.url, "GET", "/api/items", pair.headers("GET", "/api/items")
        )
        elapsed = time.perf_counter() - revoked_at
        if (status, code) == (401, "pair_revoked"):
            return Propagation(elapsed, stale, round_trip)
        assert status == 200, (status, code)
        stale += 1
        assert elapsed < PROPAGATION_BOUND_SECONDS, f"B still accepts {elapsed:.2f} s after"


async def test_revocation_on_one_replica_reaches_the_other(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Revoked on A, the pair is refused by B within the bound; the delay is measured."""
    a, b = replicas
    samples = [await revocation_propagation(session, a, b) for _ in range(TRIALS)]
    delays_ms = report_propagation(
        samples, label="BPC revocation", path=tmp_path / "bpc_revocation_propagation.json"
    )
    assert delays_ms[-1] < PROPAGATION_BOUND_SECONDS * 1000
