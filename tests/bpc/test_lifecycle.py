"""The pair lifecycle endpoints (``/bpc/*``): validation that names the field at fault, who
may rotate, revoke and approve what, and the audit trail's order and cap.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.pairs.records import PairStatus
from authgate.stores.base import ManualClock
from authgate.web.state import METRICS
from tests.bpc.conftest import (
    SECRET,
    Device,
    Gateway,
    GatewayFactory,
    b64url,
    raw_exchange,
    request_bytes,
)

OPERATOR_TOKEN = "operator-token-for-tests-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def p384_jwk() -> dict[str, str]:
    """A public JWK on the wrong curve."""
    numbers = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-384",
        "x": b64url(numbers.x.to_bytes(48, "big")),
        "y": b64url(numbers.y.to_bytes(48, "big")),
    }


def registration(device: Device, **changes: Any) -> dict[str, Any]:
    """A valid registration body with members changed (``None`` removes one)."""
    body: dict[str, Any] = {
        "name": "device",
        "scope": "read-write",
        "mode": "development",
        "secret": device.secret,
        "pubJwk": device.public_jwk,
    }
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


async def signed_json(
    gw: Gateway, device: Device, path: str, document: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """POST ``document`` to ``path`` signed by ``device`` (compact JSON, as the client sends)."""
    raw = json.dumps(document, separators=(",", ":")).encode()
    headers = {**device.headers("POST", path, raw), "Content-Type": "application/json"}
    status, body, _ = await gw.send("POST", path, headers, raw)
    return status, body


async def works(gw: Gateway, device: Device) -> tuple[int, str]:
    """A fresh signed GET through the proxy: the status and the error code, if any."""
    status, body, _ = await gw.send("GET", "/api/items", device.headers("GET", "/api/items"))
    return status, body.get("error", {}).get("code", "")


async def registered(gw: Gateway, **kwargs: Any) -> Device:
    """A new, registered device."""
    device = gw.device()
    await gw.register(device, **kwargs)
    return device


# --- register ------------------------------------------------------------------------------


def _bad_registrations(device: Device) -> list[tuple[str, dict[str, Any], str]]:
    jwk = device.public_jwk
    return [
        ("bad-scope", registration(device, scope="superuser"), "scope"),
        ("missing-scope", registration(device, scope=None), "scope"),
        ("short-secret", registration(device, secret="short"), "secret"),
        ("numeric-secret", registration(device, secret=12345678), "secret"),
        ("private-jwk", registration(device, pubJwk={**jwk, "d": b64url(b"\x01" * 32)}), "pubJwk"),
        ("p384-jwk", registration(device, pubJwk=p384_jwk()), "pubJwk"),
        (
            "rsa-jwk",
            registration(device, pubJwk={"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            "pubJwk",
        ),
        (
            "off-curve",
            registration(device, pubJwk={**jwk, "y": b64url(b"\x01" * 32)}),
            "pubJwk",
        ),
        ("short-coordinate", registration(device, pubJwk={**jwk, "x": b64url(b"\x01")}), "pubJwk"),
        ("jwk-not-object", registration(device, pubJwk="key"), "pubJwk"),
        ("unknown-member", registration(device, isAdmin=True), "isAdmin"),
        ("missing-name", registration(device, name=None), "name"),
        ("control-char-name", registration(device, name="a\nb"), "name"),
        ("bad-mode", registration(device, mode="staging"), "mode"),
    ]


BAD_REGISTRATION_IDS = [
    "bad-scope",
    "missing-scope",
    "short-secret",
    "numeric-secret",
    "private-jwk",
    "p384-jwk",
    "rsa-jwk",
    "off-curve",
    "short-coordinate",
    "jwk-not-object",
    "unknown-member",
    "missing-name",
    "control-char-name",
    "bad-mode",
]


@pytest.mark.parametrize("case", BAD_REGISTRATION_IDS)
async def test_register_validation_names_the_field(gateway: Gateway, case: str) -> None:
    """Each invalid registration is 400 invalid_request naming the member at fault."""
    device = gateway.device()
    [(_, document, field)] = [c for c in _bad_registrations(device) if c[0] == case]
    resp = await gateway.client.post("/bpc/register", json=document)
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (400, "invalid_request")
    assert body["error"]["message"].startswith(f"{field}:")
    assert await gateway.pairs.all_pairs() == []


@pytest.mark.parametrize(
    ("content_type", "data", "message"),
    [
        ("application/json", b"{not json", "JSON"),
        ("application/json", b"\xff\xfe{}", "UTF-8"),
        ("application/json", b"[1, 2]", "JSON object"),
        ("text/plain", b"{}", "Content-Type"),
        ("application/x-www-form-urlencoded", b"name=x", "Content-Type"),
    ],
    ids=["not-json", "not-utf8", "array", "text-plain", "form"],
)
async def test_register_refuses_a_body_that_is_not_a_json_object(
    gateway: Gateway, content_type: str, data: bytes, message: str
) -> None:
    """Non-JSON, non-UTF-8, non-object bodies and other content types: 400 saying which."""
    resp = await gateway.client.post(
        "/bpc/register", data=data, headers={"Content-Type": content_type}
    )
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (400, "invalid_request")
    assert message in body["error"]["message"]


async def test_register_refuses_an_oversized_body(gateway: Gateway) -> None:
    """A registration body over 16 KiB is refused before it is parsed."""
    device = gateway.device()
    document = registration(device, name="x" * 20_000)
    resp = await gateway.client.post("/bpc/register", json=document)
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (413, "body_too_large")


async def test_register_reads_a_body_that_arrives_in_pieces(gateway: Gateway) -> None:
    """A chunked registration whose second chunk comes later is read whole (201)."""
    device = gateway.device()
    document = json.dumps(registration(device)).encode()
    head = request_bytes(
        "POST",
        "/bpc/register",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    first, second = document[:40], document[40:]
    status, body = await raw_exchange(
        gateway.port,
        head + f"{len(first):x}\r\n".encode() + first + b"\r\n",
        then=f"{len(second):x}\r\n".encode() + second + b"\r\n0\r\n\r\n",
        pause=0.1,
    )
    assert status == 201, body
    assert body["pairId"].startswith("pair_")


async def test_a_development_registration_answers_the_pair_id(gateway: Gateway) -> None:
    """201 with pairId, status active and the key fingerprint; never a cacheable answer."""
    device = gateway.device()
    resp = await gateway.client.post("/bpc/register", json=registration(device))
    body = await resp.json()
    assert resp.status == 201
    assert body["status"] == "active"
    assert body["pairId"].startswith("pair_")
    assert resp.headers["Cache-Control"] == "no-store"


# --- rotate --------------------------------------------------------------------------------


async def test_rotate_must_name_the_signing_pair(gateway: Gateway) -> None:
    """A pair cannot rotate another pair's key: 400 naming pairId; both keep working."""
    a = await registered(gateway)
    b = await registered(gateway)
    newcomer = gateway.device(secret="new-secret-1234")
    document = {"pairId": b.pair_id, "newPubJwk": newcomer.public_jwk, "newSecret": "new-secret-1"}
    status, body = await signed_json(gateway, a, "/bpc/rotate", document)
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert body["error"]["message"].startswith("pairId:")
    assert await works(gateway, a) == (200, "")
    assert await works(gateway, b) == (200, "")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"newPubJwk": None}, "newPubJwk"),
        ({"newSecret": "short"}, "newSecret"),
        ({"pairId": None}, "pairId"),
    ],
    ids=["missing-key", "short-secret", "missing-pair-id"],
)
async def test_rotate_validation_names_the_field(
    gateway: Gateway, changes: dict[str, Any], field: str
) -> None:
    """An invalid rotation is 400 naming the member, and the old key still works."""
    device = await registered(gateway)
    newcomer = gateway.device()
    document: dict[str, Any] = {
        "pairId": device.pair_id,
        "newPubJwk": newcomer.public_jwk,
        "newSecret": "new-secret-1234",
    }
    for name, value in changes.items():
        if value is None:
            del document[name]
        else:
            document[name] = value
    status, body = await signed_json(gateway, device, "/bpc/rotate", document)
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert body["error"]["message"].startswith(f"{field}:")
    assert await works(gateway, device) == (200, "")


