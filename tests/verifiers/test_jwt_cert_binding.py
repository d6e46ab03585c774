"""The bearer verifier's certificate binding (RFC 8705 §3): tokens of authgate and of an
external issuer with ``cnf["x5t#S256"]`` pass only with that certificate, checked on every
request while the token's verification is cached."""

from __future__ import annotations

import pytest

from authgate.client.dpop import DPoPKey
from authgate.errors import AuthGateError
from authgate.verifiers.cert_binding import thumbprint
from tests.certs import make_cert
from tests.verifiers import NOW
from tests.verifiers.test_jwt_dpop import URL, Rig

CERT = make_cert("a")
OTHER = make_cert("b")


async def decide(rig: Rig, token: str, cert: bytes | None) -> str:
    context = rig.context(f"Bearer {token}")._replace(
        client_cert=thumbprint(cert) if cert is not None else None
    )
    try:
        await rig.gate.evaluate(context)
    except AuthGateError as exc:
        return exc.reason
    return "ok"


@pytest.mark.parametrize("external", [False, True], ids=["own", "external-issuer"])
async def test_a_bound_token_needs_its_certificate_every_time(external: bool) -> None:
    rig = Rig(dpop=False)
    token = rig.token(None, external=external, cnf={"x5t#S256": thumbprint(CERT)})
    assert await decide(rig, token, CERT) == "ok"
    assert await decide(rig, token, CERT) == "ok"  # cached
    assert await decide(rig, token, OTHER) == "certificate_binding_mismatch"
    assert await decide(rig, token, None) == "certificate_required"


async def test_a_plain_token_ignores_a_presented_certificate() -> None:
    rig = Rig(dpop=False)
    token = rig.token(None)
    assert await decide(rig, token, CERT) == "ok"
    assert await decide(rig, token, None) == "ok"


async def test_a_malformed_binding_is_token_malformed() -> None:
    rig = Rig(dpop=False)
    token = rig.token(None, cnf={"x5t#S256": "short"})
    assert await decide(rig, token, CERT) == "token_malformed"


async def test_a_token_bound_to_both_needs_the_proof_and_the_certificate() -> None:
    """DPoP and certificate binding together: as Bearer it is refused; with its proof it
    still needs its certificate."""
    rig = Rig()
    key = DPoPKey.generate()
    token = rig.token(None, cnf={"jkt": key.jkt, "x5t#S256": thumbprint(CERT)})
    assert await decide(rig, token, CERT) == "dpop_bound_token_as_bearer"

    async def with_proof(cert: bytes | None) -> str:
        proof = key.proof("GET", URL, access_token=token, iat=NOW)
        context = rig.context(f"DPoP {token}", proof)._replace(
            client_cert=thumbprint(cert) if cert is not None else None
        )
        try:
            await rig.gate.evaluate(context)
        except AuthGateError as exc:
            return exc.reason
        return "ok"

    assert await with_proof(None) == "certificate_required"
    assert await with_proof(OTHER) == "certificate_binding_mismatch"
    assert await with_proof(CERT) == "ok"
