"""DPoP (RFC 9449) end to end on one app: ``/token`` binds tokens to the client's key, and
every forward-auth door verifies the proof against the request it reconstructs.

A real socket (aiohttp test server), in-memory stores and a manual clock: proofs carry the
clock's time, so nothing depends on the wall clock's second boundaries.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from authgate.client.dpop import DPoPKey
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import METRICS, SERVICES
from tests.support import ISSUER, make_settings

FORM = "application/x-www-form-urlencoded"
NOW = int(time.time())
TOKEN_URL = f"{ISSUER}/token"
APP = "https://app.test"
Client = TestClient[web.Request, web.Application]


@dataclass
class Gateway:
    """The test client, its clock and an API key allowed to read."""

    client: Client
    clock: ManualClock
    api_key: str

    def basic(self) -> dict[str, str]:
        key_id = self.api_key.split("_")[1]
        raw = base64.b64encode(f"{key_id}:{self.api_key}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}

    async def token(
        self, form: str, *, proof: str | None = None, basic: bool = True
    ) -> tuple[ClientResponse, dict[str, Any]]:
        headers = {"Content-Type": FORM, **(self.basic() if basic else {})}
        if proof is not None:
            headers["DPoP"] = proof
        resp = await self.client.post("/token", data=form, headers=headers)
        return resp, await resp.json()

    async def bound_token(self, key: DPoPKey) -> str:
        """A client_credentials token bound to ``key``."""
        resp, body = await self.token(
            "grant_type=client_credentials", proof=key.proof("POST", TOKEN_URL, iat=NOW)
        )
        assert resp.status == 200, body
        assert body["token_type"] == "DPoP"
        return str(body["access_token"])

    def decisions(self, reason: str) -> float:
        registry = self.client.app[METRICS].registry if self.client.app else None
        assert registry is not None
        labels = {"outcome": "denied", "reason": reason, "credential": "jwt"}
        return registry.get_sample_value("authgate_decisions_total", labels) or 0.0


def settings_for(**dpop: Any) -> Any:
    return make_settings(
        jwt={"dpop": dpop} if dpop else {},
        tokens={"password_grant": True},
        policy={
            "rules": [
                {"id": "bound", "path_prefix": "/bound", "dpop": "required"},
                {"id": "legacy", "path_prefix": "/legacy", "dpop": "off"},
                {"id": "api", "path_prefix": "/api"},
            ]
        },
    )


async def _gateway(**dpop: Any) -> AsyncIterator[Gateway]:
    clock = ManualClock(NOW * 1000)
    app = create_app(settings_for(**dpop), clock=clock, stores=MemoryStores(clock))
    async with TestClient(TestServer(app)) as client:
        _, raw = await app[SERVICES].api_keys.create(name="reader", scopes=["read"])
        await app[SERVICES].users.add(
            "ops", "correct horse battery", scopes=["read"], role="operator"
        )
        yield Gateway(client, clock, raw)


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async for gateway in _gateway():
        yield gateway


@pytest.fixture
async def gw_nonce() -> AsyncIterator[Gateway]:
    async for gateway in _gateway(require_nonce=True, nonce_secret="n" * 32):
        yield gateway


def claims_of(token: str) -> dict[str, Any]:
    """A token's claims, unverified (the test reads what was issued)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


# Each forward-auth door: how the original request (GET https://app.test<path>?q=1) reaches it.
DOORS: dict[str, Callable[[str], tuple[str, dict[str, str]]]] = {
    "nginx": lambda path: (
        "/auth",
        {
            "X-Original-Method": "GET",
            "X-Original-URI": f"{path}?q=1",
            "X-Forwarded-Host": "app.test",
            "X-Forwarded-Proto": "https",
        },
    ),
    "traefik": lambda path: (
        "/auth/forward",
        {
            "X-Forwarded-Method": "GET",
            "X-Forwarded-Uri": f"{path}?q=1",
            "X-Forwarded-Host": "app.test",
            "X-Forwarded-Proto": "https",
        },
    ),
    "envoy": lambda path: (
        f"/auth/envoy{path}?q=1",
        {"Host": "app.test", "X-Forwarded-Proto": "https"},
    ),
}


async def call(
    gw: Gateway,
    path: str,
    headers: dict[str, str],
    *,
    door: str = "nginx",
    method: str = "GET",
) -> tuple[int, dict[str, Any], ClientResponse]:
    target, door_headers = DOORS[door](path)
    resp = await gw.client.request(method, target, headers={**door_headers, **headers})
    body = await resp.json() if resp.status != 200 else {}
    return resp.status, body, resp