async def test_rotate_needs_a_signed_request(gateway: Gateway) -> None:
    """An unsigned rotation is 401 missing_headers."""
    device = await registered(gateway)
    resp = await gateway.client.post(
        "/bpc/rotate",
        json={"pairId": device.pair_id, "newPubJwk": device.public_jwk, "newSecret": SECRET},
    )
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "missing_headers"


async def test_rotate_replaces_key_and_secret(gateway: Gateway) -> None:
    """After rotation only the new key with the new secret is accepted."""
    device = await registered(gateway)
    rotated = gateway.device(secret="new-secret-1234")
    rotated.pair_id = device.pair_id
    document = {
        "pairId": device.pair_id,
        "newPubJwk": rotated.public_jwk,
        "newSecret": rotated.secret,
    }
    status, body = await signed_json(gateway, device, "/bpc/rotate", document)
    assert status == 200, body
    assert await works(gateway, rotated) == (200, "")
    assert await works(gateway, device) == (401, "signature_invalid")
    mixed = Device(secret=SECRET, now_ms=rotated.now_ms, pair_id=device.pair_id)
    mixed.private_key = rotated.private_key
    assert await works(gateway, mixed) == (401, "signature_invalid")


async def test_lifecycle_callers_are_decisions_and_replays_are_refused(gateway: Gateway) -> None:
    """A signed lifecycle request is decided by the gate (counted as a BPC decision); the
    same signed request sent again is a replay, refused and counted."""
    device = await registered(gateway)
    registry = gateway.app[METRICS].registry

    def counted(outcome: str, reason: str) -> float:
        labels = {"outcome": outcome, "reason": reason, "credential": "bpc"}
        return registry.get_sample_value("authgate_decisions_total", labels) or 0.0

    granted = counted("granted", "ok")
    headers = device.headers("GET", "/bpc/audit?limit=5")
    first, _, _ = await gateway.send("GET", "/bpc/audit?limit=5", headers)
    again, body, _ = await gateway.send("GET", "/bpc/audit?limit=5", headers)
    assert first == 200
    assert (again, body["error"]["code"]) == (401, "replay_detected")
    assert counted("granted", "ok") == granted + 1
    assert counted("denied", "replay_detected") == 1


