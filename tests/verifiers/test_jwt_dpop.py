"""The bearer verifier's DPoP path (RFC 9449 §7.1) and the gate spending the proof's jti.

Tokens of authgate and of an external issuer are verified the same way; the proof is
checked on every request while the token's verification is cached; the gate spends the
proof's ``jti`` once (in the nonce store, with the credential's rate limits).
"""

from __future__ import annotations

from typing import Any

import pytest

from authgate.client.dpop import DPoPKey
from authgate.config.model import Rule
from authgate.crypto.keys import KeyRing, SigningKey
from authgate.errors import AuthGateError
from authgate.metrics import Metrics
from authgate.models import RequestContext
from authgate.pipeline import Gate
from authgate.policy.rules import Policy, compile_rule
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.verifiers.dpop_proof import ProofChecker
from authgate.verifiers.jwt_bearer import IssuerKeys, JWTBearerVerifier
from tests.support import AUDIENCE, ISSUER
from tests.verifiers import NOW, claims, forge, header_for

EXTERNAL = "https://idp.example"
URL = "https://app.test/api"


class Rig:
    """A verifier over authgate's issuer and an "external" one, a gate, a manual clock."""

    def __init__(self, *, dpop: bool = True) -> None:
        self.own = SigningKey.generate("ES256")
        self.idp = SigningKey.generate("ES256")
        self.clock = ManualClock(NOW * 1000)
        self.stores = MemoryStores(self.clock)
        self.metrics = Metrics()

        def issuer(name: str, key: SigningKey) -> IssuerKeys:
            return IssuerKeys(
                issuer=name,
                audiences=frozenset({AUDIENCE}),
                algorithms=frozenset({"ES256"}),
                require_jti=False,
                key_ring=KeyRing([key]),
            )

        self.verifier = JWTBearerVerifier(
            issuers=[issuer(ISSUER, self.own), issuer(EXTERNAL, self.idp)],
            revocations=self.stores.revocations,
            clock=self.clock,
            leeway_seconds=30,
            max_token_bytes=8192,
            cache_size=100,
            metrics=self.metrics,
            dpop=ProofChecker(
                algorithms=("ES256", "EdDSA"), window_seconds=60, max_proof_bytes=4096
            )
            if dpop
            else None,
        )
        self.gate = Gate(
            policy=Policy(
                [compile_rule(Rule(id="api", path_prefix="/api"))], default_action="deny"
            ),
            verifiers=[self.verifier],
            metrics=self.metrics,
            rate_limits=self.stores.rate_limits,
            nonces=self.stores.nonces,
        )

    def token(self, key: DPoPKey | None, *, external: bool = False, **extra: Any) -> str:
        signer = self.idp if external else self.own
        if key is not None:
            extra["cnf"] = {"jkt": key.jkt}
        return forge(
            signer,
            header=header_for(signer, typ="at+jwt"),
            payload=claims(iss=EXTERNAL if external else ISSUER, **extra),
        )

    @staticmethod
    def context(authorization: str, proof: str | None = None) -> RequestContext:
        headers = {"authorization": authorization}
        if proof is not None:
            headers["dpop"] = proof
        return RequestContext(
            method="GET",
            path="/api",
            query="",
            host="app.test",
            scheme="https",
            headers=headers,
            client_ip="127.0.0.1",
        )

    async def decide(self, authorization: str, proof: str | None = None) -> str:
        """``ok`` or the refusal's reason."""
        try:
            await self.gate.evaluate(self.context(authorization, proof))
        except AuthGateError as exc:
            return exc.reason
        return "ok"


@pytest.mark.parametrize("external", [False, True], ids=["own", "external-issuer"])
async def test_an_external_issuers_bound_token_is_verified_the_same_way(external: bool) -> None:
    """Own or external: the proof passes once, its replay and the Bearer scheme do not."""
    rig = Rig()
    key = DPoPKey.generate()
    token = rig.token(key, external=external)
    proof = key.proof("GET", URL, access_token=token, iat=NOW)
    assert await rig.decide(f"DPoP {token}", proof) == "ok"
    assert await rig.decide(f"DPoP {token}", proof) == "dpop_proof_replayed"
    assert await rig.decide(f"Bearer {token}") == "dpop_bound_token_as_bearer"
    thief = DPoPKey.generate().proof("GET", URL, access_token=token, iat=NOW)
    assert await rig.decide(f"DPoP {token}", thief) == "dpop_binding_mismatch"


