"""Rolling restarts lose nothing: the SIGTERM sequence of a real ``authgate serve`` process.

Delay (``/readyz`` 503, still serving, ``Connection: close``), then drain (listener closed,
in-flight requests finish), then an exit within the drain timeout plus 1 s whatever the
upstream does (see ``src/authgate/web/drain.py``). Outcomes are counted, never timed:
every wait is a bounded poll, and the time bounds are generous on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import (
    Authgate,
    Signing,
    Upstream,
    authgate_config,
    bearer,
    redis_stores_config,
    running,
)
from tests.support import raw_request, wait_for

GET_READYZ = b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def _config(
    signing: Signing, upstream_port: int, *, delay: float, drain: float, **sections: Any
) -> dict[str, Any]:
    server = {"shutdown_delay_seconds": delay, "drain_timeout_seconds": drain}
    server.update(sections.pop("server", {}))
    return authgate_config(
        signing,
        server=server,
        proxy={"upstream": f"http://127.0.0.1:{upstream_port}"},
        **sections,
    )


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, _, body = raw_request(port, GET_READYZ)
    return status, json.loads(body)


def _draining(port: int) -> bool:
    """Whether ``/readyz`` answers 503 ``draining`` (a refused connection is not that)."""
    try:
        status, body = _readyz(port)
    except OSError:
        return False
    return status == 503 and body["checks"].get("server") == "draining"


def _refused(port: int) -> bool:
    """Whether a new connection to ``port`` is refused (the listener is closed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def _exit_code(gate: Authgate, *, within: float) -> int:
    """The process's exit status; fails if it is still running after ``within`` seconds."""
    assert gate.proc is not None
    try:
        return gate.proc.wait(within)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"authgate still running after {within} s:\n{gate.logs()}") from None


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One ``Content-Length`` response from a keep-alive connection: (head, body)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head, body


