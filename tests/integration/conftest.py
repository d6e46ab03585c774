"""Real processes for integration tests: nginx from the example template, a recording echo
upstream in its own thread, dedicated redis-server instances, and authgate configs.

Everything listens on 127.0.0.1 on free ports; every wait is bounded. A missing ``nginx`` or
``redis-server`` binary fails the test (CI installs both): integration tests never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web

from authgate.config.model import RedisSettings
from authgate.stores.redis import RedisStores
from authgate.tokens.revocation import RevocationList
from tests.support import (
    AUDIENCE,
    ISSUER,
    AuthgateProcess,
    TokenFactory,
    echo_app,
    free_port,
)

REPO = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = REPO / "examples" / "nginx" / "nginx.conf.template"
IDENTITY_HEADERS = (
    "X-Authgate-Subject",
    "X-Authgate-Credential",
    "X-Authgate-Scopes",
    "X-Authgate-Credential-Id",
    "X-Authgate-Issuer",
    "X-Authgate-Identity",
)
# Rules shared by the nginx and sidecar suites.
RULES = [
    {"id": "public", "path_prefix": "/public", "anonymous": True},
    {"id": "admin", "path_prefix": "/admin", "scopes": ["admin"]},
    {"id": "authenticated", "path_prefix": "/"},
]


# --- the echo upstream ------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> list[str]:
        """Every value of ``name`` (case-insensitive)."""
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Upstream:
    """``tests.support.echo_app`` on its own event loop in a background thread.

    nginx and authgate are separate processes, so the upstream must keep answering while a
    test blocks on a socket. It records every request it receives; ``/slow?s=<seconds>``
    sleeps before answering; ``/hold`` answers only once the test calls :meth:`release`
    (or after 10 s), so a test controls exactly when a request is in flight.
    """

    HOLD_LIMIT_SECONDS = 10.0

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._released = threading.Event()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="echo-upstream", daemon=True)

    def start(self) -> Upstream:
        """Start serving; returns once the port is bound."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("echo upstream did not start")
        if self._error is not None:
            raise RuntimeError("echo upstream failed to start") from self._error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def reset(self) -> None:
        """Forget every recorded request; ``/hold`` holds again."""
        self.seen.clear()
        self._released.clear()

    def release(self) -> None:
        """Let every held ``/hold`` request answer."""
        self._released.set()

    def requests_to(self, path_prefix: str) -> list[Seen]:
        """Recorded requests whose target starts with ``path_prefix``."""
        return [s for s in self.seen if s.target.startswith(path_prefix)]

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start(); the thread must not die loudly
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = echo_app()
        app.middlewares.append(self._record)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=3.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.raw_path, tuple(request.headers.items())))
        if request.path.startswith("/slow"):
            await asyncio.sleep(float(request.query.get("s", "1")))
        elif request.path.startswith("/hold"):
            deadline = time.monotonic() + self.HOLD_LIMIT_SECONDS
            while not self._released.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        return await handler(request)


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[Upstream]:
    """One echo upstream per test module."""
    server = Upstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def upstream(upstream_server: Upstream) -> Upstream:
    """The module's echo upstream, with an empty record."""
    upstream_server.reset()
    return upstream_server


# --- tokens and authgate configs ---------------------------------------------------------


@dataclass(frozen=True)
class Signing:
    """A token factory and the PEM file authgate loads its key from."""

    tokens: TokenFactory
    key_file: Path


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> Signing:
    """A signing key authgate trusts, shared by a module."""
    tokens = TokenFactory()
    return Signing(tokens, tokens.write_key(tmp_path_factory.mktemp("keys")))


def authgate_config(signing: Signing, **sections: Any) -> dict[str, Any]:
    """An authgate config trusting ``signing``'s key; ``sections`` are merged on top."""
    config: dict[str, Any] = {
        "jwt": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "signing_key_files": [str(signing.key_file)],
        },
        "policy": {"rules": RULES},
        # RULES treat /admin as the app's: authgate's admin API moves out of the way, or a
        # proxied /admin rule is refused (authgate would answer the admin API's paths).
        "tokens": {"admin_prefix": "/_authgate/admin"},
        "logging": {"level": "WARNING"},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    return config


def redis_stores_config(url: str, key_prefix: str) -> dict[str, Any]:
    """The ``stores`` section for a Redis back end."""
    return {"backend": "redis", "redis": {"url": url, "key_prefix": key_prefix}}


@pytest.fixture(scope="module")
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the module's own on the shared Redis, deleted afterwards."""
    prefix = f"authgate-it-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def revoke(url: str, key_prefix: str, jti: str, *, expires_at_ms: int) -> None:
    """Revoke ``jti`` as another replica would: in Redis, announced on the event bus."""

    async def write() -> None:
        stores = RedisStores(RedisSettings.model_validate({"url": url, "key_prefix": key_prefix}))
        try:
            revocations = RevocationList(store=stores.revocations, events=stores.events)
            await revocations.revoke(jti, expires_at_ms=expires_at_ms)
        finally:
            await stores.close()

    asyncio.run(write())


def bearer(token: str) -> dict[str, str]:
    """An ``Authorization`` header."""
    return {"Authorization": f"Bearer {token}"}


