"""Each forward-auth contract reads its own headers; untrusted peers are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from tests.support import TokenFactory, araw_get, make_settings

RULES = {
    "rules": [
        {"id": "admin", "path_prefix": "/admin", "scopes": ["admin"]},
        {"id": "api", "path_prefix": "/api"},
    ]
}


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


async def make_client(
    tokens: TokenFactory, **sections: object
) -> TestClient[web.Request, web.Application]:
    settings = make_settings(policy=RULES, **sections)
    app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(tokens: TokenFactory) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    c = await make_client(tokens)
    yield c
    await c.close()


async def test_traefik_door_reads_x_forwarded_headers(
    client: TestClient[web.Request, web.Application], tokens: TokenFactory
) -> None:
    """/auth/forward decides on X-Forwarded-Method and -Uri, not its own request line."""
    headers = {
        "Authorization": f"Bearer {tokens.mint(scope='read')}",
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/admin/panel",
        "X-Forwarded-Host": "app.test",
        "X-Forwarded-Proto": "https",
    }
    resp = await client.get("/auth/forward", headers=headers)
    assert resp.status == 403
    headers["X-Forwarded-Uri"] = "/api/items?x=1"
    resp = await client.get("/auth/forward", headers=headers)
    assert resp.status == 200


@pytest.mark.parametrize("missing", ["X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host"])
async def test_traefik_door_names_the_missing_header(
    client: TestClient[web.Request, web.Application], tokens: TokenFactory, missing: str
) -> None:
    """A trusted proxy that omits a contract header gets 400 naming it."""
    headers = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/api",
        "X-Forwarded-Host": "app.test",
    }
    del headers[missing]
    resp = await client.get("/auth/forward", headers=headers)
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "missing_forwarded_header"
    assert missing in body["error"]["message"]


async def test_envoy_door_uses_method_and_path_after_prefix(
    client: TestClient[web.Request, web.Application], tokens: TokenFactory
) -> None:
    """/auth/envoy/<path> authorises the original method on the original path."""
    auth = {"Authorization": f"Bearer {tokens.mint(scope='read')}"}
    assert (await client.post("/auth/envoy/api/items?q=1", headers=auth)).status == 200
    assert (await client.delete("/auth/envoy/admin/x", headers=auth)).status == 403
    # Raw bytes: aiohttp's client would resolve the dot segments before sending.
    assert client.port is not None
    status, _, body = await araw_get(client.port, "/auth/envoy/api/%2e%2e/admin", auth)
    assert status == 400
    assert b"invalid_target" in body


async def test_nginx_door_requires_original_uri(
    client: TestClient[web.Request, web.Application],
) -> None:
    """Without X-Original-URI there is nothing to decide on: 400, not a guess."""
    resp = await client.get("/auth", headers={"X-Original-Method": "GET"})
    assert resp.status == 400
    assert "X-Original-URI" in (await resp.json())["error"]["message"]


async def test_forward_auth_from_untrusted_peer_is_refused(tokens: TokenFactory) -> None:
    """When the caller is not a trusted proxy, its forwarded headers are never believed."""
    client = await make_client(tokens, server={"trusted_proxies": ["10.0.0.0/8"]})
    try:
        for path, headers in [
            ("/auth", {"X-Original-URI": "/api", "X-Original-Method": "GET"}),
            (
                "/auth/forward",
                {"X-Forwarded-Uri": "/api", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "a"},
            ),
            ("/auth/envoy/api", {}),
        ]:
            headers["Authorization"] = f"Bearer {tokens.mint()}"
            resp = await client.get(path, headers=headers)
            assert resp.status == 403, path
            assert (await resp.json())["error"]["code"] == "untrusted_proxy"
    finally:
        await client.close()


async def test_duplicate_authorization_header_is_refused(
    client: TestClient[web.Request, web.Application], tokens: TokenFactory
) -> None:
    """Two Authorization headers could be read differently downstream: 400."""
    from multidict import CIMultiDict

    headers: CIMultiDict[str] = CIMultiDict(
        [("X-Original-URI", "/api"), ("X-Original-Method", "GET")]
    )
    headers.add("Authorization", f"Bearer {tokens.mint()}")
    headers.add("Authorization", "Bearer other")
    resp = await client.get("/auth", headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "malformed_header"


async def test_identity_jwt_verifies_against_the_published_jwks(tokens: TokenFactory) -> None:
    """The optional identity JWT is signed by authgate and verifiable from its JWKS."""
    client = await make_client(
        tokens, identity={"identity_jwt": {"enabled": True, "audience": "orders"}}
    )
    try:
        resp = await client.get(
            "/auth",
            headers={
                "X-Original-URI": "/api/x",
                "X-Original-Method": "GET",
                "Authorization": f"Bearer {tokens.mint(sub='svc-a', scope='read')}",
            },
        )
        assert resp.status == 200
        identity = resp.headers["X-Authgate-Identity"]
        jwks = await (await client.get("/.well-known/jwks.json")).json()
        key = jwt.PyJWK(jwks["keys"][0])
        claims = jwt.decode(identity, key.key, algorithms=[key.algorithm_name], audience="orders")
        assert claims["sub"] == "svc-a"
        assert claims["cred"] == "jwt"
        assert claims["rule"] == "api"
        assert claims["exp"] - claims["iat"] == 60
    finally:
        await client.close()


async def test_metrics_count_decisions_by_reason(
    client: TestClient[web.Request, web.Application], tokens: TokenFactory
) -> None:
    """Every decision is counted with a low-cardinality reason label."""
    await client.get("/auth", headers={"X-Original-URI": "/api", "X-Original-Method": "GET"})
    text = await (await client.get("/metrics")).text()
    assert (
        'authgate_decisions_total{credential="none",outcome="denied",reason="credential_missing"} 1.0'
        in text
    )
