"""``server.ops_port``: the operations endpoints and the admin API on a listener of their own.

With an ops port, ``/healthz``, ``/readyz``, ``/metrics`` and the admin API answer there and
are 404 on the traffic port (a sidecar proxies those paths to the app instead), while the
doors, the token service and the public JWKS stay on the traffic port only. Unset, every
route is on ``server.port``, as before.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.config.loader import load_settings
from authgate.crypto.keys import KeyRing
from authgate.errors import ConfigError
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import OPS_APP
from tests.support import AuthgateProcess, TokenFactory, free_port, get, make_settings

Client = TestClient[web.Request, web.Application]
OPS_PATHS = ["/healthz", "/readyz", "/metrics", "/admin/keys"]
TRAFFIC_PATHS = ["/auth", "/.well-known/jwks.json", "/api/v1/auth/jwks", "/token"]


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
async def clients(tokens: TokenFactory) -> AsyncIterator[tuple[Client, Client]]:
    """(traffic, ops) clients of one application with ``server.ops_port`` set."""
    settings = make_settings(server={"ops_port": 9090})
    app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
    # The traffic application first: its start-up starts the services both share.
    async with (
        TestClient(TestServer(app)) as traffic,
        TestClient(TestServer(app[OPS_APP])) as ops,
    ):
        yield traffic, ops


@pytest.mark.parametrize("path", OPS_PATHS)
async def test_ops_paths_are_404_on_the_traffic_port(
    clients: tuple[Client, Client], path: str
) -> None:
    """Each operations path answers the JSON 404 on the traffic port."""
    traffic, _ = clients
    response = await traffic.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_ops_paths_answer_on_the_ops_port(
    clients: tuple[Client, Client], tokens: TokenFactory
) -> None:
    """Liveness, readiness, metrics and the admin API (still behind the admin scope) answer
    on the ops port."""
    _, ops = clients
    assert (await ops.get("/healthz")).status == 200
    ready = await ops.get("/readyz")
    assert ready.status == 200, await ready.text()
    metrics = await ops.get("/metrics")
    assert metrics.status == 200
    assert "authgate_" in await metrics.text()
    assert (await ops.get("/admin/keys")).status == 401
    admin = {"Authorization": f"Bearer {tokens.mint(scope='authgate:admin')}"}
    assert (await ops.get("/admin/keys", headers=admin)).status == 200


@pytest.mark.parametrize("path", TRAFFIC_PATHS)
async def test_traffic_paths_are_404_on_the_ops_port(
    clients: tuple[Client, Client], path: str
) -> None:
    """The doors, the token service and the JWKS are not on the ops port."""
    _, ops = clients
    response = await ops.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_jwks_stays_on_the_traffic_port(clients: tuple[Client, Client]) -> None:
    """Verifiers fetch the public keys where they reach authgate: the traffic port."""
    traffic, _ = clients
    response = await traffic.get("/.well-known/jwks.json")
    assert response.status == 200
    assert (await response.json())["keys"]


async def test_without_ops_port_everything_is_on_the_traffic_port(tokens: TokenFactory) -> None:
    """Unset (the default): no ops application, the operations paths on server.port."""
    app = create_app(make_settings(), stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
    assert OPS_APP not in app
    async with TestClient(TestServer(app)) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status == 200, path
        assert (await client.get("/admin/keys")).status == 401


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"port": 9000, "ops_port": 9000}, "server.ops_port and server.port are both 9000"),
        ({"ops_host": "0.0.0.0"}, "server.ops_host needs server.ops_port"),
        ({"ops_port": 0}, "must be at least 1"),
    ],
    ids=["same-port", "host-without-port", "port-zero"],
)
def test_bad_ops_settings_are_refused(server: dict[str, object], message: str) -> None:
    """The ops listener is a second port; a host without a port is a mistake."""
    env = {f"AUTHGATE_SERVER__{k.upper()}": str(v) for k, v in server.items()}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    assert message in str(caught.value)


def test_a_sidecar_rule_under_the_admin_prefix_is_fine_with_an_ops_port() -> None:
    """With the admin API on the ops port, the app owns /admin on the traffic port."""
    env = {
        "AUTHGATE_PROXY__UPSTREAM": "http://127.0.0.1:3000",
        "AUTHGATE_POLICY__RULES": "[{id: admin, path_prefix: /admin}]",
    }
    with pytest.raises(ConfigError, match=r"under tokens\.admin_prefix"):
        load_settings(environ=env)
    settings = load_settings(environ={**env, "AUTHGATE_SERVER__OPS_PORT": "9090"})
    assert settings.server.ops_port == 9090


# --- a real `authgate serve` ----------------------------------------------------------------


def _status(port: int, path: str) -> int:
    status, _, _ = get(port, path)
    return status


def test_serve_listens_on_both_ports_and_reports_draining_on_the_ops_port(
    tmp_path: Path,
) -> None:
    """A real process: operations on the ops port only, the doors on the traffic port
    only, and after SIGTERM the ops port's /readyz says ``draining`` during the delay."""
    ops_port = free_port()
    process = AuthgateProcess(
        {"server": {"ops_port": ops_port, "shutdown_delay_seconds": 2}}, tmp_path
    ).start()
    try:
        assert _status(ops_port, "/healthz") == 200
        assert _status(ops_port, "/readyz") == 200
        assert _status(ops_port, "/metrics") == 200
        assert _status(process.port, "/healthz") == 404
        assert _status(process.port, "/metrics") == 404
        assert _status(process.port, "/auth") != 404  # the door answers (400: no X-Original-*)
        assert _status(ops_port, "/auth") == 404
        assert process.proc is not None
        process.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.5
        seen = []
        while time.monotonic() < deadline:
            status, _, body = get(ops_port, "/readyz")
            seen.append(status)
            if status == 503:
                assert json.loads(body)["checks"]["server"] == "draining"
                break
            time.sleep(0.05)
        assert seen[-1] == 503, seen
        assert process.proc.wait(10) == 0
    finally:
        process.stop()


