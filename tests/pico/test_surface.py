"""The rest of the pico surface: JWKS, refresh, password login, revoke, revoked-jtis.

Who may do what (a ``role`` claim counts only on authgate's own tokens; the admin scope
counts from any accepted issuer, as on the admin API), rotation and reuse of refresh
tokens, and a property: no JSON body makes any endpoint answer 5xx.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authgate.errors import AuthGateError
from authgate.web.pico import REVOCATION_AUDIT_STREAM
from authgate.web.state import SERVICES, STORES
from tests.pico import OPERATOR_PASSWORD, PICO, Gate, Wallet, gate
from tests.support import AUDIENCE, TokenFactory, serve_app

ADMIN_SCOPE = "authgate:admin"
EXTERNAL_ISSUER = "https://idp.test"


def _leaves(cls: type[AuthGateError]) -> list[type[AuthGateError]]:
    return [cls, *(leaf for sub in cls.__subclasses__() for leaf in _leaves(sub))]


STATUS_OF = {cls.reason: cls.status for cls in _leaves(AuthGateError) if cls.status < 500}


@pytest.fixture
async def gw() -> AsyncIterator[Gate]:
    async with gate() as g:
        yield g


async def login(g: Gate, username: str = "ops", password: str = OPERATOR_PASSWORD) -> Any:
    """``POST /login``; returns the status and body."""
    return await g.post("/login", {"username": username, "password": password})


# --- JWKS -----------------------------------------------------------------------------


async def test_jwks_entries_carry_what_pico_clients_read() -> None:
    """``/api/v1/auth/jwks`` is the JWKS document; RSA entries carry kty, kid, alg, use, n, e."""
    async with gate(key_algorithm="RS256") as g:
        status, jwks = await g.get("/jwks")
        async with g.client.get("/.well-known/jwks.json") as resp:
            assert await resp.json() == jwks
    assert status == 200
    (key,) = jwks["keys"]
    assert {"kty", "kid", "alg", "use", "n", "e"} <= set(key)
    assert (key["kty"], key["alg"], key["use"], key["kid"]) == (
        "RSA",
        "RS256",
        "sig",
        g.tokens.key.kid,
    )
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


# --- refresh --------------------------------------------------------------------------


async def test_refresh_rotates_and_keeps_identity_and_role(gw: Gate) -> None:
    """A refresh yields a new pair for the same subject and role; the new access token works."""
    wallet = Wallet.generate("Ed25519")
    first = await gw.sign_in(wallet)
    status, second = await gw.post("/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 200, second
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    claims = await gw.app[SERVICES].issuer.decode(second["access_token"], kind="access")
    assert (claims["sub"], claims["role"]) == (wallet.identity, "user")
    assert await gw.access(second["access_token"]) == 200


async def test_refresh_reuse_revokes_the_whole_family(gw: Gate) -> None:
    """Presenting a spent refresh token kills every token of its family."""
    first = await gw.sign_in(Wallet.generate("secp256k1"))
    status, second = await gw.post("/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 200
    status, reused = await gw.post("/refresh", {"refresh_token": first["refresh_token"]})
    assert (status, reused["error"]["code"]) == (401, "unauthenticated")
    assert "reuse" in reused["error"]["message"]
    assert await gw.access(second["access_token"]) == 401
    status, _ = await gw.post("/refresh", {"refresh_token": second["refresh_token"]})
    assert status == 401


@pytest.mark.parametrize(
    "pick",
    [
        lambda pair: pair["access_token"],
        lambda pair: "garbage",
        lambda pair: pair["refresh_token"][:-2],
        lambda pair: "e30.e30.e30",
    ],
    ids=["access-token", "garbage", "bad-signature", "unsigned-json"],
)
async def test_anything_but_a_live_refresh_token_is_refused(gw: Gate, pick: Any) -> None:
    """Access tokens, garbage and altered refresh tokens: 401, no new tokens."""
    pair = await gw.sign_in(Wallet.generate("Ed25519"))
    status, body = await gw.post("/refresh", {"refresh_token": pick(pair)})
    assert status == 401, body
    assert "access_token" not in body


async def test_a_refresh_token_is_not_an_access_token(gw: Gate) -> None:
    """The gateway refuses a refresh token presented as a bearer token."""
    pair = await gw.sign_in(Wallet.generate("Ed25519"))
    assert await gw.access(pair["refresh_token"]) == 401


# --- login ----------------------------------------------------------------------------


async def test_login_issues_operator_tokens(gw: Gate) -> None:
    """The right password yields a token pair carrying the user's role (operator)."""
    status, body = await login(gw)
    assert status == 200, body
    claims = await gw.app[SERVICES].issuer.decode(body["access_token"], kind="access")
    assert (claims["sub"], claims["role"], claims["scope"]) == ("user:ops", "operator", "read")
    assert await gw.access(body["access_token"]) == 200
    status, rotated = await gw.post("/refresh", {"refresh_token": body["refresh_token"]})
    assert status == 200
    claims = await gw.app[SERVICES].issuer.decode(rotated["access_token"], kind="access")
    assert claims["role"] == "operator"


