"""Repeat grants (``web/repeat.py``): a request answered from memory gets exactly the answer
the full path would give, and memory is used only when that is provably so."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from authgate.crypto.keys import KeyRing
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.context import SINGLE_VALUED
from authgate.web.repeat import RepeatGrants
from authgate.web.state import METRICS, REPEATS, REVOCATIONS
from tests.support import TokenFactory, make_settings, raw_request

Client = TestClient[web.Request, web.Application]
Raw = list[tuple[bytes, bytes]]

RULES: list[dict[str, Any]] = [
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


def repeats(client: Client) -> RepeatGrants:
    return client.app[REPEATS]


def hits(client: Client) -> float:
    value = client.app[METRICS].registry.get_sample_value(
        "authgate_cache_lookups_total", {"cache": "repeat", "result": "hit"}
    )
    return value or 0.0


def decisions(client: Client, outcome: str) -> float:
    registry = client.app[METRICS].registry
    return sum(
        s.value
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


# --- memory is used, and counted ---------------------------------------------------------


@pytest.mark.parametrize("door", sorted(DOORS))
async def test_a_repeat_is_answered_from_memory_and_counted(
    client: Client, tokens: TokenFactory, door: str
) -> None:
    path, headers = base_request(door, tokens.mint(sub="alice"))
    first = await send(client, path, headers)
    assert first[0] == 200
    assert hits(client) == 0
    second = await send(client, path, headers)
    assert answer(second) == answer(first)
    assert hits(client) == 1
    assert decisions(client, "granted") == 2  # a repeat is a decision like any other


async def test_what_the_full_path_ignores_does_not_prevent_a_repeat(
    client: Client, tokens: TokenFactory
) -> None:
    """Request ids, other headers, reordering: still answered from memory."""
    path, headers = base_request("nginx", tokens.mint())
    await send(client, path, headers)
    variants = [
        [*headers, (b"X-Request-Id", b"abc-123")],
        [*headers, (b"User-Agent", b"curl/8"), (b"Accept", b"*/*")],
        list(reversed(headers)),
        [*headers, (b"X-Forwarded-For", b"203.0.113.9")],
    ]
    for n, variant in enumerate(variants, start=1):
        status, response_headers, _ = await send(client, path, variant)
        assert status == 200
        assert hits(client) == n, variant
    assert response_headers["x-authgate-subject"] == "user-1"


async def test_the_request_id_is_the_requests_own(client: Client, tokens: TokenFactory) -> None:
    path, headers = base_request("nginx", tokens.mint())
    await send(client, path, headers)
    _, first, _ = await send(client, path, [*headers, (b"X-Request-Id", b"one")])
    _, second, _ = await send(client, path, headers)
    assert first["x-request-id"] == "one"
    assert second["x-request-id"] not in {"one", ""}
    assert hits(client) == 2


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
        assert hits(client) == 1


# --- what changes the answer is never remembered past ------------------------------------


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
        assert hits(client) == 1
        clock.advance(120_000 + 60_000)  # past exp and the default leeway
        status, _, body = await send(client, path, headers)
        assert (status, json.loads(body)["error"]["code"]) == (401, "token_expired")


async def test_a_grant_on_one_rule_is_not_a_grant_on_another(
    client: Client, tokens: TokenFactory
) -> None:
    """Remembered per rule: the admin rule still demands its scope."""
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
    """Rules are remembered by identity: a configured rule may share the built-in's id."""
    rules = [{"id": "default", "path_prefix": "/admin", "scopes": ["admin"]}]
    async for client in _client(tokens, policy={"rules": rules, "default_action": "authenticate"}):
        path, headers = base_request("nginx", tokens.mint(scope="read"))
        for _ in range(2):  # /api/items: the built-in default (authenticate)
            assert (await send(client, path, headers))[0] == 200
        admin = [(n, b"/admin/x" if n == b"X-Original-URI" else v) for n, v in headers]
        assert (await send(client, path, admin))[0] == 403