def test_serve_refuses_an_ops_port_in_use_naming_the_key(tmp_path: Path) -> None:
    """An ops port another process holds: exit 2 before starting, naming server.ops_port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        config = tmp_path / "authgate.yaml"
        config.write_text(
            yaml.safe_dump({"server": {"port": free_port(), "ops_port": taken}}), encoding="utf-8"
        )
        config.chmod(0o600)
        done = subprocess.run(
            [sys.executable, "-m", "authgate", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert "server.ops_port" in done.stderr
    assert "already in use" in done.stderr


def _dockerfile_healthcheck() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (exec form), continuation lines joined."""
    text = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    joined = text.replace("\\\n", " ")
    (line,) = [ln for ln in joined.splitlines() if ln.startswith("HEALTHCHECK")]
    command: list[str] = json.loads(line[line.index("CMD") + 3 :])
    return command


def test_the_image_healthcheck_follows_the_ops_port(tmp_path: Path) -> None:
    """The image's HEALTHCHECK asks the ops port when AUTHGATE_SERVER__OPS_PORT is set (the
    chart sets it), since /healthz is 404 on the traffic port then."""
    command = _dockerfile_healthcheck()
    assert command[0] == "python"
    ops_port = free_port()
    process = AuthgateProcess({"server": {"ops_port": ops_port}}, tmp_path).start()
    try:
        env = {"PATH": "/usr/bin:/bin", "AUTHGATE_SERVER__PORT": str(process.port)}
        run = [sys.executable, *command[1:]]
        traffic_only = subprocess.run(run, env=env, capture_output=True, timeout=30, check=False)
        assert traffic_only.returncode != 0  # 404 on the traffic port
        with_ops = {**env, "AUTHGATE_SERVER__OPS_PORT": str(ops_port)}
        assert subprocess.run(run, env=with_ops, timeout=30, check=False).returncode == 0
    finally:
        process.stop()
