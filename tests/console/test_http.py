"""The console over HTTP (in process): what a browser test cannot easily show.

Off unless enabled; every POST refused without its CSRF token, with a wrong one, from
another origin or site; a forged or expired cookie is no session; the cookie's attributes;
token sign-in (a revoked token ends the session); an operator removed loses the session;
the security headers on every answer, refusals and static files included; no inline script
or style in any page; malformed forms refused with stable codes.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from authgate.client.bpc import BPCSigner
from authgate.compose import Services
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.console.common import CONSOLE as CONSOLE_KEY
from authgate.web.console.common import CSP
from authgate.web.console.session import COOKIE
from authgate.web.state import OPS_APP, RELOADER, SERVICES, STORES
from tests.console.conftest import CSRF_FIELD, OPERATOR, OPERATOR_PASSWORD, PREFIX
from tests.support import TokenFactory, make_settings

VIEWER = "viewer"
PAGES = ("/", "/pairs", "/tokens", "/apikeys", "/keys", "/decisions", "/audit", "/ready")


@pytest.fixture
def tokens() -> TokenFactory:
    """The key authgate signs with (and the tests too)."""
    return TokenFactory()


@pytest.fixture
async def client(tokens: TokenFactory, tmp_path: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """The app with the console on, an operator user and a user who is not one."""
    settings = make_settings(
        jwt={"signing_key_files": [str(tokens.write_key(tmp_path))]},
        console={"enabled": True},
        tokens={"password_attempts_per_minute": 1000},
    )
    app = create_app(settings, stores=MemoryStores())
    async with TestClient(TestServer(app)) as test_client:
        operator = app[SERVICES].operator
        await operator.add_user(
            username=OPERATOR, password=OPERATOR_PASSWORD, scopes=["authgate:admin"], by="test"
        )
        await operator.add_user(
            username=VIEWER, password=OPERATOR_PASSWORD, scopes=["read"], by="test"
        )
        yield test_client


async def csrf_of(client: TestClient[Any, Any], path: str) -> str:
    """The CSRF token in the form of the page at ``path``."""
    async with client.get(PREFIX + path) as resp:
        assert resp.status == 200, await resp.text()
        found = CSRF_FIELD.search(await resp.text())
    assert found is not None
    return found.group(1)


async def post(
    client: TestClient[Any, Any], path: str, data: dict[str, str], **headers: str
) -> tuple[int, str, dict[str, str]]:
    """POST a form; (status, body, headers) without following redirects."""
    async with client.post(
        PREFIX + path, data=data, headers=headers, allow_redirects=False
    ) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def sign_in(client: TestClient[Any, Any], **form: str) -> tuple[int, str, dict[str, str]]:
    """Sign in with ``form`` (username/password or token)."""
    csrf = await csrf_of(client, "/signin")
    return await post(client, "/signin", {"csrf": csrf, **form})


def admin_token(tokens: TokenFactory, **claims: Any) -> str:
    """A token of authgate's own key with the admin scope."""
    return tokens.mint(sub="token-operator", scope="authgate:admin", **claims)


async def test_the_console_is_off_unless_enabled() -> None:
    """Without console.enabled the console's paths are 404."""
    app = create_app(make_settings(), stores=MemoryStores())
    async with TestClient(TestServer(app)) as client, client.get(PREFIX + "/signin") as resp:
        assert resp.status == 404


async def test_with_an_ops_port_the_console_is_there_and_not_on_the_traffic_port() -> None:
    """server.ops_port set: the console answers on the ops listener, 404 on the traffic one."""
    settings = make_settings(server={"ops_port": 9090}, console={"enabled": True})
    app = create_app(settings, stores=MemoryStores())
    async with TestClient(TestServer(app)) as traffic, TestClient(TestServer(app[OPS_APP])) as ops:
        async with traffic.get(PREFIX + "/signin") as resp:
            assert resp.status == 404
        async with ops.get(PREFIX + "/signin") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Security-Policy"] == CSP


def test_the_decision_ring_exists_only_with_the_console() -> None:
    """Without the console the gate keeps no decisions in memory."""
    assert Services(make_settings()).recent_decisions is None
    assert Services(make_settings(console={"enabled": True})).recent_decisions is not None


