"""The remote JWKS cache: TTL, refetch on unknown kid, coalescing, failure handling."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.crypto.jwks_cache import JWKSCache, parse_jwks
from authgate.crypto.keys import KeyRing, SigningKey, b64url
from authgate.errors import IssuerUnavailable
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import METRICS
from tests.support import TokenFactory, free_port, make_settings, serve_app

URL = "https://issuer.test/.well-known/jwks.json"


class FakeIssuer:
    """A JWKS endpoint: counts fetches, can fail, can hold every fetch until released."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.calls = 0
        self.fail: Exception | None = None
        self.body: bytes | None = None
        self.hold: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def fetch(self, url: str) -> bytes:
        assert url == URL
        self.calls += 1
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        if self.body is not None:
            return self.body
        return json.dumps({"keys": [k.public_jwk() for k in self.keys]}).encode()


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def key_a() -> SigningKey:
    return SigningKey.generate("ES256")


@pytest.fixture(scope="module")
def key_b() -> SigningKey:
    return SigningKey.generate("ES256")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_cache(
    issuer: FakeIssuer, clock: Clock, *, ttl: float = 300, interval: float = 30
) -> JWKSCache:
    return JWKSCache(
        url=URL,
        fetch=issuer.fetch,
        algorithms=["ES256", "RS256"],
        ttl_seconds=ttl,
        min_refresh_interval_seconds=interval,
        monotonic=clock,
    )


async def _let_waiters_queue() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# --- loading and coalescing ------------------------------------------------------------


async def test_first_lookup_loads_the_key_set(key_a: SigningKey, clock: Clock) -> None:
    """The first lookup fetches once; later lookups of known kids fetch nothing."""
    issuer = FakeIssuer(key_a)
    cache = make_cache(issuer, clock)
    assert not cache.loaded
    found = await cache.get(key_a.kid)
    assert found is not None
    assert found.kid == key_a.kid
    assert cache.loaded
    for _ in range(10):
        assert await cache.get(key_a.kid) is not None
    assert issuer.calls == 1


async def test_concurrent_lookups_on_a_cold_cache_fetch_once(
    key_a: SigningKey, clock: Clock
) -> None:
    """50 concurrent lookups before anything is loaded share one fetch."""
    issuer = FakeIssuer(key_a)
    issuer.hold = asyncio.Event()
    cache = make_cache(issuer, clock)
    lookups = [asyncio.create_task(cache.get(key_a.kid)) for _ in range(50)]
    await issuer.started.wait()
    await _let_waiters_queue()
    issuer.hold.set()
    found = await asyncio.gather(*lookups)
    assert issuer.calls == 1
    assert all(k is not None and k.kid == key_a.kid for k in found)


async def test_concurrent_unknown_kid_lookups_fetch_once(
    key_a: SigningKey, key_b: SigningKey, clock: Clock
) -> None:
    """50 concurrent lookups of a kid the cache does not know cause exactly one refetch."""
    issuer = FakeIssuer(key_a)
    cache = make_cache(issuer, clock)
    await cache.get(key_a.kid)
    issuer.keys.append(key_b)  # the issuer rotates in a new key
    clock.now += 31
    issuer.hold = asyncio.Event()
    issuer.started.clear()
    lookups = [asyncio.create_task(cache.get(key_b.kid)) for _ in range(50)]
    await issuer.started.wait()
    await _let_waiters_queue()
    issuer.hold.set()
    found = await asyncio.gather(*lookups)
    assert issuer.calls == 2
    assert all(k is not None and k.kid == key_b.kid for k in found)


async def test_unknown_kid_refetch_honours_the_minimum_interval(
    key_a: SigningKey, key_b: SigningKey, clock: Clock
) -> None:
    """Unknown kids refetch at most once per ``min_refresh_interval_seconds``."""
    issuer = FakeIssuer(key_a)
    cache = make_cache(issuer, clock, interval=30)
    await cache.get(key_a.kid)
    issuer.keys.append(key_b)
    clock.now += 10
    for kid in ("nope-1", "nope-2", key_b.kid):
        assert await cache.get(kid) is None
    assert issuer.calls == 1, "within the interval an unknown kid costs no fetch"
    clock.now += 20
    found = await cache.get(key_b.kid)
    assert found is not None
    assert issuer.calls == 2
    assert await cache.get("nope-3") is None
    assert issuer.calls == 2


async def test_stale_set_is_refreshed_after_the_ttl(
    key_a: SigningKey, key_b: SigningKey, clock: Clock
) -> None:
    """A key set is fresh for ``ttl_seconds``; the first use after that refetches."""
    issuer = FakeIssuer(key_a)
    cache = make_cache(issuer, clock, ttl=300)
    await cache.get(key_a.kid)
    issuer.keys = [key_b]  # the issuer retires key_a
    clock.now += 299
    assert await cache.get(key_a.kid) is not None
    assert issuer.calls == 1
    clock.now += 1
    assert await cache.get(key_a.kid) is None, "a retired key is gone after the TTL"
    assert await cache.get(key_b.kid) is not None
    assert issuer.calls == 2


