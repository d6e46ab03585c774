"""DPoP (RFC 9449) across two authgate replicas (separate processes) sharing the real Redis,
one key prefix, one signing key and one DPoP nonce secret, in front of an upstream.

A proof is admitted exactly once however many copies race across both replicas (its
``jti`` is spent in the gate's one nonce-store round trip); a proof accepted by one is
refused by the other; and an independent DPoP client (``requests-oauth2client``, which
builds its proofs with ``jwskate``, no code of authgate's) gets a bound token from one
replica's ``/token`` and calls the app through the other's sidecar, server nonces and all.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests
from requests_oauth2client import OAuth2Client
from requests_oauth2client.dpop import DPoPToken

from authgate.client.dpop import DPoPKey
from tests.integration.conftest import (
    Authgate,
    Signing,
    Upstream,
    authgate_config,
    redis_stores_config,
    running,
)
from tests.integration.test_hmac_replicas import KEK, new_key

pytestmark = pytest.mark.redis

COPIES = 50
HOST = "app.test"
URL = f"http://{HOST}/api/items"
NONCE_SECRET = "replica-shared-dpop-nonce-secret-0123456789"


@pytest.fixture(scope="module")
def replicas(
    redis_url: str,
    key_prefix: str,
    upstream_server: Upstream,
    signing: Signing,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Authgate, Authgate]]:
    """Two authgate processes with one Redis prefix, key, KEK and DPoP nonce secret."""
    config = authgate_config(
        signing,
        stores=redis_stores_config(redis_url, key_prefix),
        secrets={"key_encryption_key": KEK},
        jwt={
            **authgate_config(signing)["jwt"],
            "dpop": {"require_nonce": True, "nonce_secret": NONCE_SECRET},
        },
        proxy={"upstream": f"http://127.0.0.1:{upstream_server.port}"},
        policy={
            "rules": [
                {"id": "api", "path_prefix": "/api", "dpop": "required"},
                {"id": "open", "path_prefix": "/open"},
            ]
        },
        logging={"level": "WARNING", "access_log": False},
    )
    directory = tmp_path_factory.mktemp("dpop-replicas")
    with running(config, directory) as a, running(config, directory) as b:
        yield a, b


async def call(
    session: aiohttp.ClientSession, gate: Authgate, token: str, proof: str
) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    """One GET of the app through ``gate``'s sidecar, as ``http://app.test/api/items``."""
    headers = {"Host": HOST, "Authorization": f"DPoP {token}", "DPoP": proof}
    async with session.get(gate.url + "/api/items", headers=headers) as resp:
        body: dict[str, Any] = await resp.json() if resp.status != 200 else {}
        return resp.status, body.get("error", {}).get("code", ""), resp.headers


async def server_nonce(
    session: aiohttp.ClientSession, gate: Authgate, token: str, key: DPoPKey
) -> str:
    """The nonce a proof without one is answered with (401 dpop_nonce_required)."""
    status, reason, headers = await call(
        session, gate, token, key.proof("GET", URL, access_token=token)
    )
    assert (status, reason) == (401, "dpop_nonce_required")
    return str(headers["DPoP-Nonce"])  # type: ignore[index]


async def admitted(
    session: aiohttp.ClientSession, gate: Authgate, token: str, key: DPoPKey, nonce: str
) -> None:
    """A fresh proof is admitted by ``gate``. A proof made in the second the store's epoch
    began is refused as possibly spent (its iat has one-second resolution): retry once the
    second has passed."""
    for _ in range(3):
        status, reason, _ = await call(
            session, gate, token, key.proof("GET", URL, access_token=token, nonce=nonce)
        )
        if status == 200:
            return
        assert (status, reason) == (401, "dpop_proof_replayed")
        await asyncio.sleep(1.0)
    raise AssertionError(f"{gate.url} never admitted a fresh proof")


