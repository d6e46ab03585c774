"""The SDK's DPoP proof builder (``authgate.client.DPoPKey``) against authgate's checks."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.client import DPoPKey
from authgate.crypto.keys import public_jwk, thumbprint
from authgate.verifiers.dpop_proof import ProofChecker, ath_of

NOW = 1_700_000_000
CHECKER = ProofChecker(
    algorithms=("ES256", "ES384", "EdDSA", "RS256", "PS256"),
    window_seconds=60,
    max_proof_bytes=4096,
)


def segment(proof: str, index: int) -> dict[str, Any]:
    raw = proof.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA", "RS256", "PS256"])
def test_a_proof_of_each_algorithm_passes_authgates_checks(alg: str) -> None:
    """Each algorithm's proof is accepted and names the key's own thumbprint."""
    key = DPoPKey.generate(alg)
    proof = key.proof("get", "https://app.test/a?b=c#d", access_token="t.o.k", iat=NOW)
    checked = CHECKER.check(
        proof, method="GET", urls={"https://app.test/a"}, now=NOW, access_token="t.o.k"
    )
    assert checked.jkt == key.jkt == thumbprint(public_jwk(key.private_key.public_key()))


def test_the_proof_says_what_rfc_9449_asks() -> None:
    """typ, alg and the public jwk in the header; jti, htm, htu (no query or fragment),
    iat, ath and nonce in the claims; a fresh jti each time."""
    key = DPoPKey(ec.generate_private_key(ec.SECP256R1()))
    proof = key.proof("POST", "https://as.test/token?x=1", access_token="tok", nonce="n-1")
    header, claims = segment(proof, 0), segment(proof, 1)
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk}
    assert "d" not in header["jwk"]
    assert claims["htm"] == "POST" and claims["htu"] == "https://as.test/token"
    assert claims["ath"] == ath_of("tok") and claims["nonce"] == "n-1"
    assert isinstance(claims["iat"], int) and claims["jti"]
    assert segment(key.proof("POST", "https://as.test/token"), 1)["jti"] != claims["jti"]


def test_headers_carry_the_dpop_scheme_and_a_proof() -> None:
    """``headers()``: ``Authorization: DPoP <token>`` and a proof bound to that token."""
    key = DPoPKey.generate()
    headers = key.headers("GET", "https://app.test/a", "tok")
    assert headers["Authorization"] == "DPoP tok"
    assert segment(headers["DPoP"], 1)["ath"] == ath_of("tok")


def test_an_unknown_algorithm_is_refused() -> None:
    """No key for HS256 or none."""
    for alg in ("HS256", "none"):
        with pytest.raises(ValueError, match="no DPoP key"):
            DPoPKey.generate(alg)
