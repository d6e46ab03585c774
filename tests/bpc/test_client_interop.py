"""Interoperability with the published client, ``bpc-client`` 1.0.0, unchanged.

The client is synchronous (httpx), so each flow runs in a worker thread while authgate (in
process) and the echo upstream serve on the test's event loop. What the upstream saw is read
back from the echo: identity headers and a SHA-256 of the body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest
from bpc_client import (  # type: ignore[import-untyped]
    BPCAuthError,
    BPCClient,
    BPCError,
    BPCPair,
    BPCPairLockedError,
)
from bpc_client.crypto import generate_keypair, sign_request  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization

from tests.bpc.conftest import SECRET, Gateway, GatewayFactory, upstream_header

OPERATOR_TOKEN = "operator-token-for-tests-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def pem(private_key: Any) -> str:
    """PKCS#8 PEM of a key from ``generate_keypair``."""
    text: str = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return text


async def register_keypair(
    gw: Gateway, *, mode: str = "development", scope: str = "read-write"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register a fresh ``generate_keypair`` key over HTTP; the keypair and the answer."""
    keypair: dict[str, Any] = generate_keypair()
    resp = await gw.client.post(
        "/bpc/register",
        json={
            "name": "device",
            "scope": scope,
            "mode": mode,
            "secret": SECRET,
            "pubJwk": keypair["public_key_jwk"],
        },
    )
    body: dict[str, Any] = await resp.json()
    assert resp.status == 201, body
    return keypair, body


def client_for(gw: Gateway, pair_id: str, keypair: dict[str, Any], *, secret: str = SECRET) -> Any:
    """A published client built from a pair the test registered itself."""
    pair = BPCPair(
        pair_id=pair_id,
        secret=secret,
        private_key_pem=pem(keypair["private_key"]),
        name="device",
        base_url=gw.base_url,
    )
    return BPCClient.from_pair(pair, gw.base_url)


def auth_error(call: Any) -> BPCError:
    """The BPC error ``call()`` raises."""
    with pytest.raises(BPCError) as info:
        call()
    return info.value


@pytest.mark.parametrize(
    "sections",
    [
        {"development": True},
        {"development": False, "bpc": {"auto_approve_development_pairs": True}},
    ],
    ids=["development-mode", "auto-approve-setting"],
)
async def test_development_pair_reaches_the_upstream_with_its_identity(
    gateway_factory: GatewayFactory, clients: list[Any], sections: dict[str, Any]
) -> None:
    """Registered in development mode, GET and JSON POST reach the upstream as the pair."""
    gw = await gateway_factory(**sections)
    document = {"name": "widget", "tags": ["a", "b"], "price": 9.5, "note": "ünïcødé"}

    def flow() -> tuple[str, dict[str, Any], dict[str, Any]]:
        client = BPCClient.register(base_url=gw.base_url, name="dev1", secret=SECRET)
        clients.append(client)
        got = client.get("/api/items")
        posted = client.post("/api/items", json=document)
        assert (got.status_code, posted.status_code) == (200, 200)
        return client.pair_id, got.json(), posted.json()

    pair_id, got, posted = await asyncio.to_thread(flow)
    for echoed in (got, posted):
        assert upstream_header(echoed, "X-Authgate-Subject") == [pair_id]
        assert upstream_header(echoed, "X-Authgate-Credential") == ["bpc"]
        assert upstream_header(echoed, "X-Authgate-Credential-Id") == [pair_id]
    assert got["body_size"] == 0
    sent = json.dumps(document, separators=(",", ":")).encode()
    assert posted["method"] == "POST"
    assert posted["body_sha256"] == hashlib.sha256(sent).hexdigest()
    assert BPCClient.PAIRS_FILE.exists()


async def test_audit_trail_with_a_query_inside_the_signed_path(
    gateway: Gateway, clients: list[Any]
) -> None:
    """GET /bpc/audit?limit=5 (query in the path, so signed) lists the pair's newest entries."""

    def flow() -> dict[str, Any]:
        client = BPCClient.register(base_url=gateway.base_url, name="dev1", secret=SECRET)
        clients.append(client)
        for i in range(7):
            client.get(f"/api/items/{i}")
        resp = client.get("/bpc/audit?limit=5")
        assert resp.status_code == 200
        body: dict[str, Any] = resp.json()
        return body

    body = await asyncio.to_thread(flow)
    paths = [entry.get("path") for entry in body["entries"]]
    assert paths == [
        "/bpc/audit?limit=5",
        "/api/items/6",
        "/api/items/5",
        "/api/items/4",
        "/api/items/3",
    ]
    assert {entry["outcome"] for entry in body["entries"]} == {"ok"}


async def test_rotation_replaces_the_key_and_refuses_the_old_one(
    gateway: Gateway, clients: list[Any]
) -> None:
    """After rotate the new key and secret work and the old key is signature_invalid."""

    def flow() -> tuple[int, BPCError]:
        old = BPCClient.register(base_url=gateway.base_url, name="dev1", secret=SECRET)
        clients.append(old)
        new = old.rotate("rotated-secret-123")
        clients.append(new)
        status = new.get("/api/items").status_code
        return status, auth_error(lambda: old.get("/api/items"))

    status, error = await asyncio.to_thread(flow)
    assert status == 200
    assert isinstance(error, BPCAuthError)
    assert (error.code, error.status) == ("signature_invalid", 401)


async def test_a_revoked_pair_is_refused(gateway: Gateway, clients: list[Any]) -> None:
    """After revoke every request is pair_revoked, and the client forgets the pair."""

    def flow() -> BPCError:
        client = BPCClient.register(base_url=gateway.base_url, name="dev1", secret=SECRET)
        clients.append(client)
        client.revoke()
        return auth_error(lambda: client.get("/api/items"))

    error = await asyncio.to_thread(flow)
    assert (error.code, error.status) == ("pair_revoked", 401)
    assert "dev1" not in json.loads(BPCClient.PAIRS_FILE.read_text())


@pytest.mark.parametrize(
    ("mode", "bpc"),
    [
        ("production", {}),
        ("development", {"auto_approve_development_pairs": False}),
    ],
    ids=["production-mode", "auto-approve-off"],
)
async def test_a_pending_pair_works_only_after_operator_approval(
    gateway_factory: GatewayFactory, clients: list[Any], mode: str, bpc: dict[str, Any]
) -> None:
    """Not auto-approved: an approval token, pair_pending until the operator approves, then 200."""
    gw = await gateway_factory(bpc={"operator_token": OPERATOR_TOKEN, **bpc})

    def published_register() -> BPCError:
        return auth_error(
            lambda: BPCClient.register(base_url=gw.base_url, name="p", secret=SECRET, mode=mode)
        )

    error = await asyncio.to_thread(published_register)
    assert error.code == "pending_approval"

    keypair, answer = await register_keypair(gw, mode=mode)
    assert "pairId" not in answer
    assert answer["status"] == "pending"
    assert answer["fingerprint"] == keypair["fingerprint"]
    [record] = [p for p in await gw.pairs.all_pairs() if p.fingerprint == keypair["fingerprint"]]
    client = client_for(gw, record.pair_id, keypair)
    clients.append(client)

    error = await asyncio.to_thread(auth_error, lambda: client.get("/api/items"))
    assert (error.code, error.status) == ("pair_pending", 401)

    resp = await gw.client.post("/bpc/approve", json={"approvalToken": answer["approvalToken"]})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "operator_required"

    resp = await gw.client.post(
        "/bpc/approve", json={"approvalToken": answer["approvalToken"]}, headers=OPERATOR
    )
    assert resp.status == 200
    assert await resp.json() == {"pairId": record.pair_id, "status": "active"}

    got = await asyncio.to_thread(lambda: client.get("/api/items"))
    assert got.status_code == 200
    assert upstream_header(got.json(), "X-Authgate-Subject") == [record.pair_id]


async def test_registration_disabled_is_403(
    gateway_factory: GatewayFactory, clients: list[Any]
) -> None:
    """bpc.registration disabled: 403 registration_closed (the client reports the 403)."""
    gw = await gateway_factory(bpc={"registration": "disabled"})
    error = await asyncio.to_thread(
        auth_error, lambda: BPCClient.register(base_url=gw.base_url, name="x", secret=SECRET)
    )
    assert (error.code, error.status) == ("registration_failed", 403)
    assert "registration_closed" in str(error)
    resp = await gw.client.post("/bpc/register", json={})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "registration_closed"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 403),
        ({"Authorization": "Bearer wrong-token"}, 403),
        ({"Authorization": f"Basic {OPERATOR_TOKEN}"}, 403),
        (OPERATOR, 201),
    ],
    ids=["no-token", "wrong-token", "wrong-scheme", "operator-token"],
)
async def test_operator_token_registration_policy(
    gateway_factory: GatewayFactory, headers: dict[str, str], status: int
) -> None:
    """bpc.registration operator_token: 403 registration_closed without the token, 201 with it."""
    gw = await gateway_factory(
        bpc={"registration": "operator_token", "operator_token": OPERATOR_TOKEN}
    )
    keypair = generate_keypair()
    resp = await gw.client.post(
        "/bpc/register",
        json={
            "name": "d",
            "scope": "read",
            "mode": "development",
            "secret": SECRET,
            "pubJwk": keypair["public_key_jwk"],
        },
        headers=headers,
    )
    body = await resp.json()
    assert resp.status == status, body
    if status == 403:
        assert body["error"]["code"] == "registration_closed"
    else:
        assert body["pairId"].startswith("pair_")


