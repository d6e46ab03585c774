"""The forward-auth 200 is written as one piece (``web/forward_auth.py``: ``Allow``), not by
aiohttp's ``Response``. Over real sockets, it must say what aiohttp's ``Response`` says for
the same answer: the same status line and headers (the date aside, which both give), no
body, and the same connection handling for HTTP/1.1 and 1.0, keep-alive or not, GET or HEAD;
while draining, ``Connection: close`` and the connection ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.context import request_id
from authgate.web.state import DOORS, DRAINING, IDENTITY, SERVICES
from tests.support import TokenFactory, make_settings

Head = tuple[str, list[tuple[str, str]], bytes]
Servers = tuple[BaseTestServer, BaseTestServer, web.Application, str]  # authgate, reference, token


async def exchange(port: int, request: bytes) -> tuple[Head, bool]:
    """Send ``request``; the answer's status line, headers and body, and whether the
    connection stayed open (a second identical request on it was answered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        first = await _read_response(reader, head_only=request.startswith(b"HEAD"))
        writer.write(request)
        try:
            await asyncio.wait_for(_read_response(reader, head_only=request.startswith(b"HEAD")), 5)
            open_after = True
        except (asyncio.IncompleteReadError, ConnectionError):
            open_after = False
        return first, open_after
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader, *, head_only: bool) -> Head:
    head = await reader.readuntil(b"\r\n\r\n")
    status, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines)]
    length = int({n.lower(): v for n, v in headers}.get("content-length", "0"))
    body = b"" if head_only else await reader.readexactly(length)
    return status, headers, body


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """authgate, and the same decision answered by aiohttp's own ``Response`` (the way the
    doors answered before ``Allow``)."""
    tokens = TokenFactory()
    settings = make_settings(policy={"rules": [{"id": "api", "path_prefix": "/api"}]})
    app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
    token = tokens.mint(sub="alice", scope="read write", jti="t-1")

    async def reference(request: web.Request) -> web.Response:
        rid = request_id(request, "X-Request-Id")
        decision = await app[SERVICES].gate.evaluate(app[DOORS].nginx.context(request, rid))
        response = web.Response(status=200, headers=app[IDENTITY].response_headers(decision))
        response.headers["X-Request-Id"] = rid
        return response

    ref_app = web.Application()
    ref_app.router.add_route("*", "/auth", reference)
    async with TestServer(app) as authgate, TestServer(ref_app) as ref:
        yield authgate, ref, app, token


def _request(method: str, version: str, token: str, extra: str = "") -> bytes:
    return (
        f"{method} /auth HTTP/{version}\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n"
        f"X-Original-Method: GET\r\nX-Original-URI: /api/items\r\nX-Request-Id: req-1\r\n"
        f"{extra}\r\n"
    ).encode()


def _without_date(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    for name, value in headers:
        if name.lower() == "date":
            assert parsedate_to_datetime(value).tzinfo is not None  # an HTTP-date, in GMT
    return sorted((n.lower(), v) for n, v in headers if n.lower() != "date")


@pytest.mark.parametrize(
    ("method", "version", "extra", "stays_open"),
    [
        ("GET", "1.1", "", True),
        ("GET", "1.1", "Connection: close\r\n", False),
        ("GET", "1.0", "", False),
        ("GET", "1.0", "Connection: keep-alive\r\n", True),
        ("HEAD", "1.1", "", True),
        ("POST", "1.1", "Content-Length: 0\r\n", True),
    ],
)
async def test_the_allow_answer_is_what_aiohttp_would_write(
    servers: Servers,
    method: str,
    version: str,
    extra: str,
    stays_open: bool,
) -> None:
    authgate, ref, _, token = servers
    request = _request(method, version, token, extra)
    (ours, ours_open), (theirs, theirs_open) = await asyncio.gather(
        exchange(authgate.port or 0, request), exchange(ref.port or 0, request)
    )
    assert ours[0] == theirs[0] == f"HTTP/{version} 200 OK"
    assert _without_date(ours[1]) == _without_date(theirs[1])
    names = {n.lower() for n, _ in ours[1]}
    assert {"date", "server", "x-authgate-subject", "x-request-id"} <= names
    assert ("content-length" in names) is (method != "HEAD")  # RFC 9110 §8.6
    assert dict(ours[1])["X-Authgate-Subject"] == "alice"
    assert ours[2] == theirs[2] == b""
    assert ours_open is theirs_open is stays_open


async def test_while_draining_the_allow_answer_closes_its_connection(
    servers: Servers,
) -> None:
    authgate, _, app, token = servers
    app[DRAINING][0] = True
    (status, headers, _), open_after = await exchange(
        authgate.port or 0, _request("GET", "1.1", token)
    )
    assert status == "HTTP/1.1 200 OK"
    assert ("Connection", "close") in headers
    assert open_after is False


async def test_an_identity_value_cannot_split_the_answer() -> None:
    """The serialiser refuses CR, LF and NUL, as aiohttp's does (identity values are
    percent-encoded before they get here; this is the last guard)."""
    from authgate.web.identity import serialize_headers

    assert serialize_headers({"X-A": "b c"}) == b"X-A: b c\r\n"
    for bad in ("a\r\nX-Evil: 1", "a\nb", "a\x00b"):
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            serialize_headers({"X-A": bad})
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        serialize_headers({"X-A\r\nX-Evil": "1"})


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/auth", "/au%74h", "/auth/forward", "/auth/envoy/api/items"])
async def test_the_doors_are_found_as_the_router_finds_them(servers: Servers, path: str) -> None:
    """Door requests skip aiohttp's router (``_DoorDispatch``): the same paths still reach
    them, percent-encoded letters included, and the answer is the door's."""
    authgate, _, _, token = servers
    request = (
        f"GET {path} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n"
        "X-Original-Method: GET\r\nX-Original-URI: /api/items\r\n"
        "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /api/items\r\nX-Forwarded-Host: gate\r\n"
        "X-Forwarded-Proto: http\r\n\r\n"
    ).encode()
    head = await _raw(authgate.port or 0, request)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"X-Authgate-Subject: alice\r\n" in head


async def test_a_door_request_with_expect_gets_100_continue(servers: Servers) -> None:
    authgate, _, _, token = servers
    reader, writer = await asyncio.open_connection("127.0.0.1", authgate.port or 0)
    try:
        writer.write(
            (
                f"POST /auth HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n"
                "X-Original-Method: GET\r\nX-Original-URI: /api/items\r\n"
                "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
            ).encode()
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        writer.close()


async def test_while_draining_a_door_refusal_closes_its_connection(servers: Servers) -> None:
    """Refusals still go through aiohttp's ``Response`` and its ``on_response_prepare``
    signals (``Drain.close_connections``), with the doors dispatched before the router."""
    authgate, _, app, _ = servers
    app[DRAINING][0] = True
    head = await _raw(
        authgate.port or 0,
        b"GET /auth HTTP/1.1\r\nHost: gate\r\nX-Original-Method: GET\r\n"
        b"X-Original-URI: /api/items\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b"\r\nConnection: close\r\n" in head


def test_allow_knows_every_on_response_prepare_signal() -> None:
    """``Allow`` writes its head without aiohttp's ``on_response_prepare`` signal and does
    what the one signal does itself (Connection: close while draining). A new signal would
    be skipped on every allowed forward-auth request: this fails first, so it gets added to
    ``Allow`` too."""
    from authgate.web.drain import DRAIN

    settings = make_settings(console={"enabled": True}, tracing={"enabled": False})
    app = create_app(settings, stores=MemoryStores())
    assert list(app.on_response_prepare) == [app[DRAIN].close_connections]