@pytest.mark.parametrize(
    ("username", "password"),
    [("ops", "wrong password here"), ("nobody", OPERATOR_PASSWORD), ("bad name!", "x" * 12)],
    ids=["wrong-password", "unknown-user", "invalid-username"],
)
async def test_login_failures_are_one_401(gw: Gate, username: str, password: str) -> None:
    """Wrong password, unknown user: the same 401, no token."""
    status, body = await login(gw, username, password)
    assert (status, body["error"]) == (
        401,
        {"code": "unauthenticated", "message": "wrong username or password"},
    )


async def test_login_keeps_a_users_own_role(gw: Gate) -> None:
    """A user given another role is not promoted to operator by logging in here."""
    await gw.app[SERVICES].users.add("viewer", OPERATOR_PASSWORD, scopes=[], role="viewer")
    status, body = await login(gw, "viewer")
    assert status == 200
    claims = await gw.app[SERVICES].issuer.decode(body["access_token"], kind="access")
    assert claims["role"] == "viewer"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await gw.post("/revoke", {"jti": "x"}, headers))[0] == 403


async def test_login_follows_the_password_grant_switch() -> None:
    """With ``tokens.password_grant`` off, password login is not served at all."""
    async with gate(tokens={"password_grant": False}) as g:
        status, body = await login(g)
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_overlong_password_is_invalid_request(gw: Gate) -> None:
    """Passwords beyond 1024 characters are refused before any hashing."""
    status, body = await login(gw, "ops", "x" * 1025)
    assert (status, body["error"]["code"]) == (400, "invalid_request")


# --- revoke ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "status", "code"),
    [
        (None, 401, "credential_missing"),
        ({"role": "user"}, 403, "scope_denied"),
        ({"role": "service"}, 403, "scope_denied"),
        ({"role": ["operator"]}, 403, "scope_denied"),
        ({"role": "operator"}, 200, None),
        ({"scope": ADMIN_SCOPE}, 200, None),
    ],
    ids=["no-token", "user", "service", "role-list", "operator", "admin-scope"],
)
async def test_revoke_needs_the_operator_role(
    gw: Gate, claims: dict[str, Any] | None, status: int, code: str | None
) -> None:
    """Only operators (or admins) revoke; the revoked token then fails everywhere."""
    victim = await gw.sign_in(Wallet.generate("Ed25519"))
    jti = (await gw.app[SERVICES].issuer.decode(victim["access_token"], kind="access"))["jti"]
    headers = gw.bearer(**claims) if claims is not None else None
    answer, body = await gw.post("/revoke", {"jti": jti, "reason": "stolen laptop"}, headers)
    assert answer == status, body
    if code is not None:
        assert body["error"]["code"] == code
        assert await gw.access(victim["access_token"]) == 200
        return
    assert body == {"revoked": jti}
    assert await gw.access(victim["access_token"]) == 401
    entries = await gw.app[STORES].audit.recent(REVOCATION_AUDIT_STREAM, 5)
    assert entries[0]["jti"] == jti
    assert entries[0]["reason"] == "stolen laptop"


async def test_a_malformed_bearer_is_401(gw: Gate) -> None:
    """A bearer token that does not parse is refused by the verifier, not the handler."""
    status, body = await gw.post("/revoke", {"jti": "x"}, {"Authorization": "Bearer nope"})
    assert (status, body["error"]["code"]) == (401, "token_malformed")


