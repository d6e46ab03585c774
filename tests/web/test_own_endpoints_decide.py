"""authgate's own endpoints decide their callers through the gate: every caller of the admin
API, the pico endpoints and the BPC token exchange is a decision, counted in
``authgate_decisions_total`` and logged with its reason and internal rule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import METRICS
from tests.support import TokenFactory, make_settings

Client = TestClient[web.Request, web.Application]


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
async def client(tokens: TokenFactory) -> AsyncIterator[Client]:
    settings = make_settings(
        logging={"access_log": True},
        policy={"rules": [{"id": "api", "path_prefix": "/api"}]},
    )
    app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
    async with TestClient(TestServer(app)) as c:
        yield c


def decisions(client: Client, outcome: str, reason: str, credential: str) -> float:
    value = client.app[METRICS].registry.get_sample_value(
        "authgate_decisions_total",
        {"outcome": outcome, "reason": reason, "credential": credential},
    )
    return value or 0.0


def decision_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__ for r in caplog.records if r.getMessage() == "decision"]


async def test_admin_api_callers_are_decisions(
    client: Client, tokens: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    admin = {"Authorization": f"Bearer {tokens.mint(scope='authgate:admin')}"}
    reader = {"Authorization": f"Bearer {tokens.mint(scope='read')}"}
    with caplog.at_level("INFO", logger="authgate.decision"):
        assert (await client.get("/admin/keys", headers=admin)).status == 200
        denied = await client.get("/admin/keys", headers=reader)
        missing = await client.get("/admin/keys")
    assert denied.status == 403
    assert (await denied.json())["error"]["code"] == "scope_denied"
    assert missing.status == 401
    assert (await missing.json())["error"]["code"] == "credential_missing"
    assert decisions(client, "granted", "ok", "jwt") == 1
    assert decisions(client, "denied", "scope_denied", "jwt") == 1
    assert decisions(client, "denied", "credential_missing", "none") == 1
    lines = decision_lines(caplog)
    assert [(line["rule_id"], line["reason"]) for line in lines] == [
        ("admin-api", "ok"),
        ("admin-api", "scope_denied"),
        ("admin-api", "credential_missing"),
    ]


async def test_a_forged_token_on_the_admin_api_is_a_logged_refusal(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    forged = TokenFactory().mint(scope="authgate:admin")  # another key, same issuer
    with caplog.at_level("INFO", logger="authgate.decision"):
        response = await client.post(
            "/admin/tokens", json={"sub": "x"}, headers={"Authorization": f"Bearer {forged}"}
        )
    assert response.status == 401
    assert (
        decisions(client, "denied", "token_key_unknown", "jwt")
        + decisions(client, "denied", "token_signature_invalid", "jwt")
        == 1
    )
    (line,) = decision_lines(caplog)
    assert line["rule_id"] == "admin-api" and not line["granted"]
    assert forged not in caplog.text


async def test_only_the_rules_credential_type_is_consulted(
    client: Client, tokens: TokenFactory
) -> None:
    """BPC headers beside a valid admin token: the admin rule consults the JWT verifier only
    (as before the gate decided it), so the token decides."""
    headers = {
        "Authorization": f"Bearer {tokens.mint(scope='authgate:admin')}",
        "X-BPC-Pair-ID": "pair_x",
    }
    assert (await client.get("/admin/keys", headers=headers)).status == 200
    assert decisions(client, "granted", "ok", "jwt") == 1


async def test_pico_callers_are_decisions(
    client: Client, tokens: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="authgate.decision"):
        response = await client.get("/api/v1/auth/revoked-jtis")
    assert response.status == 401
    assert [(line["rule_id"], line["reason"]) for line in decision_lines(caplog)] == [
        ("bearer-caller", "credential_missing")
    ]


async def test_the_bpc_grant_without_a_pair_is_refused_before_the_gate(client: Client) -> None:
    response = await client.post(
        "/token", data={"grant_type": "urn:authgate:params:oauth:grant-type:bpc"}
    )
    assert response.status == 400
    assert (await response.json())["error"] in {"invalid_request", "unsupported_grant_type"}
