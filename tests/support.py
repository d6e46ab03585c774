"""Shared test helpers: tokens, settings, a real authgate process, an echo upstream, raw HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import WSMsgType, web

from authgate.config.model import Settings
from authgate.crypto.keys import SigningKey

ISSUER = "https://authgate.test"
# The order n of the P-256 group: (r, n - s) is the malleable twin of an ECDSA signature.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
AUDIENCE = "authgate-tests"
# The punctuation RFC 9110 allows in a header name (tchar). A CGI-style upstream (WSGI, PHP,
# Rack, nginx's $http_*) turns each into "_": every one of them builds an alias of "-".
TCHAR_PUNCTUATION = "!#$%&'*+-.^_`|~"


def alias_spellings(name: str) -> list[str]:
    """``name`` with every ``-`` spelled as each other punctuation a header name may hold,
    plus a mixed spelling and a lower-case underscore one: each reaches a CGI-style app as
    ``name``."""
    spellings = [name.replace("-", p) for p in TCHAR_PUNCTUATION if p != "-"]
    first, _, rest = name.partition("-")
    spellings.append(f"{first}.{rest.replace('-', '_')}")
    spellings.append(name.lower().replace("-", "_"))
    return spellings


def make_settings(**sections: Any) -> Settings:
    """Settings from plain dicts, with the test issuer and audience."""
    tree: dict[str, Any] = {"jwt": {"issuer": ISSUER, "audiences": [AUDIENCE]}}
    for key, value in sections.items():
        if isinstance(value, Mapping) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    return Settings.model_validate(tree)


@dataclass
class TokenFactory:
    """Mints tokens with a known key; every claim can be overridden or removed (``None``)."""

    key: SigningKey = field(default_factory=lambda: SigningKey.generate("ES256"))
    issuer: str = ISSUER
    audience: str = AUDIENCE

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Default claims with overrides applied; a ``None`` override removes the claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "user-1",
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": "read write",
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def mint(self, **overrides: Any) -> str:
        """A signed token."""
        return self.key.sign(self.claims(**overrides))

    def write_key(self, directory: Path) -> Path:
        """The private key as a 0600 PEM file."""
        path = directory / f"signing-{self.key.kid[:8]}.pem"
        path.write_bytes(self.key.to_pem())
        path.chmod(0o600)
        return path


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class AuthgateProcess:
    """``python -m authgate serve`` in a subprocess, with a config file it writes."""

    def __init__(
        self, config: Mapping[str, Any], directory: Path, *, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        tree = json.loads(json.dumps(config))
        tree.setdefault("server", {})
        tree["server"].setdefault("port", self.port)
        tree["server"].setdefault("host", "127.0.0.1")
        # Tests that stop authgate do not wait for a load balancer; test_shutdown sets its own.
        tree["server"].setdefault("shutdown_delay_seconds", 0)
        self.port = int(tree["server"]["port"])
        # /healthz lives on the ops port when there is one (server.ops_port).
        self.ops_port = int(tree["server"].get("ops_port") or self.port)
        self.config_path = directory / f"authgate-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(tree))
        self.config_path.chmod(0o600)
        self.log_path = directory / f"authgate-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 15.0) -> AuthgateProcess:
        """Start and wait until ``/healthz`` answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "authgate", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"authgate exited early:\n{self.log_path.read_text()}")
            try:
                status, _, _ = raw_request(
                    self.ops_port,
                    b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                )
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"authgate did not become healthy:\n{self.log_path.read_text()}")

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Signal the process and wait for it; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def logs(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running(config: Mapping[str, Any], directory: Path, **kwargs: Any) -> Iterator[AuthgateProcess]:
    """Context manager around :class:`AuthgateProcess`."""
    proc = AuthgateProcess(config, directory, **kwargs).start()
    try:
        yield proc
    finally:
        proc.stop()


def raw_request(
    port: int, data: bytes, *, timeout: float = 5.0, source: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes (the request target exactly as written) and parse the response;
    ``source`` binds the client end to another loopback address (another peer)."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
    ) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            raw = b"".join(chunks)
            head, sep, body = raw.partition(b"\r\n\r\n")
            if sep:
                headers = _parse_headers(head)
                length = headers.get("content-length")
                if length is not None and len(body) >= int(length):
                    break
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, _parse_headers(head), body


def _parse_headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    out: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def get(
    port: int, target: str, headers: Mapping[str, str] | None = None, *, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """A raw request with ``target`` sent byte for byte."""
    lines = [f"{method} {target} HTTP/1.1", "Host: app.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def echo_app(*, max_field_size: int = 8190) -> web.Application:
    """An upstream that reports what it received: method, target, headers, body digest.

    ``/ws`` echoes WebSocket messages. The body is streamed and hashed, never held.
    """

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(f"echo:{msg.data}")
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def echo(request: web.Request) -> web.StreamResponse:
        if request.path == "/ws":
            return await ws_echo(request)
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {
                "method": request.method,
                "target": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_sha256": digest.hexdigest(),
                "body_size": size,
            }
        )

    app = web.Application(client_max_size=0, handler_args={"max_field_size": max_field_size})
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, port: int | None = None) -> AsyncIterator[int]:
    """Run ``app`` on 127.0.0.1 and yield its port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port or 0)
    await site.start()
    server = site._server
    assert server is not None
    bound: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield bound
    finally:
        await runner.cleanup()


async def wait_for(predicate: Any, *, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll an async or sync predicate until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


async def araw_get(
    port: int, target: str, headers: Mapping[str, str] | None = None, *, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """Async twin of :func:`get`: the target goes on the wire exactly as written."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {target} HTTP/1.1", "Host: app.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), _parse_headers(head), body


async def araw_lines(
    port: int,
    target: bytes | str,
    header_lines: list[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """A raw request from header *lines*: repeated names and odd spellings go on the wire
    exactly as given (``Host: app.test`` and ``Connection: close`` come first)."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    head = b"%s %s HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n" % (
        method.encode(),
        raw_target,
    )
    for name, value in header_lines or []:
        head += f"{name}: {value}\r\n".encode("latin-1")
    if body:
        head += f"Content-Length: {len(body)}\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b"\r\n" + body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    await writer.wait_closed()
    response_head, _, response_body = raw.partition(b"\r\n\r\n")
    return int(response_head.split(b" ", 2)[1]), _parse_headers(response_head), response_body