async def test_a_revoked_operator_token_cannot_revoke(gw: Gate) -> None:
    """The operator's own token is checked against the revocation list too."""
    headers = gw.bearer(role="operator", jti="operator-token")
    assert (await gw.post("/revoke", {"jti": "operator-token"}, headers))[0] == 200
    status, body = await gw.post("/revoke", {"jti": "another"}, headers)
    assert (status, body["error"]["code"]) == (401, "token_revoked")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"jti": ""},
        {"jti": "has space"},
        {"jti": "x" * 257},
        {"jti": "x", "reason": "r" * 257},
        {"jti": "x", "reason": "line\nbreak"},
        {"jti": "x", "why": "unknown member"},
        {"jti": 7},
    ],
    ids=[
        "empty",
        "empty-jti",
        "jti-space",
        "jti-too-long",
        "reason-too-long",
        "reason-control",
        "unknown",
        "number",
    ],
)
async def test_bad_revoke_bodies_are_400(gw: Gate, body: dict[str, Any]) -> None:
    """An operator's malformed request is refused without revoking anything."""
    status, answer = await gw.post("/revoke", body, gw.bearer(role="operator"))
    assert (status, answer["error"]["code"]) == (400, "invalid_request")
    assert await gw.app[STORES].revocations.list_revoked() == {}


@pytest.fixture
async def external_idp() -> AsyncIterator[tuple[TokenFactory, str]]:
    """Another issuer whose JWKS is served locally; its tokens carry authgate's audience."""
    tokens = TokenFactory(issuer=EXTERNAL_ISSUER)

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [tokens.key.public_jwk()]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    async with serve_app(app) as port:
        yield tokens, f"http://127.0.0.1:{port}/jwks"


@pytest.mark.parametrize(
    ("claims", "status"),
    [({"role": "operator"}, 403), ({"scope": ADMIN_SCOPE}, 200)],
    ids=["role-operator", "admin-scope"],
)
async def test_roles_count_only_on_own_tokens(
    external_idp: tuple[TokenFactory, str], claims: dict[str, str], status: int
) -> None:
    """An external issuer's ``role: operator`` grants nothing; its admin scope does."""
    tokens, url = external_idp
    issuer = {"issuer": EXTERNAL_ISSUER, "jwks_url": url, "audiences": [AUDIENCE]}
    async with gate(jwt={"external_issuers": [issuer]}) as g:
        headers = {"Authorization": f"Bearer {tokens.mint(**claims)}"}
        assert (await g.post("/revoke", {"jti": "x"}, headers))[0] == status


# --- revoked-jtis ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        (None, 401),
        ({"role": "user"}, 403),
        ({"role": "service"}, 200),
        ({"role": "operator"}, 200),
        ({"scope": ADMIN_SCOPE}, 200),
    ],
    ids=["no-token", "user", "service", "operator", "admin-scope"],
)
async def test_revoked_jtis_needs_the_service_role(
    gw: Gate, claims: dict[str, Any] | None, status: int
) -> None:
    """The denylist is for services (and operators, admins), not for wallets."""
    headers = gw.bearer(**claims) if claims is not None else None
    answer, body = await gw.get("/revoked-jtis", headers)
    assert answer == status, body
    if status == 200:
        assert body == {"items": []}


