"""Repeated requests through the forward-auth doors: every one is decided by the gate (no
second path), counted and logged, and what changes the answer (revocation, expiry, another
rule, a rate limit, an untrusted peer) changes it on the very next request."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.crypto.keys import KeyRing
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import METRICS, REVOCATIONS
from tests.support import TokenFactory, make_settings, raw_request

Client = TestClient[web.Request, web.Application]
Raw = list[tuple[bytes, bytes]]

RULES = [
    {"id": "public", "path_prefix": "/public", "anonymous": True},
    {"id": "admin", "path_prefix": "/admin", "scopes": ["admin"]},
    {
        "id": "limited",
        "path_prefix": "/limited",
        "rate_limits": [{"by": "credential", "limit": 2, "period_seconds": 60}],
    },
    {"id": "api", "path_prefix": "/api"},
]


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


async def _client(tokens: TokenFactory, **sections: Any) -> AsyncIterator[Client]:
    sections.setdefault("policy", {"rules": RULES})
    clock = sections.pop("clock", None)
    app = create_app(
        make_settings(**sections),
        clock=clock,
        stores=MemoryStores(clock),
        key_ring=KeyRing([tokens.key]),
    )
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
async def client(tokens: TokenFactory) -> AsyncIterator[Client]:
    async for c in _client(tokens):
        yield c


def token_cache_hits(client: Client) -> float:
    value = client.app[METRICS].registry.get_sample_value(
        "authgate_cache_lookups_total", {"cache": "jwt", "result": "hit"}
    )
    return value or 0.0


def decisions(client: Client, outcome: str) -> float:
    registry = client.app[METRICS].registry
    return sum(
        float(s.value)
        for family in registry.collect()
        if family.name == "authgate_decisions"
        for s in family.samples
        if s.labels.get("outcome") == outcome
    )


DOORS: Mapping[str, tuple[str, Raw]] = {
    "nginx": (
        "/auth",
        [(b"X-Original-Method", b"GET"), (b"X-Original-URI", b"/api/items?page=2")],
    ),
    "traefik": (
        "/auth/forward",
        [
            (b"X-Forwarded-Method", b"GET"),
            (b"X-Forwarded-Uri", b"/api/items?page=2"),
            (b"X-Forwarded-Host", b"app.test"),
            (b"X-Forwarded-Proto", b"https"),
        ],
    ),
    "envoy": ("/auth/envoy/api/items?page=2", []),
}


def base_request(door: str, token: str) -> tuple[str, Raw]:
    path, headers = DOORS[door]
    return path, [(b"Host", b"app.test"), *headers, (b"Authorization", f"Bearer {token}".encode())]


async def send(
    client: Client, path: str, headers: Raw, *, source: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    port = client.server.port
    assert port is not None
    lines = [f"GET {path} HTTP/1.1".encode(), b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    data = b"\r\n".join(lines) + b"\r\n\r\n"
    return await asyncio.to_thread(raw_request, port, data, source=source)


def answer(response: tuple[int, dict[str, str], bytes]) -> tuple[Any, ...]:
    """What a proxy acts on: status, error code, and every header but the per-request ones."""
    status, headers, body = response
    code: object = None
    if status >= 400:
        try:
            code = json.loads(body)["error"]["code"]
        except ValueError:
            code = body[:80]  # refused by aiohttp's HTTP parser, before authgate
    kept = tuple(sorted((k, v) for k, v in headers.items() if k not in {"date", "x-request-id"}))
    return status, code, kept


# --- every repeat is a decision, counted and logged ---------------------------------------------------------


@pytest.mark.parametrize("door", sorted(DOORS))
async def test_a_repeat_gets_the_same_answer_and_is_counted(
    client: Client, tokens: TokenFactory, door: str
) -> None:
    path, headers = base_request(door, tokens.mint(sub="alice"))
    first = await send(client, path, headers)
    assert first[0] == 200
    assert token_cache_hits(client) == 0
    second = await send(client, path, headers)
    assert answer(second) == answer(first)
    assert token_cache_hits(client) == 1  # the verified-token cache, behind the gate
    assert decisions(client, "granted") == 2


async def test_the_request_id_is_the_requests_own(client: Client, tokens: TokenFactory) -> None:
    path, headers = base_request("nginx", tokens.mint())
    await send(client, path, headers)
    _, first, _ = await send(client, path, [*headers, (b"X-Request-Id", b"one")])
    _, second, _ = await send(client, path, headers)
    assert first["x-request-id"] == "one"
    assert second["x-request-id"] not in {"one", ""}


async def test_an_access_log_line_for_every_repeat(
    tokens: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async for client in _client(tokens, logging={"access_log": True}):
        path, headers = base_request("nginx", tokens.mint(sub="bob"))
        with caplog.at_level("INFO", logger="authgate.decision"):
            await send(client, path, headers)
            await send(client, path, [*headers, (b"X-Request-Id", b"rid-2")])
        lines = [r for r in caplog.records if r.getMessage() == "decision"]
        assert [r.__dict__["subject"] for r in lines] == ["bob", "bob"]
        assert lines[1].__dict__["request_id"] == "rid-2"
        assert lines[1].__dict__["rule_id"] == "api"
        assert lines[1].__dict__["method"] == "GET"


# --- what changes the answer changes it on the next request ------------------------------------


async def test_revoked_after_it_was_remembered_is_refused(
    client: Client, tokens: TokenFactory
) -> None:
    path, headers = base_request("nginx", tokens.mint(jti="gone"))
    for _ in range(2):
        assert (await send(client, path, headers))[0] == 200
    await client.app[REVOCATIONS].revoke("gone", expires_at_ms=int(time.time() * 1000) + 60_000)
    status, _, body = await send(client, path, headers)
    assert (status, json.loads(body)["error"]["code"]) == (401, "token_revoked")


async def test_refresh_family_revoked_after_it_was_remembered_is_refused(
    client: Client, tokens: TokenFactory
) -> None:
    path, headers = base_request("nginx", tokens.mint(fam="family-1"))
    for _ in range(2):
        assert (await send(client, path, headers))[0] == 200
    await client.app[REVOCATIONS].revoke(
        "fam:family-1", expires_at_ms=int(time.time() * 1000) + 60_000
    )
    assert (await send(client, path, headers))[0] == 401


async def test_expired_while_remembered_is_refused(tokens: TokenFactory) -> None:
    clock = ManualClock(int(time.time() * 1000))
    async for client in _client(tokens, clock=clock):
        exp = clock.now_ms() // 1000 + 120
        path, headers = base_request("nginx", tokens.mint(exp=exp))
        for _ in range(2):
            assert (await send(client, path, headers))[0] == 200
        clock.advance(120_000 + 60_000)  # past exp and the default leeway
        status, _, body = await send(client, path, headers)
        assert (status, json.loads(body)["error"]["code"]) == (401, "token_expired")


async def test_a_grant_on_one_rule_is_not_a_grant_on_another(
    client: Client, tokens: TokenFactory
) -> None:
    """A grant on one rule is no grant on another: the admin rule still demands its scope."""
    token = tokens.mint(scope="read")
    path, headers = base_request("nginx", token)
    for _ in range(2):
        assert (await send(client, path, headers))[0] == 200
    admin = [(n, b"/admin/users" if n == b"X-Original-URI" else v) for n, v in headers]
    for _ in range(2):
        status, _, body = await send(client, path, admin)
        assert (status, json.loads(body)["error"]["code"]) == (403, "scope_denied")


async def test_a_configured_rule_named_default_is_not_the_built_in_default(
    tokens: TokenFactory,
) -> None:
    """A configured rule may share the built-in's id without sharing its decisions."""
    rules = [{"id": "default", "path_prefix": "/admin", "scopes": ["admin"]}]
    async for client in _client(tokens, policy={"rules": rules, "default_action": "authenticate"}):
        path, headers = base_request("nginx", tokens.mint(scope="read"))
        for _ in range(2):  # /api/items: the built-in default (authenticate)
            assert (await send(client, path, headers))[0] == 200
        admin = [(n, b"/admin/x" if n == b"X-Original-URI" else v) for n, v in headers]
        assert (await send(client, path, admin))[0] == 403


