"""A client's identity header, in any spelling, at every door (issue 17).

The forward-auth doors refuse it (400 ``forged_identity_header``, naming the header):
authgate cannot remove a header the proxy forwards to the app. The sidecar removes it and
proxies the rest. authgate runs in-process in front of the recording echo upstream; requests
are raw lines, so odd spellings reach it as written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from aiohttp.test_utils import TestServer

from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from tests.support import (
    TokenFactory,
    alias_spellings,
    araw_lines,
    echo_app,
    make_settings,
    serve_app,
)

IDENTITY = (
    "X-Authgate-Subject",
    "X-Authgate-Credential",
    "X-Authgate-Scopes",
    "X-Authgate-Credential-Id",
    "X-Authgate-Issuer",
    "X-Authgate-Identity",
)
# Every spelling of every identity header, and other names under the X-Authgate- prefix.
FORGED = [
    *IDENTITY,
    *(s for name in IDENTITY for s in alias_spellings(name)),
    "X-Authgate-Role",
    "X.Authgate.Role",
    "x_authgate_admin",
    "XAuthgateSubject",
]
RULES = [
    {"id": "public", "path_prefix": "/public", "anonymous": True},
    {"id": "api", "path_prefix": "/api"},
]
Lines = list[tuple[str, str]]


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
async def port(tokens: TokenFactory) -> AsyncIterator[int]:
    """authgate (memory stores, loopback trusted) with the sidecar in front of an echo app."""
    async with AsyncExitStack() as stack:
        echo = await stack.enter_async_context(serve_app(echo_app(max_field_size=65536)))
        settings = make_settings(
            policy={"rules": RULES}, proxy={"upstream": f"http://127.0.0.1:{echo}"}
        )
        app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
        server = TestServer(app)
        await server.start_server()
        stack.push_async_callback(server.close)
        assert server.port is not None
        yield server.port


def door_request(door: str, path: str) -> tuple[str, Lines]:
    """The target and headers a proxy sends to ``door`` about ``GET path``."""
    if door == "nginx":
        return "/auth", [("X-Original-Method", "GET"), ("X-Original-URI", path)]
    if door == "traefik":
        return "/auth/forward", [
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", path),
            ("X-Forwarded-Host", "app.test"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "198.51.100.7"),
        ]
    return "/auth/envoy" + path, [
        ("x-envoy-internal", "true"),
        ("x-envoy-expected-rq-timeout-ms", "2000"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "198.51.100.7"),
    ]


DOORS = ["nginx", "traefik", "envoy"]
CREDENTIALS = {"valid-token": True, "anonymous-route": False}


@pytest.mark.parametrize("credential", CREDENTIALS, ids=list(CREDENTIALS))
@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("forged", FORGED)
async def test_a_forward_auth_door_refuses_a_forged_identity_header(
    port: int, tokens: TokenFactory, door: str, forged: str, credential: str
) -> None:
    """400 ``forged_identity_header`` naming the header, with a valid token or without."""
    with_token = CREDENTIALS[credential]
    target, lines = door_request(door, "/api/items" if with_token else "/public/page")
    if with_token:
        lines.append(("Authorization", f"Bearer {tokens.mint()}"))
    status, headers, body = await araw_lines(port, target, [*lines, (forged, "admin")])
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["code"] == "forged_identity_header"
    assert forged.lower() in error["message"]
    assert not any(k.lower().startswith("x-authgate-") for k in headers)


@pytest.mark.parametrize("door", DOORS)
async def test_the_doors_still_read_their_proxy_headers(
    port: int, tokens: TokenFactory, door: str
) -> None:
    """X-Forwarded-*, X-Original-* and x-envoy-* from a trusted proxy are read, not refused."""
    target, lines = door_request(door, "/api/items?x=1")
    lines += [("Authorization", f"Bearer {tokens.mint(sub='alice')}"), ("X-Authgateway-Id", "7")]
    status, headers, body = await araw_lines(port, target, lines)
    assert status == 200, body
    assert headers["x-authgate-subject"] == "alice"


@pytest.mark.parametrize("credential", CREDENTIALS, ids=list(CREDENTIALS))
async def test_the_sidecar_removes_every_forged_identity_header(
    port: int, tokens: TokenFactory, credential: str
) -> None:
    """Behind the sidecar the app sees authgate's identity headers and no other spelling or
    ``X-Authgate-*`` name, with a valid token or without (the request still passes)."""
    with_token = CREDENTIALS[credential]
    lines: Lines = [(name, "forged") for name in FORGED]
    if with_token:
        lines.append(("Authorization", f"Bearer {tokens.mint(sub='bob')}"))
    status, _, body = await araw_lines(port, "/api/items" if with_token else "/public/x", lines)
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert [(k, v) for k, v in seen if v == "forged"] == []
    own = {k.lower(): v for k, v in seen if k.lower().startswith("x-authgate-")}
    expected = {"x-authgate-credential"} | ({"x-authgate-subject"} if with_token else set())
    assert expected <= set(own) <= {h.lower() for h in IDENTITY}
    assert own["x-authgate-credential"] == ("jwt" if with_token else "anonymous")