def code(body: dict[str, Any]) -> str:
    return str(body["error"]["code"])


@pytest.mark.parametrize("door", list(DOORS))
async def test_a_bound_token_with_its_proof_passes_each_door_once(gw: Gateway, door: str) -> None:
    """/token binds the token to the key; each door admits it with a proof of the original
    request (query ignored), and refuses the same proof again: dpop_proof_replayed."""
    key = DPoPKey.generate()
    token = await gw.bound_token(key)
    assert claims_of(token)["cnf"] == {"jkt": key.jkt}
    headers = {
        "Authorization": f"DPoP {token}",
        "DPoP": key.proof("GET", f"{APP}/api/items?q=1", access_token=token, iat=NOW),
    }
    status, _, _ = await call(gw, "/api/items", headers, door=door)
    assert status == 200
    status, body, resp = await call(gw, "/api/items", headers, door=door)
    assert (status, code(body)) == (401, "dpop_proof_replayed")
    assert resp.headers["WWW-Authenticate"].startswith(
        'DPoP realm="authgate", error="invalid_dpop_proof"'
    )
    assert gw.decisions("dpop_proof_replayed") == 1


async def test_the_proof_is_checked_on_every_request_though_the_token_is_cached(
    gw: Gateway,
) -> None:
    """The token's verification is cached; a bad proof on the second request still fails."""
    key = DPoPKey.generate()
    token = await gw.bound_token(key)
    good = key.proof("GET", f"{APP}/api/items", access_token=token, iat=NOW)
    assert (await call(gw, "/api/items", {"Authorization": f"DPoP {token}", "DPoP": good}))[
        0
    ] == 200
    other_url = key.proof("GET", f"{APP}/api/other", access_token=token, iat=NOW)
    status, body, _ = await call(
        gw, "/api/items", {"Authorization": f"DPoP {token}", "DPoP": other_url}
    )
    assert (status, code(body)) == (401, "dpop_proof_invalid")
    thief = DPoPKey.generate().proof("GET", f"{APP}/api/items", access_token=token, iat=NOW)
    status, body, _ = await call(
        gw, "/api/items", {"Authorization": f"DPoP {token}", "DPoP": thief}
    )
    assert (status, code(body)) == (401, "dpop_binding_mismatch")


async def test_a_bound_token_presented_as_bearer_is_refused(gw: Gateway) -> None:
    """RFC 9449 §7.2: a leaked bound token replayed as a bearer token gets nothing."""
    token = await gw.bound_token(DPoPKey.generate())
    status, body, resp = await call(gw, "/api/items", {"Authorization": f"Bearer {token}"})
    assert (status, code(body)) == (401, "dpop_bound_token_as_bearer")
    assert resp.headers["WWW-Authenticate"].startswith("DPoP ")
    assert gw.decisions("dpop_bound_token_as_bearer") == 1


async def test_a_dpop_required_route_refuses_plain_bearer_tokens(gw: Gateway) -> None:
    """``dpop: required``: a bearer token is refused; no credential gets a DPoP challenge."""
    resp, body = await gw.token("grant_type=client_credentials")
    assert body["token_type"] == "Bearer"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await call(gw, "/api/items", bearer))[0] == 200
    status, body, _ = await call(gw, "/bound/x", bearer)
    assert (status, code(body)) == (401, "dpop_required")
    status, body, resp = await call(gw, "/bound/x", {})
    assert (status, code(body)) == (401, "credential_missing")
    assert resp.headers["WWW-Authenticate"] == 'DPoP realm="authgate"'
    key = DPoPKey.generate()
    token = await gw.bound_token(key)
    proof = key.proof("GET", f"{APP}/bound/x", access_token=token, iat=NOW)
    assert (await call(gw, "/bound/x", {"Authorization": f"DPoP {token}", "DPoP": proof}))[0] == 200