async def test_an_operator_signs_in_and_the_cookie_is_locked_down(
    client: TestClient[Any, Any],
) -> None:
    """303 to the console, a new session cookie: HttpOnly, SameSite=Strict, scoped to the
    console, not Secure over plain http."""
    status, _, headers = await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    assert status == 303
    assert headers["Location"] == PREFIX + "/"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert f"Path={PREFIX}/" in cookie
    assert "Secure" not in cookie
    async with client.get(PREFIX + "/", allow_redirects=False) as resp:
        assert resp.status == 200
        assert OPERATOR in await resp.text()


async def test_the_cookie_is_secure_behind_a_tls_proxy(client: TestClient[Any, Any]) -> None:
    """X-Forwarded-Proto: https from a trusted proxy (the door's reading): a Secure cookie."""
    async with client.get(
        PREFIX + "/signin", headers={"X-Forwarded-Proto": "https"}, allow_redirects=False
    ) as resp:
        assert "Secure" in resp.headers["Set-Cookie"]


@pytest.mark.parametrize(
    ("change", "headers"),
    [
        ("missing", {}),
        ("wrong", {}),
        ("none", {"Origin": "https://evil.example"}),
        ("none", {"Origin": "null"}),
        ("none", {"Sec-Fetch-Site": "cross-site"}),
        ("none", {"Sec-Fetch-Site": "same-site"}),
    ],
    ids=["no-token", "wrong-token", "other-origin", "opaque-origin", "cross-site", "same-site"],
)
async def test_a_forged_post_changes_nothing(
    client: TestClient[Any, Any], tokens: TokenFactory, change: str, headers: dict[str, str]
) -> None:
    """Revoking a token by a forged form: 403 csrf_refused, and the token is not revoked."""
    await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    csrf = await csrf_of(client, "/tokens")
    form = {"jti": "target-jti", "csrf": csrf}
    if change == "missing":
        del form["csrf"]
    elif change == "wrong":
        form["csrf"] = csrf[::-1]
    status, body, _ = await post(client, "/tokens/revoke", form, **headers)
    assert status == 403
    assert 'data-error="csrf_refused"' in body
    revocations = client.app[SERVICES].revocations
    assert not await revocations.is_revoked("target-jti")
    # The same form, honestly posted, does revoke.
    status, _, _ = await post(client, "/tokens/revoke", {"jti": "target-jti", "csrf": csrf})
    assert status == 303
    assert await revocations.is_revoked("target-jti")


async def test_the_csrf_token_of_another_session_is_refused(client: TestClient[Any, Any]) -> None:
    """A token is bound to its session: an earlier (anonymous) session's token is refused."""
    before = await csrf_of(client, "/signin")
    await post(
        client, "/signin", {"csrf": before, "username": OPERATOR, "password": OPERATOR_PASSWORD}
    )
    status, _, _ = await post(client, "/tokens/revoke", {"jti": "x", "csrf": before})
    assert status == 403


