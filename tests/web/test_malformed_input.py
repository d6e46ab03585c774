"""Hostile header values against the real app over a socket: refused, never a crash.

For every header authgate reads, random and malformed values must produce a 4xx with a
stable ``error.code`` from errors.py (or a 400 from aiohttp's own HTTP parser, for bytes
HTTP itself forbids), never a 5xx, and a 200 only on the anonymous route. A one-byte
mutation of a valid token never yields 200.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from authgate.crypto.keys import KeyRing
from authgate.errors import AuthGateError
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from tests.support import TokenFactory, make_settings, raw_request


def _leaves(cls: type[AuthGateError]) -> list[type[AuthGateError]]:
    return [cls, *(leaf for sub in cls.__subclasses__() for leaf in _leaves(sub))]


STATUS_OF = {cls.reason: cls.status for cls in _leaves(AuthGateError) if cls.status < 500}
"""Every client-error reason errors.py defines, with its status."""
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

HEADERS_READ = (
    "Authorization",
    "X-Original-URI",
    "X-Original-Method",
    "X-Forwarded-Method",
    "X-Forwarded-Uri",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-For",
    "Host",
    "X-Request-Id",
)
DOORS: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "nginx": ("/auth", {"X-Original-URI": "/api/items", "X-Original-Method": "GET"}),
    "traefik": (
        "/auth/forward",
        {
            "X-Forwarded-Method": "GET",
            "X-Forwarded-Uri": "/api/items",
            "X-Forwarded-Host": "app.test",
            "X-Forwarded-Proto": "https",
        },
    ),
    "envoy": ("/auth/envoy/api/items", {}),
}
TRICKY = (
    "",
    " ",
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public%2F..%2Fadmin",
    "/public/./x",
    "/public//x",
    "/public\\..\\admin",
    "/public;x=1",
    "/public#frag",
    "//evil.test/public",
    "http://evil.test/public",
    "*",
    "/public?%00",
    "/%c0%ae%c0%ae/admin",
    "/\u00e9",
    "get",
    "GET POST",
    "CONNECT",
    "1.2.3.4, 999.1.1.1",
    "unknown, 10.0.0.1",
    "[::1]:99999",
    "app.test:0:1",
    "javascript",
    "Bearer",
    "Bearer ",
    "Bearer a.b",
    "Bearer ....",
    "Bearer e30.e30.e30",
    "Bearer eyJhbGciOiJub25lIn0.e30.",
    "Bearer " + "A" * 9000,
    "Basic Og==",
    "x" * 9000,
    "\u2028",
    "\ufeff/public",
)
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
UNICODE = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=40)
VALUE = st.one_of(
    st.sampled_from(TRICKY),
    PRINTABLE,
    UNICODE,
    PRINTABLE.map(lambda t: "Bearer " + t),
    PRINTABLE.map(lambda t: "/public/" + t),
    PRINTABLE.map(lambda t: "/api/" + t),
)
OVERRIDES = st.dictionaries(st.sampled_from(HEADERS_READ), VALUE, min_size=1, max_size=4)
RAW_VALUE = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture(scope="module")
def valid_token(tokens: TokenFactory) -> bytes:
    return tokens.mint(sub="alice", jti="mutation-base").encode()


@pytest.fixture
async def client(tokens: TokenFactory) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings_ = make_settings(
        policy={
            "rules": [
                {"id": "public", "path_prefix": "/public", "anonymous": True},
                {"id": "admin", "path_prefix": "/admin", "scopes": ["admin"]},
                {"id": "api", "path_prefix": "/api"},
            ]
        }
    )
    app = create_app(settings_, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
    async with TestClient(TestServer(app)) as c:
        yield c


def _port(client: TestClient[web.Request, web.Application]) -> int:
    port = client.server.port
    assert port is not None
    return port


def check_response(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """Assert the property for one response; returns the error code (or ``ok``/``parser``)."""
    assert status < 500, body[:300]
    rid = headers.get("x-request-id")
    if rid is None:
        # Refused by aiohttp's HTTP parser (bytes HTTP forbids) before authgate saw it.
        assert status == 400, (status, body[:200])
        return "parser"
    assert REQUEST_ID.fullmatch(rid), rid
    if status == 200:
        assert headers.get("x-authgate-credential") == "anonymous", headers
        return "ok"
    code = json.loads(body)["error"]["code"]
    assert code in STATUS_OF, code
    assert STATUS_OF[code] == status, (code, status)
    return str(code)


async def _send_raw(
    port: int, target: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[str, str], bytes]:
    lines = [f"GET {target} HTTP/1.1".encode(), b"Connection: close"]
    if not any(name.lower() == b"host" for name, _ in headers):
        lines.append(b"Host: app.test")
    lines += [name + b": " + value for name, value in headers]
    return await asyncio.to_thread(raw_request, port, b"\r\n".join(lines) + b"\r\n\r\n")


# --- the property over well-formed HTTP (aiohttp's client) -----------------------------


@SETTINGS
@given(door=st.sampled_from(sorted(DOORS)), overrides=OVERRIDES)
async def test_random_header_values_get_a_stable_4xx(
    client: TestClient[web.Request, web.Application], door: str, overrides: dict[str, str]
) -> None:
    """Random values in any header authgate reads: 4xx with a known code, or anonymous 200."""
    path, base = DOORS[door]
    headers = {**base, **overrides}
    async with client.get(path, headers=headers, allow_redirects=False) as resp:
        body = await resp.read()
        lowered = {k.lower(): v for k, v in resp.headers.items()}
        outcome = check_response(resp.status, lowered, body)
    event(outcome)
    assert outcome != "parser", "aiohttp's client sends only parseable headers"
    supplied = headers.get("X-Request-Id")
    if supplied is not None and REQUEST_ID.fullmatch(supplied.strip(" \t")):
        assert lowered["x-request-id"] == supplied.strip(" \t")


# --- the property over raw bytes (what aiohttp's client refuses to send) ---------------


@SETTINGS
@given(
    door=st.sampled_from(sorted(DOORS)),
    overrides=st.dictionaries(st.sampled_from(HEADERS_READ), RAW_VALUE, min_size=1, max_size=3),
)
async def test_raw_header_bytes_never_crash(
    client: TestClient[web.Request, web.Application], door: str, overrides: dict[str, bytes]
) -> None:
    """Any bytes (but CR/LF, which frame HTTP itself) in any header: never 5xx, never a grant."""
    path, base = DOORS[door]
    headers = {name.encode(): value.encode() for name, value in base.items()}
    headers.update({name.encode(): value for name, value in overrides.items()})
    status, response_headers, body = await _send_raw(_port(client), path, list(headers.items()))
    event(check_response(status, response_headers, body))


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        (b"X-Original-URI", b"/api\xff", "invalid_target"),
        (b"X-Original-URI", b"/public/\xc0\xae\xc0\xae/admin", "invalid_target"),
        (b"X-Original-Method", b"G\xc3\x89T", "malformed_header"),
        (b"X-Forwarded-For", b"10.0.0.1\xff", "malformed_header"),
        (b"Authorization", b"Bearer \xff\xfe", "token_malformed"),
        (b"X-Request-Id", b"id\xff", "credential_missing"),
    ],
    ids=[
        "uri-latin1",
        "uri-overlong-utf8",
        "method-utf8",
        "xff-latin1",
        "token-latin1",
        "rid-latin1",
    ],
)
async def test_non_ascii_header_bytes_reach_authgate_and_are_refused(
    client: TestClient[web.Request, web.Application], name: bytes, value: bytes, code: str
) -> None:
    """Bytes above 0x7F pass aiohttp's parser; authgate itself refuses them by name."""
    headers = {b"X-Original-URI": b"/api/items", b"X-Original-Method": b"GET", name: value}
    status, response_headers, body = await _send_raw(_port(client), "/auth", list(headers.items()))
    assert check_response(status, response_headers, body) == code


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b"Authorization", "malformed_header"),
        (b"X-Original-URI", "malformed_header"),
        (b"X-Original-Method", "malformed_header"),
        (b"X-Forwarded-Host", "malformed_header"),
        (b"Host", "parser"),  # aiohttp's parser refuses a second Host before authgate runs
    ],
    ids=["authorization", "x-original-uri", "x-original-method", "x-forwarded-host", "host"],
)
async def test_repeated_single_valued_header_is_refused(
    client: TestClient[web.Request, web.Application], name: bytes, expected: str
) -> None:
    """Two copies of a header authgate decides on are ambiguous: refused with 400."""
    second = b"Bearer d.e.f" if name == b"Authorization" else b"/public/y"
    headers = [
        (b"X-Original-URI", b"/public/x"),
        (b"X-Original-Method", b"GET"),
        (b"Host", b"app.test"),
        (b"X-Forwarded-Host", b"app.test"),
        (b"Authorization", b"Bearer a.b.c"),
        (name, second),
    ]
    status, response_headers, body = await _send_raw(_port(client), "/auth", headers)
    assert status == 400
    assert check_response(status, response_headers, body) == expected


