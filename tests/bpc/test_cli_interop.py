"""``bpc-client`` 1.0.0's own CLI (``bpc``), unchanged, run as a subprocess against authgate.

authgate serves in process (the aiohttp test server on the test's event loop); the CLI runs
as a child process, awaited without blocking the loop, with ``HOME`` pointing at the test's
directory so it finds the pair the published client saved there. The assertions read what
the CLI prints: ``bpc status`` must say ``healthy`` and ``bpc audit`` must show the real
timestamp, request, pair and outcome of each entry, never ``?``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bpc_client import BPCClient  # type: ignore[import-untyped]

from tests.bpc.conftest import SECRET, Gateway


def bpc_command() -> list[str]:
    """The installed ``bpc`` console script, next to this interpreter."""
    script = Path(sys.executable).with_name("bpc")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from bpc_client.cli.main import main; main()"]


async def run_bpc(*args: str) -> tuple[int, str]:
    """Run ``bpc args...``; its exit status and everything it printed."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        *bpc_command(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode("utf-8")


async def test_bpc_status_reports_a_healthy_gateway(gateway: Gateway) -> None:
    """``bpc status --url`` reads ``ok`` from /bpc/health: ``Server: healthy``."""
    code, out = await run_bpc("status", "--url", gateway.base_url)
    assert code == 0, out
    assert "Server: healthy" in out
    assert "unhealthy" not in out


async def test_health_keeps_its_own_members(gateway: Gateway) -> None:
    """The client's ``ok`` is added beside authgate's ``status`` and ``version``."""
    async with gateway.client.get("/bpc/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "ok": True, "version": "1.0"}


async def test_bpc_audit_shows_every_column(gateway: Gateway, clients: list[Any]) -> None:
    """``bpc audit --name`` prints each entry's timestamp, request, pair id and outcome."""

    def flow() -> str:
        client = BPCClient.register(base_url=gateway.base_url, name="dev1", secret=SECRET)
        clients.append(client)
        for i in range(3):
            assert client.get(f"/api/items/{i}").status_code == 200
        pair_id: str = client.pair_id
        return pair_id

    pair_id = await asyncio.to_thread(flow)
    entries = await gateway.pairs.trail(pair_id, 10)
    code, out = await run_bpc("audit", "--name", "dev1", "--limit", "4")
    assert code == 0, out
    rows = [line for line in out.splitlines() if pair_id in line]
    assert len(rows) == 4, out
    assert "?" not in "".join(rows).replace("?limit=4", "")
    # Newest first: the audit call itself (signed with its query), then the three GETs.
    events = ["GET /bpc/audit?limit=4", "GET /api/items/2", "GET /api/items/1", "GET /api/items/0"]
    stored = {e["path"]: e["ts"] for e in entries if "path" in e}
    for row, event in zip(rows, events, strict=True):
        timestamp, method, path, shown_pair, result = row.split()
        assert f"{method} {path}" == event
        assert (shown_pair, result) == (pair_id, "ok")
        shown = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        assert abs(shown - datetime.now(UTC)).total_seconds() < 120
        if path in stored:  # the three GETs: exactly their stored ``ts``
            assert round(shown.timestamp() * 1000) == stored[path]
    assert set(stored) >= {"/api/items/0", "/api/items/1", "/api/items/2"}


async def test_audit_entries_keep_authgate_members(gateway: Gateway, clients: list[Any]) -> None:
    """Raw JSON: the client's names beside ts, method, path, outcome and client_ip."""

    def flow() -> dict[str, Any]:
        client = BPCClient.register(base_url=gateway.base_url, name="dev1", secret=SECRET)
        clients.append(client)
        client.get("/api/items")
        body: dict[str, Any] = client.get("/bpc/audit?limit=3").json()
        return body

    body = await asyncio.to_thread(flow)
    pair_id = body["pairId"]
    request_entry = body["entries"][1]
    assert {"ts", "method", "path", "outcome", "client_ip"} <= set(request_entry)
    assert request_entry["event"] == "GET /api/items"
    assert request_entry["pairId"] == pair_id
    assert request_entry["timestamp"].endswith("Z")
    registered = body["entries"][-1]
    assert (registered["event"], registered["outcome"]) == ("registered", "active")
    assert registered["pairId"] == pair_id
