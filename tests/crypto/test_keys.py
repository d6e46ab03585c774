"""Signing keys, the key ring, JWK vetting and the strict P-256 DER check."""

from __future__ import annotations

import math
import secrets
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.crypto.jws import parse_compact_jws
from authgate.crypto.keys import (
    KeyRing,
    SigningKey,
    VerificationKey,
    algorithm_for,
    b64url,
    has_roca_fingerprint,
    public_jwk,
    thumbprint,
    verify_p256_der,
)
from authgate.verifiers.jwt_bearer import verify_signature
from tests.support import P256_ORDER

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


# --- signing keys ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["es", "rs", "ed"], ids=["ES256", "RS256", "EdDSA"])
def test_signing_key_round_trip(which: str, request: pytest.FixtureRequest) -> None:
    """A generated key signs tokens its own verification key accepts; kid is its thumbprint."""
    key: SigningKey = request.getfixturevalue(which)
    jws = parse_compact_jws(key.sign({"sub": "x"}))
    assert jws.alg == key.alg
    assert jws.kid == key.kid == thumbprint(key.public_jwk())
    verify_signature(key.alg, key.verification_key(), jws.signing_input, jws.signature)


@pytest.mark.parametrize("which", ["es", "rs", "ed"], ids=["ES256", "RS256", "EdDSA"])
def test_public_jwk_has_no_private_members(which: str, request: pytest.FixtureRequest) -> None:
    """The published JWK carries the public key, ``kid``, ``alg`` and ``use`` only."""
    key: SigningKey = request.getfixturevalue(which)
    jwk = key.public_jwk()
    assert not PRIVATE_MEMBERS & set(jwk)
    assert (jwk["alg"], jwk["use"], jwk["kid"]) == (key.alg, "sig", key.kid)


@pytest.mark.parametrize("which", ["es", "rs", "ed"], ids=["ES256", "RS256", "EdDSA"])
def test_pem_round_trip_keeps_the_kid(which: str, request: pytest.FixtureRequest) -> None:
    """``to_pem`` then ``from_pem`` gives the same key (same thumbprint ``kid``)."""
    key: SigningKey = request.getfixturevalue(which)
    assert SigningKey.from_pem(key.to_pem()).kid == key.kid


def test_generate_refuses_unknown_algorithms() -> None:
    """Only ES256, RS256 and EdDSA keys are generated."""
    with pytest.raises(ValueError, match="cannot generate"):
        SigningKey.generate("HS256")


def _pem(private: Any) -> bytes:
    return bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP521R1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
        lambda: dsa.generate_private_key(key_size=2048),
        ed448.Ed448PrivateKey.generate,
    ],
    ids=["P-521", "RSA-1024", "DSA", "Ed448"],
)
def test_from_pem_refuses_unsupported_keys(make: Any) -> None:
    """Keys authgate cannot sign JWTs with are refused at load time."""
    with pytest.raises(ValueError):
        SigningKey.from_pem(_pem(make()))


def test_algorithm_for_p384_is_es384() -> None:
    """A P-384 key is an ES384 key."""
    assert algorithm_for(ec.generate_private_key(ec.SECP384R1())) == "ES384"


def test_rfc7638_thumbprint_example() -> None:
    """The RFC 7638 section 3.1 example key has the published thumbprint."""
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
        "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR"
        "0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWh"
        "AI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


# --- key ring --------------------------------------------------------------------------


def test_key_ring_needs_a_key() -> None:
    """An empty ring is a configuration error."""
    with pytest.raises(ValueError, match="at least one"):
        KeyRing([])


def test_key_ring_lookup(es: SigningKey, rs: SigningKey, ed: SigningKey) -> None:
    """The first key signs; every key verifies by ``kid``; unknown kids are ``None``."""
    ring = KeyRing([es, rs, ed])
    assert ring.current is es
    for key in (es, rs, ed):
        found = ring.verification_key(key.kid)
        assert found is not None
        assert (found.kid, found.alg) == (key.kid, key.alg)
    assert ring.verification_key("nope") is None
    assert ring.verification_key("") is None


