"""DPoP proofs (RFC 9449 §4.3) checked one by one: each check refuses on its own.

Proofs are built by hand here (header and payload exactly as given, signed with any key),
since most are proofs no well-behaved client would produce; the RFC's own example proof
and ``ath`` are checked verbatim.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jwt.algorithms import get_default_algorithms

from authgate.client.dpop import DPoPKey
from authgate.errors import DPoPError, DPoPNonceRequired
from authgate.verifiers.dpop_proof import (
    ProofChecker,
    ServerNonces,
    ath_of,
    normalize_htu,
    request_url,
)
from tests.verifiers import b64, dumps

NOW = 1_700_000_000
URL = "https://app.test/api/items"
TOKEN = "an.access.token"
ALGORITHMS = ("ES256", "ES384", "EdDSA", "RS256", "PS256")
_PYJWT = get_default_algorithms()

# RFC 9449 §4.2, Figure 4 (and the key's thumbprint, §6.1's cnf.jkt example).
RFC_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0"
    "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10"
    "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoi"
    "UE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-"
    "GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"

ES256 = DPoPKey.generate("ES256")
OTHER = DPoPKey.generate("ES256")


def proof(
    key: DPoPKey = ES256,
    *,
    header: dict[str, Any] | None = None,
    sign_alg: str | None = None,
    sign_with: DPoPKey | None = None,
    raw_payload: bytes | None = None,
    **claims: Any,
) -> str:
    """A proof with these header members and claims (``None`` removes one)."""
    head: dict[str, Any] = {"typ": "dpop+jwt", "alg": key.alg, "jwk": key.jwk}
    body: dict[str, Any] = {
        "jti": "jti-1",
        "htm": "GET",
        "htu": URL,
        "iat": NOW,
        "ath": ath_of(TOKEN),
    }
    for target, overrides in ((head, header or {}), (body, claims)):
        for name, value in overrides.items():
            if value is None:
                target.pop(name, None)
            else:
                target[name] = value
    signing_input = f"{b64(dumps(head))}.{b64(raw_payload or dumps(body))}".encode()
    signer = sign_with or key
    alg = sign_alg or signer.alg
    signature = _PYJWT[alg].sign(signing_input, signer.private_key)
    return f"{signing_input.decode()}.{b64(signature)}"


def checker(**overrides: Any) -> ProofChecker:
    """A checker over every algorithm, a 60 s window and a 4 KiB cap."""
    options: dict[str, Any] = {
        "algorithms": ALGORITHMS,
        "window_seconds": 60,
        "max_proof_bytes": 4096,
        **overrides,
    }
    return ProofChecker(**options)


def refusal(value: str, *, method: str = "GET", token: str | None = TOKEN, **opts: Any) -> str:
    """The reason ``value`` is refused (fails the test when it is accepted)."""
    try:
        checker(**opts).check(value, method=method, urls={URL}, now=NOW, access_token=token)
    except DPoPError as exc:
        return exc.reason
    raise AssertionError("proof was accepted")


def test_the_rfc_example_proof_verifies_with_the_rfc_thumbprint() -> None:
    """RFC 9449 Figure 4, checked verbatim at its own iat, names §6.1's jkt."""
    checked = checker().check(
        RFC_PROOF, method="POST", urls={"https://server.example.com/token"}, now=1562262616
    )
    assert (checked.jkt, checked.jti, checked.iat) == (RFC_JKT, "-BwC3ESc6acc2lTc", 1562262616)


