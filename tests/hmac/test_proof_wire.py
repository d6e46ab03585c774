"""The AGProof wire format (``authgate.crypto.hmac_proof``): parser properties, the exact
message layouts of the module docstring, and the MAC primitive against Wycheproof.

``tests/crypto/test_wycheproof.py`` covers the signature vectors only (ECDSA, RSA, EdDSA,
JWS, JWK); the HMAC-SHA256 vectors are checked here, through the module's own ``_mac``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import string
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.crypto import hmac_proof
from authgate.crypto.hmac_proof import (
    SCHEME,
    ProofFormatError,
    ProofHeader,
    authorization_header,
    b64,
    challenge_signature,
    check_client_pubkey,
    equal,
    new_challenge,
    parse_credentials,
    proof,
    proof_message,
)
from tests.wycheproof import wycheproof_dir

# --- strategies ---------------------------------------------------------------------------

KEY_IDS = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=12, max_size=12)
B64_32 = st.binary(min_size=32, max_size=32).map(b64)
TIMESTAMPS = st.integers(min_value=0, max_value=10**12 - 1)
# Characters a mutation may introduce: every separator and alphabet class of the format,
# plus look-alikes (full-width digit, non-ASCII letter, whitespace, NUL).
MUTATION_CHARS = st.sampled_from(
    [*string.ascii_letters, *string.digits, *"+/=._- \t\x00", "\uff11", "é", "٣"]
)


@st.composite
def proof_headers(draw: st.DrawFn) -> ProofHeader:
    """A well-formed parsed header."""
    return ProofHeader(
        key_id=draw(KEY_IDS),
        nonce=draw(B64_32),
        issue_ts=draw(TIMESTAMPS),
        sig=draw(B64_32),
        proof=draw(B64_32),
    )


def render(header: ProofHeader) -> str:
    """``AGProof v1....`` for a parsed header."""
    return authorization_header(
        key_id=header.key_id,
        nonce=header.nonce,
        issue_ts=header.issue_ts,
        sig=header.sig,
        proof_b64=header.proof,
    )


def credentials(header: ProofHeader) -> str:
    """The part after the scheme, which ``parse_credentials`` reads."""
    scheme, _, rest = render(header).partition(" ")
    assert scheme == SCHEME
    return rest


# --- parser properties --------------------------------------------------------------------


@given(proof_headers())
def test_parse_round_trips_authorization_header(header: ProofHeader) -> None:
    """``parse_credentials`` inverts ``authorization_header`` field for field."""
    assert parse_credentials(credentials(header)) == header


@settings(max_examples=300)
@given(proof_headers(), st.data())
def test_one_character_mutation_never_parses_to_the_same_header(
    header: ProofHeader, data: st.DataObject
) -> None:
    """Substituting, inserting or deleting one character either raises ProofFormatError or
    yields a different header whose canonical form is exactly the mutated text."""
    original = credentials(header)
    # Field boundaries are where a lax parser would go wrong: draw them half the time.
    boundaries = [i + 1 for i, c in enumerate(original) if c == "."]
    position = data.draw(
        st.one_of(
            st.integers(min_value=0, max_value=len(original) - 1), st.sampled_from(boundaries)
        )
    )
    kind = data.draw(st.sampled_from(["substitute", "insert", "delete"]))
    char = data.draw(st.one_of(MUTATION_CHARS, st.sampled_from("0.=")))
    if kind == "substitute":
        mutated = original[:position] + char + original[position + 1 :]
    elif kind == "insert":
        mutated = original[:position] + char + original[position:]
    else:
        mutated = original[:position] + original[position + 1 :]
    if mutated == original:
        return
    try:
        parsed = parse_credentials(mutated)
    except ProofFormatError:
        return
    assert parsed != header
    assert credentials(parsed) == mutated  # canonical: one header, one spelling


DOTTED = st.lists(
    st.text(alphabet=string.ascii_letters + string.digits + "+/=", max_size=50), max_size=8
).map(".".join)


@given(st.one_of(st.text(max_size=300), DOTTED, DOTTED.map(lambda s: "v1." + s)))
def test_arbitrary_text_raises_only_proof_format_error(text: str) -> None:
    """Whatever the input, the parser answers a header or ProofFormatError, nothing else."""
    try:
        parsed = parse_credentials(text)
    except ProofFormatError:
        return
    assert credentials(parsed) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v1",
        "v2.abcdefghijkl.{n}.1.{n}.{n}",
        "V1.abcdefghijkl.{n}.1.{n}.{n}",
        "v1.ABCDEFGHIJKL.{n}.1.{n}.{n}",
        "v1.abcdefghijk.{n}.1.{n}.{n}",
        "v1.abcdefghijkl.{n}.-1.{n}.{n}",
        "v1.abcdefghijkl.{n}.01.{n}.{n}",
        "v1.abcdefghijkl.{n}.1000000000000.{n}.{n}",
        "v1.abcdefghijkl.{n}.1.{n}.{n}.",
        "v1.abcdefghijkl.{n}.1.{n}",
        "v1.abcdefghijkl.{short}.1.{n}.{n}",
        "v1.abcdefghijkl.{n}.1.{long}.{n}",
        "v1.abcdefghijkl.{n}.1.{n}.{unpadded}",
        "v1.abcdefghijkl.{n}.1.{n}.{urlsafe}",
        "v1.abcdefghijkl.{n}.1.{n}.{noncanonical}",
        "v1.abcdefghijkl.{n}.\uff11.{n}.{n}",
    ],
    ids=[
        "empty",
        "version-only",
        "version-2",
        "version-upper-case",
        "key-id-upper-case",
        "key-id-11-chars",
        "negative-ts",
        "leading-zero-ts",
        "13-digit-ts",
        "trailing-dot",
        "five-fields",
        "nonce-31-bytes",
        "sig-33-bytes",
        "proof-unpadded",
        "proof-urlsafe-alphabet",
        "proof-noncanonical-padding-bits",
        "full-width-digit-ts",
    ],
)
def test_malformed_credentials_are_refused(text: str) -> None:
    """Each way of bending one field is a ProofFormatError."""
    n = b64(bytes(range(32)))
    urlsafe_source = bytes([0xFB] * 32)  # standard base64 of this holds "+" and "/"
    text = text.format(
        n=n,
        short=b64(bytes(31)),
        long=b64(bytes(33)),
        unpadded=n.rstrip("="),
        urlsafe=base64.urlsafe_b64encode(urlsafe_source).decode(),
        noncanonical=n[:-2] + "9=",  # "8=" is canonical; "9" sets a padding bit
    )
    with pytest.raises(ProofFormatError):
        parse_credentials(text)


@given(st.one_of(st.text(max_size=80), st.binary(max_size=40).map(b64)))
def test_client_pubkey_check_raises_only_proof_format_error(text: str) -> None:
    """X-Client-Pubkey: canonical base64 of exactly 32 bytes, else ProofFormatError."""
    try:
        assert check_client_pubkey(text) == text
    except ProofFormatError:
        return
    assert len(base64.b64decode(text, validate=True)) == 32


# --- known answers ------------------------------------------------------------------------

NONCE = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # b64(bytes(range(32)))
ISSUE_TS = 1763900000
KEY_ID = "abcdefghijkl"
API_KEY = "agk_abcdefghijkl_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
SERVER_SECRET = b"k" * 32
PUBKEY = b64(bytes(range(100, 132)))


def reference_mac(key: bytes, message: str) -> str:
    """HMAC-SHA256 straight from the standard library, standard base64."""
    return base64.b64encode(hmac.new(key, message.encode(), hashlib.sha256).digest()).decode()


def reference_body_hash(body: bytes) -> str:
    """BPC's body hash form, computed independently."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
    return "sha256:" + digest[:32]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"method": "GET", "target": "/api/items?page=2"},
            f"authgate-v1.GET./api/items?page=2.{NONCE}.{ISSUE_TS}.{KEY_ID}.",
        ),
        (
            {"method": "post", "target": "/api/items"},
            f"authgate-v1.POST./api/items.{NONCE}.{ISSUE_TS}.{KEY_ID}.",
        ),
        (
            {"method": "GET", "target": "/x", "client_pubkey": PUBKEY},
            f"authgate-v1.GET./x.{NONCE}.{ISSUE_TS}.{KEY_ID}.{PUBKEY}",
        ),
        (
            {"method": "PUT", "target": "/x", "body_hash": reference_body_hash(b"{}")},
            f"authgate-v1.PUT./x.{NONCE}.{ISSUE_TS}.{KEY_ID}..{reference_body_hash(b'{}')}",
        ),
        (
            {
                "method": "PUT",
                "target": "/x?a=1",
                "client_pubkey": PUBKEY,
                "body_hash": reference_body_hash(b""),
                "prefix": "acme-gw",
            },
            f"acme-gw-v1.PUT./x?a=1.{NONCE}.{ISSUE_TS}.{KEY_ID}.{PUBKEY}."
            f"{reference_body_hash(b'')}",
        ),
    ],
    ids=["query-kept", "method-upper-cased", "client-pubkey", "body-hash", "all-fields-prefix"],
)
def test_proof_message_layout(fields: dict[str, Any], expected: str) -> None:
    """``<prefix>-v1.<METHOD>.<target>.<nonce>.<issue_ts>.<key_id>.<pubkey>[.<body_hash>]``."""
    assert proof_message(nonce=NONCE, issue_ts=ISSUE_TS, key_id=KEY_ID, **fields) == expected


