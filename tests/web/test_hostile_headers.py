"""Hostile header and target edge cases through the real sidecar and doors (issue 13).

authgate runs in-process (``TestServer``) in front of the recording echo upstream
(``tests.support.echo_app``), whose JSON answer says what the upstream received. Requests
are raw bytes, so repeated header lines and odd spellings reach authgate as written.
"""

from __future__ import annotations

import json
import time
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
    stack: AsyncExitStack, tokens: TokenFactory, *, upstream: bool = True, **sections: Any
) -> int:
    """authgate (memory stores) in front of a fresh echo upstream; returns authgate's port."""
    if upstream:
        echo = await stack.enter_async_context(serve_app(echo_app(max_field_size=65536)))
        sections["proxy"] = {
            "upstream": f"http://127.0.0.1:{echo}",
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
    port = await start(stack, tokens, upstream=False)
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
    port = await start(stack, tokens, upstream=False)
    status, headers, body = await araw_lines(port, b"/nothing/%0a")
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert error_code(body) == "not_found"


# --- 1. X-Forwarded-For in several lines -----------------------------------------------


async def test_several_forwarded_for_lines_are_one_chain_decided_and_forwarded(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    """From a trusted proxy, two X-Forwarded-For lines are one list (RFC 9110): the upstream
    gets exactly that chain plus the peer, and reads the client authgate decided with."""
    port = await start(stack, tokens)
    status, _, body = await araw_lines(
        port,
        "/api/items",
        [
            ("Authorization", f"Bearer {tokens.mint()}"),
            ("X-Forwarded-For", "198.51.100.66"),  # the client's own claim
            ("X-Forwarded-For", "203.0.113.7"),  # added by the proxy (HAProxy-style)
        ],
    )
    assert status == 200, body
    seen = seen_headers(body)
    assert values(seen, "X-Forwarded-For") == ["198.51.100.66, 203.0.113.7, 127.0.0.1"]
    assert values(seen, "X-Real-IP") == ["203.0.113.7"]


async def test_the_client_address_the_upstream_reads_is_the_one_decided_with(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    """A rate limit by client address counts the address the upstream is told."""
    rules = [
        {
            "id": "limited",
            "path_prefix": "/api",
            "anonymous": True,
            "rate_limits": [{"by": "client", "limit": 1, "period_seconds": 60}],
        }
    ]
    port = await start(stack, tokens, policy={"rules": rules})
    first = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.7")]
    status, _, body = await araw_lines(port, "/api/a", first)
    assert status == 200, body
    assert values(seen_headers(body), "X-Real-IP") == ["203.0.113.7"]
    # Another first line, same right-most client: the same address, so the limit holds.
    again = [("X-Forwarded-For", "198.51.100.2"), ("X-Forwarded-For", "203.0.113.7")]
    status, _, body = await araw_lines(port, "/api/a", again)
    assert status == 429, body


# --- 2. forwarding and foreign identity headers --------------------------------------------

FORWARDING_SPELLINGS = [
    "X-Forwarded-For",
    "X_Forwarded_For",
    "X_Forwarded_Host",
    "X_Forwarded_Proto",
    "X_Real_IP",
    "X-Real-IP",
    "x-real_ip",
    "X-Original-URI",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Forwarded-Uri",
    "X-Forwarded-Prefix",
    "X-Forwarded-Port",
    "X-Forwarded-Server",
    "X-Forwarded-Method",
    "True-Client-IP",
    "X-Client-IP",
    "Forwarded",
    "CF-Connecting-IP",
    "X.Forwarded.Host",
]
FOREIGN_IDENTITY = [
    "X-Remote-User",
    "Remote-User",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X_Remote_User",
    "remote_user",
]
FORGED = "203.0.113.66"


async def test_forwarding_headers_from_an_untrusted_peer_never_reach_the_app(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    """From an untrusted peer every forwarding header, in any spelling, is dropped: the
    upstream sees only what authgate wrote, and the client address authgate decided with."""
    port = await start(stack, tokens, server=UNTRUSTED)
    lines = [(name, FORGED) for name in FORWARDING_SPELLINGS]
    status, _, body = await araw_lines(
        port, "/api/items", [("Authorization", f"Bearer {tokens.mint()}"), *lines]
    )
    assert status == 200, body
    seen = seen_headers(body)
    assert [(k, v) for k, v in seen if FORGED in v] == []
    assert values(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(seen, "X-Real-IP") == ["127.0.0.1"]
    assert values(seen, "X-Forwarded-Proto") == ["http"]
    assert values(seen, "X-Forwarded-Host") == ["app.test"]


async def test_from_a_trusted_proxy_only_canonical_forwarding_headers_pass(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    """A trusted proxy's own forwarding headers pass in their canonical spelling; other
    spellings and other client-address headers never do."""
    port = await start(stack, tokens)
    lines = [
        ("X-Forwarded-Prefix", "/app"),
        ("X-Forwarded-Host", "public.example"),
        ("X-Forwarded-Proto", "https"),
        ("X_Forwarded_Prefix", FORGED),
        ("X.Forwarded.Port", FORGED),
        ("True-Client-IP", FORGED),
        ("Forwarded", f"for={FORGED}"),
        ("X-Real-IP", FORGED),
    ]
    status, _, body = await araw_lines(
        port, "/api/items", [("Authorization", f"Bearer {tokens.mint()}"), *lines]
    )
    assert status == 200, body
    seen = seen_headers(body)
    assert [(k, v) for k, v in seen if FORGED in v] == []
    assert values(seen, "X-Forwarded-Prefix") == ["/app"]
    assert values(seen, "X-Forwarded-Host") == ["public.example"]
    assert values(seen, "X-Forwarded-Proto") == ["https"]
    assert values(seen, "X-Real-IP") == ["127.0.0.1"]


@pytest.mark.parametrize("server", [{}, UNTRUSTED], ids=["trusted", "untrusted"])
async def test_other_gateways_identity_headers_never_reach_the_app(
    stack: AsyncExitStack, tokens: TokenFactory, server: dict[str, Any]
) -> None:
    """X-Remote-User and friends are dropped from every peer, in any spelling."""
    port = await start(stack, tokens, server=server)
    lines = [(name, "admin") for name in FOREIGN_IDENTITY]
    for path, auth in (
        ("/api/items", [("Authorization", f"Bearer {tokens.mint()}")]),
        ("/public/x", []),
    ):
        status, _, body = await araw_lines(port, path, [*auth, *lines])
        assert status == 200, body
        seen = seen_headers(body)
        assert [(k, v) for k, v in seen if v == "admin"] == [], path


async def test_the_foreign_identity_list_is_configurable(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    port = await start(stack, tokens, proxy={"foreign_identity_headers": ["X-Portal-User"]})
    lines = [("X-Portal-User", "admin"), ("x_portal_user", "admin"), ("X-Remote-User", "kept")]
    status, _, body = await araw_lines(port, "/public/x", lines)
    assert status == 200, body
    seen = seen_headers(body)
    assert values(seen, "X-Portal-User") == []
    assert values(seen, "x_portal_user") == []
    assert values(seen, "X-Remote-User") == ["kept"]


@pytest.mark.parametrize(
    "name",
    [
        "X.Authgate.Subject",
        "X~Authgate~Subject",
        "X_Authgate-Subject",
        "x-authgate_subject",
        "XAuthgateSubject",
        "X.Authgate.Role",
        "X.Bpc.Signed.Data",
    ],
)
async def test_punctuation_spellings_of_identity_headers_are_stripped(
    stack: AsyncExitStack, tokens: TokenFactory, name: str
) -> None:
    """Any header whose letters and digits spell an identity header is one."""
    port = await start(stack, tokens)
    status, _, body = await araw_lines(port, "/public/x", [(name, "admin")])
    assert status == 200, body
    assert [(k, v) for k, v in seen_headers(body) if v == "admin"] == []


async def test_an_underscore_spelling_of_a_header_a_door_reads_is_that_header(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    """X_Forwarded_Proto next to X-Forwarded-Proto is a repeat (two readers, two answers)."""
    port = await start(stack, tokens)
    lines = [("X-Forwarded-Proto", "https"), ("X_Forwarded_Proto", "http")]
    status, _, body = await araw_lines(port, "/public/x", lines)
    assert status == 400, body
    assert error_code(body) == "malformed_header"


# --- 3. size limits agree ---------------------------------------------------------------


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


@pytest.mark.parametrize("door", ["sidecar", "nginx"])
async def test_a_token_just_over_the_default_limit_is_token_too_large(
    stack: AsyncExitStack, tokens: TokenFactory, door: str
) -> None:
    """Default limits: a bearer token of max_token_bytes + 1 is 401 token_too_large (the
    8,192-character header cap used to answer 400 malformed_header first)."""
    port = await start(stack, tokens)
    path, lines = ("/api/x", []) if door == "sidecar" else ("/auth", _NGINX)
    for size in (8193, 9000):
        status, _, body = await araw_lines(port, path, [*lines, *_bearer("a" * size)])
        assert (status, error_code(body)) == (401, "token_too_large"), (size, body)


_NGINX = [("X-Original-Method", "GET"), ("X-Original-URI", "/api/x")]
BIG_TOKENS: dict[str, Any] = {
    "jwt": {"max_token_bytes": 16384},
    "server": {"max_header_bytes": 16448},
}


async def test_max_token_bytes_above_the_old_header_cap_takes_effect(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    """jwt.max_token_bytes: 16384 admits a 13 kB token and refuses a longer one with 401."""
    port = await start(stack, tokens, **BIG_TOKENS)
    big = tokens.mint(pad="x" * 10_000)
    assert 12_000 < len(big) <= 16384  # over the old 8,192 cap
    for path, lines in (("/api/x", []), ("/auth", _NGINX)):
        status, _, body = await araw_lines(port, path, [*lines, *_bearer(big)])
        assert status == 200, (path, body)
        for size in (16385, 16384 + 40):
            status, _, body = await araw_lines(port, path, [*lines, *_bearer("a" * size)])
            assert (status, error_code(body)) == (401, "token_too_large"), (path, size, body)


async def test_other_long_single_valued_headers_are_still_malformed(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    port = await start(stack, tokens, **BIG_TOKENS)
    status, _, body = await araw_lines(port, "/auth", [*_NGINX, ("X-Bpc-Pair-Id", "p" * 9000)])
    assert (status, error_code(body)) == (400, "malformed_header"), body
    status, _, body = await araw_lines(
        port, "/auth", [*_NGINX, ("Authorization", "Basic " + "a" * 16420)]
    )
    assert (status, error_code(body)) == (400, "malformed_header"), body


# --- 5. token lifetime ------------------------------------------------------------------


async def test_an_own_token_living_ten_years_is_refused_at_the_doors(
    stack: AsyncExitStack, tokens: TokenFactory
) -> None:
    """An authgate-signed token with exp ten years out (short of year 3000) is refused."""
    port = await start(stack, tokens)
    now = int(time.time())
    forever = tokens.mint(iat=now, exp=now + 10 * 365 * 86_400)
    for path, lines in (("/api/x", []), ("/auth", _NGINX)):
        status, _, body = await araw_lines(port, path, [*lines, *_bearer(forever)])
        assert (status, error_code(body)) == (401, "token_lifetime_too_long"), (path, body)
        status, _, body = await araw_lines(port, path, [*lines, *_bearer(tokens.mint())])
        assert status == 200, (path, body)
