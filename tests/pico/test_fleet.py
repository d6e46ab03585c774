"""Fleet session tokens (``POST /fleet/sessions``) and the live-mints view (``GET /mints``).

The fleet secret is a shared secret in ``X-Fleet-Secret``; without one configured the
endpoint does not exist. Tokens carry the session as ``sub``, a role and scopes from the
settings' allow-lists, and a lifetime brought into [60 s, the configured maximum]; they are
minted (and audited) by the token issuer and accepted by the gateway like any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from authgate.web.state import SERVICES
from tests.pico import PICO, Gate, gate
from tests.support import make_settings

FLEET_SECRET = "fleet-secret-for-tests-0123456789abcdef"
FLEET = {"X-Fleet-Secret": FLEET_SECRET}
SESSION = {"session_id": "sess-1", "agent_id": "agent-7"}


@pytest.fixture
async def gw() -> AsyncIterator[Gate]:
    async with gate(
        manual_clock=True,
        tokens={"pico_fleet_secret": FLEET_SECRET, "pico_fleet_scopes": ["jobs:run"]},
    ) as g:
        yield g


async def fleet(
    g: Gate, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /fleet/sessions; status, JSON answer and headers."""
    async with g.client.post(
        f"{PICO}/fleet/sessions", json=body, headers=FLEET if headers is None else headers
    ) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def claims_of(g: Gate, token: str) -> dict[str, Any]:
    """The verified claims of one of authgate's access tokens."""
    return await g.app[SERVICES].issuer.decode(token, kind="access")


async def test_the_fleet_secret_mints_a_session_token_the_gateway_accepts(gw: Gate) -> None:
    """sub is the session, role the default fleet role, lifetime the default (a day)."""
    assert gw.clock is not None
    status, body, headers = await fleet(gw, SESSION)
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    claims = await claims_of(gw, body["session_token"])
    assert claims["sub"] == "sess-1"
    assert (claims["role"], claims["session_id"], claims["agent_id"]) == (
        "agent",
        "sess-1",
        "agent-7",
    )
    assert claims["scope"] == ""
    now = gw.clock.now_ms() // 1000
    assert body["exp"] == claims["exp"] == now + 86_400
    assert body["expires_in"] == 86_400
    assert await gw.access(body["session_token"]) == 200


async def test_a_fleet_token_is_audited_as_a_mint(gw: Gate) -> None:
    """The issuer audits it (minted_by names the agent), and /mints lists it."""
    status, body, _ = await fleet(gw, SESSION)
    assert status == 200
    jti = (await claims_of(gw, body["session_token"]))["jti"]
    status, listed = await gw.get("/mints", gw.bearer(role="operator"))
    assert status == 200, listed
    (entry,) = [item for item in listed["items"] if item["jti"] == jti]
    assert entry["minted_by"] == "pico-fleet:agent-7"
    assert (entry["sub"], entry["revoked"], entry["expired"]) == ("sess-1", False, False)


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(None, 86_400), (3600, 3600), (1, 60), (10**9, 86_400)],
    ids=["default", "asked", "raised-to-minimum", "cut-to-maximum"],
)
async def test_the_lifetime_is_brought_into_range(gw: Gate, ttl: int | None, expected: int) -> None:
    """An asked ttl is kept within [60 s, tokens.pico_fleet_max_ttl_seconds]."""
    body: dict[str, Any] = {**SESSION} if ttl is None else {**SESSION, "ttl": ttl}
    status, answer, _ = await fleet(gw, body)
    assert status == 200, answer
    claims = await claims_of(gw, answer["session_token"])
    assert claims["exp"] - claims["iat"] == expected == answer["expires_in"]


async def test_without_a_configured_secret_the_endpoint_is_404() -> None:
    """No tokens.pico_fleet_secret: 404 not_found, whatever the caller sends."""
    async with gate() as g:
        status, body, _ = await fleet(g, SESSION)
        assert status == 404
        assert body["error"]["code"] == "not_found"
        assert "tokens.pico_fleet_secret" in body["error"]["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Fleet-Secret": ""},
        {"X-Fleet-Secret": "wrong"},
        {"X-Fleet-Secret": FLEET_SECRET + "x"},
    ],
    ids=["missing", "empty", "wrong", "longer"],
)
async def test_a_wrong_or_missing_secret_is_401(gw: Gate, headers: dict[str, str]) -> None:
    """401 fleet_secret_invalid, before the body is even read (a bad body changes nothing)."""
    for body in (SESSION, {"garbage": 1}):
        status, answer, response_headers = await fleet(gw, body, headers)
        assert status == 401
        assert answer["error"]["code"] == "fleet_secret_invalid"
        assert response_headers["WWW-Authenticate"].startswith("FleetSecret ")
        assert FLEET_SECRET not in str(answer)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent_id": "a"}, "session_id"),
        ({"session_id": "s"}, "agent_id"),
        ({**SESSION, "session_id": 5}, "session_id"),
        ({**SESSION, "session_id": "has space"}, "session_id"),
        ({**SESSION, "agent_id": ""}, "agent_id"),
        ({**SESSION, "role": ["agent"]}, "role"),
        ({**SESSION, "scope": 3}, "scope"),
        ({**SESSION, "scope": "bad\u00e9"}, "scope"),
        ({**SESSION, "ttl": "3600"}, "ttl"),
        ({**SESSION, "ttl": True}, "ttl"),
        ({**SESSION, "ttl": 0}, "ttl"),
        ({**SESSION, "ttl": 1.5}, "ttl"),
        ({**SESSION, "sub": "admin"}, "sub"),
    ],
    ids=[
        "no-session",
        "no-agent",
        "session-not-string",
        "session-space",
        "agent-empty",
        "role-list",
        "scope-number",
        "scope-non-ascii",
        "ttl-string",
        "ttl-bool",
        "ttl-zero",
        "ttl-float",
        "unknown-member",
    ],
)
async def test_malformed_bodies_are_400_naming_the_field(
    gw: Gate, body: dict[str, Any], field: str
) -> None:
    """Every malformed member is a 400 invalid_request whose message names it."""
    status, answer, _ = await fleet(gw, body)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_request"
    assert field in answer["error"]["message"]