def test_pinned_header_for_a_fixed_request() -> None:
    """A fixed key, challenge and request give one exact header (format drift fails here)."""
    sig = challenge_signature(SERVER_SECRET, NONCE, ISSUE_TS)
    assert sig == "hyitKmuc/dflY4IF+nc3hhdEzve4wXVzE/lw/bhH1II="
    message = proof_message(
        method="GET", target="/api/items?page=2", nonce=NONCE, issue_ts=ISSUE_TS, key_id=KEY_ID
    )
    mac = proof(API_KEY, message)
    assert mac == "OYyh09pvrsvvN9LVJdeu5gzhkx0BauGhBa902CMgl4M="
    assert mac == reference_mac(API_KEY.encode(), message)
    header = authorization_header(
        key_id=KEY_ID, nonce=NONCE, issue_ts=ISSUE_TS, sig=sig, proof_b64=mac
    )
    assert header == f"AGProof v1.{KEY_ID}.{NONCE}.{ISSUE_TS}.{sig}.{mac}"


@pytest.mark.parametrize("prefix", ["authgate", "acme-gw"], ids=["default-prefix", "custom"])
def test_challenge_signature_is_hmac_over_the_documented_string(prefix: str) -> None:
    """sig = b64(HMAC-SHA256(secret, "<prefix>-chal-v1.<nonce>.<issue_ts>"))."""
    expected = reference_mac(SERVER_SECRET, f"{prefix}-chal-v1.{NONCE}.{ISSUE_TS}")
    assert challenge_signature(SERVER_SECRET, NONCE, ISSUE_TS, prefix=prefix) == expected