def _connection_header(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection":
            return value.strip().decode().lower()
    return ""


@contextlib.asynccontextmanager
async def _silent_upstream() -> AsyncIterator[tuple[int, asyncio.Event, asyncio.Event]]:
    """An upstream that accepts and reads, and never answers: (port, connected, closed).

    ``closed`` is set once authgate drops the upstream connection (the call was cancelled).
    """
    connected = asyncio.Event()
    closed = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        closed.set()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connected, closed
    finally:
        server.close()


# --- the delay: not ready, still serving --------------------------------------------------


async def test_readyz_reports_draining_while_requests_are_still_served(
    signing: Signing, upstream: Upstream, tmp_path: Path
) -> None:
    """During the delay /readyz answers 503 draining, and a new request still gets its 200."""
    with running(_config(signing, upstream.port, delay=1.0, drain=1.0), tmp_path) as gate:
        assert gate.proc is not None
        assert _readyz(gate.port)[0] == 200
        gate.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: _draining(gate.port), timeout=5)
        status, _, body = await asyncio.to_thread(
            raw_request,
            gate.port,
            b"GET /public/during-delay HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        assert (status, json.loads(body)["target"]) == (200, "/public/during-delay")
        assert upstream.requests_to("/public/during-delay")
        assert _exit_code(gate, within=10) == 0, gate.logs()


def test_keep_alive_client_is_told_to_close_during_the_delay(
    signing: Signing, upstream: Upstream, tmp_path: Path
) -> None:
    """A keep-alive connection's next response carries Connection: close, then it closes."""
    request = b"GET /public/keep HTTP/1.1\r\nHost: t\r\n\r\n"
    with (
        running(_config(signing, upstream.port, delay=1.0, drain=1.0), tmp_path) as gate,
        socket.create_connection(("127.0.0.1", gate.port), timeout=5) as conn,
    ):
        assert gate.proc is not None
        conn.sendall(request)
        head, _ = _read_response(conn)
        assert head.startswith(b"HTTP/1.1 200")
        assert _connection_header(head) != "close"  # kept alive before the signal
        gate.proc.send_signal(signal.SIGTERM)
        asyncio.run(wait_for(lambda: _draining(gate.port), timeout=5))
        conn.sendall(request)  # the same connection, still open during the delay
        head, _ = _read_response(conn)
        assert head.startswith(b"HTTP/1.1 200")
        assert _connection_header(head) == "close"
        assert conn.recv(65536) == b""  # and the server closed it
        assert _exit_code(gate, within=10) == 0, gate.logs()


def test_second_signal_exits_at_once(signing: Signing, upstream: Upstream, tmp_path: Path) -> None:
    """A second SIGTERM during a long delay ends the process without waiting it out."""
    with running(_config(signing, upstream.port, delay=60.0, drain=60.0), tmp_path) as gate:
        assert gate.proc is not None
        gate.proc.send_signal(signal.SIGTERM)
        asyncio.run(wait_for(lambda: _draining(gate.port), timeout=5))
        gate.proc.send_signal(signal.SIGTERM)
        assert _exit_code(gate, within=10) == -signal.SIGTERM, gate.logs()


# --- the drain: in-flight requests finish, or are cut --------------------------------------


async def test_in_flight_request_finishing_within_the_drain_gets_its_200(
    signing: Signing, upstream: Upstream, tmp_path: Path
) -> None:
    """A request in flight when the listener closes completes with its 2xx; exit 0."""
    with running(_config(signing, upstream.port, delay=0.5, drain=10.0), tmp_path) as gate:
        assert gate.proc is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def in_flight() -> tuple[int, str, str]:
                async with session.get(
                    f"{gate.url}/hold/in-flight", headers=bearer(signing.tokens.mint())
                ) as resp:
                    body = await resp.json()
                    return resp.status, body["target"], resp.headers.get("Connection", "")

            task = asyncio.create_task(in_flight())
            await wait_for(lambda: upstream.requests_to("/hold"), timeout=5)
            gate.proc.send_signal(signal.SIGTERM)
            await wait_for(lambda: _refused(gate.port), timeout=10)  # the drain has begun
            assert not task.done()
            upstream.release()
            status, target, connection = await asyncio.wait_for(task, 10)
        assert (status, target) == (200, "/hold/in-flight")
        assert connection.lower() == "close"
        assert await asyncio.to_thread(_exit_code, gate, within=10) == 0, gate.logs()


async def test_silent_upstream_is_cut_at_the_drain_deadline_and_the_process_exits(
    signing: Signing, tmp_path: Path
) -> None:
    """An upstream that never answers: the client gets 504, the upstream call is cancelled
    and the process exits by itself, 0, well before twice the drain timeout."""
    delay, drain = 0.5, 1.5
    async with _silent_upstream() as (port, connected, closed):
        with running(_config(signing, port, delay=delay, drain=drain), tmp_path) as gate:
            assert gate.proc is not None
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

                async def in_flight() -> tuple[int, str]:
                    async with session.get(
                        f"{gate.url}/never", headers=bearer(signing.tokens.mint())
                    ) as resp:
                        return resp.status, (await resp.json())["error"]["code"]

                task = asyncio.create_task(in_flight())
                await asyncio.wait_for(connected.wait(), 10)
                gate.proc.send_signal(signal.SIGTERM)
                # Bounded, generous: the process must be gone by delay + drain + 1 s; a
                # handler that kept awaiting the upstream would hold it to delay + 2 x drain
                # or die by the watchdog (exit 1) without answering.
                code = await asyncio.to_thread(_exit_code, gate, within=delay + drain + 2.5)
                assert code == 0, gate.logs()
                assert await asyncio.wait_for(task, 5) == (504, "upstream_timeout")
            await asyncio.wait_for(closed.wait(), 5)  # authgate dropped the upstream call
            assert "shutdown_overrun" not in gate.logs()


# --- several workers ------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_every_worker_reports_draining_during_the_delay(
    signing: Signing, upstream: Upstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """With two workers on one port, every new connection during the delay sees 503."""
    delay_s = 3.0
    config = _config(
        signing,
        upstream.port,
        delay=delay_s,
        drain=1.0,
        server={"workers": 2},
        stores=redis_stores_config(redis_url, key_prefix),
    )
    with running(config, tmp_path) as gate:
        assert gate.proc is not None
        # Both workers listen once each has answered: poll until 16 connections all get 200.
        asyncio.run(
            wait_for(lambda: all(_readyz(gate.port)[0] == 200 for _ in range(16)), timeout=15)
        )
        gate.proc.send_signal(signal.SIGTERM)
        # The kernel spreads 16 new connections over both workers (all on one: 2**-15);
        # before the delay ends (the listener closes) all 16 must answer draining.
        asyncio.run(wait_for(lambda: all(_draining(gate.port) for _ in range(16)), timeout=delay_s))
        assert _exit_code(gate, within=15) == 0, gate.logs()
