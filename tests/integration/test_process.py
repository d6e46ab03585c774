"""The ``authgate`` process: graceful drain on SIGTERM, several workers on one port, and
``check-config`` / start-up refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.integration.conftest import (
    Authgate,
    Signing,
    Upstream,
    authgate_config,
    bearer,
    redis_stores_config,
    running,
)
from tests.support import wait_for

SECRET_URL = "redis://:hunter2@127.0.0.1:6379/0"


def _authgate(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m authgate ARGS`` to completion (bounded)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "authgate", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **(env or {})},
        check=False,
    )


def _write_config(path: Path, tree: Mapping[str, Any], *, mode: int = 0o600) -> Path:
    path.write_text(yaml.safe_dump(dict(tree)))
    path.chmod(mode)
    return path


def _poll(predicate: Callable[[], bool], *, timeout: float) -> None:
    """Wait (blocking) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _refused(port: int) -> bool:
    """Whether a new connection to ``port`` is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


# --- SIGTERM drain ----------------------------------------------------------------------


async def test_sigterm_drains_in_flight_request_and_exits_zero(
    signing: Signing, upstream: Upstream, tmp_path: Path
) -> None:
    """SIGTERM: new connections are refused, the in-flight request gets its 200, exit 0."""
    drain_seconds = 10.0
    config = authgate_config(
        signing,
        # A short delay (readiness 503 while still serving: tests/integration/test_shutdown.py)
        # so the listener closes well within the wait below.
        server={"drain_timeout_seconds": drain_seconds, "shutdown_delay_seconds": 0.5},
        proxy={"upstream": f"http://127.0.0.1:{upstream.port}"},
    )
    with running(config, tmp_path) as gate:
        assert gate.proc is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:

            async def in_flight_request() -> tuple[int, str]:
                async with session.get(
                    f"{gate.url}/hold/report", headers=bearer(signing.tokens.mint())
                ) as resp:
                    return resp.status, (await resp.json())["target"]

            in_flight = asyncio.create_task(in_flight_request())
            await wait_for(lambda: upstream.requests_to("/hold"), timeout=5)
            gate.proc.send_signal(signal.SIGTERM)
            await wait_for(lambda: _refused(gate.port), timeout=5)
            assert not in_flight.done()  # held by the upstream until released
            upstream.release()
            assert await asyncio.wait_for(in_flight, 10) == (200, "/hold/report")
        code = await asyncio.to_thread(gate.proc.wait, drain_seconds)
        assert code == 0, gate.logs()


# --- several workers --------------------------------------------------------------------


@contextlib.contextmanager
def _open_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` open TCP connections to ``port``, closed afterwards."""
    conns: list[socket.socket] = []
    try:
        for _ in range(count):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield conns
    finally:
        for conn in conns:
            conn.close()


def _worker_pids(parent: int) -> list[int]:
    """Child processes of ``parent`` that are multiprocessing workers (not the tracker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def _sockets_by_pid(pids: list[int], port: int, state: str) -> dict[int, int]:
    """How many TCP sockets each pid holds with local ``port`` in ``state`` (hex, 01/0A)."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rpartition(":")[2], 16)
            if local_port == port and fields[3] == state:
                inodes[fields[9]] = local_port
    counts = dict.fromkeys(pids, 0)
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                counts[pid] += 1
    return counts


