"""Forward-auth doors over a real socket (aiohttp test server), on in-memory stores."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import REVOCATIONS
from tests.support import TokenFactory, make_settings


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
def stores() -> MemoryStores:
    return MemoryStores()


@pytest.fixture
async def client(
    tokens: TokenFactory, stores: MemoryStores
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings = make_settings(
        policy={
            "rules": [
                {"id": "public", "path_prefix": "/public", "anonymous": True},
                {"id": "admin", "path_prefix": "/admin", "scopes": ["admin"]},
                {"id": "api", "path_prefix": "/api"},
            ]
        }
    )
    app = create_app(settings, stores=stores, key_ring=KeyRing([tokens.key]))
    async with TestClient(TestServer(app)) as c:
        yield c


def nginx_headers(
    token: str | None, uri: str = "/api/items", method: str = "GET"
) -> dict[str, str]:
    headers = {"X-Original-URI": uri, "X-Original-Method": method}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def test_valid_token_is_allowed_with_identity_headers(
    client: TestClient[web.Request, web.Application], tokens: TokenFactory
) -> None:
    """A valid token gets 200 and the identity headers the proxy copies upstream."""
    token = tokens.mint(sub="alice", scope="read")
    resp = await client.get("/auth", headers=nginx_headers(token))
    assert resp.status == 200
    assert resp.headers["X-Authgate-Subject"] == "alice"
    assert resp.headers["X-Authgate-Credential"] == "jwt"
    assert resp.headers["X-Authgate-Scopes"] == "read"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "token_expired"),
        ({"aud": "someone-else"}, "token_audience_invalid"),
        ({"iss": "https://evil.test"}, "token_issuer_invalid"),
        ({"exp": None}, "token_malformed"),
        ({"nbf": int(time.time()) + 3600}, "token_not_yet_valid"),
        ({"exp": "tomorrow"}, "token_malformed"),
        ({"exp": 10**15}, "token_malformed"),
        ({"type": "refresh"}, "token_type_invalid"),
    ],
    ids=[
        "expired",
        "wrong-aud",
        "wrong-iss",
        "no-exp",
        "nbf-future",
        "exp-string",
        "exp-absurd",
        "refresh",
    ],
)
async def test_bad_tokens_get_401(
    client: TestClient[web.Request, web.Application],
    tokens: TokenFactory,
    overrides: dict[str, object],
    reason: str,
) -> None:
    """Each bad token is refused with 401 and its stable reason."""
    resp = await client.get("/auth", headers=nginx_headers(tokens.mint(**overrides)))
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == reason
    assert "WWW-Authenticate" in resp.headers


async def test_revoked_token_is_refused_even_when_cached(
    client: TestClient[web.Request, web.Application], tokens: TokenFactory, stores: MemoryStores
) -> None:
    """Revocation (through the revocation list, as ``/revoke`` and the CLI do) applies to a
    token already in the verified-token cache and already answered from memory."""
    jti = "revoke-me"
    token = tokens.mint(jti=jti)
    for _ in range(3):  # the second and third are repeat grants
        assert (await client.get("/auth", headers=nginx_headers(token))).status == 200
    revocations = client.app[REVOCATIONS]
    await revocations.revoke(jti, expires_at_ms=int(time.time() * 1000) + 60_000)
    assert await stores.revocations.is_revoked(jti)  # the store keeps the truth
    resp = await client.get("/auth", headers=nginx_headers(token))
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "token_revoked"


async def test_scope_denied_is_403(
    client: TestClient[web.Request, web.Application], tokens: TokenFactory
) -> None:
    """A valid token without the route's scope gets 403."""
    resp = await client.get(
        "/auth", headers=nginx_headers(tokens.mint(scope="read"), uri="/admin/x")
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "scope_denied"


async def test_dot_segments_cannot_reach_admin_through_public(
    client: TestClient[web.Request, web.Application],
) -> None:
    """/public/../admin is refused rather than matched to the public rule."""
    resp = await client.get("/auth", headers=nginx_headers(None, uri="/public/../admin"))
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_target"


async def test_public_route_needs_no_credential(
    client: TestClient[web.Request, web.Application],
) -> None:
    """An anonymous rule allows requests without a credential."""
    resp = await client.get("/auth", headers=nginx_headers(None, uri="/public/x"))
    assert resp.status == 200
    assert resp.headers["X-Authgate-Credential"] == "anonymous"