def test_only_key_needs_exactly_one_key(es: SigningKey, rs: SigningKey) -> None:
    """Tokens without ``kid`` are only resolvable against a one-key ring."""
    only = KeyRing([es]).only_key()
    assert only is not None
    assert only.kid == es.kid
    assert KeyRing([es, rs]).only_key() is None


def test_ring_jwks_is_public_and_reloadable(es: SigningKey, rs: SigningKey, ed: SigningKey) -> None:
    """The published JWKS holds every key, no private member, and each entry loads back."""
    document = KeyRing([es, rs, ed]).jwks()
    assert [entry["kid"] for entry in document["keys"]] == [es.kid, rs.kid, ed.kid]
    for entry in document["keys"]:
        assert not PRIVATE_MEMBERS & set(entry)
        loaded = VerificationKey.from_jwk(entry, allowed=["ES256", "RS256", "EdDSA"])
        assert loaded is not None
        assert loaded.kid == entry["kid"]


# --- JWK vetting -----------------------------------------------------------------------


def _roca_modulus() -> int:
    """A 2048-bit odd modulus with the ROCA structure n = 65537^c (mod M)."""
    primorial = 2 * math.prod(p for p in range(3, 168) if all(p % q for q in range(2, p)))
    while True:
        n = pow(65537, secrets.randbelow(2**20), primorial) + primorial * secrets.randbits(
            2048 - primorial.bit_length() + 1
        )
        if n.bit_length() == 2048 and n % 2 == 1:
            return n