@pytest.mark.parametrize(
    "cookie",
    ["", "garbage", "e30.AAAA", "a.b.c"],
    ids=["empty", "garbage", "bad-mac", "three-parts"],
)
async def test_a_forged_cookie_is_no_session(client: TestClient[Any, Any], cookie: str) -> None:
    """Any cookie authgate did not sign: the pages send the browser to sign in."""
    client.session.cookie_jar.update_cookies({COOKIE: cookie})
    async with client.get(PREFIX + "/tokens", allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == PREFIX + "/signin"


async def test_a_tampered_session_cookie_is_refused(client: TestClient[Any, Any]) -> None:
    """The operator's own cookie with one character of the payload changed: no session."""
    _, _, headers = await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    value = headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    payload, mac = value.split(".")
    forged = ("A" if payload[5] != "A" else "B").join((payload[:5], payload[6:])) + "." + mac
    for cookie, status in ((forged, 303), (value, 200)):  # the untouched one still works
        client.session.cookie_jar.clear()
        client.session.cookie_jar.update_cookies({COOKIE: cookie})
        async with client.get(PREFIX + "/tokens", allow_redirects=False) as resp:
            assert resp.status == status


@pytest.mark.parametrize(
    ("username", "status", "code"),
    [(VIEWER, 403, "scope_denied"), (OPERATOR, 401, "unauthenticated")],
    ids=["not-an-operator", "wrong-password"],
)
async def test_who_is_not_an_operator_gets_no_session(
    client: TestClient[Any, Any], username: str, status: int, code: str
) -> None:
    """A user without the admin scope (403) or a wrong password (401): no operator pages."""
    password = OPERATOR_PASSWORD if username == VIEWER else "a wrong password, long"
    got, body, _ = await sign_in(client, username=username, password=password)
    assert got == status
    assert f'data-error="{code}"' in body
    async with client.get(PREFIX + "/", allow_redirects=False) as resp:
        assert resp.status == 303


async def test_a_token_session_ends_when_the_token_is_revoked(
    client: TestClient[Any, Any], tokens: TokenFactory
) -> None:
    """Sign in with an admin token; revoke its jti; the next page asks to sign in again."""
    token = admin_token(tokens, jti="operator-token-1")
    status, _, _ = await sign_in(client, token=token)
    assert status == 303
    async with client.get(PREFIX + "/tokens", allow_redirects=False) as resp:
        assert resp.status == 200
    await client.app[SERVICES].operator.revoke_token(jti="operator-token-1", by="test")
    async with client.get(PREFIX + "/tokens", allow_redirects=False) as resp:
        assert resp.status == 303


async def test_a_token_without_the_admin_scope_is_refused(
    client: TestClient[Any, Any], tokens: TokenFactory
) -> None:
    """A valid token of authgate's without the admin scope: 403 insufficient scope."""
    status, body, _ = await sign_in(client, token=tokens.mint(scope="read"))
    assert status == 403
    assert 'data-error="scope_denied"' in body


async def test_a_token_session_never_outlives_the_token(
    client: TestClient[Any, Any], tokens: TokenFactory
) -> None:
    """The session cookie's expiry is the token's ``exp`` when that comes first."""
    exp = int(time.time()) + 120
    _, _, headers = await sign_in(client, token=admin_token(tokens, exp=exp))
    value = headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    signer = client.app[CONSOLE_KEY].signer
    session = signer.read(value)
    assert session is not None
    assert session.expires_at == exp


async def test_an_operator_removed_loses_the_session(client: TestClient[Any, Any]) -> None:
    """Removing the user (or its admin scope) ends its console session at the next page."""
    await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    await client.app[SERVICES].operator.remove_user(OPERATOR, by="test")
    async with client.get(PREFIX + "/", allow_redirects=False) as resp:
        assert resp.status == 303


async def test_every_answer_carries_the_security_headers(client: TestClient[Any, Any]) -> None:
    """Pages, refusals, redirects and static files: CSP, no framing, no sniffing."""
    await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    answers = []
    for path in (*PAGES, "/signin", "/static/console.css", "/static/console.js", "/static/x"):
        async with client.get(PREFIX + path, allow_redirects=False) as resp:
            answers.append((path, resp.status, dict(resp.headers)))
    status, _, headers = await post(client, "/tokens/revoke", {"jti": "x"})
    answers.append(("forged POST", status, headers))
    for path, _, headers in answers:
        assert headers["Content-Security-Policy"] == CSP, path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
    assert "default-src 'self'" in CSP
    assert "'unsafe-inline'" not in CSP
    statuses = {path: status for path, status, _ in answers}
    assert statuses["/static/x"] == 404
    assert statuses["forged POST"] == 403


async def test_static_files_ship_in_the_package(client: TestClient[Any, Any]) -> None:
    """The stylesheet and the script come from the package with their types."""
    for name, kind in (("console.css", "text/css"), ("console.js", "text/javascript")):
        async with client.get(f"{PREFIX}/static/{name}") as resp:
            assert resp.status == 200
            assert resp.content_type == kind
            assert len(await resp.read()) > 100


INLINE = re.compile(r"<script(?![^>]*\ssrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=|javascript:", re.I)


async def test_no_page_has_inline_script_or_style(client: TestClient[Any, Any]) -> None:
    """Every page's HTML: scripts only by src, no style element or attribute, no handlers."""
    await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    for path in (*PAGES, "/signin"):
        async with client.get(PREFIX + path) as resp:
            text = await resp.text()
        assert INLINE.search(text) is None, (path, INLINE.search(text))
        assert "http://" not in text and "https://" not in text, path  # no CDN


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("multipart/form-data; boundary=x", b"--x--\r\n", 400, "invalid_request"),
        ("application/json", b"{}", 400, "invalid_request"),
        ("application/x-www-form-urlencoded", b"a=" + b"x" * 70_000, 413, "body_too_large"),
        ("application/x-www-form-urlencoded", b"jti=1&jti=2", 400, "invalid_request"),
    ],
    ids=["multipart", "json", "too-large", "repeated-field"],
)
async def test_malformed_forms_are_refused(
    client: TestClient[Any, Any], content_type: str, body: bytes, status: int, code: str
) -> None:
    """A form that is not a small urlencoded form of single fields: a 4xx with its code."""
    await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    async with client.post(
        PREFIX + "/tokens/revoke", data=body, headers={"Content-Type": content_type}
    ) as resp:
        assert resp.status == status
        assert f'data-error="{code}"' in await resp.text()