# --- revoke --------------------------------------------------------------------------------


async def test_a_pair_may_revoke_only_itself(gateway: Gateway) -> None:
    """Signed by A naming B: 400 and B keeps working; A naming A: revoked."""
    a = await registered(gateway)
    b = await registered(gateway)
    status, body = await signed_json(gateway, a, "/bpc/revoke", {"pairId": b.pair_id})
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert "only itself" in body["error"]["message"]
    assert await works(gateway, b) == (200, "")
    status, body = await signed_json(gateway, a, "/bpc/revoke", {"pairId": a.pair_id})
    assert (status, body) == (200, {"pairId": a.pair_id, "status": "revoked"})
    assert await works(gateway, a) == (401, "pair_revoked")
    assert await works(gateway, b) == (200, "")


async def test_the_operator_may_revoke_any_pair(gateway_factory: GatewayFactory) -> None:
    """With the operator token any pair is revoked, without a signature."""
    gw = await gateway_factory(bpc={"operator_token": OPERATOR_TOKEN})
    device = await registered(gw)
    resp = await gw.client.post("/bpc/revoke", json={"pairId": device.pair_id}, headers=OPERATOR)
    assert resp.status == 200
    assert await works(gw, device) == (401, "pair_revoked")
    trail = await gw.pairs.trail(device.pair_id, 10)
    assert {"event": "revoked", "outcome": "operator"}.items() <= trail[1].items()


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Authorization": "Bearer not-the-token"}, 401, "missing_headers"),
        ({}, 401, "missing_headers"),
    ],
    ids=["wrong-operator-token", "no-credential"],
)
async def test_revoke_without_operator_token_needs_the_pairs_signature(
    gateway_factory: GatewayFactory, headers: dict[str, str], status: int, code: str
) -> None:
    """Without the operator token, revoke is a signed pair action: unsigned is refused."""
    gw = await gateway_factory(bpc={"operator_token": OPERATOR_TOKEN})
    device = await registered(gw)
    resp = await gw.client.post("/bpc/revoke", json={"pairId": device.pair_id}, headers=headers)
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code
    assert await works(gw, device) == (200, "")


@pytest.mark.parametrize(
    "value",
    ["Bearer \udcff\udcfe", "Bearer \u00e9t\u00e9", "Bearer ", "Bearer"],
    ids=["undecodable-bytes", "non-ascii", "empty-token", "no-token"],
)
async def test_a_malformed_operator_header_is_refused_not_500(
    gateway_factory: GatewayFactory, value: str
) -> None:
    """Authorization bytes that are not UTF-8 (or no token) are simply not the operator."""
    gw = await gateway_factory(bpc={"operator_token": OPERATOR_TOKEN})
    headers = {"Authorization": value, "Content-Type": "application/json"}
    status, body = await raw_exchange(
        gw.port, request_bytes("POST", "/bpc/approve", headers, b"{}")
    )
    assert (status, body["error"]["code"]) == (403, "operator_required")


async def test_operator_revoking_an_unknown_pair_is_404(gateway_factory: GatewayFactory) -> None:
    """The operator naming no pair gets 404 not_found."""
    gw = await gateway_factory(bpc={"operator_token": OPERATOR_TOKEN})
    resp = await gw.client.post("/bpc/revoke", json={"pairId": "pair_nobody"}, headers=OPERATOR)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


