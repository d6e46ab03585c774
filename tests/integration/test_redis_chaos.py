"""Redis chaos under a real authgate process serving HMAC-signed requests.

For each fault (frozen, killed then restarted from a snapshot older than the last accepted
nonce): requests that need state get 503 and nothing else while it lasts, ``/readyz``
reports it, service comes back without restarting authgate, and a request accepted before
the fault is never accepted again. Outcomes are counted; nothing is timed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from authgate.client.hmac_proof import proof_header
from tests.integration.conftest import Authgate, RedisServer, Upstream, redis_stores_config, running
from tests.integration.test_hmac_replicas import (
    CHALLENGE_SECRET,
    KEK,
    TARGET,
    UNIFORM,
    call,
    challenge,
    new_key,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RECOVERY_ATTEMPTS = 100  # 0.1 s apart
DURING_FAULT = 5


@pytest.fixture
def snapshotted_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A dedicated server that loads ``dump.rdb`` at start (snapshots taken by the test)."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", "--save", "3600 1").start()
    try:
        yield server
    finally:
        server.terminate()


@pytest.fixture
def gate(
    snapshotted_redis: RedisServer, upstream_server: Upstream, tmp_path: Path
) -> Iterator[Authgate]:
    """authgate as a sidecar, HMAC proofs only, on the dedicated Redis."""
    config = {
        "stores": redis_stores_config(snapshotted_redis.url, "chaos:"),
        "secrets": {"key_encryption_key": KEK},
        "hmac": {"challenge_secret": CHALLENGE_SECRET},
        "proxy": {"upstream": f"http://127.0.0.1:{upstream_server.port}"},
        "policy": {"rules": [{"id": "api", "path_prefix": "/"}]},
        "logging": {"level": "WARNING", "access_log": False},
    }
    with running(config, tmp_path) as proc:
        yield proc


async def signed(session: aiohttp.ClientSession, gate: Authgate, key: str) -> str:
    """A fresh proof header over a challenge from ``gate``."""
    return proof_header(await challenge(session, gate), key, "GET", TARGET)


async def until_admitted(session: aiohttp.ClientSession, gate: Authgate, key: str) -> str:
    """The first fresh proof ``gate`` admits (bounded); 401/503 before that are fine."""
    for _ in range(RECOVERY_ATTEMPTS):
        header = await signed(session, gate, key)  # /challenge needs no store
        status, body, _ = await call(session, gate, TARGET, header)
        if status == 200:
            return header
        assert status in (401, 503), (status, body)
        await asyncio.sleep(0.1)
    raise AssertionError("authgate did not serve again without a restart")


async def ready(session: aiohttp.ClientSession, gate: Authgate) -> tuple[int, dict[str, str]]:
    async with session.get(gate.url + "/readyz") as resp:
        return resp.status, json.loads(await resp.read())["checks"]


@pytest.mark.parametrize("fault", ["freeze", "kill_and_restore_snapshot"])
async def test_fault_fails_closed_recovers_and_admits_no_replay(
    fault: str,
    gate: Authgate,
    snapshotted_redis: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    """503 only while Redis is faulty, /readyz says so, service returns, replays stay out."""
    server = snapshotted_redis
    key = await new_key(server.url, "chaos:")
    await until_admitted(session, gate, key)
    with redis.Redis(port=server.port) as admin:
        admin.save()  # the snapshot: it holds the API key and the epoch marker, not what follows
    accepted = await until_admitted(session, gate, key)
    pending = [await signed(session, gate, key) for _ in range(DURING_FAULT)]

    if fault == "freeze":
        server.freeze()
    else:
        server.kill()
    outcomes = [(await call(session, gate, TARGET, header))[0] for header in pending]
    outcomes.append((await call(session, gate, TARGET, accepted))[0])
    assert outcomes == [503] * (DURING_FAULT + 1)
    status, checks = await ready(session, gate)
    assert (status, checks["stores"]) == (503, "store_unavailable")

    if fault == "freeze":
        server.thaw()
    else:
        server.start()  # from dump.rdb: older than the accepted request's nonce
    await until_admitted(session, gate, key)
    status, _ = await ready(session, gate)
    assert status == 200
    assert gate.proc is not None and gate.proc.poll() is None

    # Neither the accepted request nor those that met the fault is admitted twice: the
    # accepted one's nonce was lost with the newer data, but the epoch moved past it.
    replays = [await call(session, gate, TARGET, accepted) for _ in range(3)]
    assert [(s, b) for s, b, _ in replays] == [(401, UNIFORM)] * 3
