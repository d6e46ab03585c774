"""Certificate-bound access tokens (RFC 8705 §3) end to end: TLS ends at a proxy, which
forwards the client certificate in ``Client-Cert`` (RFC 9440) or ``X-Forwarded-Client-Cert``
(Envoy); ``/token`` binds tokens to it and every door checks it on every request.

Certificates are made here with ``cryptography``; a real socket (aiohttp test server), an
echo upstream for the sidecar, in-memory stores.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.verifiers.cert_binding import thumbprint
from authgate.web.app import create_app
from authgate.web.state import METRICS, SERVICES
from tests.certs import client_cert, make_cert, xfcc
from tests.support import TokenFactory, echo_app, make_settings, serve_app

FORM = "application/x-www-form-urlencoded"
ASK = "grant_type=client_credentials&tls_client_certificate_bound_access_tokens=true"
CERT = make_cert("alice")
THIEF = make_cert("mallory")
Client = TestClient[web.Request, web.Application]


@dataclass
class Gateway:
    client: Client
    api_key: str
    tokens: TokenFactory

    def basic(self) -> dict[str, str]:
        key_id = self.api_key.split("_")[1]
        raw = base64.b64encode(f"{key_id}:{self.api_key}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}

    async def token(self, form: str, **headers: str) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(
            "/token", data=form, headers={"Content-Type": FORM, **self.basic(), **headers}
        )
        return resp.status, await resp.json()

    def decisions(self, reason: str) -> float:
        registry = self.client.app[METRICS].registry if self.client.app else None
        assert registry is not None
        labels = {"outcome": "denied", "reason": reason, "credential": "jwt"}
        return registry.get_sample_value("authgate_decisions_total", labels) or 0.0


async def _gateway(
    *, trusted: tuple[str, ...] | None = None, **tokens: Any
) -> AsyncIterator[Gateway]:
    factory = TokenFactory()
    async with AsyncExitStack() as stack:
        echo = await stack.enter_async_context(serve_app(echo_app()))
        server: dict[str, Any] = {} if trusted is None else {"trusted_proxies": list(trusted)}
        settings = make_settings(
            server=server,
            tokens=tokens,
            policy={"rules": [{"id": "api", "path_prefix": "/api"}]},
            proxy={"upstream": f"http://127.0.0.1:{echo}"},
        )
        app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([factory.key]))
        client = await stack.enter_async_context(TestClient(TestServer(app)))
        _, raw = await app[SERVICES].api_keys.create(name="reader", scopes=["read"])
        yield Gateway(client, raw, factory)


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async for gateway in _gateway():
        yield gateway


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


# How the original request (GET https://app.test/api/items) reaches each door.
DOORS: dict[str, Callable[[], tuple[str, dict[str, str]]]] = {
    "nginx": lambda: (
        "/auth",
        {"X-Original-Method": "GET", "X-Original-URI": "/api/items", "X-Forwarded-Proto": "https"},
    ),
    "traefik": lambda: (
        "/auth/forward",
        {
            "X-Forwarded-Method": "GET",
            "X-Forwarded-Uri": "/api/items",
            "X-Forwarded-Host": "app.test",
            "X-Forwarded-Proto": "https",
        },
    ),
    "envoy": lambda: ("/auth/envoy/api/items", {"Host": "app.test"}),
    "sidecar": lambda: ("/api/items", {"Host": "app.test"}),
}
CERT_HEADERS: dict[str, Callable[[bytes], dict[str, str]]] = {
    "client-cert": lambda der: {"Client-Cert": client_cert(der)},
    "xfcc": lambda der: {"X-Forwarded-Client-Cert": xfcc(der)},
}


async def call(gw: Gateway, door: str, headers: dict[str, str]) -> tuple[int, str]:
    target, door_headers = DOORS[door]()
    resp = await gw.client.get(target, headers={**door_headers, **headers})
    if resp.status == 200:
        return 200, ""
    body = await resp.json()
    return resp.status, str(body["error"]["code"])


async def bound_token(gw: Gateway, der: bytes = CERT) -> str:
    status, body = await gw.token(ASK, **{"Client-Cert": client_cert(der)})
    assert status == 200, body
    return str(body["access_token"])


async def test_token_binds_to_the_presented_certificate_when_asked(gw: Gateway) -> None:
    status, body = await gw.token(ASK, **{"X-Forwarded-Client-Cert": xfcc(CERT)})
    assert status == 200, body
    assert body["token_type"] == "Bearer"  # RFC 8705 §3: still a bearer token type
    assert claims_of(body["access_token"])["cnf"] == {"x5t#S256": thumbprint(CERT)}
    # Not asked: not bound (tokens.certificate_binding: requested, the default).
    status, body = await gw.token(
        "grant_type=client_credentials", **{"Client-Cert": client_cert(CERT)}
    )
    assert status == 200 and "cnf" not in claims_of(body["access_token"])


async def test_asking_without_a_certificate_is_refused(gw: Gateway) -> None:
    status, body = await gw.token(ASK)
    assert (status, body["error"]) == (400, "invalid_request")
    status, body = await gw.token(ASK.replace("=true", "=yes"))
    assert (status, body["error"]) == (400, "invalid_request")


async def test_a_malformed_certificate_header_at_token_is_a_400(gw: Gateway) -> None:
    resp = await gw.client.post(
        "/token", data=ASK, headers={"Content-Type": FORM, **gw.basic(), "Client-Cert": ":AAAA:"}
    )
    assert resp.status == 400
    assert "client_cert_malformed" in await resp.text()


async def test_metadata_advertises_certificate_bound_tokens(gw: Gateway) -> None:
    resp = await gw.client.get("/.well-known/oauth-authorization-server")
    assert (await resp.json())["tls_client_certificate_bound_access_tokens"] is True


async def test_always_binds_and_off_refuses() -> None:
    async for gw in _gateway(certificate_binding="always"):
        status, body = await gw.token(
            "grant_type=client_credentials", **{"Client-Cert": client_cert(CERT)}
        )
        assert claims_of(body["access_token"])["cnf"] == {"x5t#S256": thumbprint(CERT)}
        status, body = await gw.token("grant_type=client_credentials")
        assert status == 200 and "cnf" not in claims_of(body["access_token"])
    async for gw in _gateway(certificate_binding="off"):
        status, body = await gw.token(ASK, **{"Client-Cert": client_cert(CERT)})
        assert (status, body["error"]) == (400, "invalid_request")
        resp = await gw.client.get("/.well-known/oauth-authorization-server")
        assert "tls_client_certificate_bound_access_tokens" not in await resp.json()


@pytest.mark.parametrize("via", list(CERT_HEADERS))
@pytest.mark.parametrize("door", list(DOORS))
async def test_each_door_checks_the_certificate_on_every_request(
    gw: Gateway, door: str, via: str
) -> None:
    """The right certificate passes (twice: the second from the verified-token cache), a
    different one is certificate_binding_mismatch, none is certificate_required."""
    token = await bound_token(gw)
    auth = {"Authorization": f"Bearer {token}"}
    assert await call(gw, door, {**auth, **CERT_HEADERS[via](CERT)}) == (200, "")
    assert await call(gw, door, {**auth, **CERT_HEADERS[via](CERT)}) == (200, "")
    assert await call(gw, door, {**auth, **CERT_HEADERS[via](THIEF)}) == (
        401,
        "certificate_binding_mismatch",
    )
    assert await call(gw, door, auth) == (401, "certificate_required")
    assert gw.decisions("certificate_binding_mismatch") == 1
    assert gw.decisions("certificate_required") == 1


async def test_a_malformed_header_at_a_door_is_a_400_naming_it(gw: Gateway) -> None:
    token = await bound_token(gw)
    auth = {"Authorization": f"Bearer {token}"}
    assert await call(gw, "nginx", {**auth, "Client-Cert": "not-sf-binary"}) == (
        400,
        "client_cert_malformed",
    )
    assert await call(gw, "envoy", {**auth, "X-Forwarded-Client-Cert": 'Cert="%ZZ"'}) == (
        400,
        "forwarded_client_cert_malformed",
    )


async def test_a_bound_token_minted_outside_token_endpoint(gw: Gateway) -> None:
    """A token minted with the signing key, not at /token (as `authgate token mint` does)."""
    token = gw.tokens.mint(cnf={"x5t#S256": thumbprint(CERT)})
    auth = {"Authorization": f"Bearer {token}"}
    assert await call(gw, "traefik", {**auth, "Client-Cert": client_cert(CERT)}) == (200, "")
    assert await call(gw, "traefik", {**auth, "Client-Cert": client_cert(THIEF)}) == (
        401,
        "certificate_binding_mismatch",
    )


async def test_untrusted_peer_headers_do_not_bind_or_pass() -> None:
    async for gw in _gateway(trusted=("10.0.0.0/8",)):
        status, body = await gw.token(ASK, **{"Client-Cert": client_cert(CERT)})
        assert (status, body["error"]) == (400, "invalid_request")
        token = gw.tokens.mint(cnf={"x5t#S256": thumbprint(CERT)})
        resp = await gw.client.get(
            "/api/items",
            headers={
                "Authorization": f"Bearer {token}",
                "Client-Cert": client_cert(CERT),
                "X-Forwarded-Client-Cert": xfcc(CERT),
            },
        )
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "certificate_required"
        plain = gw.tokens.mint()
        resp = await gw.client.get(
            "/api/items",
            headers={"Authorization": f"Bearer {plain}", "Client-Cert": client_cert(CERT)},
        )
        assert resp.status == 200
        seen = {k.lower() for k, _ in (await resp.json())["headers"]}
        assert "client-cert" not in seen and "x-forwarded-client-cert" not in seen