@pytest.mark.redis
@pytest.mark.slow
def test_two_workers_share_one_port_and_both_serve(
    signing: Signing, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """``server.workers: 2`` starts two processes listening on one port; both accept requests."""
    config = authgate_config(
        signing,
        server={"workers": 2},
        stores=redis_stores_config(redis_url, key_prefix),
    )
    with running(config, tmp_path) as gate:
        workers = _worker_pids(gate.pid)
        assert len(workers) == 2, workers
        # /healthz answered once one worker listened; wait for the other one too.
        _poll(lambda: all(_sockets_by_pid(workers, gate.port, "0A").values()), timeout=15)
        with _open_connections(gate.port, 32) as conns:
            for conn in conns:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                assert conn.recv(65536).startswith(b"HTTP/1.1 200")
            served = _sockets_by_pid(workers, gate.port, "01")
    # 32 connections spread by the kernel: all on one worker has odds of 2**-31.
    assert all(n > 0 for n in served.values()), served
    assert sum(served.values()) == 32


@pytest.mark.redis
def test_two_workers_stop_together_on_sigterm(
    signing: Signing, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """SIGTERM to the parent reaches every worker; the parent exits 0 and leaves no worker."""
    config = authgate_config(
        signing, server={"workers": 2}, stores=redis_stores_config(redis_url, key_prefix)
    )
    gate = Authgate(config, tmp_path).start()
    try:
        workers = _worker_pids(gate.pid)
        assert len(workers) == 2
        _poll(lambda: all(_sockets_by_pid(workers, gate.port, "0A").values()), timeout=15)
        assert gate.stop(timeout=15) == 0, gate.logs()
        assert _worker_pids(gate.pid) == []
        assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        gate.stop()


@pytest.mark.redis
@pytest.mark.parametrize("victim", [0, 1], ids=["first", "second"])
def test_a_crashed_worker_stops_the_others(
    signing: Signing, redis_url: str, key_prefix: str, tmp_path: Path, victim: int
) -> None:
    """Whichever worker dies, the parent stops the rest and exits 1 (never stays half up)."""
    config = authgate_config(
        signing, server={"workers": 2}, stores=redis_stores_config(redis_url, key_prefix)
    )
    gate = Authgate(config, tmp_path).start()
    try:
        assert gate.proc is not None
        workers = _worker_pids(gate.pid)
        assert len(workers) == 2
        _poll(lambda: all(_sockets_by_pid(workers, gate.port, "0A").values()), timeout=15)
        os.kill(workers[victim], signal.SIGKILL)
        assert gate.proc.wait(timeout=15) == 1, gate.logs()
        assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        gate.stop()


def test_two_workers_with_memory_stores_refuse_to_start(tmp_path: Path) -> None:
    """In-memory replay protection cannot span processes: start-up fails naming the key."""
    config = _write_config(tmp_path / "authgate.yaml", {"server": {"workers": 2}})
    result = _authgate("serve", "--config", str(config))
    assert result.returncode == 2
    assert "server.workers" in result.stderr


# --- check-config -----------------------------------------------------------------------


def test_check_config_masks_the_redis_password_from_a_file(tmp_path: Path) -> None:
    """The effective config is printed with the Redis URL masked."""
    config = _write_config(
        tmp_path / "authgate.yaml", {"stores": {"backend": "redis", "redis": {"url": SECRET_URL}}}
    )
    result = _authgate("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["stores"]["redis"]["url"] == "**********"
    assert printed["stores"]["backend"] == "redis"


def test_check_config_masks_the_redis_password_from_the_environment() -> None:
    """A secret passed as AUTHGATE_STORES__REDIS__URL is masked too."""
    result = _authgate("check-config", env={"AUTHGATE_STORES__REDIS__URL": SECRET_URL})
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert yaml.safe_load(result.stdout)["stores"]["redis"]["url"] == "**********"


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_world_readable_config_with_a_secret_is_refused(tmp_path: Path, command: str) -> None:
    """A 0644 file holding a secret is refused, naming the file and never echoing the secret."""
    config = _write_config(
        tmp_path / "authgate.yaml",
        {"stores": {"backend": "redis", "redis": {"url": SECRET_URL}}},
        mode=0o644,
    )
    args = (
        [command, str(config)] if command == "check-config" else [command, "--config", str(config)]
    )
    result = _authgate(*args)
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "0644" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("tree", "key"),
    [
        ({"server": {"prot": 8080}}, "server.prot"),
        ({"stores": {"redis": {"pasword": "x"}}}, "stores.redis.pasword"),
        ({"sever": {"port": 8080}}, "sever"),
    ],
    ids=["server", "nested", "section"],
)
def test_unknown_key_exits_2_naming_it(tmp_path: Path, tree: dict[str, Any], key: str) -> None:
    """An unknown key stops check-config with exit code 2 and names the key."""
    config = _write_config(tmp_path / "authgate.yaml", tree)
    result = _authgate("check-config", str(config))
    assert result.returncode == 2
    assert f"{key}: unknown key" in result.stderr