async def test_a_rate_limited_rule_counts_every_repeat(
    client: Client, tokens: TokenFactory
) -> None:
    path, headers = base_request("nginx", tokens.mint())
    limited = [(n, b"/limited/x" if n == b"X-Original-URI" else v) for n, v in headers]
    statuses = [(await send(client, path, limited))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_an_untrusted_peer_with_remembered_headers_is_refused(
    tokens: TokenFactory,
) -> None:
    async for client in _client(tokens, server={"trusted_proxies": ["127.0.0.1/32"]}):
        path, headers = base_request("nginx", tokens.mint())
        for _ in range(2):
            assert (await send(client, path, headers))[0] == 200
        status, _, body = await send(client, path, headers, source="127.0.0.2")
        assert status == 403
        assert json.loads(body)["error"]["code"] == "untrusted_proxy"


async def test_identity_jwt_is_minted_for_every_repeat(tokens: TokenFactory) -> None:
    identity = {"identity_jwt": {"enabled": True, "audience": "upstream"}}
    async for client in _client(tokens, identity=identity):
        path, headers = base_request("nginx", tokens.mint())
        seen = set()
        for _ in range(3):
            status, response_headers, _ = await send(client, path, headers)
            assert status == 200
            seen.add(response_headers["x-authgate-identity"])
        assert len(seen) == 3