def test_ath_is_the_rfc_example_hash() -> None:
    """RFC 9449 §7.1: the example token hashes to the example ``ath``."""
    assert ath_of("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") == (
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_valid_proof_of_each_algorithm_names_its_key(alg: str) -> None:
    """A proof signed with each allowed algorithm passes and yields the key's thumbprint."""
    key = DPoPKey.generate(alg)
    checked = checker().check(proof(key), method="GET", urls={URL}, now=NOW, access_token=TOKEN)
    assert checked.jkt == key.jkt
    assert (checked.jti, checked.iat) == ("jti-1", NOW)


HS_KEY = b"k" * 32


def _stray(key: DPoPKey) -> str:
    """``key``'s ``x`` with a character base64url does not have."""
    x = str(key.jwk["x"])
    return x[:10] + "%" + x[10:]


def _unsigned() -> str:
    """An ``alg: none`` proof with an empty signature (RFC 7519 §6)."""
    head = b64(dumps({"typ": "dpop+jwt", "alg": "none", "jwk": ES256.jwk}))
    return f"{head}.{proof().split('.')[1]}."


def _hs256() -> str:
    """An HS256 proof, keyed with bytes an attacker chooses (never accepted)."""
    head = b64(dumps({"typ": "dpop+jwt", "alg": "HS256", "jwk": ES256.jwk}))
    body = b64(dumps({"jti": "j", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath_of(TOKEN)}))
    signature = _PYJWT["HS256"].sign(f"{head}.{body}".encode(), HS_KEY)
    return f"{head}.{body}.{b64(signature)}"


REFUSALS: list[tuple[str, Any]] = [
    ("typ-missing", lambda: proof(header={"typ": None})),
    ("typ-jwt", lambda: proof(header={"typ": "JWT"})),
    ("typ-case", lambda: proof(header={"typ": "DPoP+JWT"})),
    ("alg-none", _unsigned),
    ("alg-hs256", _hs256),
    ("alg-not-listed", lambda: proof(DPoPKey.generate("ES384"))),
    ("jwk-missing", lambda: proof(header={"jwk": None})),
    ("jwk-not-object", lambda: proof(header={"jwk": "key"})),
    ("jwk-private", lambda: proof(header={"jwk": {**ES256.jwk, "d": "AAAA"}})),
    ("jwk-wrong-type", lambda: proof(header={"alg": "RS256"}, sign_alg="ES256")),
    # Found by fuzzing: PyJWK decodes these to the same key, whose thumbprint would differ.
    ("jwk-stray-characters", lambda: proof(header={"jwk": {**ES256.jwk, "x": _stray(ES256)}})),
    ("jwk-padded", lambda: proof(header={"jwk": {**ES256.jwk, "x": ES256.jwk["x"] + "="}})),
    ("jwk-short-coordinate", lambda: proof(header={"jwk": {**ES256.jwk, "x": b64(b"\x01" * 31)}})),
    ("jwk-bad-length", lambda: proof(header={"jwk": {**ES256.jwk, "x": "AAAAA"}})),
    ("jwk-wrong-curve", lambda: proof(header={"alg": "ES384"}, sign_alg="ES256")),
    ("signature-other-key", lambda: proof(sign_with=OTHER)),
    ("htm-other", lambda: proof(htm="POST")),
    ("htm-lower", lambda: proof(htm="get")),
    ("htm-missing", lambda: proof(htm=None)),
    ("htu-other-host", lambda: proof(htu="https://evil.test/api/items")),
    ("htu-other-path", lambda: proof(htu="https://app.test/api/other")),
    ("htu-other-scheme", lambda: proof(htu="http://app.test/api/items")),
    ("htu-other-port", lambda: proof(htu="https://app.test:8443/api/items")),
    ("htu-dot-segment", lambda: proof(htu="https://app.test/api/x/../items")),
    ("htu-userinfo", lambda: proof(htu="https://u@app.test/api/items")),
    ("htu-not-url", lambda: proof(htu="not a url")),
    ("htu-missing", lambda: proof(htu=None)),
    ("iat-old", lambda: proof(iat=NOW - 61)),
    ("iat-future", lambda: proof(iat=NOW + 61)),
    ("iat-float", lambda: proof(iat=NOW + 0.5)),
    ("iat-string", lambda: proof(iat=str(NOW))),
    ("iat-missing", lambda: proof(iat=None)),
    ("jti-missing", lambda: proof(jti=None)),
    ("jti-too-long", lambda: proof(jti="j" * 257)),
    ("jti-control", lambda: proof(jti="a\nb")),
    ("ath-missing", lambda: proof(ath=None)),
    ("ath-other-token", lambda: proof(ath=ath_of("another.token"))),
    ("duplicate-claim", lambda: proof(raw_payload=b'{"jti":"a","jti":"b"}')),
    ("not-json", lambda: proof(raw_payload=b"jti")),
    ("two-segments", lambda: ".".join(proof().split(".")[:2])),
    ("too-large", lambda: proof(pad="x" * 5000)),
]


# The check each case must fail, by the words of its message.
FAILED_CHECK = {
    "typ": "'typ'",
    "alg": "algorithm",
    "jwk": "'jwk'",
    "signature": "signature does not verify",
    "htm": "'htm'",
    "htu": "'htu'",
    "iat": "'iat'",
    "jti": "'jti'",
    "ath": "'ath'",
    "duplicate": "repeats member",
    "not": "not JSON",
    "two": "three segments",
    "too": "too large",
}


SPECIFIC_CHECK = {
    "alg-none": "signature is not base64url",  # an empty signature never parses
    "jwk-private": "private key material",
    "jwk-stray-characters": "not canonical",
    "jwk-padded": "not canonical",
    "jwk-short-coordinate": "not canonical",
    "jwk-bad-length": "not canonical",
    "jwk-wrong-type": "not a public key usable",
    "jwk-wrong-curve": "not a public key usable",
}


@pytest.mark.parametrize(("case", "build"), REFUSALS, ids=[case for case, _ in REFUSALS])
def test_each_check_refuses_on_its_own(case: str, build: Any) -> None:
    """Every failed check is 401 dpop_proof_invalid, and the message names that check."""
    algorithms = ("ES256",) if case == "alg-not-listed" else ALGORITHMS
    with pytest.raises(DPoPError) as refused:
        checker(algorithms=algorithms).check(
            build(), method="GET", urls={URL}, now=NOW, access_token=TOKEN
        )
    assert refused.value.reason == "dpop_proof_invalid"
    expected = SPECIFIC_CHECK.get(case, FAILED_CHECK[case.split("-", maxsplit=1)[0]])
    assert expected in refused.value.message


def test_query_and_fragment_of_htu_are_ignored() -> None:
    """RFC 9449 §4.3: htu is compared without its query and fragment."""
    value = proof(htu=URL + "?page=2#top")
    assert checker().check(value, method="GET", urls={URL}, now=NOW, access_token=TOKEN)


@pytest.mark.parametrize(
    "htu",
    [
        "HTTPS://APP.test/api/items",
        "https://app.test:443/api/items",
        "https://app.test./api/items",
        "https://app.test/api/%69tems",
    ],
    ids=["case", "default-port", "trailing-dot", "escaped-unreserved"],
)
def test_htu_is_normalised_as_rfc_3986_says(htu: str) -> None:
    """Scheme and host case, the default port and unreserved escapes do not matter."""
    assert normalize_htu(htu) == URL


def test_a_host_of_dots_alone_is_no_host() -> None:
    """Found by fuzzing: ``https://./x`` normalised to ``https:///x``, which did not
    normalise again; a host that is only dots is no host, in a proof or a request."""
    with pytest.raises(DPoPError) as refused:
        normalize_htu("https://./x")
    assert refused.value.reason == "dpop_proof_invalid"
    assert request_url("https", ".", "/x") == ""


def test_request_url_comes_from_the_doors_view() -> None:
    """The request URL: scheme, host with a non-default port, canonical path."""
    assert request_url("https", "App.Test:443", "/a") == "https://app.test/a"
    assert request_url("http", "app.test:8080", "/a") == "http://app.test:8080/a"
    assert request_url("http", "[::1]:8080", "/") == "http://[::1]:8080/"
    assert request_url("https", "", "/a") == ""


def test_ath_is_not_asked_at_the_token_endpoint() -> None:
    """Without an access token (the token endpoint), a proof needs no ``ath``."""
    value = proof(ath=None, htm="POST")
    assert checker().check(value, method="POST", urls={URL}, now=NOW).jkt == ES256.jkt


def test_the_window_edges_are_inclusive() -> None:
    """``iat`` exactly ``window`` seconds away either side is still accepted."""
    for iat in (NOW - 60, NOW + 60):
        checker().check(proof(iat=iat), method="GET", urls={URL}, now=NOW, access_token=TOKEN)


class TestServerNonces:
    """``use_dpop_nonce`` (RFC 9449 §8): a nonce of this server, recent, is required."""

    nonces = ServerNonces(secret=b"s" * 32, ttl_seconds=300, skew_seconds=5)

    def require(self, value: str) -> DPoPNonceRequired:
        with pytest.raises(DPoPNonceRequired) as refused:
            checker(nonces=self.nonces).check(
                value, method="GET", urls={URL}, now=NOW, access_token=TOKEN
            )
        return refused.value

    def test_a_proof_without_a_nonce_gets_one(self) -> None:
        """401 dpop_nonce_required, with a fresh nonce the retry is accepted with."""
        refused = self.require(proof())
        assert refused.reason == "dpop_nonce_required"
        assert refused.challenge_error == "use_dpop_nonce"
        retry = proof(nonce=refused.nonce)
        checked = checker(nonces=self.nonces).check(
            retry, method="GET", urls={URL}, now=NOW + 1, access_token=TOKEN
        )
        assert checked.jkt == ES256.jkt

    @pytest.mark.parametrize(
        "nonce",
        [
            nonces.issue(NOW - 301),
            nonces.issue(NOW + 6),
            ServerNonces(secret=b"t" * 32, ttl_seconds=300, skew_seconds=5).issue(NOW),
            "made-up",
            12345,
        ],
        ids=["stale", "future", "other-secret", "made-up", "not-string"],
    )
    def test_a_nonce_not_current_and_ours_is_refused(self, nonce: Any) -> None:
        """Stale, future, foreign, invented or mistyped nonces are refused alike."""
        assert self.require(proof(nonce=nonce)).reason == "dpop_nonce_required"

    def test_the_signature_is_checked_before_the_nonce(self) -> None:
        """A forged proof gets dpop_proof_invalid, not a nonce to try again with."""
        assert refusal(proof(sign_with=OTHER), nonces=self.nonces) == "dpop_proof_invalid"


def test_no_refusal_message_carries_the_proof() -> None:
    """Messages name the check, never the proof, token or key."""
    for case, build in REFUSALS:
        value = build()
        try:
            checker().check(value, method="GET", urls={URL}, now=NOW, access_token=TOKEN)
        except DPoPError as exc:
            text = json.dumps([exc.message, exc.detail])
            assert value not in text and TOKEN not in text and ES256.jwk["x"] not in text, case
