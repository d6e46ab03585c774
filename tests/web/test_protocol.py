"""What aiohttp would answer before a handler runs is authgate's own answer: JSON problem
bodies for unknown paths, wrong methods and malformed HTTP (never an echo of the request's
bytes), and a ``Server`` header that names no versions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from tests.support import make_settings, raw_request

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = create_app(
        make_settings(server={"max_header_bytes": 4096}, jwt={"max_token_bytes": 2048}),
        stores=MemoryStores(),
    )
    async with TestClient(TestServer(app)) as c:
        yield c


async def raw(client: Client, data: bytes) -> tuple[int, dict[str, str], bytes]:
    port = client.server.port
    assert port is not None
    return await asyncio.to_thread(raw_request, port, data)


async def test_an_unknown_path_is_a_json_404(client: Client) -> None:
    response = await client.get("/no/such/thing")
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("application/json")
    assert (await response.json())["error"]["code"] == "not_found"


async def test_a_wrong_method_is_a_json_405_with_allow(client: Client) -> None:
    response = await client.post("/healthz")
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


async def test_the_server_header_names_no_versions(client: Client) -> None:
    for response in (await client.get("/healthz"), await client.get("/nothing")):
        assert response.headers["Server"] == "authgate"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
        b"GET /auth HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer SECRET"
        + b"A" * 9000
        + b"\r\n\r\n",
    ],
    ids=["malformed-header", "tls-to-http", "header-too-long"],
)
async def test_malformed_http_is_a_json_400_that_echoes_nothing(
    client: Client, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    status, headers, body = await raw(client, request_bytes)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert headers["server"] == "authgate"
    assert json.loads(body)["error"]["code"] == "malformed_request"
    assert b"SECRET" not in body and b"Bad Header" not in body
    assert "SECRET" not in caplog.text