# --- one-byte mutation of a valid token ------------------------------------------------


async def test_valid_token_is_the_baseline(
    client: TestClient[web.Request, web.Application], valid_token: bytes
) -> None:
    """The unmutated token is granted, so the mutation property below is not vacuous."""
    headers = [
        (b"X-Original-URI", b"/api/items"),
        (b"X-Original-Method", b"GET"),
        (b"Authorization", b"Bearer " + valid_token),
    ]
    status, response_headers, _ = await _send_raw(_port(client), "/auth", headers)
    assert status == 200
    assert response_headers["x-authgate-subject"] == "alice"


@SETTINGS
@given(data=st.data())
async def test_one_byte_mutation_of_a_token_is_never_granted(
    client: TestClient[web.Request, web.Application], valid_token: bytes, data: st.DataObject
) -> None:
    """Any single byte of the payload or signature changed: refused (401, or 400 framing)."""
    token = valid_token
    first_dot = token.index(b".")
    index = data.draw(st.integers(min_value=first_dot + 1, max_value=len(token) - 1), "index")
    original = token[index]
    byte = data.draw(
        st.integers(min_value=0, max_value=255).filter(lambda b: b != original), "byte"
    )
    mutated = token[:index] + bytes([byte]) + token[index + 1 :]
    headers = [
        (b"X-Original-URI", b"/api/items"),
        (b"X-Original-Method", b"GET"),
        (b"Authorization", b"Bearer " + mutated),
    ]
    status, response_headers, body = await _send_raw(_port(client), "/auth", headers)
    outcome = check_response(status, response_headers, body)
    event(outcome)
    assert status != 200
    assert outcome == "parser" or status == 401, outcome


async def test_non_canonical_signature_encoding_is_refused_over_http(
    client: TestClient[web.Request, web.Application], valid_token: bytes
) -> None:
    """Flipping the unused low bits of the last base64url character keeps the signature
    bytes identical; it is still refused (random mutation rarely hits this case)."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(valid_token[-1:])
    twin = valid_token[:-1] + alphabet[last ^ 1 : (last ^ 1) + 1]
    headers = [
        (b"X-Original-URI", b"/api/items"),
        (b"X-Original-Method", b"GET"),
        (b"Authorization", b"Bearer " + twin),
    ]
    status, response_headers, body = await _send_raw(_port(client), "/auth", headers)
    assert check_response(status, response_headers, body) == "token_malformed"
