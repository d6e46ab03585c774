"""Tokens, signatures, API keys, pair secrets and proofs never reach a log line."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer

from authgate.client import BPCSigner, DPoPKey, proof_header
from authgate.crypto.keys import KeyRing
from authgate.log import JSONFormatter
from authgate.stores.memory import MemoryStores
from authgate.verifiers.cert_binding import thumbprint
from authgate.web.app import create_app
from authgate.web.state import SERVICES
from tests.certs import client_cert, make_cert
from tests.support import TokenFactory, echo_app, make_settings, serve_app


async def test_credentials_never_appear_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Good and bad requests of every credential type leave no secret in the JSON logs."""
    caplog.set_level(logging.DEBUG)
    tokens = TokenFactory()
    secrets: list[str] = []
    async with serve_app(echo_app()) as upstream:
        settings = make_settings(
            development=True,
            proxy={"upstream": f"http://127.0.0.1:{upstream}"},
            hmac={"challenge_secret": "c" * 40},
            secrets={"key_encryption_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
        )
        app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
        async with TestClient(TestServer(app)) as client:
            good, expired = tokens.mint(), tokens.mint(exp=1)
            secrets += [good, expired, good.split(".")[2]]
            for token in (good, expired, good + "x"):
                await client.get("/api/x", headers={"Authorization": f"Bearer {token}"})

            key, jwk, _ = BPCSigner.generate_key()
            resp = await client.post(
                "/bpc/register",
                json={
                    "name": "d",
                    "scope": "read",
                    "mode": "development",
                    "secret": "pair-secret-xyz",
                    "pubJwk": jwk,
                },
            )
            signer = BPCSigner((await resp.json())["pairId"], "pair-secret-xyz", key)
            signed = signer.headers("GET", "/api/x")
            secrets += ["pair-secret-xyz", signed["X-BPC-Signature"], signed["X-BPC-Signed-Data"]]
            await client.get("/api/x", headers=signed)
            await client.get("/api/x", headers=signed)  # replay: a failure path
            wrong = BPCSigner(signer.pair_id, "wrong-secret-1", key).headers("GET", "/api/x")
            await client.get("/api/x", headers=wrong)

            _, raw_key = await app[SERVICES].api_keys.create(name="k", scopes=["read"])
            challenge = await (await client.get("/challenge")).json()
            header = proof_header(challenge, raw_key, "GET", "/api/x")
            secrets += [raw_key, header.rsplit(".", 1)[1], "c" * 40]
            await client.get("/api/x", headers={"Authorization": header})
            await client.get("/api/x", headers={"Authorization": header})

            dpop_key = DPoPKey.generate()
            bound = tokens.mint(cnf={"jkt": dpop_key.jkt})
            dpop = dpop_key.headers("GET", str(client.make_url("/api/x")), bound)
            secrets += [bound, bound.split(".")[2], dpop["DPoP"], dpop["DPoP"].split(".")[2]]
            await client.get("/api/x", headers=dpop)
            await client.get("/api/x", headers=dpop)  # replay: a failure path
            await client.get("/api/x", headers={"Authorization": f"Bearer {bound}"})
            thief = DPoPKey.generate().headers("GET", str(client.make_url("/api/x")), bound)
            await client.get("/api/x", headers=thief)

            # Certificate-bound (RFC 8705): the certificate is no secret, but it is the
            # client's, so neither its header value nor its thumbprint is logged.
            cert, other = make_cert("logged"), make_cert("other")
            cert_bound = tokens.mint(cnf={"x5t#S256": thumbprint(cert)})
            secrets += [cert_bound, client_cert(cert)[1:41], thumbprint(cert), thumbprint(other)]
            for der in (cert, other, None):
                headers = {"Authorization": f"Bearer {cert_bound}"}
                if der is not None:
                    headers["Client-Cert"] = client_cert(der)
                await client.get("/api/x", headers=headers)
            await client.get("/api/x", headers={"Client-Cert": ":AAAA:"})

    formatter = JSONFormatter()
    text = "\n".join(formatter.format(r) for r in caplog.records) + "\n".join(
        r.getMessage() for r in caplog.records
    )
    assert caplog.records, "the requests were logged at all"
    assert '"event":"decision"' in text
    for reason in (
        "dpop_proof_replayed",
        "dpop_bound_token_as_bearer",
        "dpop_binding_mismatch",
        "certificate_binding_mismatch",
        "certificate_required",
    ):
        assert reason in text, f"the DPoP refusal {reason} was not logged"
    for secret in secrets:
        assert secret not in text, f"a secret reached the logs: {secret[:12]}..."
