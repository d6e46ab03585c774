"""Token exchange (RFC 8693) at POST /token: down-scoping, audiences, delegation, refusals."""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate import apikeys
from authgate.client.dpop import DPoPKey
from authgate.crypto.keys import SigningKey
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import SERVICES
from tests.support import AUDIENCE, ISSUER, TokenFactory, make_settings, serve_app

FORM = "application/x-www-form-urlencoded"
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
AT = "urn:ietf:params:oauth:token-type:access_token"
MCP = "https://mcp.example.com/mcp"
FILES = "https://files.example.com/files"
Client = TestClient[web.Request, web.Application]
# API key ids are random; the fixture makes them these, so the policy can name them.
AGENT, NARROW, FOREIGN_ONLY = "a" * 12, "b" * 12, "c" * 12

RULES = [
    {"id": "mcp", "path_prefix": "/mcp", "scopes": ["mcp:tools"], "resource": {"identifier": MCP}},
    {"id": "files", "path_prefix": "/files", "resource": {"identifier": FILES}},
]
# An external issuer the fixture never asks (its tokens are not used there).
NO_JWKS = "http://127.0.0.1:9/jwks"
EXCHANGE = [
    {"client_id": AGENT, "audiences": [MCP, AUDIENCE]},
    {"client_id": FOREIGN_ONLY, "audiences": [MCP], "subject_issuers": ["https://idp.example"]},
]


@pytest.fixture
async def gw(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Client, dict[str, Any]]]:
    settings = make_settings(
        jwt={
            "external_issuers": [
                {"issuer": "https://idp.example", "jwks_url": NO_JWKS, "audiences": [AUDIENCE]}
            ]
        },
        policy={"rules": RULES},
        tokens={"password_grant": True, "exchange": EXCHANGE},
    )
    app = create_app(settings, stores=MemoryStores())
    async with TestClient(TestServer(app)) as client:
        keys: dict[str, Any] = {}
        for letter, name in (("a", "agent"), ("b", "narrow"), ("c", "foreign")):
            monkeypatch.setattr(apikeys, "_ALPHABET", letter)
            _, keys[name] = await app[SERVICES].api_keys.create(name=name, scopes=["mcp:tools"])
        await app[SERVICES].users.add(
            "ops", "correct horse battery", scopes=["mcp:tools", "files:read"], role="operator"
        )
        status, body = await post(
            client, grant_type="password", username="ops", password="correct horse battery"
        )
        assert status == 200
        keys["user_access"], keys["user_refresh"] = body["access_token"], body["refresh_token"]
        yield client, keys


def basic(raw_key: str) -> dict[str, str]:
    key_id = raw_key.split("_")[1]
    return {"Authorization": "Basic " + base64.b64encode(f"{key_id}:{raw_key}".encode()).decode()}


async def post(client: Client, key: str | None = None, **form: str) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": FORM, **(basic(key) if key else {})}
    resp = await client.post("/token", data=urlencode(form), headers=headers)
    return resp.status, await resp.json()


async def claims_of(client: Client, token: str) -> dict[str, Any]:
    return await client.app[SERVICES].issuer.decode(token, kind="access")


async def exchanges(client: Client, outcome: str, reason: str) -> float:
    text = await (await client.get("/metrics")).text()
    found = re.search(
        rf'authgate_token_exchanges_total\{{outcome="{outcome}",reason="{reason}"\}} (\S+)', text
    )
    return float(found.group(1)) if found else 0.0