def test_new_challenge_document() -> None:
    """``{nonce: b64(32 random bytes), issue_ts, sig, ttl}``; nonces never repeat."""
    first = new_challenge(SERVER_SECRET, ISSUE_TS * 1000, 60)
    second = new_challenge(SERVER_SECRET, ISSUE_TS * 1000, 60)
    assert set(first) == {"nonce", "issue_ts", "sig", "ttl"}
    assert (first["issue_ts"], first["ttl"]) == (ISSUE_TS, 60)
    nonce = str(first["nonce"])
    assert len(base64.b64decode(nonce, validate=True)) == 32
    assert first["sig"] == reference_mac(SERVER_SECRET, f"authgate-chal-v1.{nonce}.{ISSUE_TS}")
    assert first["nonce"] != second["nonce"]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("abc", "abc", True), ("abc", "abd", False), ("abc", "abcd", False), ("", "", True)],
    ids=["equal", "differ", "prefix", "empty"],
)
def test_equal_compares_whole_strings(a: str, b: str, same: bool) -> None:
    """The constant-time comparison needs equal length and equal bytes."""
    assert equal(a, b) is same


# --- Wycheproof HMAC-SHA256 ---------------------------------------------------------------


WYCHEPROOF = wycheproof_dir()
HMAC_FILE = "hmac_sha256_test.json"


