"""Hostile header and target edge cases through the real sidecar and doors (issue 13).

authgate runs in-process (``TestServer``) in front of the recording echo upstream
(``tests.support.echo_app``), whose JSON answer says what the upstream received. Requests
are raw bytes, so repeated header lines and odd spellings reach authgate as written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from tests.support import TokenFactory, araw_lines, echo_app, make_settings, serve_app

RULES = [
    {"id": "public", "path_prefix": "/public", "anonymous": True},
    {"id": "api", "path_prefix": "/api"},
]
# The test client connects from 127.0.0.1: trusted by default, untrusted with this.
UNTRUSTED = {"trusted_proxies": ["192.0.2.0/24"]}

Lines = list[tuple[str, str]]


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def start(
    stack: AsyncExitStack, tokens: TokenFactory, *, proxy: bool = True, **sections: Any
) -> int:
    """authgate (memory stores) in front of a fresh echo upstream; returns authgate's port."""
    if proxy:
        upstream = await stack.enter_async_context(serve_app(echo_app()))
        sections["proxy"] = {
            "upstream": f"http://127.0.0.1:{upstream}",
            **sections.get("proxy", {}),
        }
    sections.setdefault("policy", {"rules": RULES})
    app = create_app(
        make_settings(**sections), stores=MemoryStores(), key_ring=KeyRing([tokens.key])
    )
    server = TestServer(app)
    await server.start_server()
    stack.push_async_callback(server.close)
    assert server.port is not None
    return server.port


def seen_headers(body: bytes) -> list[tuple[str, str]]:
    """The header lines the echo upstream received."""
    return [(k, v) for k, v in json.loads(body)["headers"]]


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def error_code(body: bytes) -> str:
    code: str = json.loads(body)["error"]["code"]
    return code


# --- 4. control characters in targets ------------------------------------------------


CONTROL_TARGETS = [
    b"/api/%0a",
    b"/api/%0d%0a",
    b"/api/a%0Ab",
    b"/api/%0d",
    b"/api/%09",
    b"/api/%7f",
    b"/api/%0a/x?q=1",
    b"/api/x?q=%0a",
    b"/api/\x01",
    b"/api/\x7f",
    b"/api/a\tb",
    b"/api/\x80",
    b"/api/x?q=\x01",
]


@pytest.mark.parametrize("target", CONTROL_TARGETS, ids=[repr(t)[2:-1] for t in CONTROL_TARGETS])
async def test_control_characters_in_the_target_are_invalid_target_in_the_sidecar(
    stack: AsyncExitStack, tokens: TokenFactory, target: bytes
) -> None:
    """Encoded or raw, a control byte in the target is a JSON 400 invalid_target, never
    aiohttp's plain-text 404 (a decoded newline escaped the catch-all route)."""
    port = await start(stack, tokens)
    status, _, body = await araw_lines(port, target, [("Authorization", f"Bearer {tokens.mint()}")])
    assert status == 400, body
    assert error_code(body) == "invalid_target"


@pytest.mark.parametrize("target", CONTROL_TARGETS, ids=[repr(t)[2:-1] for t in CONTROL_TARGETS])
async def test_control_characters_in_the_target_are_invalid_target_at_every_door(
    stack: AsyncExitStack, tokens: TokenFactory, target: bytes
) -> None:
    """The same targets through Envoy's path, and (where a header can carry them) through
    nginx's X-Original-URI and Traefik's X-Forwarded-Uri."""
    port = await start(stack, tokens, proxy=False)
    auth = ("Authorization", f"Bearer {tokens.mint()}")
    status, _, body = await araw_lines(port, b"/auth/envoy" + target, [auth])
    assert (status, error_code(body)) == (400, "invalid_target"), body
    if any(b < 0x20 or b >= 0x7F for b in target):
        return  # raw control bytes cannot travel in a header value
    text = target.decode()
    for path, lines in (
        ("/auth", [("X-Original-Method", "GET"), ("X-Original-URI", text)]),
        (
            "/auth/forward",
            [
                ("X-Forwarded-Method", "GET"),
                ("X-Forwarded-Uri", text),
                ("X-Forwarded-Host", "app.test"),
            ],
        ),
    ):
        status, _, body = await araw_lines(port, path, [*lines, auth])
        assert (status, error_code(body)) == (400, "invalid_target"), (path, body)


async def test_control_characters_without_an_upstream_are_invalid_target_or_json_404(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    """Without a proxy the catch-all is the JSON 404: it matches a decoded newline too."""
    port = await start(stack, tokens, proxy=False)
    status, headers, body = await araw_lines(port, b"/nothing/%0a")
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert error_code(body) == "not_found"