def bound_token(signing: Signing, key: DPoPKey) -> str:
    """An access token of the replicas' issuer, bound to ``key`` (cnf.jkt)."""
    return signing.tokens.mint(cnf={"jkt": key.jkt}, exp=int(time.time()) + 300)


async def test_fifty_concurrent_copies_of_a_proof_admit_exactly_one(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession, signing: Signing
) -> None:
    """One proof, 50 copies racing on two replicas: one 2xx, 49 dpop_proof_replayed."""
    a, b = replicas
    key = DPoPKey.generate()
    token = bound_token(signing, key)
    nonce = await server_nonce(session, a, token, key)
    await admitted(session, b, token, key, nonce)
    proof = key.proof("GET", URL, access_token=token, nonce=nonce)
    start = asyncio.Event()

    async def copy(gate: Authgate) -> tuple[int, str]:
        await start.wait()
        status, reason, _ = await call(session, gate, token, proof)
        return status, reason

    tasks = [asyncio.create_task(copy(a if i % 2 else b)) for i in range(COPIES)]
    await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks)
    assert sorted(results).count((200, "")) == 1, results
    assert {r for r in results if r[0] != 200} == {(401, "dpop_proof_replayed")}


async def test_a_proof_accepted_by_one_replica_is_refused_by_the_other(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession, signing: Signing
) -> None:
    """Accepted by A, then replayed to B and to A: dpop_proof_replayed each time."""
    a, b = replicas
    key = DPoPKey.generate()
    token = bound_token(signing, key)
    nonce = await server_nonce(session, b, token, key)  # B's nonce is A's too
    await admitted(session, a, token, key, nonce)
    proof = key.proof("GET", URL, access_token=token, nonce=nonce)
    assert (await call(session, a, token, proof))[:2] == (200, "")
    for gate in (b, a):
        assert (await call(session, gate, token, proof))[:2] == (401, "dpop_proof_replayed")


async def test_a_bound_token_replayed_as_bearer_is_refused_by_every_replica(
    replicas: tuple[Authgate, Authgate], session: aiohttp.ClientSession, signing: Signing
) -> None:
    """A leaked bound token without its key: refused as Bearer on both replicas, on a
    route where plain bearer tokens are allowed (dpop: allowed)."""
    token = bound_token(signing, DPoPKey.generate())
    for gate in replicas:
        async with session.get(
            gate.url + "/open/items", headers={"Host": HOST, "Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "dpop_bound_token_as_bearer"


async def test_an_independent_dpop_client_gets_a_token_and_calls_through_the_sidecar(
    replicas: tuple[Authgate, Authgate],
    redis_url: str,
    key_prefix: str,
    upstream: Upstream,
) -> None:
    """requests-oauth2client: /token on A (use_dpop_nonce answered, proof retried), a
    DPoP token bound to its own key, then a call through B's sidecar (the resource's
    nonce answered too) that reaches the app."""
    a, b = replicas
    raw = await new_key(redis_url, key_prefix)
    key_id = raw.split("_")[1]

    def client_side() -> tuple[DPoPToken, requests.Response]:
        client = OAuth2Client(
            token_endpoint=f"{a.url}/token",
            client_id=key_id,
            client_secret=raw,
            dpop_bound_access_tokens=True,
            testing=True,  # plain http on the loopback (its only effect: no https check)
        )
        token = client.client_credentials(scope="read")
        assert isinstance(token, DPoPToken)
        return token, requests.get(f"{b.url}/api/items", auth=token, timeout=10)

    for _ in range(3):  # the epoch's own second, as in admitted()
        token, response = await asyncio.to_thread(client_side)
        if response.status_code != 401:
            break
        await asyncio.sleep(1.0)
    assert response.status_code == 200, response.text
    seen = upstream.requests_to("/api/items")
    assert seen and seen[-1].header("X-Authgate-Subject") == [f"apikey:{key_id}"]
    # The token is bound to the library's own key (its RFC 7638 thumbprint).
    payload = token.access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["cnf"] == {"jkt": token.dpop_key.dpop_jkt}
