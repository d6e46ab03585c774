"""Redis outages against a real authgate process: fail closed (503), report not-ready, and
recover on its own once Redis is back.

Each test runs its own ``redis-server`` on a free port, so the shared Redis is never touched.
The token is verified (and cached) before the outage: the revocation check must still go to
Redis on every request, so the cache cannot turn an outage into a pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Authgate,
    RedisServer,
    Signing,
    authgate_config,
    bearer,
    redis_stores_config,
    running,
)
from tests.support import get

pytestmark = pytest.mark.redis

RECOVERY_SECONDS = 10.0


@pytest.fixture
def gate(signing: Signing, redis_server: RedisServer, tmp_path: Path) -> Iterator[Authgate]:
    """authgate in forward-auth mode on the dedicated Redis."""
    config = authgate_config(signing, stores=redis_stores_config(redis_server.url, "outage:"))
    with running(config, tmp_path) as proc:
        yield proc


def _auth(gate: Authgate, token: str) -> tuple[int, str]:
    """Ask ``/auth`` as nginx would; the status and the error code (if any)."""
    headers = {"X-Original-URI": "/api/items", "X-Original-Method": "GET", **bearer(token)}
    status, _, body = get(gate.port, "/auth", headers)
    code = json.loads(body)["error"]["code"] if status != 200 else ""
    return status, code


def _ready(gate: Authgate) -> tuple[int, dict[str, str]]:
    status, _, body = get(gate.port, "/readyz")
    checks: dict[str, str] = json.loads(body)["checks"]
    return status, checks


def _wait_until_allowed(gate: Authgate, token: str) -> float:
    """Seconds until ``/auth`` allows again (bounded by ``RECOVERY_SECONDS``)."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_SECONDS:
        status, code = _auth(gate, token)
        if status == 200:
            return time.monotonic() - started
        assert (status, code) == (503, "store_unavailable")
        time.sleep(0.1)
    raise AssertionError(f"authgate did not recover within {RECOVERY_SECONDS} s")


def test_redis_stopped_fails_closed_then_recovers(
    gate: Authgate, redis_server: RedisServer, signing: Signing
) -> None:
    """Redis terminated: 503 store_unavailable and not ready; restarted: 200 again, no restart."""
    token = signing.tokens.mint()
    assert _auth(gate, token) == (200, "")
    assert _ready(gate)[0] == 200

    redis_server.terminate()
    for _ in range(3):  # repeated: a retry or a cached verdict must not flip it to a pass
        assert _auth(gate, token) == (503, "store_unavailable")
    status, checks = _ready(gate)
    assert status == 503
    assert checks["stores"] == "store_unavailable"

    redis_server.start()
    _wait_until_allowed(gate, token)
    assert _ready(gate)[0] == 200
    assert gate.proc is not None
    assert gate.proc.poll() is None


def _wait_until_refused(gate: Authgate, token: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _auth(gate, token) == (503, "store_unavailable"):
            return
        time.sleep(0.05)
    raise AssertionError("the frozen store was not noticed in time")


def test_redis_frozen_fails_closed_within_the_deadline_then_recovers(
    gate: Authgate, redis_server: RedisServer, signing: Signing
) -> None:
    """Redis SIGSTOPped (accepts, never answers): 503, not a hang; SIGCONT: 200 again."""
    token = signing.tokens.mint()
    assert _auth(gate, token) == (200, "")

    redis_server.freeze()
    # The local denylist is trusted only while the event subscription answers its
    # heartbeat (0.25 s, three misses); a frozen server can accept no revocation meanwhile.
    # Once the subscription is known lost, every request checks Redis and fails closed.
    _wait_until_refused(gate, token)
    for _ in range(3):
        # Answered at all: the client's 5 s socket timeout would fail a request that hung on
        # the frozen server instead of hitting deadline_seconds.
        assert _auth(gate, token) == (503, "store_unavailable")
    assert _ready(gate)[0] == 503

    redis_server.thaw()
    _wait_until_allowed(gate, token)
    # Replies the frozen server sends late must not be read as answers to later commands.
    for _ in range(5):
        assert _auth(gate, token) == (200, "")
    assert _ready(gate)[0] == 200
