"""How the sidecar writes an upstream's answer to the client.

An answer that is wholly here when its headers arrive (a small one comes in the same
packets) goes out in one socket write, head and body together; an answer still arriving
has its head sent at once, so a streamed response shows its status before its body.
authgate and the upstream run in-process on real sockets; the writes counted are those of
authgate's side of the client connection.
"""

from __future__ import annotations

import asyncio
from asyncio import selector_events
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from tests.support import TokenFactory, make_settings, serve_app

SMALL = b"x" * 1024
RULES = [{"id": "api", "path_prefix": "/api"}]


class Upstream:
    """``/api/small`` (1 KB, Content-Length), ``/api/chunked`` (1 KB, chunked),
    ``/api/empty`` (204) and ``/api/stream`` (head at once, body once :attr:`go` is set)."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    def app(self) -> web.Application:
        async def small(request: web.Request) -> web.StreamResponse:
            return web.Response(body=SMALL)

        async def chunked(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(SMALL)
            await response.write_eof()
            return response

        async def empty(request: web.Request) -> web.StreamResponse:
            return web.Response(status=204)

        async def stream(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await self.go.wait()
            await response.write(b"data: first\n\n")
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_get("/api/small", small)
        app.router.add_get("/api/chunked", chunked)
        app.router.add_get("/api/empty", empty)
        app.router.add_get("/api/stream", stream)
        return app


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def sidecar(upstream: Upstream, tokens: TokenFactory) -> AsyncIterator[int]:
    async with AsyncExitStack() as stack:
        port = await stack.enter_async_context(serve_app(upstream.app()))
        app = create_app(
            make_settings(policy={"rules": RULES}, proxy={"upstream": f"http://127.0.0.1:{port}"}),
            stores=MemoryStores(),
            key_ring=KeyRing([tokens.key]),
        )
        server = TestServer(app)
        await server.start_server()
        stack.push_async_callback(server.close)
        assert server.port is not None
        yield server.port


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(local port, bytes) of every socket-transport write in this process."""
    transport: Any = getattr(selector_events, "_SelectorSocketTransport")  # noqa: B009
    seen: list[tuple[int, int]] = []
    original = transport.write

    def write(self: asyncio.Transport, data: bytes) -> None:
        sockname = self.get_extra_info("sockname")
        seen.append((sockname[1] if sockname else 0, len(data)))
        original(self, data)

    monkeypatch.setattr(transport, "write", write)
    return seen


async def _get(port: int, path: str, token: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        return response.status, await response.read()


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [("/api/small", 200, SMALL), ("/api/chunked", 200, SMALL), ("/api/empty", 204, b"")],
)
async def test_an_answer_already_here_is_written_to_the_client_in_one_piece(
    sidecar: int,
    tokens: TokenFactory,
    writes: list[tuple[int, int]],
    path: str,
    status: int,
    body: bytes,
) -> None:
    token = tokens.mint()
    for _ in range(5):
        writes.clear()
        assert await _get(sidecar, path, token) == (status, body)
        to_client = [size for port, size in writes if port == sidecar]
        assert len(to_client) == 1, to_client
        assert to_client[0] > len(body)  # the head and the body, together


async def test_a_streamed_answer_shows_its_status_before_its_body(
    sidecar: int, upstream: Upstream, tokens: TokenFactory
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{sidecar}/api/stream",
            headers={"Authorization": f"Bearer {tokens.mint()}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response,
    ):
        # The head arrived while the upstream still holds its body back.
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert not upstream.go.is_set()
        upstream.go.set()
        assert await response.read() == b"data: first\n\n"