@pytest.mark.parametrize(
    ("operator_token", "headers"),
    [
        (OPERATOR_TOKEN, {}),
        (OPERATOR_TOKEN, {"Authorization": "Bearer not-the-token"}),
        (None, {"Authorization": "Bearer anything"}),
    ],
    ids=["no-token", "wrong-token", "no-operator-configured"],
)
async def test_approve_needs_the_operator_token(
    gateway_factory: GatewayFactory, operator_token: str | None, headers: dict[str, str]
) -> None:
    """Approve without the operator token: 403 operator_required; the pair stays pending."""
    gw = await gateway_factory(bpc={"operator_token": operator_token})
    keypair, answer = await register_keypair(gw, mode="production")
    resp = await gw.client.post(
        "/bpc/approve", json={"approvalToken": answer["approvalToken"]}, headers=headers
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "operator_required"
    [record] = [p for p in await gw.pairs.all_pairs() if p.fingerprint == keypair["fingerprint"]]
    assert record.status.value == "pending"


async def test_params_query_is_not_signed_so_it_is_refused(
    gateway: Gateway, clients: list[Any]
) -> None:
    """client.get(path, params=...) signs the path without the query: method_path_mismatch."""

    def flow() -> tuple[BPCError, dict[str, Any]]:
        client = BPCClient.register(base_url=gateway.base_url, name="dev1", secret=SECRET)
        clients.append(client)
        error = auth_error(lambda: client.get("/api/items", params={"q": "1"}))
        inside: dict[str, Any] = client.get("/api/items?q=1").json()
        return error, inside

    error, inside = await asyncio.to_thread(flow)
    assert (error.code, error.status) == ("method_path_mismatch", 401)
    assert inside["target"] == "/api/items?q=1"


async def test_params_query_is_accepted_where_the_route_opts_in(
    gateway_factory: GatewayFactory, clients: list[Any]
) -> None:
    """A route with allow_unsigned_query accepts the client's params= query; others do not."""
    rules = [
        {"id": "search", "path_prefix": "/search", "allow_unsigned_query": True},
        {"id": "rest", "path_prefix": "/"},
    ]
    gw = await gateway_factory(policy={"rules": rules})

    def flow() -> tuple[dict[str, Any], BPCError]:
        client = BPCClient.register(base_url=gw.base_url, name="dev1", secret=SECRET)
        clients.append(client)
        resp = client.get("/search", params={"q": "widgets"})
        assert resp.status_code == 200
        echoed: dict[str, Any] = resp.json()
        return echoed, auth_error(lambda: client.get("/api/items", params={"q": "1"}))

    echoed, error = await asyncio.to_thread(flow)
    assert echoed["target"] == "/search?q=widgets"
    assert error.code == "method_path_mismatch"


SIGNED_BODY = b'{"name":"widget"}'


@pytest.mark.parametrize(
    ("sent_method", "sent_target", "sent_body", "code"),
    [
        ("POST", "/api/items?q=1", SIGNED_BODY, None),
        ("POST", "/api/items?q=2", SIGNED_BODY, "method_path_mismatch"),
        ("POST", "/api/items?q=1&q=2", SIGNED_BODY, "method_path_mismatch"),
        ("POST", "/api/items", SIGNED_BODY, "method_path_mismatch"),
        ("PUT", "/api/items?q=1", SIGNED_BODY, "method_path_mismatch"),
        ("POST", "/api/other?q=1", SIGNED_BODY, "method_path_mismatch"),
        ("POST", "/api/items?q=1", b'{"name":"gadget"}', "body_hash_mismatch"),
    ],
    ids=["untampered", "query", "query-appended", "query-dropped", "method", "path", "body"],
)
async def test_tampering_with_a_published_client_request(
    gateway: Gateway,
    sent_method: str,
    sent_target: str,
    sent_body: bytes,
    code: str | None,
) -> None:
    """A request signed by the client, altered in one part: each part has its code."""
    keypair, answer = await register_keypair(gateway)
    headers = sign_request(
        keypair["private_key"],
        answer["pairId"],
        SECRET,
        "POST",
        "/api/items?q=1",
        SIGNED_BODY,
    )
    status, body, _ = await gateway.send(
        sent_method, sent_target, {**headers, "Content-Type": "application/json"}, sent_body
    )
    if code is None:
        assert status == 200, body
        assert body["body_sha256"] == hashlib.sha256(SIGNED_BODY).hexdigest()
    else:
        assert (status, body["error"]["code"]) == (401, code)


async def test_the_client_raises_its_lock_out_error(gateway: Gateway, clients: list[Any]) -> None:
    """Wrong-secret requests signed by the device key end in BPCPairLockedError, for good."""
    keypair, answer = await register_keypair(gateway)
    wrong = client_for(gateway, answer["pairId"], keypair, secret="not-the-secret")
    right = client_for(gateway, answer["pairId"], keypair)
    clients.extend([wrong, right])

    def flow() -> tuple[list[str], BPCError]:
        codes = []
        for _ in range(11):
            error = auth_error(lambda: wrong.get("/api/items"))
            codes.append(type(error).__name__)
            if isinstance(error, BPCPairLockedError):
                break
        return codes, auth_error(lambda: right.get("/api/items"))

    codes, after = await asyncio.to_thread(flow)
    assert codes[:9] == ["BPCAuthError"] * 9
    assert codes[-1] == "BPCPairLockedError"
    assert len(codes) in {10, 11}
    assert isinstance(after, BPCPairLockedError)
    assert after.code == "pair_locked_out"


async def test_a_read_pair_gets_scope_denied_on_post(gateway: Gateway, clients: list[Any]) -> None:
    """A read-scoped pair may GET; its POST is 403 scope_denied."""

    def flow() -> tuple[int, BPCError]:
        client = BPCClient.register(
            base_url=gateway.base_url, name="reader", secret=SECRET, scope="read"
        )
        clients.append(client)
        status = client.get("/api/items").status_code
        return status, auth_error(lambda: client.post("/api/items", json={"a": 1}))

    status, error = await asyncio.to_thread(flow)
    assert status == 200
    assert (error.code, error.status) == ("scope_denied", 403)
