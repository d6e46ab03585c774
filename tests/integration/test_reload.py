"""``SIGHUP`` to a running ``authgate serve``: the rewritten config file applies, while a
client keeps sending on keep-alive connections and not one of its requests fails."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.integration.conftest import Signing, authgate_config, redis_stores_config, running
from tests.support import AuthgateProcess, get

STEADY = {"id": "steady", "path_prefix": "/steady"}
OPENED = {"id": "changing", "path_prefix": "/changing", "anonymous": True}
CLOSED = {"id": "changing", "path_prefix": "/changing", "scopes": ["admin"]}
CLIENTS = 4


def _auth(uri: str, token: str | None = None) -> dict[str, str]:
    headers = {"X-Original-URI": uri, "X-Original-Method": "GET"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _events(logs: str, event: str) -> list[dict[str, Any]]:
    """The lines of the process's JSON log with this ``event``."""
    lines = [line for line in logs.splitlines() if line.startswith("{")]
    return [e for e in map(json.loads, lines) if e.get("event") == event]


async def _until_logged(gate: AuthgateProcess, event: str, count: int) -> None:
    deadline = time.monotonic() + 15
    while len(_events(gate.logs(), event)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _generation(port: int) -> float:
    """``authgate_config_generation`` as one process answers it (a fresh connection)."""
    status, _, body = get(port, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith("authgate_config_generation "):
            return float(line.split()[1])
    raise AssertionError("no authgate_config_generation in /metrics")


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers",
    [1, pytest.param(2, marks=pytest.mark.redis)],
    ids=["one-process-memory", "two-workers-redis"],
)
async def test_sighup_applies_a_rewritten_config_and_no_request_fails(
    workers: int, signing: Signing, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """While four clients keep sending on their keep-alive connections, the config file is
    rewritten (a route closes) and authgate gets SIGHUP: every request is answered 200, no
    connection is dropped, every process logs the reload, then the new rule applies and
    ``authgate_config_generation`` is 2 in every process."""
    sections: dict[str, Any] = {
        "policy": {"rules": [STEADY, OPENED]},
        "logging": {"level": "INFO", "access_log": False},
    }
    if workers > 1:
        sections["server"] = {"workers": workers}
        sections["stores"] = redis_stores_config(redis_url, key_prefix)
    config = authgate_config(signing, **sections)
    token = signing.tokens.mint(scope="read")
    with running(config, tmp_path) as gate:
        # /healthz answered once one worker listened; each logs `listening` once its
        # application (and so its SIGHUP handler) runs.
        await _until_logged(gate, "listening", workers)
        assert get(gate.port, "/auth", _auth("/changing/x"))[0] == 200

        statuses: list[int] = []
        errors: list[str] = []
        connections = 0
        stop = asyncio.Event()

        async def count_connection(*_: object) -> None:
            nonlocal connections
            connections += 1

        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(count_connection)
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:

            async def client() -> None:
                while not stop.is_set():
                    try:
                        async with session.get(
                            f"{gate.url}/auth", headers=_auth("/steady/x", token)
                        ) as resp:
                            await resp.read()
                            statuses.append(resp.status)
                    except aiohttp.ClientError as exc:
                        errors.append(repr(exc))

            clients = [asyncio.ensure_future(client()) for _ in range(CLIENTS)]
            await asyncio.sleep(0.5)
            tree = yaml.safe_load(gate.config_path.read_text())
            tree["policy"]["rules"] = [STEADY, CLOSED]
            gate.config_path.write_text(yaml.safe_dump(tree))
            during = len(statuses)
            os.kill(gate.pid, signal.SIGHUP)
            await _until_logged(gate, "config_reloaded", workers)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*clients)

        reloads = _events(gate.logs(), "config_reloaded")
        assert len(reloads) == workers, gate.logs()
        assert all(r["generation"] == 2 and r["keys"] == ["policy.rules"] for r in reloads)
        assert errors == []
        assert set(statuses) == {200}
        assert len(statuses) > during > 0  # requests ran before and after the signal
        assert connections <= CLIENTS  # no keep-alive connection was lost and replaced
        assert gate.proc is not None and gate.proc.poll() is None  # SIGHUP ended nothing

        # Fresh connections land on either worker: every one sees the new config.
        for _ in range(12):
            assert get(gate.port, "/auth", _auth("/changing/x"))[0] == 401
            assert _generation(gate.port) == 2.0


async def test_a_refused_reload_keeps_the_process_serving_the_old_config(
    signing: Signing, tmp_path: Path
) -> None:
    """A rewritten config that changes the listening port is refused on SIGHUP, naming
    server.port in the log; the process keeps serving its old rules on its old port."""
    config = authgate_config(
        signing, policy={"rules": [STEADY, OPENED]}, logging={"level": "INFO", "access_log": False}
    )
    with running(config, tmp_path) as gate:
        tree = yaml.safe_load(gate.config_path.read_text())
        tree["server"]["port"] = gate.port + 1
        tree["policy"]["rules"] = [STEADY, CLOSED]
        gate.config_path.write_text(yaml.safe_dump(tree))
        os.kill(gate.pid, signal.SIGHUP)
        await _until_logged(gate, "config_reload_refused", 1)
        refused = _events(gate.logs(), "config_reload_refused")
        assert [e["keys"] for e in refused] == [["server.port"]], gate.logs()
        assert get(gate.port, "/auth", _auth("/changing/x"))[0] == 200
        assert _generation(gate.port) == 1.0