@cache
def _vectors() -> dict[str, Any]:
    path = WYCHEPROOF / HMAC_FILE
    if not path.is_file():  # fail, never skip
        raise FileNotFoundError(
            f"Wycheproof vectors missing: {path} (see tests/data/wycheproof/README.md)"
        )
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def _utf8(hex_text: str) -> str | None:
    try:
        return bytes.fromhex(hex_text).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _hmac_cases() -> list[Any]:
    """Vectors whose message is UTF-8: the module MACs ``str`` messages, so only those can
    reach ``_mac`` (every message authgate builds is ASCII)."""
    cases = []
    for group in _vectors()["testGroups"]:
        for test in group["tests"]:
            message = _utf8(test["msg"])
            if message is not None:
                cases.append(pytest.param(group["tagSize"], test, message, id=f"tc{test['tcId']}"))
    return cases


def test_hmac_vector_file_matches_its_provenance() -> None:
    """The vector file is byte-identical to the snapshot in PROVENANCE.json."""
    recorded = {e["file"]: e for e in json.loads((WYCHEPROOF / "PROVENANCE.json").read_bytes())}
    digest = hashlib.sha256((WYCHEPROOF / HMAC_FILE).read_bytes()).hexdigest()
    assert digest == recorded[HMAC_FILE]["sha256"]
    total = sum(len(g["tests"]) for g in _vectors()["testGroups"])
    assert total == recorded[HMAC_FILE]["numberOfTests"] == 174
    assert len(_hmac_cases()) == 117  # the UTF-8 messages; the rest cannot be a str


@pytest.mark.parametrize(("tag_bits", "test", "message"), _hmac_cases())
def test_wycheproof_hmac_sha256(tag_bits: int, test: dict[str, Any], message: str) -> None:
    """Valid full-length tags match ``_mac`` under ``equal``; invalid and truncated tags never
    do (authgate compares whole 32-byte MACs only)."""
    key, tag = bytes.fromhex(test["key"]), bytes.fromhex(test["tag"])
    mac = hmac_proof._mac(key, message)
    assert len(mac) == 32
    accepted = equal(b64(mac), b64(tag))
    if test["result"] == "valid" and tag_bits == 256:
        assert accepted, f"tc{test['tcId']} ({test['comment']})"
        raw_key = _utf8(test["key"])
        if raw_key is not None:  # the same primitive through the API-key entry point
            assert proof(raw_key, message) == b64(tag)
    elif test["result"] == "valid":
        assert mac[: len(tag)] == tag  # the vector is right; the truncation is refused
        assert not accepted
    else:
        assert test["result"] == "invalid"
        assert not accepted, f"tc{test['tcId']} ({test['comment']})"


def _general_rule(text: str) -> bytes | None:
    """What any length's check accepts: the alphabet, a strict decode, and canonical form
    by encoding again (the rule the 32-byte check reads off the text instead)."""
    if re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", text) is None:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return data if base64.b64encode(data).decode() == text and len(data) == 32 else None


def _thirty_two(text: str) -> bytes | None:
    try:
        return hmac_proof._b64decode(text, length=32)
    except ProofFormatError:
        return None


B64_ALPHABET = string.ascii_letters + string.digits + "+/="


def test_the_32_byte_check_agrees_with_the_general_rule_on_every_last_two_characters() -> None:
    # The canonical-form fault lives in the last two characters: every pair of them.
    for stem in (b64(bytes(32))[:42], b64(bytes(range(32)))[:42], b64(b"\xff" * 32)[:42]):
        for a in B64_ALPHABET:
            for b in B64_ALPHABET:
                text = stem + a + b
                assert _thirty_two(text) == _general_rule(text), text


@settings(max_examples=400)
@given(st.binary(min_size=30, max_size=34), st.integers(0, 60), st.sampled_from(" \n=.-_A"))
def test_the_32_byte_check_agrees_with_the_general_rule(
    data: bytes, at: int, inserted: str
) -> None:
    text = b64(data)
    assert _thirty_two(text) == _general_rule(text)
    mutated = text[:at] + inserted + text[at:]
    assert _thirty_two(mutated) == _general_rule(mutated)
    urlsafe = base64.urlsafe_b64encode(data).decode()
    assert _thirty_two(urlsafe) == _general_rule(urlsafe)