async def test_a_body_that_is_not_an_object_is_400(gw: Gate) -> None:
    """A JSON array is refused like any other pico body."""
    status, answer, _ = await fleet(gw, [SESSION])
    assert status == 400, answer


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"role": "operator"}, "role"),
        ({"role": "service"}, "role"),
        ({"role": "user"}, "role"),
        ({"scope": "authgate:admin"}, "scope"),
        ({"scope": "jobs:run other"}, "scope"),
    ],
    ids=["operator", "service", "wallet-role", "admin-scope", "unlisted-scope"],
)
async def test_roles_and_scopes_outside_the_allow_lists_are_403(
    gw: Gate, extra: dict[str, str], field: str
) -> None:
    """The fleet secret cannot mint privileged tokens: 403 scope_denied naming the member."""
    status, answer, _ = await fleet(gw, {**SESSION, **extra})
    assert status == 403, answer
    assert answer["error"]["code"] == "scope_denied"
    assert answer["error"]["message"].startswith(f"{field}:")


async def test_listed_scopes_are_granted(gw: Gate) -> None:
    """A scope in tokens.pico_fleet_scopes is carried by the token."""
    status, answer, _ = await fleet(gw, {**SESSION, "scope": "jobs:run"})
    assert status == 200, answer
    assert (await claims_of(gw, answer["session_token"]))["scope"] == "jobs:run"


@pytest.mark.parametrize(
    "tokens",
    [
        {"pico_fleet_secret": "too-short"},
        {"pico_fleet_roles": ["operator"]},
        {"pico_fleet_roles": ["agent", "service"]},
        {"pico_fleet_roles": ["user"]},
        {"pico_fleet_roles": []},
        {"pico_fleet_roles": ["two words"]},
        {"pico_fleet_scopes": ["authgate:admin"]},
        {"pico_fleet_scopes": ["authgate:introspect"]},
        {"pico_fleet_ttl_seconds": 7200, "pico_fleet_max_ttl_seconds": 3600},
        {"pico_fleet_max_ttl_seconds": 7200, "max_mint_ttl_seconds": 3600},
    ],
    ids=[
        "short-secret",
        "operator-role",
        "service-role",
        "wallet-role",
        "no-role",
        "role-with-space",
        "admin-scope",
        "introspect-scope",
        "default-above-maximum",
        "maximum-above-mint-maximum",
    ],
)
def test_unsafe_fleet_settings_are_refused(tokens: dict[str, Any]) -> None:
    """The configuration refuses a weak secret or a privileged fleet token."""
    with pytest.raises(ValidationError):
        make_settings(tokens=tokens)


# --- GET /mints -------------------------------------------------------------------------


async def test_mints_lists_only_valid_tokens(gw: Gate) -> None:
    """Revoked and expired mints are left out; the live ones are listed, newest first."""
    assert gw.clock is not None
    tokens = []
    for n, ttl in enumerate((600, 7200, 7200)):
        status, body, _ = await fleet(gw, {**SESSION, "session_id": f"s{n}", "ttl": ttl})
        assert status == 200
        tokens.append(await claims_of(gw, body["session_token"]))
    status, revoked = await gw.post(
        "/revoke", {"jti": tokens[1]["jti"]}, gw.bearer(role="operator")
    )
    assert status == 200, revoked
    gw.clock.advance(1_200_000)  # the first (600 s) has expired
    status, listed = await gw.get("/mints", gw.bearer(role="operator"))
    assert status == 200, listed
    assert [item["jti"] for item in listed["items"]] == [tokens[2]["jti"]]
    status, limited = await gw.get("/mints?limit=1", gw.bearer(role="operator"))
    assert status == 200
    assert [item["jti"] for item in limited["items"]] == [tokens[2]["jti"]]


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        (None, 401),
        ({"role": "user"}, 403),
        ({"role": "service"}, 403),
        ({"role": "agent"}, 403),
        ({"role": "operator"}, 200),
        ({"scope": "authgate:admin"}, 200),
    ],
    ids=["no-token", "wallet", "service", "agent", "operator", "admin-scope"],
)
async def test_mints_needs_an_operator(
    gw: Gate, claims: dict[str, Any] | None, status: int
) -> None:
    """The live-mints view is for operators (or the admin scope), like /revoke."""
    headers = gw.bearer(**claims) if claims is not None else None
    answer, body = await gw.get("/mints", headers)
    assert answer == status, body


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "10001", "²", ""])
async def test_mints_limit_must_be_a_small_integer(gw: Gate, limit: str) -> None:
    """A malformed limit is a 400 naming it."""
    status, body = await gw.get(f"/mints?limit={limit}", gw.bearer(role="operator"))
    assert status == 400, body
    assert "limit" in body["error"]["message"]


async def test_a_fleet_token_is_no_operator(gw: Gate) -> None:
    """A fleet session token cannot read /mints or /revoked-jtis."""
    status, body, _ = await fleet(gw, SESSION)
    assert status == 200, body
    bearer = {"Authorization": f"Bearer {body['session_token']}"}
    assert (await gw.get("/mints", bearer))[0] == 403
    assert (await gw.get("/revoked-jtis", bearer))[0] == 403