async def test_a_user_token_is_exchanged_for_a_down_scoped_resource_token(
    gw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent trades the user's token for an MCP token: narrower scope, the resource as
    aud, no longer-lived than the subject; the call is allowed; nothing secret is logged."""
    client, keys = gw
    caplog.set_level(logging.INFO, logger="authgate")
    status, body = await post(
        client,
        keys["agent"],
        grant_type=GRANT,
        subject_token=keys["user_access"],
        subject_token_type=AT,
        resource=MCP,
        scope="mcp:tools",
    )
    assert status == 200, body
    assert body["issued_token_type"] == AT
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "mcp:tools"
    assert "refresh_token" not in body
    claims = await claims_of(client, body["access_token"])
    subject = await claims_of(client, keys["user_access"])
    assert (claims["sub"], claims["aud"], claims["client_id"]) == ("user:ops", MCP, AGENT)
    assert claims["exp"] <= subject["exp"]
    assert "act" not in claims
    resp = await client.get(
        "/auth",
        headers={
            "X-Original-URI": "/mcp/x",
            "X-Original-Method": "GET",
            "Authorization": f"Bearer {body['access_token']}",
        },
    )
    assert resp.status == 200
    assert await exchanges(client, "granted", "ok") == 1
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "token_exchange" in logged
    for secret in (keys["user_access"], body["access_token"], keys["agent"]):
        assert secret not in logged


async def test_an_actor_token_makes_a_delegation_and_chains_nest(gw: Any) -> None:
    """act names the actor; exchanging a delegated token again nests the earlier actor."""
    client, keys = gw
    status, agent_token = await post(client, keys["agent"], grant_type="client_credentials")
    assert status == 200
    status, first = await post(
        client,
        keys["agent"],
        grant_type=GRANT,
        subject_token=keys["user_access"],
        subject_token_type=AT,
        actor_token=agent_token["access_token"],
        actor_token_type=AT,
        audience=AUDIENCE,
    )
    assert status == 200, first
    act = {"sub": f"apikey:{AGENT}", "iss": ISSUER}
    assert (await claims_of(client, first["access_token"]))["act"] == act

    # Without an actor the delegation is kept; with one, the earlier actor nests inside.
    status, kept = await post(
        client,
        keys["agent"],
        grant_type=GRANT,
        subject_token=first["access_token"],
        subject_token_type=AT,
        resource=MCP,
    )
    assert status == 200, kept
    assert (await claims_of(client, kept["access_token"]))["act"] == act
    status, chained = await post(
        client,
        keys["agent"],
        grant_type=GRANT,
        subject_token=first["access_token"],
        subject_token_type=AT,
        actor_token=keys["user_access"],
        actor_token_type=AT,
        resource=MCP,
    )
    assert status == 200, chained
    assert (await claims_of(client, chained["access_token"]))["act"] == {
        "sub": "user:ops",
        "iss": ISSUER,
        "act": act,
    }


BASE = {"grant_type": GRANT, "subject_token_type": AT, "resource": MCP}


@pytest.mark.parametrize(
    ("client_key", "form", "status", "error", "reason"),
    [
        ("narrow", {"subject_token": "USER"}, 403, "unauthorized_client", "client_not_allowed"),
        ("agent", {"subject_token": ""}, 400, "invalid_request", "malformed"),
        (
            "agent",
            {"subject_token": "USER", "subject_token_type": "urn:x"},
            400,
            "invalid_request",
            "malformed",
        ),
        (
            "agent",
            {"subject_token": "USER", "actor_token": "USER"},
            400,
            "invalid_request",
            "malformed",
        ),
        (
            "agent",
            {
                "subject_token": "USER",
                "requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token",
            },
            400,
            "invalid_request",
            "malformed",
        ),
        ("agent", {"subject_token": "USER", "resource": ""}, 400, "invalid_request", "malformed"),
        (
            "agent",
            {"subject_token": "USER", "resource": FILES},
            400,
            "invalid_target",
            "audience_not_allowed",
        ),
        (
            "agent",
            {"subject_token": "USER", "resource": "https://elsewhere.example/"},
            400,
            "invalid_target",
            "audience_not_allowed",
        ),
        (
            "agent",
            {"subject_token": "not-a-jwt"},
            400,
            "invalid_request",
            "subject_token_invalid",
        ),
        (
            "agent",
            {"subject_token": "REFRESH"},
            400,
            "invalid_request",
            "subject_token_invalid",
        ),
        (
            "agent",
            {"subject_token": "USER", "scope": "mcp:tools authgate:admin"},
            400,
            "invalid_scope",
            "scope_widening",
        ),
        (
            "agent",
            {"subject_token": "USER", "actor_token": "garbage", "actor_token_type": AT},
            400,
            "invalid_request",
            "actor_token_invalid",
        ),
        (
            "foreign",
            {"subject_token": "USER"},
            400,
            "invalid_request",
            "subject_issuer_not_allowed",
        ),
        ("agent", {"subject_token": "BOUND"}, 400, "invalid_request", "subject_sender_constrained"),
        # A DPoP-bound subject never gets that far: the gate refuses it without its proof
        # (dpop_bound_token_as_bearer), so the exchange counts an invalid subject token.
        ("agent", {"subject_token": "DPOP_BOUND"}, 400, "invalid_request", "subject_token_invalid"),
    ],
    ids=[
        "client-not-in-policy",
        "no-subject-token",
        "unknown-subject-type",
        "actor-without-type",
        "refresh-token-requested",
        "no-audience",
        "audience-not-in-policy",
        "unknown-resource",
        "garbage-subject",
        "refresh-token-as-subject",
        "scope-widening",
        "garbage-actor",
        "issuer-not-in-policy",
        "sender-constrained-subject",
        "dpop-bound-subject",
    ],
)
async def test_each_refusal_has_its_error_and_its_counted_reason(
    gw: Any, client_key: str, form: dict[str, str], status: int, error: str, reason: str
) -> None:
    """Each refused exchange: its RFC 8693 error, no token, and its reason counted."""
    client, keys = gw
    issuer = client.app[SERVICES].issuer
    bound = await issuer.issue(
        subject="user:ops", scopes=["mcp:tools"], extra={"cnf": {"kid": "device-key-1"}}
    )
    dpop_bound = await issuer.issue(
        subject="user:ops", scopes=["mcp:tools"], extra={"cnf": {"jkt": "x" * 43}}
    )
    tokens = {
        "USER": keys["user_access"],
        "REFRESH": keys["user_refresh"],
        "BOUND": bound.access_token,
        "DPOP_BOUND": dpop_bound.access_token,
    }
    data = {**BASE, **{k: tokens.get(v, v) for k, v in form.items()}}
    code, body = await post(client, keys[client_key], **data)
    assert (code, body["error"]) == (status, error), body
    assert "access_token" not in body
    assert await exchanges(client, "denied", reason) == 1


async def test_the_grant_needs_client_authentication(gw: Any) -> None:
    """No client credentials: 401 invalid_client, before the subject token is looked at."""
    client, keys = gw
    status, body = await post(client, None, **BASE, subject_token=keys["user_access"])
    assert (status, body["error"]) == (401, "invalid_client")


async def test_the_grant_is_advertised(gw: Any) -> None:
    """RFC 8414 metadata lists the token-exchange grant."""
    client, _ = gw
    body = await (await client.get("/.well-known/oauth-authorization-server")).json()
    assert GRANT in body["grant_types_supported"]


async def test_an_external_issuers_token_is_exchanged_where_the_policy_names_the_issuer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A subject token of an external issuer, verified against its JWKS, is exchanged for
    the client whose policy lists the issuer, and refused for the one whose policy does not."""
    idp = TokenFactory(key=SigningKey.generate("ES256"), issuer="https://idp.example")
    jwks = web.Application()

    async def keys_handler(request: web.Request) -> web.Response:
        return web.json_response({"keys": [idp.key.public_jwk()]})

    jwks.router.add_get("/jwks", keys_handler)
    async with serve_app(jwks) as port:
        settings = make_settings(
            jwt={
                "external_issuers": [
                    {
                        "issuer": "https://idp.example",
                        "jwks_url": f"http://127.0.0.1:{port}/jwks",
                        "audiences": [AUDIENCE],
                    }
                ]
            },
            policy={"rules": RULES},
            tokens={"exchange": EXCHANGE},
        )
        app = create_app(settings, stores=MemoryStores())
        async with TestClient(TestServer(app)) as client:
            raw: dict[str, str] = {}
            for letter in "ac":
                monkeypatch.setattr(apikeys, "_ALPHABET", letter)
                _, raw[letter] = await app[SERVICES].api_keys.create(name=letter, scopes=[])
            subject = idp.mint(sub="alice", scope="mcp:tools other")
            form = {**BASE, "subject_token": subject, "scope": "mcp:tools"}
            status, body = await post(client, raw["c"], **form)
            assert status == 200, body
            claims = await claims_of(client, body["access_token"])
            assert (claims["sub"], claims["subject_issuer"], claims["aud"]) == (
                "alice",
                "https://idp.example",
                MCP,
            )
            status, body = await post(client, raw["a"], **form)
            assert (status, body["error"]) == (400, "invalid_request")
            assert await exchanges(client, "denied", "subject_issuer_not_allowed") == 1


def test_the_exchange_policy_names_only_audiences_and_issuers_served_here() -> None:
    """An audience authgate never issues, or an issuer it never verifies: a config error
    naming the key."""
    entry = {"client_id": AGENT, "audiences": [MCP, "nowhere"], "subject_issuers": ["https://z"]}
    with pytest.raises(ValueError) as raised:
        make_settings(policy={"rules": RULES}, tokens={"exchange": [entry]})
    assert "tokens.exchange[0].audiences[1]" in str(raised.value)
    assert "tokens.exchange[0].subject_issuers[0]" in str(raised.value)


async def test_a_dpop_proof_binds_the_exchanged_token(gw: Any) -> None:
    """RFC 9449 §5, as for every grant: the exchange request's proof binds the new token to
    the requester's key (cnf.jkt, token_type DPoP); a replayed proof mints nothing."""
    client, keys = gw
    key = DPoPKey.generate()
    # iat in whole seconds: a proof stamped in the second the store's epoch began (the app
    # just started) counts as signed before it (docs/security.md), so stamp the next one.
    proof = key.proof("POST", str(client.make_url("/token")), iat=int(time.time()) + 1)
    form = {**BASE, "subject_token": keys["user_access"], "scope": "mcp:tools"}
    headers = {"Content-Type": FORM, "DPoP": proof, **basic(keys["agent"])}
    resp = await client.post("/token", data=urlencode(form), headers=headers)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["token_type"] == "DPoP"
    claims = await claims_of(client, body["access_token"])
    assert claims["cnf"] == {"jkt": key.jkt}
    again = await client.post("/token", data=urlencode(form), headers=headers)
    assert (again.status, (await again.json())["error"]) == (400, "invalid_dpop_proof")