async def test_a_dpop_off_route_refuses_the_dpop_scheme(gw: Gateway) -> None:
    """``dpop: off``: the DPoP scheme is refused there (dpop_not_allowed)."""
    key = DPoPKey.generate()
    token = await gw.bound_token(key)
    proof = key.proof("GET", f"{APP}/legacy/x", access_token=token, iat=NOW)
    status, body, resp = await call(
        gw, "/legacy/x", {"Authorization": f"DPoP {token}", "DPoP": proof}
    )
    assert (status, code(body)) == (401, "dpop_not_allowed")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("no-proof-header", lambda key, token: {"Authorization": f"DPoP {token}"}),
        (
            "unbound-token",
            lambda key, token: {
                "Authorization": f"DPoP {token}",
                "DPoP": key.proof("GET", f"{APP}/api/items", access_token=token, iat=NOW),
            },
        ),
        (
            "two-proofs",
            lambda key, token: {
                "Authorization": f"DPoP {token}",
                "DPoP": key.proof("GET", f"{APP}/api/items", access_token=token, iat=NOW),
                "dpop": key.proof("GET", f"{APP}/api/items", access_token=token, iat=NOW),
            },
        ),
    ],
    ids=["no-proof-header", "unbound-token", "two-proofs"],
)
async def test_malformed_dpop_requests_are_refused(gw: Gateway, case: str, headers: Any) -> None:
    """No proof: dpop_proof_invalid; an unbound token under DPoP: dpop_binding_mismatch;
    two DPoP headers: 400 malformed_header (RFC 9449 §4.3: exactly one)."""
    key = DPoPKey.generate()
    if case == "unbound-token":
        _, body = await gw.token("grant_type=client_credentials")
        token = str(body["access_token"])
    else:
        token = await gw.bound_token(key)
    built = headers(key, token)
    if case == "two-proofs":
        target, door_headers = DOORS["nginx"]("/api/items")
        multi = CIMultiDict(door_headers)
        multi.add("Authorization", built["Authorization"])
        multi.add("DPoP", built["DPoP"])
        multi.add("DPoP", built["dpop"])
        resp = await gw.client.get(target, headers=multi)
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "malformed_header"
        return
    status, body, _ = await call(gw, "/api/items", built)
    expected = {"no-proof-header": "dpop_proof_invalid", "unbound-token": "dpop_binding_mismatch"}
    assert (status, code(body)) == (401, expected[case])


class TestTokenEndpoint:
    """``/token`` (RFC 9449 §5): a proof binds what is issued, for every grant."""

    async def test_the_proof_may_name_the_endpoint_as_reached_or_as_advertised(
        self, gw: Gateway
    ) -> None:
        """htu: the URL the request reached (Host), or the metadata's token_endpoint."""
        key = DPoPKey.generate()
        reached = str(gw.client.make_url("/token"))
        for url in (reached, TOKEN_URL):
            resp, body = await gw.token(
                "grant_type=client_credentials", proof=key.proof("POST", url, iat=NOW)
            )
            assert resp.status == 200, body
            assert body["token_type"] == "DPoP"
        metadata = await (await gw.client.get("/.well-known/oauth-authorization-server")).json()
        assert metadata["dpop_signing_alg_values_supported"] == [
            "ES256", "ES384", "EdDSA", "RS256", "PS256",
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("case", "build"),
        [
            ("wrong-url", lambda key: key.proof("POST", f"{ISSUER}/revoke", iat=NOW)),
            ("wrong-method", lambda key: key.proof("GET", TOKEN_URL, iat=NOW)),
            ("old", lambda key: key.proof("POST", TOKEN_URL, iat=NOW - 3600)),
            ("garbage", lambda key: "not-a-proof"),
        ],
        ids=["wrong-url", "wrong-method", "old", "garbage"],
    )
    async def test_an_invalid_proof_mints_nothing(self, gw: Gateway, case: str, build: Any) -> None:
        """400 invalid_dpop_proof; nothing is issued."""
        resp, body = await gw.token(
            "grant_type=client_credentials", proof=build(DPoPKey.generate())
        )
        assert (resp.status, body["error"]) == (400, "invalid_dpop_proof"), case

    async def test_a_proof_is_spent_at_the_token_endpoint_too(self, gw: Gateway) -> None:
        """The same proof twice: the second is refused (invalid_dpop_proof)."""
        proof = DPoPKey.generate().proof("POST", TOKEN_URL, iat=NOW)
        resp, _ = await gw.token("grant_type=client_credentials", proof=proof)
        assert resp.status == 200
        resp, body = await gw.token("grant_type=client_credentials", proof=proof)
        assert (resp.status, body["error"]) == (400, "invalid_dpop_proof")

    async def test_a_public_clients_refresh_token_is_bound_to_its_key(self, gw: Gateway) -> None:
        """Password grant (a public client) with a proof: access and refresh tokens bound;
        refreshing needs a proof of the same key (checked before the token is spent)."""
        key = DPoPKey.generate()
        resp, body = await gw.token(
            "grant_type=password&username=ops&password=correct%20horse%20battery",
            proof=key.proof("POST", TOKEN_URL, iat=NOW),
            basic=False,
        )
        assert resp.status == 200, body
        assert claims_of(body["refresh_token"])["cnf"] == {"jkt": key.jkt}
        refresh = f"grant_type=refresh_token&refresh_token={body['refresh_token']}"
        resp, refused = await gw.token(refresh, basic=False)
        assert (resp.status, refused["error"]) == (400, "invalid_grant")
        thief = DPoPKey.generate().proof("POST", TOKEN_URL, iat=NOW)
        resp, refused = await gw.token(refresh, proof=thief, basic=False)
        assert (resp.status, refused["error"]) == (400, "invalid_grant")
        resp, renewed = await gw.token(
            refresh, proof=key.proof("POST", TOKEN_URL, iat=NOW), basic=False
        )
        assert resp.status == 200, renewed  # not spent by the refusals above
        assert renewed["token_type"] == "DPoP"
        assert claims_of(renewed["access_token"])["cnf"] == {"jkt": key.jkt}
        assert claims_of(renewed["refresh_token"])["cnf"] == {"jkt": key.jkt}

    async def test_introspection_shows_the_binding(self, gw: Gateway) -> None:
        """RFC 9449 §6.2: introspection returns ``cnf.jkt``."""
        key = DPoPKey.generate()
        token = await gw.bound_token(key)
        _, admin = await gw.client.app[SERVICES].api_keys.create(
            name="introspector", scopes=["authgate:introspect"]
        )
        key_id = admin.split("_")[1]
        raw = base64.b64encode(f"{key_id}:{admin}".encode()).decode()
        resp = await gw.client.post(
            "/introspect",
            data=f"token={token}",
            headers={"Content-Type": FORM, "Authorization": f"Basic {raw}"},
        )
        assert (await resp.json())["cnf"] == {"jkt": key.jkt}