def _rsa_jwk(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "kty": "RSA",
        "n": b64url(n.to_bytes((n.bit_length() + 7) // 8, "big")),
        "e": "AQAB",
        "alg": "RS256",
        **extra,
    }


def test_roca_fingerprint_detects_the_structure() -> None:
    """Moduli of the ROCA form are flagged; ordinary RSA moduli are not."""
    assert has_roca_fingerprint(_roca_modulus())
    for _ in range(5):
        ordinary = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert not has_roca_fingerprint(ordinary.public_key().public_numbers().n)


def test_roca_key_is_refused_but_an_ordinary_one_loads(rs: SigningKey) -> None:
    """A JWK whose modulus has the ROCA fingerprint never becomes a verification key."""
    assert VerificationKey.from_jwk(_rsa_jwk(_roca_modulus()), allowed=["RS256"]) is None
    assert VerificationKey.from_jwk(rs.public_jwk(), allowed=["RS256"]) is not None


def _with(jwk: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(jwk)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def _ec_private_d(key: SigningKey) -> str:
    assert isinstance(key.private_key, ec.EllipticCurvePrivateKey)
    return b64url(key.private_key.private_numbers().private_value.to_bytes(32, "big"))


@pytest.mark.parametrize(
    ("change", "allowed"),
    [
        ({"use": "enc"}, ["ES256"]),
        ({"use": ["sig"]}, ["ES256"]),
        ({"key_ops": ["encrypt"]}, ["ES256"]),
        ({"key_ops": "verify"}, ["ES256"]),
        ({"key_ops": [1, "verify"]}, ["ES256"]),
        ({"key_ops": ["sign, verify"]}, ["ES256"]),
        ({"d": "PRIVATE"}, ["ES256"]),
        ({"k": "c2VjcmV0"}, ["ES256"]),
        ({}, ["RS256", "EdDSA"]),
        ({"alg": "RS256"}, ["ES256", "RS256"]),
        ({"alg": "ES384"}, ["ES256", "ES384"]),
        ({"crv": "P-384"}, ["ES256"]),
        ({"alg": None, "crv": "secp256k1"}, ["ES256"]),
        ({"kty": "RSA"}, ["ES256", "RS256"]),
        ({"kty": "oct"}, ["ES256"]),
        ({"x": 12345}, ["ES256"]),
        ({"y": "AAAA"}, ["ES256"]),
        ({"x": None}, ["ES256"]),
        ({"alg": ["ES256"]}, ["ES256"]),
    ],
    ids=[
        "use-enc",
        "use-list",
        "key-ops-encrypt",
        "key-ops-string",
        "key-ops-non-string",
        "key-ops-one-comma-string",
        "private-d",
        "symmetric-k",
        "alg-not-allowed",
        "alg-of-other-kty",
        "alg-of-other-curve",
        "curve-mismatch",
        "unsupported-curve",
        "kty-mismatch",
        "kty-oct",
        "x-not-a-string",
        "y-truncated",
        "x-missing",
        "alg-list",
    ],
)
def test_from_jwk_refuses(change: dict[str, Any], allowed: list[str], es: SigningKey) -> None:
    """A JWKS entry that is not a plain public key for one allowed algorithm is skipped."""
    jwk = _with(es.public_jwk(), **change)
    assert VerificationKey.from_jwk(jwk, allowed=allowed) is None


def test_from_jwk_with_real_private_member_is_refused(es: SigningKey) -> None:
    """Even a genuine private EC JWK (with ``d``) is not accepted as a verification key."""
    jwk = _with(es.public_jwk(), d=_ec_private_d(es))
    assert VerificationKey.from_jwk(jwk, allowed=["ES256"]) is None


def test_from_jwk_accepts_key_ops_with_verify(es: SigningKey) -> None:
    """``key_ops`` naming ``verify`` is fine."""
    jwk = _with(es.public_jwk(), key_ops=["verify"])
    assert VerificationKey.from_jwk(jwk, allowed=["ES256"]) is not None


def test_rsa_key_without_alg_needs_a_single_rsa_choice(rs: SigningKey) -> None:
    """An RSA JWK without ``alg`` is usable only when RS256 is the sole RSA algorithm."""
    jwk = _with(rs.public_jwk(), alg=None)
    found = VerificationKey.from_jwk(jwk, allowed=["RS256", "ES256"])
    assert found is not None
    assert found.alg == "RS256"
    assert VerificationKey.from_jwk(jwk, allowed=["RS256", "PS256"]) is None


def test_ec_key_without_alg_takes_its_curve_algorithm(es: SigningKey) -> None:
    """An EC JWK without ``alg`` names its algorithm through ``crv``."""
    found = VerificationKey.from_jwk(_with(es.public_jwk(), alg=None), allowed=["ES256", "ES384"])
    assert found is not None
    assert found.alg == "ES256"


def test_short_rsa_key_is_refused() -> None:
    """RSA keys under 2048 bits never verify anything."""
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    jwk = {**public_jwk(short), "alg": "RS256"}
    assert VerificationKey.from_jwk(jwk, allowed=["RS256"]) is None


def test_non_string_kid_becomes_no_kid(es: SigningKey) -> None:
    """A ``kid`` that is not a string is treated as absent rather than stringified."""
    found = VerificationKey.from_jwk(_with(es.public_jwk(), kid=42), allowed=["ES256"])
    assert found is not None
    assert found.kid == ""


_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.binary(max_size=8).map(b64url),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from(["es", "rs", "ed", "none"]),
    changes=st.dictionaries(
        st.sampled_from(["kty", "crv", "x", "y", "n", "e", "alg", "use", "key_ops", "kid", "d"]),
        _JSONISH,
        max_size=4,
    ),
)
def test_from_jwk_never_raises(
    base: str, changes: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """Arbitrary JWKS entries yield a key or ``None``; nothing ever raises."""
    jwk: dict[str, Any] = {} if base == "none" else request.getfixturevalue(base).public_jwk()
    jwk.update(changes)
    found = VerificationKey.from_jwk(jwk, allowed=["ES256", "RS256", "EdDSA", "PS256"])
    assert found is None or found.alg in {"ES256", "RS256", "EdDSA", "PS256"}


# --- strict DER ECDSA (BPC) ------------------------------------------------------------


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _sign_der(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def test_der_signature_verifies(p256: ec.EllipticCurvePrivateKey) -> None:
    """A DER signature from cryptography verifies."""
    verify_p256_der(p256.public_key(), b"msg", _sign_der(p256, b"msg"))


def _long_form(der: bytes) -> bytes:
    # SEQUENCE length in long form (0x81 LL) instead of the short form DER requires.
    assert der[0] == 0x30 and der[1] < 0x80
    return bytes([0x30, 0x81, der[1]]) + der[2:]


def _padded_r(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    r_bytes = b"\x00" + r.to_bytes((r.bit_length() + 8) // 8, "big")
    s_bytes = s.to_bytes((s.bit_length() + 8) // 8, "big")
    body = bytes([0x02, len(r_bytes)]) + r_bytes + bytes([0x02, len(s_bytes)]) + s_bytes
    return bytes([0x30, len(body)]) + body


@pytest.mark.parametrize(
    "mangle",
    [
        _long_form,
        _padded_r,
        lambda der: der + b"\x00",
        lambda der: der[:-1],
        lambda der: b"\x31" + der[1:],
        lambda der: b"",
        lambda der: der[2:],
    ],
    ids=[
        "long-form-length",
        "non-minimal-integer",
        "trailing-byte",
        "truncated",
        "wrong-tag",
        "empty",
        "no-sequence",
    ],
)
def test_non_strict_der_is_refused(mangle: Any, p256: ec.EllipticCurvePrivateKey) -> None:
    """BER variants of a valid signature are refused: one byte string per (r, s)."""
    der = _sign_der(p256, b"msg")
    mangled = mangle(der)
    assert mangled != der
    with pytest.raises(InvalidSignature):
        verify_p256_der(p256.public_key(), b"msg", mangled)


def test_der_high_s_twin_verifies(p256: ec.EllipticCurvePrivateKey) -> None:
    """(r, n-s) is valid ECDSA: documented, and why replay protection keys on the nonce."""
    der = _sign_der(p256, b"msg")
    r, s = decode_dss_signature(der)
    twin = encode_dss_signature(r, P256_ORDER - s)
    assert twin != der
    verify_p256_der(p256.public_key(), b"msg", twin)


def test_der_from_another_curve_key_is_refused() -> None:
    """Only P-256 keys are accepted."""
    p384 = ec.generate_private_key(ec.SECP384R1())
    der = p384.sign(b"msg", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        verify_p256_der(p384.public_key(), b"msg", der)


def test_der_over_another_message_is_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    """The signature binds the message."""
    with pytest.raises(InvalidSignature):
        verify_p256_der(p256.public_key(), b"msg2", _sign_der(p256, b"msg"))


@settings(max_examples=200, deadline=None)
@given(signature=st.binary(max_size=80))
def test_der_garbage_raises_only_invalid_signature(
    p256: ec.EllipticCurvePrivateKey, signature: bytes
) -> None:
    """Random bytes never verify and never raise anything but InvalidSignature."""
    with pytest.raises(InvalidSignature):
        verify_p256_der(p256.public_key(), b"msg", signature)


@pytest.fixture(scope="module")
def der_signature(p256: ec.EllipticCurvePrivateKey) -> bytes:
    return _sign_der(p256, b"msg")


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_der_one_byte_mutation_never_verifies(
    p256: ec.EllipticCurvePrivateKey, der_signature: bytes, data: st.DataObject
) -> None:
    """Changing any one byte of a valid DER signature makes it fail."""
    verify_p256_der(p256.public_key(), b"msg", der_signature)
    index = data.draw(st.integers(min_value=0, max_value=len(der_signature) - 1))
    original = der_signature[index]
    value = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != original))
    mutated = der_signature[:index] + bytes([value]) + der_signature[index + 1 :]
    with pytest.raises(InvalidSignature):
        verify_p256_der(p256.public_key(), b"msg", mutated)