# --- audit ---------------------------------------------------------------------------------


async def test_audit_is_newest_first_and_capped(gateway_factory: GatewayFactory) -> None:
    """The trail lists the newest entries first and never more than bpc.audit_cap."""
    gw = await gateway_factory(bpc={"audit_cap": 5})
    device = await registered(gw)
    for i in range(8):
        status, _, _ = await gw.send(
            "GET", f"/api/items/{i}", device.headers("GET", f"/api/items/{i}")
        )
        assert status == 200
    status, body, _ = await gw.send(
        "GET", "/bpc/audit?limit=100", device.headers("GET", "/bpc/audit?limit=100")
    )
    assert status == 200, body
    entries = body["entries"]
    assert [e["path"] for e in entries] == [
        "/bpc/audit?limit=100",
        "/api/items/7",
        "/api/items/6",
        "/api/items/5",
        "/api/items/4",
    ]
    stamps = [e["ts"] for e in entries]
    assert stamps == sorted(stamps, reverse=True)


async def test_audit_records_refusals_naming_the_pair(gateway: Gateway) -> None:
    """A refused request that names the pair appears in its trail with the refusal code."""
    device = await registered(gateway)
    headers = device.headers("GET", "/api/items")
    await gateway.send("GET", "/api/items", headers)
    await gateway.send("GET", "/api/items", headers)  # replay
    status, body, _ = await gateway.send(
        "GET", "/bpc/audit?limit=3", device.headers("GET", "/bpc/audit?limit=3")
    )
    assert status == 200
    assert [e["outcome"] for e in body["entries"]] == ["ok", "replay_detected", "ok"]


async def test_audit_shows_only_the_signing_pairs_trail(gateway: Gateway) -> None:
    """A pair reads its own trail, never another's."""
    a = await registered(gateway)
    b = await registered(gateway)
    await gateway.send("GET", "/api/b-only", b.headers("GET", "/api/b-only"))
    status, body, _ = await gateway.send(
        "GET", "/bpc/audit?limit=50", a.headers("GET", "/bpc/audit?limit=50")
    )
    assert status == 200
    assert body["pairId"] == a.pair_id
    assert "/api/b-only" not in {e.get("path") for e in body["entries"]}


@pytest.mark.parametrize(
    ("signed", "sent", "status", "code"),
    [
        ("/bpc/audit", "/bpc/audit?limit=5", 401, "method_path_mismatch"),
        ("/bpc/audit?limit=0", "/bpc/audit?limit=0", 400, "invalid_request"),
        ("/bpc/audit?limit=ten", "/bpc/audit?limit=ten", 400, "invalid_request"),
        ("/bpc/audit?limit=10001", "/bpc/audit?limit=10001", 400, "invalid_request"),
        ("/bpc/audit?limit=%C2%B2", "/bpc/audit?limit=%C2%B2", 400, "invalid_request"),
        ("/bpc/audit?limit=%D9%A3", "/bpc/audit?limit=%D9%A3", 400, "invalid_request"),
        ("/bpc/audit?limit=-1", "/bpc/audit?limit=-1", 400, "invalid_request"),
    ],
    ids=[
        "unsigned-query",
        "zero",
        "not-a-number",
        "too-many",
        "superscript-two",
        "arabic-indic-three",
        "negative",
    ],
)
async def test_audit_limit_is_signed_and_validated(
    gateway: Gateway, signed: str, sent: str, status: int, code: str
) -> None:
    """The limit must be inside the signed path (no opt-out here) and 1..10000."""
    device = await registered(gateway)
    got, body, _ = await gateway.send("GET", sent, device.headers("GET", signed))
    assert (got, body["error"]["code"]) == (status, code)


async def test_audit_needs_a_signed_request(gateway: Gateway) -> None:
    """An unsigned audit request is 401 missing_headers."""
    status, body, _ = await gateway.send("GET", "/bpc/audit?limit=5", {})
    assert (status, body["error"]["code"]) == (401, "missing_headers")


# --- approve -------------------------------------------------------------------------------


async def _pending(gw: Gateway) -> tuple[Device, str]:
    device = gw.device()
    answer = await gw.register(device, mode="production")
    return device, answer["approvalToken"]


def _forged(token: str) -> str:
    pair_id, _, secret = token.partition(".")
    flipped = base64.urlsafe_b64encode(bytes(b ^ 1 for b in secret.encode())).decode()[:43]
    return f"{pair_id}.{flipped}"


