"""Protected resources: RFC 9728 metadata, RFC 6750 challenges, RFC 8707 resource indicators."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import pydantic
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from authgate.policy.resources import metadata_url, resource_documents
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.problem import www_authenticate
from authgate.web.state import SERVICES
from tests.support import AUDIENCE, ISSUER, echo_app, make_settings, serve_app

FORM = "application/x-www-form-urlencoded"
MCP = "https://mcp.example.com/mcp"
FILES = "https://files.example.com/files"
Client = TestClient[web.Request, web.Application]

RULES: list[dict[str, Any]] = [
    {
        "id": "mcp",
        "path_prefix": "/mcp",
        "scopes": ["mcp:tools"],
        "resource": {"identifier": MCP},
    },
    {
        "id": "files",
        "path_prefix": "/files",
        "scopes": ["files:read"],
        "resource": {
            "identifier": FILES,
            "authorization_servers": ["https://as.example.com"],
            "scopes_supported": ["files:read", "files:write"],
            "resource_name": "Files",
        },
    },
    {"id": "api", "path_prefix": "/api"},
]


@pytest.fixture
async def gw() -> AsyncIterator[tuple[Client, dict[str, str]]]:
    settings = make_settings(policy={"rules": RULES}, tokens={"password_grant": True})
    app = create_app(settings, stores=MemoryStores())
    async with TestClient(TestServer(app)) as client:
        await app[SERVICES].users.add(
            "ops", "correct horse battery", scopes=["mcp:tools"], role="operator"
        )
        _, agent = await app[SERVICES].api_keys.create(
            name="agent", scopes=["mcp:tools", "files:read"]
        )
        _, narrow = await app[SERVICES].api_keys.create(name="narrow", scopes=["other"])
        yield client, {"agent": agent, "narrow": narrow}


def basic(raw_key: str) -> dict[str, str]:
    key_id = raw_key.split("_")[1]
    return {"Authorization": "Basic " + base64.b64encode(f"{key_id}:{raw_key}".encode()).decode()}


def params(challenge: str) -> dict[str, str]:
    """The auth-params of one challenge, as a client parses them."""
    return dict(re.findall(r'([a-z_]+)="([^"]*)"', challenge))


async def mint(client: Client, key: str, **form: str) -> tuple[int, dict[str, Any]]:
    data = urlencode({"grant_type": "client_credentials", **form})
    resp = await client.post("/token", data=data, headers={"Content-Type": FORM, **basic(key)})
    return resp.status, await resp.json()


async def call(client: Client, path: str, token: str | None = None) -> ClientResponse:
    headers = {"X-Original-URI": path, "X-Original-Method": "POST"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await client.get("/auth", headers=headers)


async def test_an_mcp_client_discovers_how_to_call_the_resource(gw: Any) -> None:
    """401 -> resource metadata -> authorization server metadata -> /token -> allowed."""
    client, keys = gw
    refused = await call(client, "/mcp/messages")
    assert refused.status == 401
    challenge = refused.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert "error=" not in challenge  # no credential was presented: a bare challenge
    metadata_at = params(challenge)["resource_metadata"]
    assert metadata_at == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"

    at = urlsplit(metadata_at)
    resp = await client.get(at.path, headers={"Host": at.netloc})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    resource = await resp.json()
    assert resource == {
        "resource": MCP,
        "authorization_servers": [ISSUER],
        "scopes_supported": ["mcp:tools"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "RS256", "PS256"],
    }

    # RFC 8414 §3: the issuer has no path, so the metadata is at the well-known root.
    assert urlsplit(resource["authorization_servers"][0]).path == ""
    resp = await client.get("/.well-known/oauth-authorization-server")
    server = await resp.json()
    assert server["issuer"] == ISSUER
    assert "client_credentials" in server["grant_types_supported"]
    token_path = urlsplit(server["token_endpoint"]).path

    data = urlencode(
        {
            "grant_type": "client_credentials",
            "resource": resource["resource"],
            "scope": " ".join(resource["scopes_supported"]),
        }
    )
    resp = await client.post(
        token_path, data=data, headers={"Content-Type": FORM, **basic(keys["agent"])}
    )
    assert resp.status == 200
    issued = await resp.json()
    claims = await client.app[SERVICES].issuer.decode(issued["access_token"], kind="access")
    assert claims["aud"] == MCP

    allowed = await call(client, "/mcp/messages", issued["access_token"])
    assert allowed.status == 200


async def test_a_token_for_another_resource_is_refused(gw: Any) -> None:
    """A token whose aud names the files resource is 401 token_resource_mismatch on mcp."""
    client, keys = gw
    status, issued = await mint(client, keys["agent"], resource=FILES)
    assert status == 200
    assert (await call(client, "/files/a", issued["access_token"])).status == 200
    refused = await call(client, "/mcp/messages", issued["access_token"])
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "token_resource_mismatch"
    challenge = params(refused.headers["WWW-Authenticate"])
    assert challenge["error"] == "invalid_token"
    assert challenge["error_description"] == "token was not issued for this resource"
    assert challenge["resource_metadata"] == metadata_url(MCP)
    metrics = await (await client.get("/metrics")).text()
    assert re.search(r'authgate_decisions_total\{[^}]*reason="token_resource_mismatch"', metrics)


async def test_a_token_without_a_resource_audience_is_refused_on_a_resource_rule(gw: Any) -> None:
    """A token for the generic audience passes a plain rule, not a resource rule."""
    client, keys = gw
    status, issued = await mint(client, keys["agent"])
    assert status == 200
    assert issued and (await call(client, "/api/x", issued["access_token"])).status == 200
    refused = await call(client, "/mcp/messages", issued["access_token"])
    assert (refused.status, (await refused.json())["error"]["code"]) == (
        401,
        "token_resource_mismatch",
    )


async def test_a_scope_refusal_is_an_insufficient_scope_challenge(gw: Any) -> None:
    """403 scope_denied with error="insufficient_scope" and the scopes the rule needs."""
    client, keys = gw
    status, issued = await mint(client, keys["agent"], resource=MCP, scope="files:read")
    assert status == 200
    refused = await call(client, "/mcp/x", issued["access_token"])
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "scope_denied"
    challenge = refused.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert params(challenge) == {
        "realm": "authgate",
        "resource_metadata": metadata_url(MCP),
        "error": "insufficient_scope",
        "error_description": "missing scope: mcp:tools",
        "scope": "mcp:tools",
    }


async def test_a_bad_token_is_an_invalid_token_challenge(gw: Any) -> None:
    """A malformed token: 401 with error="invalid_token", a description and the metadata."""
    client, _ = gw
    refused = await call(client, "/mcp/x", "not-a-jwt")
    assert refused.status == 401
    challenge = params(refused.headers["WWW-Authenticate"])
    assert challenge["error"] == "invalid_token"
    assert challenge["error_description"]
    assert challenge["resource_metadata"] == metadata_url(MCP)


async def test_a_rule_without_a_resource_challenges_as_before(gw: Any) -> None:
    """No resource section: a bare Bearer challenge without resource_metadata."""
    client, _ = gw
    refused = await call(client, "/api/x")
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="authgate"'


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"resource": "https://elsewhere.example.com/mcp"}, "invalid_target"),
        ({"resource": "/mcp"}, "invalid_target"),
        ({"resource": MCP + "#frag"}, "invalid_target"),
        ({"resource": "https://[broken/mcp"}, "invalid_target"),
        ({"audience": "nobody"}, "invalid_target"),
        ({"resource": MCP, "audience": AUDIENCE}, "invalid_request"),
    ],
    ids=["unknown", "relative", "fragment", "unparsable", "unknown-audience", "both"],
)
async def test_token_refuses_a_resource_not_served_here(
    gw: Any, form: dict[str, str], error: str
) -> None:
    """RFC 8707 §2: a resource that is not a configured one is invalid_target; no token."""
    client, keys = gw
    status, body = await mint(client, keys["agent"], **form)
    assert (status, body["error"]) == (400, error)
    assert "access_token" not in body


async def test_a_refresh_names_its_resource_and_a_refused_one_spends_nothing(gw: Any) -> None:
    """refresh_token with resource: aud is the resource; invalid_target leaves it usable."""
    client, _ = gw

    async def token(**form: str) -> tuple[int, dict[str, Any]]:
        resp = await client.post("/token", data=urlencode(form), headers={"Content-Type": FORM})
        return resp.status, await resp.json()

    status, first = await token(
        grant_type="password", username="ops", password="correct horse battery", resource=MCP
    )
    assert status == 200
    refresh = first["refresh_token"]
    for target in ({"resource": "https://x.example/"}, {"audience": "nobody"}):
        status, body = await token(grant_type="refresh_token", refresh_token=refresh, **target)
        assert (status, body["error"]) == (400, "invalid_target"), target
    status, body = await token(grant_type="refresh_token", refresh_token=refresh, resource=MCP)
    assert status == 200, body  # the refused request did not spend the refresh token
    assert (await call(client, "/mcp/x", body["access_token"])).status == 200


async def test_metadata_is_found_by_path_insertion(gw: Any) -> None:
    """RFC 9728 §3.1: each resource at its path; its own authorization servers and name."""
    client, _ = gw
    resp = await client.get("/.well-known/oauth-protected-resource/files")
    assert await resp.json() == {
        "resource": FILES,
        "authorization_servers": ["https://as.example.com"],
        "scopes_supported": ["files:read", "files:write"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Files",
        "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "RS256", "PS256"],
    }
    for path in ("", "/nothing", "/mcp/deeper"):
        resp = await client.get("/.well-known/oauth-protected-resource" + path)
        assert resp.status == 404, path
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_resources_sharing_a_path_are_told_apart_by_host() -> None:
    """Two hosts, one path: the request's Host picks the document; an unknown host none."""
    rules = [
        {"id": "a", "hosts": ["a.example"], "resource": {"identifier": "https://a.example/"}},
        {"id": "b", "hosts": ["b.example"], "resource": {"identifier": "https://b.example"}},
    ]
    app = create_app(make_settings(policy={"rules": rules}), stores=MemoryStores())
    async with TestClient(TestServer(app)) as client:
        for host, identifier in (
            ("a.example", "https://a.example/"),
            ("B.example", "https://b.example"),
        ):
            resp = await client.get("/.well-known/oauth-protected-resource", headers={"Host": host})
            assert (await resp.json())["resource"] == identifier
        resp = await client.get("/.well-known/oauth-protected-resource", headers={"Host": "c"})
        assert resp.status == 404