async def test_an_unknown_pair_act_is_refused(client: TestClient[Any, Any]) -> None:
    """A pair act other than approve, deny, revoke, unlock: 400."""
    await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    csrf = await csrf_of(client, "/tokens")
    status, body, _ = await post(client, "/pairs/pair_x/explode", {"csrf": csrf})
    assert status == 400
    assert 'data-error="invalid_request"' in body


async def test_an_act_in_the_console_writes_the_audit_entry_the_admin_api_writes(
    client: TestClient[Any, Any], tokens: TokenFactory
) -> None:
    """Approve one pair in the console and one through the admin API, as the same operator:
    the two audit entries are the same but for the time."""
    services = client.app[SERVICES]
    pair_ids = []
    for name in ("one", "two"):
        _, jwk, _ = BPCSigner.generate_key()
        registration = await services.pairs.register(
            {"name": name, "scope": "read", "secret": "a-pair-secret-long", "pubJwk": jwk}
        )
        pair_ids.append(registration.pair.pair_id)
    await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    csrf = await csrf_of(client, "/")
    status, _, _ = await post(client, f"/pairs/{pair_ids[0]}/approve", {"csrf": csrf})
    assert status == 303
    bearer = {"Authorization": f"Bearer {tokens.mint(sub=OPERATOR, scope='authgate:admin')}"}
    async with client.post(f"/admin/pairs/{pair_ids[1]}/approve", headers=bearer) as resp:
        assert resp.status == 200
    entries = []
    for pair_id in pair_ids:
        trail = await services.pairs.trail(pair_id, 10)
        (approved,) = [e for e in trail if e.get("event") == "approved"]
        entries.append({k: v for k, v in approved.items() if k != "ts"})
    assert (
        entries[0]
        == entries[1]
        == {
            "event": "approved",
            "outcome": "active",
            "operator": f"admin:{OPERATOR}",
        }
    )


async def test_readiness_shows_the_event_bus_and_the_configuration_in_force(
    client: TestClient[Any, Any],
) -> None:
    """The readiness page names stores, event bus, signing keys and the config generation and
    hash of /readyz; an event bus that is not live shows as such and /readyz stays ready."""
    await sign_in(client, username=OPERATOR, password=OPERATOR_PASSWORD)
    app = client.app
    reloader = app[RELOADER]
    async with client.get(PREFIX + "/ready") as resp:
        page = await resp.text()
    assert resp.status == 200
    assert '<span class="ok" data-test="stores">ok</span>' in page
    assert '<span class="ok" data-test="event_bus">ok</span>' in page
    assert '<span class="ok" data-test="signing_keys">ok</span>' in page
    assert f'<span data-test="config-generation">{reloader.generation}</span>' in page
    assert f'<code data-test="config-hash">{reloader.hash}</code>' in page

    app[STORES].events.live = False
    async with client.get(PREFIX + "/ready") as resp:
        page = await resp.text()
    assert '<span class="bad" data-test="event_bus">not live</span>' in page
    async with client.get("/readyz") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ready"
    assert "event_bus" not in body["checks"]
    assert body["config"] == {"generation": reloader.generation, "hash": reloader.hash}
