"""Tracing is optional: without the otel extra authgate works as before, and with tracing off
authgate never imports opentelemetry (each case in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: a meta path finder sees every opentelemetry import, records
# those authgate's own modules make, and ("absent") fails them all, as if the extra were
# not installed. Then a forward-auth decision over a real socket, then tracing.enabled.
SCRIPT = r"""
import asyncio, json, sys, traceback

MODE = sys.argv[1]
AUTHGATE = sys.argv[2]
by_authgate = []


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] != "opentelemetry":
            return None
        importer = next(
            (f.filename for f in reversed(traceback.extract_stack()[:-1])
             if "importlib" not in f.filename),
            "",
        )
        if importer.startswith(AUTHGATE):
            by_authgate.append(name)
        if MODE == "absent":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Watch())

from aiohttp.test_utils import TestClient, TestServer
from authgate.config.loader import ConfigError, load_settings

from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from tests.support import TokenFactory, make_settings


async def decide(tracing):
    tokens = TokenFactory()
    settings = make_settings(
        tracing=tracing, policy={"rules": [{"id": "api", "path_prefix": "/api"}]}
    )
    app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(
            "/auth",
            headers={
                "Authorization": f"Bearer {tokens.mint()}",
                "X-Original-URI": "/api/x",
                "X-Original-Method": "GET",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            },
        )
        return resp.status


out = {"off": asyncio.run(decide({"enabled": False}))}
out["imported_while_off"] = list(by_authgate)
try:
    load_settings(environ={"AUTHGATE_TRACING__ENABLED": "true"})  # what serve reads
    out["on"] = asyncio.run(decide({"enabled": True, "exporter": "console"}))
except ConfigError as exc:
    out["on_refused"] = str(exc)
out["imported_when_on"] = list(by_authgate)
print(json.dumps(out))
"""


def run(mode: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(ROOT / "src" / "authgate")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(90)
def test_without_the_extra_authgate_decides_and_refuses_tracing_by_key() -> None:
    """opentelemetry absent: decisions work; tracing.enabled is a config problem naming
    the key and the extra to install."""
    out = run("absent")
    assert out["off"] == 200
    assert "on" not in out
    refused = out["on_refused"]
    assert isinstance(refused, str)
    assert (
        "tracing.enabled: needs the otel extra (opentelemetry.sdk.trace is not installed): "
        "pip install 'authgate[otel]'"
    ) in refused
    assert "tracing.exporter: needs the otel extra" in refused


@pytest.mark.timeout(90)
def test_with_the_extra_and_tracing_off_authgate_never_imports_opentelemetry() -> None:
    """Extra installed, tracing off: no authgate module imports opentelemetry; on, it does
    (the watch can see it)."""
    out = run("installed")
    assert out["off"] == 200
    assert out["imported_while_off"] == []
    assert out["on"] == 200
    imported = out["imported_when_on"]
    assert isinstance(imported, list)
    assert "opentelemetry.sdk.trace" in imported
