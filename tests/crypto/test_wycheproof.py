"""Wycheproof vectors through the exact primitives and parse path authgate uses.

* ES256 / RS256 / EdDSA: :func:`authgate.verifiers.jwt_bearer.verify_signature`, the one
  call every bearer token's signature goes through (length rule, then PyJWT).
* P-256 DER (BPC): :func:`authgate.crypto.keys.verify_p256_der`.
* JWS and JWK: :func:`authgate.crypto.jws.parse_compact_jws` then :meth:`IssuerKeys.verify_jws` against the
  vector's key set served as a JWKS (so JWK vetting in ``VerificationKey.from_jwk`` runs).

Every ``valid`` vector must verify and every ``invalid`` one must fail, except where a
table below says otherwise and why. The data lives in ``tests/data/wycheproof``
(provenance and licence in its README).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key

from authgate.crypto.jwks_cache import JWKSCache
from authgate.crypto.jws import parse_compact_jws
from authgate.crypto.keys import ALGORITHM_KEY_TYPES, VerificationKey, verify_p256_der
from authgate.errors import AuthGateError, TokenSignatureInvalid
from authgate.verifiers.jwt_bearer import IssuerKeys, verify_signature
from tests.wycheproof import wycheproof_dir

WYCHEPROOF = wycheproof_dir()


@cache
def _load(name: str) -> dict[str, Any]:
    path = WYCHEPROOF / name
    if not path.is_file():  # fail, never skip: these vectors are the point of the file
        raise FileNotFoundError(
            f"Wycheproof vectors missing: {path} (see tests/data/wycheproof/README.md)"
        )
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def _tests(name: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for group in _load(name)["testGroups"]:
        for test in group["tests"]:
            yield group, test


P1363 = "ecdsa_secp256r1_sha256_p1363_test.json"
DER = "ecdsa_secp256r1_sha256_test.json"
RSA = "rsa_signature_2048_sha256_test.json"
ED25519 = "ed25519_test.json"
JWS = "json_web_signature_test.json"
JWK = "json_web_key_test.json"


def test_vector_files_match_their_provenance() -> None:
    """Each vector file is byte-identical to the snapshot recorded in PROVENANCE.json."""
    provenance = json.loads((WYCHEPROOF / "PROVENANCE.json").read_bytes())
    recorded = {entry["file"]: entry for entry in provenance}
    for name in (P1363, DER, RSA, ED25519, JWS, JWK):
        digest = hashlib.sha256((WYCHEPROOF / name).read_bytes()).hexdigest()
        assert digest == recorded[name]["sha256"], name
        assert sum(1 for _ in _tests(name)) == recorded[name]["numberOfTests"], name


# --- raw signature primitives ----------------------------------------------------------

# "acceptable" vectors: the behaviour authgate chose, asserted like any other outcome.
# RSA tcId 8 ("Missing NULL in the ASN encoding", legacy PKCS#1 v1.5 without the NULL
# parameter): authgate REFUSES it; cryptography/OpenSSL verify the canonical encoding only
# and nothing legitimate signs JWTs that way.
ACCEPTABLE_OUTCOME: dict[tuple[str, int], bool] = {(RSA, 8): False}


def _primitive_cases(name: str, alg: str) -> list[Any]:
    cases = []
    for group, test in _tests(name):
        public = load_der_public_key(bytes.fromhex(group["publicKeyDer"]))
        key = VerificationKey(kid="", alg=alg, key=public)
        if test["result"] == "acceptable":
            expected = ACCEPTABLE_OUTCOME[(name, test["tcId"])]
        else:
            expected = test["result"] == "valid"
        cases.append(pytest.param(key, test, expected, id=f"tc{test['tcId']}"))
    return cases


def _check_primitive(alg: str, key: VerificationKey, test: dict[str, Any], expected: bool) -> None:
    message, signature = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
    if expected:
        verify_signature(alg, key, message, signature)
    else:
        with pytest.raises(TokenSignatureInvalid):
            verify_signature(alg, key, message, signature)


@pytest.mark.parametrize(("key", "test", "expected"), _primitive_cases(P1363, "ES256"))
def test_es256_p1363(key: VerificationKey, test: dict[str, Any], expected: bool) -> None:
    """ES256 (raw r||s): valid vectors verify, invalid ones raise TokenSignatureInvalid."""
    _check_primitive("ES256", key, test, expected)


@pytest.mark.parametrize(("key", "test", "expected"), _primitive_cases(RSA, "RS256"))
def test_rs256_pkcs1(key: VerificationKey, test: dict[str, Any], expected: bool) -> None:
    """RS256 (PKCS#1 v1.5, 2048 bits): valid vectors verify, invalid ones are refused."""
    _check_primitive("RS256", key, test, expected)


@pytest.mark.parametrize(("key", "test", "expected"), _primitive_cases(ED25519, "EdDSA"))
def test_ed25519(key: VerificationKey, test: dict[str, Any], expected: bool) -> None:
    """EdDSA (Ed25519): valid vectors verify, invalid ones are refused."""
    _check_primitive("EdDSA", key, test, expected)


def test_every_acceptable_vector_has_a_recorded_outcome() -> None:
    """New "acceptable" vectors must be decided in ACCEPTABLE_OUTCOME, not defaulted."""
    found = {
        (name, test["tcId"])
        for name in (P1363, RSA, ED25519, DER)
        for _, test in _tests(name)
        if test["result"] == "acceptable"
    }
    assert found == set(ACCEPTABLE_OUTCOME)


def _naive_split_accepts(public: ec.EllipticCurvePublicKey, message: bytes, sig: bytes) -> bool:
    half = len(sig) // 2
    der = encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
    try:
        public.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _resized_cases() -> list[Any]:
    return [
        pytest.param(group, test, id=f"tc{test['tcId']}")
        for group, test in _tests(P1363)
        if "SignatureSize" in test["flags"]
    ]


@pytest.mark.parametrize(("group", "test"), _resized_cases())
def test_es256_length_rule_is_what_refuses_resized_signatures(
    group: dict[str, Any], test: dict[str, Any]
) -> None:
    """A decoder that splits r||s in half would accept these invalid vectors; the 64-byte
    rule refuses them before any arithmetic."""
    public = load_der_public_key(bytes.fromhex(group["publicKeyDer"]))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    message, signature = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
    assert test["result"] == "invalid"
    assert len(signature) != 64
    assert _naive_split_accepts(public, message, signature)
    with pytest.raises(TokenSignatureInvalid):
        verify_signature("ES256", VerificationKey("", "ES256", public), message, signature)


def test_resized_signature_vectors_are_the_twelve_the_readme_names() -> None:
    """The length rule is load-bearing for exactly the 12 vectors the test-data README counts."""
    assert len(_resized_cases()) == 12


@pytest.mark.parametrize("name", [P1363, ED25519, RSA], ids=["p1363", "ed25519", "rsa"])
def test_group_jwks_load_as_the_same_keys(name: str) -> None:
    """Where a group carries a JWK, ``from_jwk`` loads the very key its DER encodes."""
    alg = {P1363: "ES256", ED25519: "EdDSA", RSA: "RS256"}[name]
    compared = 0
    for group in _load(name)["testGroups"]:
        jwk = group.get("publicKeyJwk") or group.get("keyJwk")
        if jwk is None:
            continue
        der_key = load_der_public_key(bytes.fromhex(group["publicKeyDer"]))
        loaded = VerificationKey.from_jwk(jwk, allowed=[alg])
        assert loaded is not None, group["tests"][0]["tcId"]
        assert isinstance(
            der_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
        )
        assert _public_bytes(loaded.key) == _public_bytes(der_key)
        compared += 1
    assert compared > 0


def _public_bytes(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _der_cases() -> list[Any]:
    cases = []
    for group, test in _tests(DER):
        public = load_der_public_key(bytes.fromhex(group["publicKeyDer"]))
        cases.append(pytest.param(public, test, id=f"tc{test['tcId']}"))
    return cases


@pytest.mark.parametrize(("public", "test"), _der_cases())
def test_p256_der(public: ec.EllipticCurvePublicKey, test: dict[str, Any]) -> None:
    """P-256 DER (the BPC client's format): valid verifies; BER and every invalid one raise."""
    message, signature = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
    assert test["result"] in {"valid", "invalid"}  # the file has no "acceptable" vectors
    if test["result"] == "valid":
        verify_p256_der(public, message, signature)
    else:
        with pytest.raises(InvalidSignature):
            verify_p256_der(public, message, signature)


# --- JWS and JWK, end to end through the verifier's parse and signature path -----------

SUPPORTED = frozenset(ALGORITHM_KEY_TYPES)
"""Every algorithm authgate can verify; the issuer in these tests allows them all."""

# Vectors whose label authgate does not follow, or follows for another reason than the
# label suggests (see the test-data README). Value: the refusal reason, or None = accepted.
JWS_QUIRKS: dict[int, tuple[str | None, str]] = {
    346: ("token_algorithm_not_allowed", "RFC 7520 fig. 20: token PS384, key bound to PS256"),
    350: ("token_algorithm_not_allowed", "same as 346 with key_ops on the key"),
    347: ("token_algorithm_not_allowed", "RFC 7520 fig. 27: token ES512, key says 'ES521'"),
    351: ("token_algorithm_not_allowed", "same as 347 with key_ops on the key"),
    349: (None, "malformed key_ops is on the private JWK only; the public one is ['verify']"),
    367: ("token_algorithm_not_allowed", "labelled invalid padding, bytes equal valid tc357"),
    370: ("token_algorithm_not_allowed", "labelled invalid padding, bytes equal valid tc357"),
    372: ("token_malformed", "labelled valid, but the header segment contains '?'"),
    373: ("token_malformed", "labelled valid, but the payload segment contains '?'"),
}

# Where the reason matters (the refusal must come from key vetting or from a specific
# check, not from an incidental failure), the exact reason expected.
JWS_REASONS: dict[int, str] = {
    16: "token_malformed",  # alg none, empty signature
    31: "token_algorithm_not_allowed",  # HS256 keyed with the EC public key bytes
    32: "token_signature_invalid",  # attacker's jwk in the header is ignored
    341: "token_malformed",
    342: "token_malformed",
    343: "token_malformed",
    344: "token_malformed",
    353: "token_key_unknown",  # RSA key with use: enc
    354: "token_key_unknown",  # EC key with use: enc
    355: "token_key_unknown",  # key_ops: [encrypt]
    356: "token_key_unknown",
    379: "token_signature_invalid",  # ES256 signature longer than 64 bytes
    386: "token_signature_invalid",  # r = s = 0
}
JWK_REASONS: dict[int, str] = {
    7: "token_key_unknown",  # ROCA modulus (CVE-2017-15361)
    8: "token_key_unknown",  # 1024-bit RSA
    9: "token_key_unknown",  # public exponent 1
    19: "token_key_unknown",  # alg ES521 on a P-256 key
    20: "token_key_unknown",  # alg ES224
    21: "token_key_unknown",  # use: enc
    22: "token_key_unknown",  # point not on the curve
    23: "token_key_unknown",  # P-256 coordinates labelled P-384
    24: "token_key_unknown",  # kty RSA with EC members
}


async def _verify(token: str, jwks: dict[str, Any]) -> str | None:
    """``None`` when the token's signature verifies under ``jwks``, else the refusal reason."""

    async def fetch(url: str) -> bytes:
        return json.dumps(jwks).encode()

    issuer = IssuerKeys(
        issuer="https://wycheproof.test",
        audiences=frozenset({"any"}),
        algorithms=SUPPORTED,
        require_jti=False,
        jwks=JWKSCache(
            url="https://wycheproof.test/jwks",
            fetch=fetch,
            algorithms=SUPPORTED,
            ttl_seconds=300,
            min_refresh_interval_seconds=30,
        ),
    )
    try:
        await issuer.verify_jws(parse_compact_jws(token))
    except AuthGateError as exc:
        return exc.reason
    return None


def _header_alg(token: str) -> str | None:
    try:
        return parse_compact_jws(token).alg
    except AuthGateError:
        return None


def _expected(
    token: str, result: str, quirks: dict[int, tuple[str | None, str]], tc: int
) -> tuple[bool, str | None]:
    """(accepted?, reason) authgate must produce for one vector."""
    if tc in quirks:
        reason, _why = quirks[tc]
        return reason is None, reason
    if result == "valid" and _header_alg(token) not in SUPPORTED:
        # HS*, PS384, PS512, ES512: never accepted by authgate, refused by allowlist.
        return False, "token_algorithm_not_allowed"
    return result == "valid", None


def _jws_cases() -> list[Any]:
    cases = []
    for group, test in _tests(JWS):
        key = group.get("public", group["private"])
        cases.append(pytest.param({"keys": [key]}, test, id=f"tc{test['tcId']}"))
    return cases


@pytest.mark.parametrize(("jwks", "test"), _jws_cases())
async def test_json_web_signature(jwks: dict[str, Any], test: dict[str, Any]) -> None:
    """Each JWS vector gets the documented outcome through parse + issuer signature check."""
    tc, token = test["tcId"], test["jws"]
    accepted, reason = _expected(token, test["result"], JWS_QUIRKS, tc)
    reason = JWS_REASONS.get(tc, reason)
    outcome = await _verify(token, jwks)
    if accepted:
        assert outcome is None, f"tc{tc} ({test['comment']}) refused: {outcome}"
    else:
        assert outcome is not None, f"tc{tc} ({test['comment']}) was accepted"
        if reason is not None:
            assert outcome == reason, f"tc{tc} ({test['comment']})"


def _jwk_cases() -> list[Any]:
    return [
        pytest.param(group.get("public", group["private"]), test, id=f"tc{test['tcId']}")
        for group, test in _tests(JWK)
    ]


@pytest.mark.parametrize(("jwks", "test"), _jwk_cases())
async def test_json_web_key(jwks: dict[str, Any], test: dict[str, Any]) -> None:
    """Each JWK vector: bad keys never verify anything; good ones do."""
    tc, token = test["tcId"], test["jws"]
    accepted, reason = _expected(token, test["result"], {}, tc)
    reason = JWK_REASONS.get(tc, reason)
    outcome = await _verify(token, jwks)
    if accepted:
        assert outcome is None, f"tc{tc} ({test['comment']}) refused: {outcome}"
    else:
        assert outcome is not None, f"tc{tc} ({test['comment']}) was accepted"
        if reason is not None:
            assert outcome == reason, f"tc{tc} ({test['comment']})"


def test_quirk_tables_name_existing_vectors() -> None:
    """Every tcId in the tables exists, so a renumbered data set cannot silently mis-apply."""
    jws_ids = {test["tcId"] for _, test in _tests(JWS)}
    jwk_ids = {test["tcId"] for _, test in _tests(JWK)}
    assert set(JWS_QUIRKS) | set(JWS_REASONS) <= jws_ids
    assert set(JWK_REASONS) <= jwk_ids
    assert {346, 347, 349, 350, 351, 367, 370, 372, 373} == set(JWS_QUIRKS)


def test_key_vetting_vectors_would_verify_without_it() -> None:
    """The ROCA and 1024-bit keys really did sign their tokens: only vetting refuses them."""
    for group, test in _tests(JWK):
        if test["tcId"] not in {7, 8}:
            continue
        (jwk,) = group["public"]["keys"]
        numbers = rsa.RSAPublicNumbers(
            e=int.from_bytes(_b64(jwk["e"]), "big"), n=int.from_bytes(_b64(jwk["n"]), "big")
        )
        public = numbers.public_key()
        jws = parse_compact_jws(test["jws"])
        verify_signature(
            "RS256", VerificationKey("", "RS256", public), jws.signing_input, jws.signature
        )


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