async def test_rate_limited_rules_are_never_answered_from_memory(
    client: Client, tokens: TokenFactory
) -> None:
    path, headers = base_request("nginx", tokens.mint())
    limited = [(n, b"/limited/x" if n == b"X-Original-URI" else v) for n, v in headers]
    statuses = [(await send(client, path, limited))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert hits(client) == 0
    assert len(repeats(client)) == 0


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
        assert hits(client) == 2


async def test_cache_size_zero_remembers_nothing(tokens: TokenFactory) -> None:
    async for client in _client(tokens, jwt={"cache_size": 0}):
        path, headers = base_request("nginx", tokens.mint())
        for _ in range(3):
            assert (await send(client, path, headers))[0] == 200
        assert hits(client) == 0
        assert len(repeats(client)) == 0


async def test_memory_stays_bounded(
    client: Client, tokens: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More distinct targets or header-name lists than the caps: memory starts afresh."""
    monkeypatch.setattr("authgate.web.repeat.MAX_TARGETS", 4)
    monkeypatch.setattr("authgate.web.repeat.MAX_SHAPES", 3)
    path, headers = base_request("nginx", tokens.mint())
    memory = repeats(client).doors["nginx"]
    for n in range(10):
        varied = [
            (k, f"/api/items/{n}".encode() if k == b"X-Original-URI" else v) for k, v in headers
        ]
        varied.append((f"X-Extra-{n}".encode(), b"1"))  # a new list of header names each time
        assert (await send(client, path, varied))[0] == 200
        assert len(memory._targets) <= 4
        assert len(memory._shapes) <= 3
    assert (await send(client, path, varied))[0] == 200
    assert hits(client) == 1  # the last one is still remembered


async def test_long_targets_are_not_remembered(client: Client, tokens: TokenFactory) -> None:
    path, headers = base_request("nginx", tokens.mint())
    long = [(k, b"/api/" + b"x" * 3000 if k == b"X-Original-URI" else v) for k, v in headers]
    for _ in range(2):
        assert (await send(client, path, long))[0] == 200
    assert hits(client) == 0


# --- an answer from memory is the full path's answer -------------------------------------


async def same_answer_with_and_without_memory(client: Client, path: str, raw: Raw) -> bool:
    """Send ``raw`` as it is (memory may answer), then again with memory emptied (the full
    path answers); assert both answers match; return whether memory answered the first."""
    before = hits(client)
    with_memory = await send(client, path, raw)
    from_memory = hits(client) > before
    repeats(client).forget()
    without_memory = await send(client, path, raw)
    assert answer(with_memory) == answer(without_memory), (raw, with_memory, without_memory)
    return from_memory


EXTRA_VALUES = {
    "x-forwarded-for": [b"203.0.113.7", b"not-an-ip"],
    "x-forwarded-proto": [b"https", b"ftp"],
    "x-forwarded-host": [b"other.test", b"bad host"],
    "host": [b"app.test"],
}


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("name", sorted({*SINGLE_VALUED, "x-forwarded-for"}))
async def test_every_single_valued_header_added_or_repeated(
    client: Client, tokens: TokenFactory, door: str, name: str
) -> None:
    """After a grant is remembered, adding (once or twice) any header the full path treats
    as single-valued, or X-Forwarded-For, gets the full path's answer."""
    path, headers = base_request(door, tokens.mint())
    assert (await send(client, path, headers))[0] == 200
    values = EXTRA_VALUES.get(name, [b"x", b"GET", b"/api/items?page=2"])
    for first in values:
        for second in [None, *values]:
            extra = [(name.encode(), first)] + ([] if second is None else [(name.encode(), second)])
            await same_answer_with_and_without_memory(client, path, [*headers, *extra])
            assert (await send(client, path, headers))[0] == 200  # remembered again


# --- the property -------------------------------------------------------------------------

NAMES = (
    b"Authorization",
    b"authorization",
    b"X-Original-URI",
    b"X-Original-Method",
    b"X-Forwarded-Method",
    b"X-Forwarded-Uri",
    b"X-Forwarded-Host",
    b"X-Forwarded-Proto",
    b"X-Forwarded-For",
    b"X-BPC-Pair-Id",
    b"X-BPC-Signature",
    b"X-Client-Pubkey",
    b"X-Authgate-Subject",
    b"X-Request-Id",
    b"x-original-uri",
)
VALUES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"GET",
            b"POST",
            b"get",
            b"/api/items?page=2",
            b"/admin/users",
            b"/public/x",
            b"/api/../admin",
            b"https",
            b"ftp",
            b"app.test",
            b"other.test:8443",
            b"203.0.113.7",
            b"not-an-ip",
            b"10.0.0.1, 127.0.0.1",
            b"Bearer",
            b"Bearer  x",
            b"AGProof v1.x",
            b"mallory",
        ]
    ),
    st.binary(max_size=24).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)