# --- failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "breakage",
    [
        {"fail": ConnectionError("down")},
        {"fail": TimeoutError()},
        {"body": b"<html>502 Bad Gateway</html>"},
        {"body": b'{"keys": "nope"}'},
        {"body": b"\xff\xfe"},
    ],
    ids=["connection-error", "timeout", "html", "keys-not-a-list", "not-utf8"],
)
async def test_last_good_set_is_kept_when_the_issuer_breaks(
    breakage: dict[str, Any], key_a: SigningKey, clock: Clock
) -> None:
    """After a good load, a failing or garbled refresh keeps the previous keys."""
    issuer = FakeIssuer(key_a)
    cache = make_cache(issuer, clock, ttl=300)
    await cache.get(key_a.kid)
    issuer.fail = breakage.get("fail")
    issuer.body = breakage.get("body")
    clock.now += 400
    found = await cache.get(key_a.kid)
    assert found is not None
    assert found.kid == key_a.kid
    assert issuer.calls == 2, "the refresh was attempted"
    assert cache.loaded


async def test_never_loaded_issuer_is_unavailable(key_a: SigningKey, clock: Clock) -> None:
    """With no good set at all the lookup fails closed; retries respect the interval."""
    issuer = FakeIssuer(key_a)
    issuer.fail = ConnectionError("down")
    cache = make_cache(issuer, clock, interval=30)
    with pytest.raises(IssuerUnavailable):
        await cache.get(key_a.kid)
    with pytest.raises(IssuerUnavailable):
        await cache.get(key_a.kid)
    assert issuer.calls == 1, "a burst while the issuer is down costs one fetch"
    issuer.fail = None
    clock.now += 30
    assert await cache.get(key_a.kid) is not None
    assert issuer.calls == 2


async def test_cancelled_waiters_do_not_swallow_the_next_refresh(
    key_a: SigningKey, key_b: SigningKey, clock: Clock
) -> None:
    """If every waiter of a fetch is cancelled, the next allowed refresh still fetches."""
    issuer = FakeIssuer(key_a)
    cache = make_cache(issuer, clock, interval=30)
    issuer.hold = asyncio.Event()
    lookup = asyncio.create_task(cache.get(key_a.kid))
    await issuer.started.wait()
    lookup.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await lookup
    issuer.hold.set()
    await _let_waiters_queue()  # the shielded fetch completes on its own
    assert cache.loaded
    issuer.keys.append(key_b)
    clock.now += 31
    assert await cache.get(key_b.kid) is not None
    assert issuer.calls == 2


# --- parsing ---------------------------------------------------------------------------


def test_bad_entries_are_ignored_and_only_they(key_a: SigningKey, key_b: SigningKey) -> None:
    """Unusable entries are skipped one by one; good ones in the same document load."""
    small_rsa_n = b64url((2**1023 + 1155).to_bytes(128, "big"))
    document = {
        "keys": [
            "not an object",
            42,
            None,
            [],
            {**key_a.public_jwk(), "use": "enc", "kid": "enc"},
            {**key_a.public_jwk(), "kid": "private", "d": "AAAA"},
            {**key_a.public_jwk(), "kid": "bad-point", "y": key_a.public_jwk()["x"]},
            {**key_a.public_jwk(), "kid": "hs", "kty": "oct", "alg": "HS256", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "rsa-1024", "alg": "RS256", "n": small_rsa_n, "e": "AQAB"},
            {"kty": "OKP", "kid": "ed448", "crv": "Ed448", "x": "AAAA"},
            {**key_a.public_jwk(), "kid": "es384", "alg": "ES384"},
            key_a.public_jwk(),
            key_b.public_jwk(),
        ]
    }
    keys = parse_jwks(json.dumps(document).encode(), ["ES256", "RS256"])
    assert set(keys) == {key_a.kid, key_b.kid}


def test_duplicate_kid_is_dropped_as_ambiguous(key_a: SigningKey, key_b: SigningKey) -> None:
    """Two usable keys under one kid: neither is used, others still are."""
    clash = {**key_b.public_jwk(), "kid": key_a.kid}
    other = SigningKey.generate("ES256")
    document = {"keys": [key_a.public_jwk(), clash, other.public_jwk()]}
    keys = parse_jwks(json.dumps(document).encode(), ["ES256"])
    assert set(keys) == {other.kid}


def test_duplicate_kid_with_an_unusable_twin_is_not_ambiguous(key_a: SigningKey) -> None:
    """An encryption key sharing a kid with a signing key does not make it ambiguous."""
    twin = {**key_a.public_jwk(), "use": "enc"}
    keys = parse_jwks(json.dumps({"keys": [twin, key_a.public_jwk()]}).encode(), ["ES256"])
    assert set(keys) == {key_a.kid}


async def test_single_key_without_kid_serves_tokens_without_kid(
    key_a: SigningKey, clock: Clock
) -> None:
    """A lone key without ``kid`` is used for tokens without ``kid``."""
    issuer = FakeIssuer()
    issuer.body = json.dumps({"keys": [{**key_a.public_jwk(), "kid": None}]}).encode()
    cache = make_cache(issuer, clock)
    found = await cache.get("")
    assert found is not None
    assert found.alg == "ES256"