async def test_the_sidecar_serves_metadata_on_the_apps_origin() -> None:
    """Sidecar: the metadata is authgate's, not proxied; the proxied 401 names it."""
    async with serve_app(echo_app()) as port:
        settings = make_settings(
            policy={"rules": RULES}, proxy={"upstream": f"http://127.0.0.1:{port}"}
        )
        app = create_app(settings, stores=MemoryStores())
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/.well-known/oauth-protected-resource/mcp")
            assert (await resp.json())["resource"] == MCP
            refused = await client.post("/mcp/messages")
            assert refused.status == 401
            assert params(refused.headers["WWW-Authenticate"])["resource_metadata"] == (
                metadata_url(MCP)
            )


@pytest.mark.parametrize(
    ("identifier", "url"),
    [
        ("https://r.example", "https://r.example/.well-known/oauth-protected-resource"),
        ("https://r.example/", "https://r.example/.well-known/oauth-protected-resource"),
        (
            "https://r.example:8443/a/b",
            "https://r.example:8443/.well-known/oauth-protected-resource/a/b",
        ),
    ],
    ids=["origin", "root-slash", "port-and-path"],
)
def test_metadata_url_inserts_the_well_known_segment(identifier: str, url: str) -> None:
    """RFC 9728 §3.1: the well-known segment goes between host and path."""
    assert metadata_url(identifier) == url


