"""The DPoP proof checks: ``authgate.verifiers.dpop_proof`` (``ProofChecker.check`` and
``normalize_htu``), with one Ed25519 client key and a fixed clock.

The first byte picks the entry point (the seed files start with ``0`` to ``3``):

* ``0``: the rest is the ``DPoP`` header as sent, to ``ProofChecker.check``;
* ``1``: the rest is the proof's claims, in a proof validly signed by the client key;
* ``2``: the rest is the proof's header (its ``jwk`` included), with valid claims, signed
  by the client key;
* ``3``: the rest is an ``htu``, to ``normalize_htu``.

Contract: ``check`` returns a :class:`DPoPProof` or raises a 4xx ``DPoPError`` leaf (401),
never another exception; ``normalize_htu`` returns a string or raises
``DPoPProofInvalid``. Properties: an accepted proof names the client key's thumbprint, a
printable ``jti`` and an ``iat`` within the window; a normalised ``htu`` normalises to
itself.
"""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives.asymmetric import ed25519
from harness import check_refusal, instrumented, main, text

with instrumented():
    from authgate.crypto.keys import public_jwk, thumbprint
    from authgate.errors import AuthGateError, DPoPError, DPoPProofInvalid
    from authgate.verifiers.dpop_proof import DPoPProof, ProofChecker, ath_of, normalize_htu

NOW = 1_700_000_000
URL = "https://app.test/api"
TOKEN = "access.token.value"
PRIVATE = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
JWK = public_jwk(PRIVATE.public_key())
JKT = thumbprint(JWK)
CHECKER = ProofChecker(
    algorithms=("ES256", "ES384", "EdDSA", "RS256", "PS256"),
    window_seconds=60,
    max_proof_bytes=8192,
)
HEADER = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": JWK}
CLAIMS = {"jti": "j-1", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath_of(TOKEN)}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed(header: bytes, payload: bytes) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    return f"{signing_input}.{b64url(PRIVATE.sign(signing_input.encode('ascii')))}"


def _check(proof: str) -> None:
    try:
        checked = CHECKER.check(proof, method="GET", urls={URL}, now=NOW, access_token=TOKEN)
    except DPoPError as exc:
        check_refusal(exc)
        return
    except AuthGateError as exc:
        raise AssertionError(f"not a DPoP refusal: {exc!r}") from exc
    assert isinstance(checked, DPoPProof), checked
    assert checked.jkt == JKT, checked
    assert checked.jti.isascii() and checked.jti.isprintable(), checked
    assert abs(checked.iat - NOW) <= 60, checked


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode == 1:
        _check(signed(json.dumps(HEADER).encode(), rest))
    elif mode == 2:
        _check(signed(rest, json.dumps(CLAIMS).encode()))
    elif mode == 3:
        try:
            normalised = normalize_htu(text(rest))
        except DPoPProofInvalid:
            return
        assert normalize_htu(normalised) == normalised, normalised
    else:
        _check(text(rest))


if __name__ == "__main__":
    main(test_one_input)