async def test_the_spend_is_the_proofs_jti_in_the_subjects_namespace() -> None:
    """The principal's Spend: the jti, scoped to issuer and subject, kept spent until the
    proof could no longer be accepted, dated by the proof's iat (for the store's epoch)."""
    rig = Rig()
    key = DPoPKey.generate()
    token = rig.token(key, sub="alice")
    proof = key.proof("GET", URL, access_token=token, iat=NOW - 10, jti="the-jti")
    credential = rig.verifier.extract(rig.context(f"DPoP {token}", proof))
    principal = await rig.verifier.verify(credential, rig.context(f"DPoP {token}", proof))  # type: ignore[arg-type]
    spend = principal.spend
    assert spend is not None
    assert (spend.scope, spend.nonce) == (f"jwt:{ISSUER}:alice", "the-jti")
    assert spend.signed_at_ms == (NOW - 10) * 1000
    assert spend.ttl_ms == (NOW - 10 + 60 + 1 - NOW) * 1000
    assert principal.subject == "alice"


async def test_the_token_is_cached_and_the_proof_checked_every_time() -> None:
    """Second request: a cache hit for the token, and a full check of the new proof."""
    rig = Rig()
    key = DPoPKey.generate()
    token = rig.token(key)
    for jti in ("one", "two"):
        proof = key.proof("GET", URL, access_token=token, iat=NOW, jti=jti)
        assert await rig.decide(f"DPoP {token}", proof) == "ok"
    hits = rig.metrics.registry.get_sample_value(
        "authgate_cache_lookups_total", {"cache": "jwt", "result": "hit"}
    )
    assert hits == 1
    forged = key.proof("GET", URL, access_token=token, iat=NOW, jti="three")
    forged = forged[:-4] + ("AAAA" if not forged.endswith("AAAA") else "BBBB")
    assert await rig.decide(f"DPoP {token}", forged) == "dpop_proof_invalid"


async def test_an_expired_bound_token_is_refused_before_its_proof() -> None:
    """The token's own checks come first (401 token_expired), cached or not."""
    rig = Rig()
    key = DPoPKey.generate()
    token = rig.token(key, exp=NOW + 60)
    assert (
        await rig.decide(f"DPoP {token}", key.proof("GET", URL, access_token=token, iat=NOW))
        == "ok"
    )
    rig.clock.advance(200_000)
    later = NOW + 200
    proof = key.proof("GET", URL, access_token=token, iat=later)
    assert await rig.decide(f"DPoP {token}", proof) == "token_expired"


@pytest.mark.parametrize(
    "cnf",
    [{"jkt": 5}, "jkt", {"jkt": ""}, {"jkt": "x" * 129}],
    ids=["int", "string", "empty", "long"],
)
async def test_a_malformed_binding_is_token_malformed(cnf: Any) -> None:
    """``cnf`` must be an object and ``cnf.jkt`` a thumbprint-sized string."""
    rig = Rig()
    token = rig.token(None, cnf=cnf)
    assert await rig.decide(f"Bearer {token}") == "token_malformed"


async def test_with_dpop_off_the_scheme_is_not_a_credential() -> None:
    """``jwt.dpop.enabled: false``: ``Authorization: DPoP`` is nobody's credential
    (credential_missing), and a bound token is still refused as Bearer."""
    rig = Rig(dpop=False)
    key = DPoPKey.generate()
    token = rig.token(key)
    proof = key.proof("GET", URL, access_token=token, iat=NOW)
    assert await rig.decide(f"DPoP {token}", proof) == "credential_missing"
    assert await rig.decide(f"Bearer {token}") == "dpop_bound_token_as_bearer"
