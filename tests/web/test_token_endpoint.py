"""POST /token, /revoke, /introspect: RFC behaviour on in-memory stores."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import SERVICES
from tests.support import make_settings

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def gw() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], dict[str, str]]]:
    settings = make_settings(
        tokens={"password_grant": True},
        policy={"rules": [{"id": "api", "path_prefix": "/api"}]},
    )
    app = create_app(settings, stores=MemoryStores())
    async with TestClient(TestServer(app)) as client:
        _, reader = await app[SERVICES].api_keys.create(name="reader", scopes=["read", "write"])
        _, admin = await app[SERVICES].api_keys.create(
            name="admin", scopes=["authgate:admin", "authgate:introspect"]
        )
        await app[SERVICES].users.add(
            "ops", "correct horse battery", scopes=["read"], role="operator"
        )
        yield client, {"reader": reader, "admin": admin}


def basic(raw_key: str) -> dict[str, str]:
    key_id = raw_key.split("_")[1]
    return {"Authorization": "Basic " + base64.b64encode(f"{key_id}:{raw_key}".encode()).decode()}


async def post(
    client: TestClient[web.Request, web.Application],
    path: str,
    data: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, data=data, headers={"Content-Type": FORM, **(headers or {})})
    return resp.status, await resp.json()


async def access(client: TestClient[web.Request, web.Application], token: str) -> int:
    resp = await client.get(
        "/auth",
        headers={
            "X-Original-URI": "/api/x",
            "X-Original-Method": "GET",
            "Authorization": f"Bearer {token}",
        },
    )
    return resp.status


async def test_client_credentials_mints_a_token_the_gateway_accepts(gw: Any) -> None:
    """client_credentials with Basic auth; scope narrowed; the token passes /auth."""
    client, keys = gw
    status, body = await post(
        client, "/token", "grant_type=client_credentials&scope=read", basic(keys["reader"])
    )
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read"
    assert "refresh_token" not in body
    assert await access(client, body["access_token"]) == 200


@pytest.mark.parametrize(
    ("data", "headers", "status", "error"),
    [
        ("grant_type=client_credentials&scope=admin", "reader", 400, "invalid_scope"),
        ("grant_type=client_credentials", None, 401, "invalid_client"),
        (
            "grant_type=client_credentials&client_id=nope&client_secret=x",
            None,
            401,
            "invalid_client",
        ),
        (
            "grant_type=client_credentials&grant_type=client_credentials",
            "reader",
            400,
            "invalid_request",
        ),
        ("grant_type=authorization_code", "reader", 400, "unsupported_grant_type"),
        ("scope=read", "reader", 400, "invalid_request"),
        ("grant_type=refresh_token&refresh_token=abc", None, 400, "invalid_grant"),
        ("grant_type=password&username=ops&password=wrong-password-1", None, 400, "invalid_grant"),
    ],
    ids=[
        "scope-exceeds",
        "no-client",
        "unknown-client",
        "duplicate-param",
        "unsupported-grant",
        "no-grant",
        "garbage-refresh",
        "wrong-password",
    ],
)
async def test_token_errors_follow_rfc_6749(
    gw: Any, data: str, headers: str | None, status: int, error: str
) -> None:
    """Each bad request gets its RFC 6749 error and status, and no token."""
    client, keys = gw
    code, body = await post(client, "/token", data, basic(keys[headers]) if headers else None)
    assert (code, body["error"]) == (status, error)
    assert "access_token" not in body


async def test_wrong_content_type_is_invalid_request(gw: Any) -> None:
    """JSON bodies are refused: the token endpoint is form-encoded."""
    client, keys = gw
    resp = await client.post(
        "/token", json={"grant_type": "client_credentials"}, headers=basic(keys["reader"])
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_request"


async def test_refresh_rotates_and_reuse_revokes_the_family(gw: Any) -> None:
    """A refresh token works once; presenting it again revokes every token of its family."""
    client, _ = gw
    _, first = await post(
        client, "/token", "grant_type=password&username=ops&password=correct horse battery"
    )
    assert await access(client, first["access_token"]) == 200
    status, second = await post(
        client, "/token", f"grant_type=refresh_token&refresh_token={first['refresh_token']}"
    )
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert await access(client, second["access_token"]) == 200
    status, reused = await post(
        client, "/token", f"grant_type=refresh_token&refresh_token={first['refresh_token']}"
    )
    assert (status, reused["error"]) == (400, "invalid_grant")
    assert "reuse" in reused["error_description"]
    assert await access(client, second["access_token"]) == 401, "the family's access token dies too"
    status, body = await post(
        client, "/token", f"grant_type=refresh_token&refresh_token={second['refresh_token']}"
    )
    assert (status, body["error"]) == (400, "invalid_grant"), (
        "the rotated token died with its family"
    )


async def test_refresh_token_is_not_an_access_token_and_vice_versa(gw: Any) -> None:
    """Each kind of token is refused where the other belongs."""
    client, _ = gw
    _, tokens = await post(
        client, "/token", "grant_type=password&username=ops&password=correct horse battery"
    )
    assert await access(client, tokens["refresh_token"]) == 401
    status, body = await post(
        client, "/token", f"grant_type=refresh_token&refresh_token={tokens['access_token']}"
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_revoke_and_introspect(gw: Any) -> None:
    """A client revokes its own token; introspection then reports it inactive."""
    client, keys = gw
    _, body = await post(client, "/token", "grant_type=client_credentials", basic(keys["reader"]))
    token = body["access_token"]
    _, active = await post(client, "/introspect", f"token={token}", basic(keys["admin"]))
    assert active["active"] is True
    assert active["sub"].startswith("apikey:")
    status, _ = await post(client, "/introspect", f"token={token}", basic(keys["reader"]))
    assert status == 403, "introspection needs the introspect scope"
    status, _ = await post(client, "/revoke", f"token={token}", basic(keys["reader"]))
    assert status == 200
    assert await access(client, token) == 401
    _, inactive = await post(client, "/introspect", f"token={token}", basic(keys["admin"]))
    assert inactive == {"active": False}
    status, _ = await post(client, "/revoke", "token=not-a-token", basic(keys["reader"]))
    assert status == 200, "RFC 7009: an invalid token is not an error"


async def test_discovery_documents(gw: Any) -> None:
    """RFC 8414 metadata names the endpoints and the JWKS."""
    client, _ = gw
    meta = await (await client.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == "https://authgate.test"
    assert meta["token_endpoint"].endswith("/token")
    assert "client_credentials" in meta["grant_types_supported"]
    oidc = await (await client.get("/.well-known/openid-configuration")).json()
    assert oidc["jwks_uri"] == meta["jwks_uri"]


async def test_bpc_exchange_mints_a_short_lived_token_bound_to_the_pair() -> None:
    """A BPC-signed POST /token with the BPC grant returns a token for the pair and its scope."""
    from urllib.parse import urlencode

    from authgate.client import BPCSigner
    from authgate.crypto.jws import parse_compact_jws, strict_json_object

    settings = make_settings(
        development=True, policy={"rules": [{"id": "api", "path_prefix": "/api"}]}
    )
    app = create_app(settings, stores=MemoryStores())
    async with TestClient(TestServer(app)) as client:
        key, jwk, fingerprint = BPCSigner.generate_key()
        resp = await client.post(
            "/bpc/register",
            json={
                "name": "dev",
                "scope": "read",
                "mode": "development",
                "secret": "pair-secret-1",
                "pubJwk": jwk,
            },
        )
        signer = BPCSigner((await resp.json())["pairId"], "pair-secret-1", key)
        body = urlencode({"grant_type": "urn:authgate:grant-type:bpc"}).encode()
        headers = {"Content-Type": FORM, **signer.headers("POST", "/token", body)}
        resp = await client.post("/token", data=body, headers=headers)
        assert resp.status == 200, await resp.text()
        issued = await resp.json()
        claims = strict_json_object(parse_compact_jws(issued["access_token"]).payload, "payload")
        assert claims["sub"] == signer.pair_id
        assert claims["pair_id"] == signer.pair_id
        assert claims["cnf"] == {"bpc": fingerprint}
        assert claims["scope"] == "read"
        assert claims["exp"] - claims["iat"] == 300
        assert await access(client, issued["access_token"]) == 200
        # The same signed request replayed mints nothing.
        again = await client.post("/token", data=body, headers=headers)
        assert again.status == 400
        assert (await again.json())["error"] == "invalid_grant"


async def test_token_from_another_issuer_is_refused_everywhere(gw: Any) -> None:
    """A token signed by someone else is neither refreshable, revocable nor introspectable."""
    from tests.support import TokenFactory

    client, keys = gw
    foreign = TokenFactory(issuer="https://evil.test").mint(type="refresh")
    status, body = await post(client, "/token", f"grant_type=refresh_token&refresh_token={foreign}")
    assert (status, body["error"]) == (400, "invalid_grant")
    _, result = await post(client, "/introspect", f"token={foreign}", basic(keys["admin"]))
    assert result == {"active": False}


async def test_password_attempts_are_limited_per_address_across_both_logins() -> None:
    """Every attempt, right or wrong, spends the address's budget before argon2 runs;
    /token and pico /login share it; it refills with time."""
    clock = ManualClock(int(time.time() * 1000))
    settings = make_settings(
        tokens={"password_grant": True, "password_attempts_per_minute": 3},
        policy={"rules": [{"id": "api", "path_prefix": "/api"}]},
    )
    app = create_app(settings, clock=clock, stores=MemoryStores(clock))
    good = "grant_type=password&username=ops&password=correct+horse+battery"
    async with TestClient(TestServer(app)) as client:
        await app[SERVICES].users.add(
            "ops", "correct horse battery", scopes=["read"], role="operator"
        )
        wrong, _ = await post(client, "/token", "grant_type=password&username=ops&password=no")
        assert wrong == 400
        assert (await post(client, "/token", good))[0] == 200
        pico = await client.post(
            "/api/v1/auth/login", json={"username": "ops", "password": "correct horse battery"}
        )
        assert pico.status == 200
        refused = await client.post("/token", data=good, headers={"Content-Type": FORM})
        assert refused.status == 429
        assert (await refused.json())["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["RateLimit-Limit"] == "3"
        pico = await client.post(
            "/api/v1/auth/login", json={"username": "ops", "password": "correct horse battery"}
        )
        assert pico.status == 429
        clock.advance(60_000)
        assert (await post(client, "/token", good))[0] == 200