# Credentials every front door must refuse with 401: (id, headers built from the factory).
BAD_CREDENTIALS: list[tuple[str, Callable[[TokenFactory], dict[str, str]]]] = [
    ("missing", lambda t: {}),
    ("basic-scheme", lambda t: {"Authorization": "Basic dXNlcjpwYXNz"}),
    ("malformed", lambda t: bearer("not.a.jwt")),
    ("empty-bearer", lambda t: {"Authorization": "Bearer "}),
    (
        "expired",
        lambda t: bearer(t.mint(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
    ),
    ("wrong-audience", lambda t: bearer(t.mint(aud="someone-else"))),
    ("wrong-issuer", lambda t: bearer(t.mint(iss="https://evil.test"))),
    ("unknown-key", lambda t: bearer(TokenFactory().mint())),  # same claims, another key
]


# --- authgate ----------------------------------------------------------------------------


# The base class now closes its copy of the log handle itself.
Authgate = AuthgateProcess


@contextlib.contextmanager
def running(config: Mapping[str, Any], directory: Path, **kwargs: Any) -> Iterator[Authgate]:
    """An :class:`Authgate` for the duration of the block (stopped with SIGTERM)."""
    proc = Authgate(config, directory, **kwargs).start()
    try:
        yield proc
    finally:
        proc.stop()


# --- nginx -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """The nginx executable; its absence is a failure, not a skip."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        pytest.fail(
            "nginx is not installed: the integration suite needs it (apt-get install nginx)"
        )
    return found


def render_nginx_conf(**ports: int) -> str:
    """The example template with ``${NAME}`` placeholders replaced (nginx's ``$vars`` kept)."""
    text = NGINX_TEMPLATE.read_text()
    for name, value in ports.items():
        text = text.replace("${" + name + "}", str(value))
    if "${" in text:
        raise AssertionError(f"unsubstituted placeholder in {NGINX_TEMPLATE}")
    return text


class NginxProcess:
    """A real nginx (master in the foreground) running the example config from a prefix dir."""

    def __init__(self, binary: str, *, authgate_port: int, upstream_port: int) -> None:
        self.binary = binary
        self.port = free_port()
        # Not under pytest's 0700 tmp dir: when the suite runs as root, nginx's workers run
        # as `nobody` and must reach their temp directories.
        self.prefix = Path(tempfile.mkdtemp(prefix="authgate-nginx-"))
        self.prefix.chmod(0o755)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(
            render_nginx_conf(
                LISTEN_PORT=self.port, AUTHGATE_PORT=authgate_port, UPSTREAM_PORT=upstream_port
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def _command(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "-p",
            f"{self.prefix}/",
            "-c",
            str(self.conf),
            "-e",
            str(self.prefix / "error.log"),
            *extra,
        ]

    def error_log(self) -> str:
        """nginx's error log so far."""
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, *, timeout: float = 10.0) -> NginxProcess:
        """Check the config, start nginx and wait until it accepts connections."""
        check = subprocess.run(
            self._command("-t"), capture_output=True, timeout=timeout, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr.decode(errors='replace')}")
        self.proc = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited early:\n{self.error_log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start listening:\n{self.error_log()}")

    def stop(self, *, timeout: float = 10.0) -> None:
        """Graceful stop (SIGQUIT to the master), then SIGKILL if it lingers; remove the prefix."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGQUIT)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout)
        finally:
            shutil.rmtree(self.prefix, ignore_errors=True)


@contextlib.contextmanager
def running_nginx(binary: str, *, authgate_port: int, upstream_port: int) -> Iterator[NginxProcess]:
    """nginx for the duration of the block."""
    nginx = NginxProcess(binary, authgate_port=authgate_port, upstream_port=upstream_port)
    nginx.start()
    try:
        yield nginx
    finally:
        nginx.stop()


# --- a dedicated redis-server ------------------------------------------------------------


class RedisServer:
    """A throw-away ``redis-server`` on a free port, so the shared Redis is never disturbed."""

    def __init__(self, directory: Path, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: the outage tests need it")
        self.binary = binary
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False
        # Later options win: ``args`` may turn persistence on (``--save``, ``--appendonly``).
        self.args = args

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 10.0) -> RedisServer:
        """Start (or restart, on the same port) and wait until it answers PING."""
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(self.directory),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    def ping(self) -> bool:
        """Whether the server answers PING within half a second."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def thaw(self) -> None:
        """SIGCONT."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: nothing is written on the way out."""
        assert self.proc is not None
        if self.stopped:
            self.thaw()
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, *, timeout: float = 10.0) -> None:
        """SIGTERM and wait (thawing first, so the signal is acted on)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.stopped:
            self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A dedicated redis-server for one test."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.terminate()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session whose every request has its own connection (true concurrency)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as s:
        yield s


@dataclass(frozen=True)
class Propagation:
    """One trial: seconds from A's revoke response to B's first refusal, the 2xx B answered
    in between, and the round trip of one accepted request to B (the polling resolution).
    """

    seconds: float
    stale: int
    round_trip: float


def report_propagation(samples: Sequence[Propagation], *, label: str, path: Path) -> list[float]:
    """Write the trials' p50/p99/max to ``path``, print a summary; the sorted delays in ms."""
    delays_ms = sorted(s.seconds * 1000 for s in samples)
    stale = [s.stale for s in samples]
    quantiles = statistics.quantiles(delays_ms, n=100, method="inclusive")
    report = {
        "trials": len(samples),
        "p50_ms": round(statistics.median(delays_ms), 3),
        "p99_ms": round(quantiles[98], 3),
        "max_ms": round(delays_ms[-1], 3),
        "accepted_request_round_trip_p50_ms": round(
            statistics.median(s.round_trip * 1000 for s in samples), 3
        ),
        "accepted_after_revoke_response": {"total": sum(stale), "max_in_one_trial": max(stale)},
        "delays_ms": [round(d, 3) for d in delays_ms],
    }
    path.write_text(json.dumps(report, indent=2))
    print(
        f"\n{label} propagation A -> B over {len(samples)} trials: "
        f"p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms, max {report['max_ms']} ms "
        f"(one accepted request to B: p50 {report['accepted_request_round_trip_p50_ms']} ms); "
        f"requests B accepted after A's revoke response: {sum(stale)} ({path})"
    )
    return delays_ms