def _mutations(token: bytes) -> st.SearchStrategy[list[Callable[[Raw], Raw]]]:
    def add(name: bytes, value: bytes) -> Callable[[Raw], Raw]:
        return lambda raw: [*raw, (name, value)]

    def duplicate(index: int) -> Callable[[Raw], Raw]:
        return lambda raw: [*raw, raw[index % len(raw)]] if raw else raw

    def replace(index: int, value: bytes) -> Callable[[Raw], Raw]:
        return lambda raw: [
            (n, value if i == index % max(1, len(raw)) else v) for i, (n, v) in enumerate(raw)
        ]

    def recase(index: int) -> Callable[[Raw], Raw]:
        return lambda raw: [
            (n.swapcase() if i == index % max(1, len(raw)) else n, v)
            for i, (n, v) in enumerate(raw)
        ]

    def drop(index: int) -> Callable[[Raw], Raw]:
        return lambda raw: [p for i, p in enumerate(raw) if i != index % max(1, len(raw))]

    def bearer(prefix: bytes, suffix: bytes) -> Callable[[Raw], Raw]:
        return lambda raw: [
            (n, prefix + token + suffix if n.lower() == b"authorization" else v) for n, v in raw
        ]

    index = st.integers(min_value=0, max_value=8)
    # Mostly changes that leave every remembered byte in place (so memory could answer,
    # and must answer as the full path does); some that change those bytes.
    keeps_key = st.one_of(
        st.builds(add, st.sampled_from(NAMES), VALUES),
        st.builds(duplicate, index),
        st.builds(add, st.sampled_from([b"X-Request-Id", b"User-Agent", b"Cookie"]), VALUES),
    )
    changes_key = st.one_of(
        st.builds(replace, index, VALUES),
        st.builds(recase, index),
        st.builds(drop, index),
        st.builds(
            bearer,
            st.sampled_from([b"Bearer ", b"bearer ", b"BEARER ", b"Bearer  ", b"Bearer\t"]),
            st.sampled_from([b"", b" ", b"x", b"\t"]),
        ),
    )
    one = st.one_of(keeps_key, keeps_key, keeps_key, changes_key)
    return st.lists(one, min_size=0, max_size=3)


PROPERTY = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
TOKEN = TokenFactory()


@pytest.fixture
async def property_client() -> AsyncIterator[Client]:
    # No rate-limited rule: the two sends of one example must see the same state.
    rules = [r for r in RULES if "rate_limits" not in r]
    async for c in _client(TOKEN, policy={"rules": rules}):
        yield c


@PROPERTY
@given(door=st.sampled_from(sorted(DOORS)), mutations=_mutations(b"TOKEN"), data=st.data())
async def test_an_answer_from_memory_is_the_full_paths_answer(
    property_client: Client, door: str, mutations: list[Callable[[Raw], Raw]], data: Any
) -> None:
    """Prime a grant, mutate the request, and compare the answer given with memory to the
    answer the full path gives with memory emptied."""
    client = property_client
    token = TOKEN.mint(scope=data.draw(st.sampled_from(["read", "admin read"]), "scope"))
    path, headers = base_request(door, token)
    raw = [(n, v.replace(b"TOKEN", token.encode())) for n, v in headers]
    assert (await send(client, path, raw))[0] == 200  # primed (remembered)
    for mutate in mutations:
        raw = [(n, v.replace(b"TOKEN", token.encode())) for n, v in mutate(raw)]
    from_memory = await same_answer_with_and_without_memory(client, path, raw)
    event("answered from memory" if from_memory else "full path")