class TestServerNonce:
    """``jwt.dpop.require_nonce`` (RFC 9449 §8): the first proof gets a nonce to retry with."""

    async def test_token_endpoint_hands_out_a_nonce(self, gw_nonce: Gateway) -> None:
        """400 use_dpop_nonce with ``DPoP-Nonce``; the retry with it is issued."""
        key = DPoPKey.generate()
        resp, body = await gw_nonce.token(
            "grant_type=client_credentials", proof=key.proof("POST", TOKEN_URL, iat=NOW)
        )
        assert (resp.status, body["error"]) == (400, "use_dpop_nonce")
        nonce = resp.headers["DPoP-Nonce"]
        resp, body = await gw_nonce.token(
            "grant_type=client_credentials",
            proof=key.proof("POST", TOKEN_URL, iat=NOW, nonce=nonce),
        )
        assert resp.status == 200, body

    async def test_resource_hands_out_a_nonce(self, gw_nonce: Gateway) -> None:
        """401 dpop_nonce_required, ``error="use_dpop_nonce"`` and ``DPoP-Nonce``."""
        key = DPoPKey.generate()
        resp, _ = await gw_nonce.token(
            "grant_type=client_credentials", proof=key.proof("POST", TOKEN_URL, iat=NOW)
        )
        as_nonce = resp.headers["DPoP-Nonce"]
        _, issued = await gw_nonce.token(
            "grant_type=client_credentials",
            proof=key.proof("POST", TOKEN_URL, iat=NOW, nonce=as_nonce),
        )
        token = str(issued["access_token"])
        plain = key.proof("GET", f"{APP}/api/items", access_token=token, iat=NOW)
        status, body, resp = await call(
            gw_nonce, "/api/items", {"Authorization": f"DPoP {token}", "DPoP": plain}
        )
        assert (status, code(body)) == (401, "dpop_nonce_required")
        assert 'error="use_dpop_nonce"' in resp.headers["WWW-Authenticate"]
        nonce = resp.headers["DPoP-Nonce"]
        retry = key.proof("GET", f"{APP}/api/items", access_token=token, iat=NOW, nonce=nonce)
        status, _, _ = await call(
            gw_nonce, "/api/items", {"Authorization": f"DPoP {token}", "DPoP": retry}
        )
        assert status == 200