async def test_two_keys_without_kid_serve_nothing(
    key_a: SigningKey, key_b: SigningKey, clock: Clock
) -> None:
    """Two kid-less keys: a token without ``kid`` cannot pick one, so none is returned."""
    issuer = FakeIssuer()
    jwks = [{**k.public_jwk(), "kid": None} for k in (key_a, key_b)]
    issuer.body = json.dumps({"keys": jwks}).encode()
    cache = make_cache(issuer, clock)
    assert await cache.get("") is None
    assert cache.loaded


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"keys": {}}', b'{"nokeys": []}', b"\xff", b"{"],
    ids=["empty", "array", "keys-object", "no-keys", "not-utf8", "truncated"],
)
def test_bad_documents_raise_value_error(body: bytes) -> None:
    """A document that is not ``{"keys": [...]}`` raises ValueError (a failed refresh)."""
    with pytest.raises(ValueError):
        parse_jwks(body, ["ES256"])


# --- end to end: an external issuer over HTTP ------------------------------------------

EXTERNAL = "https://login.external.test"
EXTERNAL_AUDIENCE = "orders-api"


class JWKSServer:
    """A real HTTP JWKS endpoint whose keys can be rotated."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.hits = 0

    def app(self) -> web.Application:
        async def jwks(request: web.Request) -> web.Response:
            self.hits += 1
            return web.json_response({"keys": [k.public_jwk() for k in self.keys]})

        app = web.Application()
        app.router.add_get("/jwks", jwks)
        return app


def _external_settings(port: int, *, ttl: float) -> Any:
    return make_settings(
        jwt={
            "external_issuers": [
                {
                    "issuer": EXTERNAL,
                    "jwks_url": f"http://127.0.0.1:{port}/jwks",
                    "audiences": [EXTERNAL_AUDIENCE],
                    "algorithms": ["ES256"],
                    "jwks_ttl_seconds": ttl,
                    "min_refresh_interval_seconds": 1,
                }
            ]
        },
        policy={"rules": [{"id": "api", "path_prefix": "/api"}]},
    )


def _auth_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "X-Original-URI": "/api/orders",
        "X-Original-Method": "GET",
    }


async def test_external_issuer_end_to_end(key_a: SigningKey, key_b: SigningKey) -> None:
    """JWKS-issuer tokens are accepted, rotation is picked up, an outage keeps the keys."""
    server = JWKSServer(key_a)
    ttl = 1.2
    old = TokenFactory(key=key_a, issuer=EXTERNAL, audience=EXTERNAL_AUDIENCE)
    new = TokenFactory(key=key_b, issuer=EXTERNAL, audience=EXTERNAL_AUDIENCE)
    async with contextlib.AsyncExitStack() as stack:
        issuer_site = contextlib.AsyncExitStack()
        stack.push_async_callback(issuer_site.aclose)
        port = await issuer_site.enter_async_context(serve_app(server.app()))
        app = create_app(
            _external_settings(port, ttl=ttl),
            stores=MemoryStores(),
            key_ring=KeyRing([SigningKey.generate()]),
        )
        client = await stack.enter_async_context(TestClient(TestServer(app)))

        resp = await client.get("/auth", headers=_auth_headers(old.mint(sub="carol")))
        assert resp.status == 200
        assert resp.headers["X-Authgate-Subject"] == "carol"
        assert resp.headers["X-Authgate-Issuer"] == EXTERNAL
        assert server.hits == 1

        server.keys.append(key_b)  # rotation: a new kid appears at the issuer
        await asyncio.sleep(1.05)  # past the minimum refresh interval (1 s)
        resp = await client.get("/auth", headers=_auth_headers(new.mint(sub="dave")))
        assert resp.status == 200
        assert resp.headers["X-Authgate-Subject"] == "dave"
        assert server.hits == 2

        await issuer_site.aclose()  # the issuer goes down ...
        await asyncio.sleep(ttl + 0.1)  # ... and the cached set goes stale
        resp = await client.get("/auth", headers=_auth_headers(old.mint(sub="erin")))
        assert resp.status == 200, await resp.text()
        assert resp.headers["X-Authgate-Subject"] == "erin"
        errors = app[METRICS].registry.get_sample_value(
            "authgate_jwks_fetches_total", {"outcome": "error"}
        )
        assert errors is not None
        assert errors >= 1, "the refresh was attempted and failed"


async def test_unreachable_issuer_fails_closed(key_a: SigningKey) -> None:
    """An issuer whose keys were never fetched answers 503 issuer_unavailable, never 200."""
    app = create_app(
        _external_settings(free_port(), ttl=300),
        stores=MemoryStores(),
        key_ring=KeyRing([SigningKey.generate()]),
    )
    token = TokenFactory(key=key_a, issuer=EXTERNAL, audience=EXTERNAL_AUDIENCE).mint()
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/auth", headers=_auth_headers(token))
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "issuer_unavailable"
        assert resp.headers["Retry-After"] == "1"