@pytest.mark.parametrize(
    "token",
    ["wrong", "forged-secret", "other-pairs-id", "empty"],
)
async def test_approve_with_a_wrong_token_fails(
    gateway_factory: GatewayFactory, token: str
) -> None:
    """A token that is not the pair's: refused, and the pair stays pending."""
    gw = await gateway_factory(bpc={"operator_token": OPERATOR_TOKEN})
    device, real = await _pending(gw)
    other, _ = await _pending(gw)
    sent = {
        "wrong": "pair_nobody.abcdef",
        "forged-secret": _forged(real),
        "other-pairs-id": f"{other.pair_id}.{real.partition('.')[2]}",
        "empty": "",
    }[token]
    resp = await gw.client.post("/bpc/approve", json={"approvalToken": sent}, headers=OPERATOR)
    body = await resp.json()
    assert resp.status in {400, 404}, body
    assert body["error"]["code"] in {"not_found", "invalid_request"}
    assert (await gw.pairs.get(device.pair_id)).status is PairStatus.PENDING
    assert (await gw.pairs.get(other.pair_id)).status is PairStatus.PENDING
    assert await works(gw, device) == (401, "pair_pending")


async def test_approve_with_an_expired_token_fails(gateway_factory: GatewayFactory) -> None:
    """After bpc.approval_ttl_seconds the token no longer approves (400 naming the token)."""
    clock = ManualClock()
    gw = await gateway_factory(
        clock=clock, bpc={"operator_token": OPERATOR_TOKEN, "approval_ttl_seconds": 60}
    )
    device, token = await _pending(gw)
    clock.advance(60_000 + 1)
    resp = await gw.client.post("/bpc/approve", json={"approvalToken": token}, headers=OPERATOR)
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (400, "invalid_request")
    assert body["error"]["message"].startswith("approvalToken:")
    assert "expired" in body["error"]["message"]
    assert (await gw.pairs.get(device.pair_id)).status is PairStatus.PENDING


async def test_approve_at_the_last_moment_succeeds(gateway_factory: GatewayFactory) -> None:
    """At exactly the approval deadline the token still approves."""
    clock = ManualClock()
    gw = await gateway_factory(
        clock=clock, bpc={"operator_token": OPERATOR_TOKEN, "approval_ttl_seconds": 60}
    )
    device, token = await _pending(gw)
    clock.advance(60_000)
    resp = await gw.client.post("/bpc/approve", json={"approvalToken": token}, headers=OPERATOR)
    assert resp.status == 200
    assert (await gw.pairs.get(device.pair_id)).status is PairStatus.ACTIVE


async def test_a_token_approves_once(gateway_factory: GatewayFactory) -> None:
    """A used approval token cannot approve again."""
    gw = await gateway_factory(bpc={"operator_token": OPERATOR_TOKEN})
    device, token = await _pending(gw)
    first = await gw.client.post("/bpc/approve", json={"approvalToken": token}, headers=OPERATOR)
    assert first.status == 200
    again = await gw.client.post("/bpc/approve", json={"approvalToken": token}, headers=OPERATOR)
    assert again.status == 400
    assert "not pending" in (await again.json())["error"]["message"]
    assert await works(gw, device) == (200, "")


async def test_the_operator_may_approve_by_pair_id(gateway_factory: GatewayFactory) -> None:
    """The operator may approve a pending pair by its id."""
    gw = await gateway_factory(bpc={"operator_token": OPERATOR_TOKEN})
    device, _ = await _pending(gw)
    resp = await gw.client.post("/bpc/approve", json={"pairId": device.pair_id}, headers=OPERATOR)
    assert resp.status == 200
    assert await works(gw, device) == (200, "")


async def test_a_revoked_pair_cannot_be_approved_back(gateway_factory: GatewayFactory) -> None:
    """Approval applies to pending pairs only: a revoked pair stays revoked."""
    gw = await gateway_factory(bpc={"operator_token": OPERATOR_TOKEN})
    device = await registered(gw)
    await gw.client.post("/bpc/revoke", json={"pairId": device.pair_id}, headers=OPERATOR)
    resp = await gw.client.post("/bpc/approve", json={"pairId": device.pair_id}, headers=OPERATOR)
    assert resp.status == 400
    assert await works(gw, device) == (401, "pair_revoked")


async def test_health(gateway: Gateway) -> None:
    """GET /bpc/health answers 200 with the protocol version."""
    resp = await gateway.client.get("/bpc/health")
    assert resp.status == 200
    assert (await resp.json())["version"] == "1.0"