def test_challenges_share_their_parameters_across_schemes() -> None:
    """One challenge a scheme; a quote or control character cannot break the header."""
    challenges = www_authenticate(
        ("Bearer", "DPoP"),
        error="invalid_token",
        description='bad "token"\r\nX: y\\',
        resource_metadata="https://r.example/.well-known/oauth-protected-resource",
    )
    assert challenges == [
        f'{scheme} realm="authgate", '
        'resource_metadata="https://r.example/.well-known/oauth-protected-resource", '
        'error="invalid_token", error_description="bad \'token\'??X: y"'
        for scheme in ("Bearer", "DPoP")
    ]


@pytest.mark.parametrize(
    "identifier",
    ["mcp.example.com/mcp", "https://r.example/a?b=c", "https://r.example/a#f", "ftp://r.example"],
    ids=["no-scheme", "query", "fragment", "scheme"],
)
def test_config_refuses_a_resource_identifier_that_is_not_a_url(identifier: str) -> None:
    """A resource identifier is an http(s) URL without query or fragment."""
    rules = [{"id": "r", "resource": {"identifier": identifier}}]
    with pytest.raises(pydantic.ValidationError, match="identifier"):
        make_settings(policy={"rules": rules})


def test_metadata_lists_the_dpop_algorithms_where_the_rule_takes_dpop() -> None:
    """RFC 9728 §2 dpop_signing_alg_values_supported: on a rule whose dpop is allowed or
    required, the configured algorithms; absent where DPoP is off."""
    rules = [
        {**RULES[0], "dpop": "required"},
        {"id": "off", "path_prefix": "/off", "dpop": "off", "resource": {"identifier": FILES}},
    ]
    settings = make_settings(policy={"rules": rules})
    documents = resource_documents(
        settings.policy.rules,
        issuer=settings.jwt.issuer,
        dpop_algorithms=settings.jwt.dpop.algorithms,
    )
    by_resource = {d["resource"]: d for d in documents.values()}
    assert by_resource[MCP]["dpop_signing_alg_values_supported"] == list(
        settings.jwt.dpop.algorithms
    )
    assert "dpop_signing_alg_values_supported" not in by_resource[FILES]