async def test_revoked_jtis_lists_token_ids_and_the_access_tokens_of_revoked_families(
    gw: Gate,
) -> None:
    """Revoked ids are listed with their expiry. A revoked refresh family is listed as the
    ``jti`` of each of its live access tokens (pico validators compare ``jti`` only), never
    as the ``fam:`` pseudo id, and authgate itself refuses them too."""
    issuer = gw.app[SERVICES].issuer
    victim = await gw.sign_in(Wallet.generate("Ed25519"))
    victim_claims = await issuer.decode(victim["access_token"], kind="access")
    jti = victim_claims["jti"]
    assert (await gw.post("/revoke", {"jti": jti}, gw.bearer(role="operator")))[0] == 200
    reused = await gw.sign_in(Wallet.generate("Ed25519"))
    status, rotated = await gw.post("/refresh", {"refresh_token": reused["refresh_token"]})
    assert status == 200
    status, _ = await gw.post("/refresh", {"refresh_token": reused["refresh_token"]})
    assert status == 401
    assert any(j.startswith("fam:") for j in await gw.app[STORES].revocations.list_revoked())
    family = [
        await issuer.decode(pair["access_token"], kind="access") for pair in (reused, rotated)
    ]
    status, body = await gw.get("/revoked-jtis", gw.bearer(role="service"))
    assert status == 200
    items = {item["jti"]: item["expires_at"] for item in body["items"]}
    assert set(items) == {jti, *(claims["jti"] for claims in family)}
    assert not any(j.startswith("fam:") for j in items)
    leeway = gw.app[SERVICES].settings.jwt.leeway_seconds
    # Revoked by id alone: until the token would have expired (its exp is in the mint
    # audit), not a year.
    assert victim_claims["exp"] <= items[jti] <= victim_claims["exp"] + leeway
    for claims in family:
        assert items[claims["jti"]] == claims["exp"] + leeway  # each token's own expiry
    assert await gw.access(reused["access_token"]) == 401
    assert await gw.access(rotated["access_token"]) == 401


async def test_a_revoked_family_lists_only_its_unexpired_access_tokens() -> None:
    """Access tokens of the family that have already expired are not listed."""
    async with gate(manual_clock=True, tokens={"access_ttl_seconds": 60}) as g:
        assert g.clock is not None
        issuer = g.app[SERVICES].issuer
        first = await g.sign_in(Wallet.generate("Ed25519"))
        g.clock.advance(120_000)  # the first access token has expired
        status, second = await g.post("/refresh", {"refresh_token": first["refresh_token"]})
        assert status == 200
        status, _ = await g.post("/refresh", {"refresh_token": first["refresh_token"]})
        assert status == 401
        live = await issuer.decode(second["access_token"], kind="access")
        status, body = await g.get("/revoked-jtis", g.bearer(role="service"))
        assert status == 200
        assert [item["jti"] for item in body["items"]] == [live["jti"]]


async def test_a_token_issued_into_a_revoked_family_is_listed() -> None:
    """A family revoked before one of its tokens is indexed: the token checks on its own."""
    async with gate() as g:
        issuer = g.app[SERVICES].issuer
        await issuer.revoke_family("f1")
        issued = await issuer.issue(subject="s", scopes=(), family="f1", refresh=True)
        status, body = await g.get("/revoked-jtis", g.bearer(role="service"))
        assert status == 200
        assert [item["jti"] for item in body["items"]] == [issued.claims["jti"]]


async def test_a_body_split_across_chunks_is_read_whole(gw: Gate) -> None:
    """A JSON body arriving in several chunks is read to its end, not to the first chunk."""
    port = gw.client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {PICO}/challenge HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    for chunk in (b'{"address": "0x', b'wallet"}'):
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
    writer.write(b"0\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    assert raw.startswith(b"HTTP/1.1 200 "), raw[:200]


# --- no body makes any endpoint fail ---------------------------------------------------

FIELDS = (
    "address",
    "public_key",
    "signature",
    "challenge",
    "algorithm",
    "refresh_token",
    "username",
    "password",
    "jti",
    "reason",
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.text(alphabet="0123456789abcdefABCDEF", max_size=200),
    st.sampled_from(["Ed25519", "secp256k1", "ML-DSA-65", "ops", OPERATOR_PASSWORD, "0xw"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), VALUES, max_size=6),
    VALUES,
)
ENDPOINTS = ("/challenge", "/sign-in", "/refresh", "/login", "/revoke")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(endpoint=st.sampled_from(ENDPOINTS), body=BODIES)
async def test_no_json_body_makes_an_endpoint_fail(gw: Gate, endpoint: str, body: Any) -> None:
    """Any JSON body: a 2xx, or a 4xx with a stable code from errors.py; never 5xx."""
    headers = gw.bearer(role="operator") if endpoint == "/revoke" else None
    async with gw.client.post(PICO + endpoint, json=body, headers=headers) as resp:
        answer = await resp.json()
        assert resp.status < 500, answer
        if resp.status >= 400:
            code = answer["error"]["code"]
            assert STATUS_OF[code] == resp.status, answer
