"""The BPC v1.0 wire format: strict parsing of the signed data, and byte-for-byte agreement
with the published client (``bpc-client`` 1.0.0) on body hashes, secret HMACs, canonical
JSON and key fingerprints.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from bpc_client.crypto import (  # type: ignore[import-untyped]
    compute_body_hash,
    derive_secret_hmac,
    generate_keypair,
    sign_request,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.crypto.bpc_wire import (
    EMPTY_BODY_HASH,
    PAYLOAD_MEMBERS,
    WireError,
    body_hash,
    canonical_json,
    jwk_fingerprint,
    parse_signed_data,
    secret_hmac,
)
from tests.bpc.conftest import b64url, json_object

B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

payloads = st.fixed_dictionaries(
    {
        "body_hash": st.text(B64URL_ALPHABET, min_size=32, max_size=32).map(
            lambda s: "sha256:" + s
        ),
        "method": st.sampled_from(["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]),
        "nonce": st.uuids(version=4).map(str),
        "pair_id": st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True),
        "path": st.text(max_size=200).map(lambda s: "/" + s),
        "secret_hmac": st.text(B64URL_ALPHABET, min_size=43, max_size=43),
        "timestamp": st.integers(min_value=0, max_value=2**53 - 1),
        "version": st.just("1.0"),
    }
)


def valid_payload(**fields: Any) -> dict[str, Any]:
    """One well-formed payload, with members overridden."""
    payload: dict[str, Any] = {
        "body_hash": EMPTY_BODY_HASH,
        "method": "GET",
        "nonce": "0b7e4f0e-5d6c-4f3a-9a2b-1c2d3e4f5a6b",
        "pair_id": "pair_abc",
        "path": "/api/items",
        "secret_hmac": "A" * 43,
        "timestamp": 1_763_900_000_000,
        "version": "1.0",
    }
    payload.update(fields)
    return payload


def encode(payload: dict[str, Any]) -> str:
    """``X-BPC-Signed-Data`` for ``payload``."""
    return b64url(canonical_json(payload))


# --- parsing: properties -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(payloads)
def test_canonical_payload_round_trips(payload: dict[str, Any]) -> None:
    """Every valid canonical payload parses back to the same members and the same bytes."""
    raw = canonical_json(payload)
    parsed = parse_signed_data(b64url(raw))
    assert {name: getattr(parsed, name) for name in PAYLOAD_MEMBERS} == payload
    assert parsed.raw == raw


@settings(max_examples=500, deadline=None)
@given(payloads, st.data())
def test_one_character_mutation_of_the_header_never_parses_to_the_same_bytes(
    payload: dict[str, Any], data: st.DataObject
) -> None:
    """Changing one character of X-BPC-Signed-Data raises WireError or yields other bytes."""
    encoded = b64url(canonical_json(payload))
    index = data.draw(st.integers(0, len(encoded) - 1), label="index")
    replacement = data.draw(st.characters().filter(lambda c: c != encoded[index]), label="char")
    mutated = encoded[:index] + replacement + encoded[index + 1 :]
    try:
        parsed = parse_signed_data(mutated)
    except WireError:
        return
    assert parsed.raw != canonical_json(payload)


@settings(max_examples=500, deadline=None)
@given(payloads, st.data())
def test_one_byte_mutation_of_the_payload_never_parses_to_the_same_bytes(
    payload: dict[str, Any], data: st.DataObject
) -> None:
    """Changing one byte of the signed JSON raises WireError or yields a different payload."""
    raw = canonical_json(payload)
    index = data.draw(st.integers(0, len(raw) - 1), label="index")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]), label="byte")
    mutated = raw[:index] + bytes([byte]) + raw[index + 1 :]
    try:
        parsed = parse_signed_data(b64url(mutated))
    except WireError:
        return
    # The signature covers the bytes, so new bytes are a new (unsigned) payload; the members
    # may still read the same (a hex escape's case), which is why nothing re-serialises.
    assert parsed.raw == mutated != raw


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_raises_only_wire_error(text: str) -> None:
    """Any header value either parses or raises WireError, never another exception."""
    with contextlib.suppress(WireError):
        parse_signed_data(text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_behind_valid_base64_raise_only_wire_error(raw: bytes) -> None:
    """Past the base64 layer, arbitrary bytes still raise only WireError."""
    with contextlib.suppress(WireError):
        parse_signed_data(b64url(raw))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(payloads, st.sampled_from(sorted(PAYLOAD_MEMBERS)), json_values)
def test_any_member_of_the_wrong_shape_raises_only_wire_error(
    payload: dict[str, Any], member: str, value: Any
) -> None:
    """Replacing one member with an arbitrary JSON value parses only if it is still valid."""
    payload[member] = value
    try:
        raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        return
    try:
        parsed = parse_signed_data(b64url(raw))
    except WireError:
        return
    assert getattr(parsed, member) == value


# --- parsing: named cases ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b64url(json_object([*valid_payload().items(), ("method", "GET")])), "repeats"),
        (encode(valid_payload(extra=1)), "unknown ['extra']"),
        (encode({k: v for k, v in valid_payload().items() if k != "nonce"}), "missing ['nonce']"),
        (encode(valid_payload(timestamp=1_763_900_000_000.0)), "integer"),
        (encode(valid_payload(timestamp="1763900000000")), "integer"),
        (encode(valid_payload(timestamp=True)), "integer"),
        (encode(valid_payload(timestamp=-1)), "out of range"),
        (encode(valid_payload(timestamp=2**53)), "out of range"),
        (b64url(canonical_json(valid_payload()).replace(b"/api", b"/\xff")), "UTF-8"),
        (b64url(canonical_json(valid_payload()).replace(b"/api", b"/\xc0\xaf")), "UTF-8"),
        (b64url(canonical_json(valid_payload(path="/ab"))) + "=", "base64url"),
        (
            base64.urlsafe_b64encode(canonical_json(valid_payload(path="/ab"))).decode(),
            "base64url",
        ),
        (base64.b64encode(b"\xfb\xff" + canonical_json(valid_payload())).decode(), "base64url"),
        (b64url(canonical_json(valid_payload()))[:-1] + "B", "base64url"),
        (b64url(b"[1,2]"), "not a JSON object"),
        (b64url(b'{"a":NaN}'), "NaN"),
        (b64url(b"{" * 5000), "JSON"),
        (encode(valid_payload(nonce="0B7E4F0E-5D6C-4F3A-9A2B-1C2D3E4F5A6B")), "nonce"),
        (encode(valid_payload(nonce="0b7e4f0e-5d6c-1f3a-9a2b-1c2d3e4f5a6b")), "nonce"),
        (encode(valid_payload(body_hash="sha256:short")), "body_hash"),
        (encode(valid_payload(secret_hmac="A" * 44)), "secret_hmac"),
        (encode(valid_payload(pair_id="pair with spaces")), "pair_id"),
        (encode(valid_payload(method="get")), "method"),
        (encode(valid_payload(path="api/items")), "path"),
        (encode(valid_payload(path="/" + "a" * 8192)), "path"),
        (encode(valid_payload(version=1.0)), "version"),
        ("A" * 20_000, "too large"),
    ],
    ids=[
        "duplicate-key",
        "extra-member",
        "missing-member",
        "float-timestamp",
        "string-timestamp",
        "bool-timestamp",
        "negative-timestamp",
        "huge-timestamp",
        "invalid-utf8",
        "overlong-utf8",
        "padded-base64",
        "padded-base64-encoder",
        "standard-base64-alphabet",
        "non-canonical-base64-tail",
        "json-array",
        "nan-constant",
        "deep-nesting",
        "upper-case-nonce",
        "non-v4-nonce",
        "short-body-hash",
        "long-secret-hmac",
        "bad-pair-id",
        "lower-case-method",
        "relative-path",
        "oversized-path",
        "numeric-version",
        "oversized-header",
    ],
)
def test_malformed_signed_data_is_refused_naming_the_problem(encoded: str, message: str) -> None:
    """Each malformed payload raises WireError whose message names what is wrong."""
    with pytest.raises(WireError) as info:
        parse_signed_data(encoded)
    assert message in str(info.value)


# --- agreement with the published client ---------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b'{"a":1}', "ünïcødé ✓".encode(), bytes(range(256)), b"x" * 1_048_576],
    ids=["empty", "json", "utf8", "all-bytes", "one-mib"],
)
def test_body_hash_equals_the_published_clients(body: bytes) -> None:
    """body_hash agrees with bpc_client.crypto.compute_body_hash byte for byte."""
    assert body_hash(body) == compute_body_hash(body)


def test_body_hash_known_answer() -> None:
    """The empty body hashes to the first 32 characters of base64url(SHA-256(''))."""
    assert compute_body_hash(None) == EMPTY_BODY_HASH == "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NM"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_body_hash_agrees_with_the_published_client_on_any_body(body: bytes) -> None:
    """For every body, authgate and the client compute the same hash."""
    assert body_hash(body) == compute_body_hash(body)


@pytest.mark.parametrize(
    ("secret", "nonce", "timestamp"),
    [
        ("MySecret1!", "0b7e4f0e-5d6c-4f3a-9a2b-1c2d3e4f5a6b", 1_763_900_000_000),
        ("pässwörd-✓", "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f", 0),
        ("x" * 1024, "00000000-0000-4000-8000-000000000000", 2**53 - 1),
    ],
    ids=["ascii", "non-ascii-secret", "long-secret"],
)
def test_secret_hmac_equals_the_published_clients(secret: str, nonce: str, timestamp: int) -> None:
    """secret_hmac agrees with bpc_client.crypto.derive_secret_hmac (43 characters)."""
    expected = derive_secret_hmac(secret, nonce, timestamp)
    assert secret_hmac(secret, nonce, timestamp) == expected
    assert len(expected) == 43


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=64), st.uuids(version=4), st.integers(0, 2**53 - 1))
def test_secret_hmac_agrees_with_the_published_client_on_any_input(
    secret: str, nonce: Any, timestamp: int
) -> None:
    """For every secret, nonce and timestamp, the HMACs are identical."""
    assert secret_hmac(secret, str(nonce), timestamp) == derive_secret_hmac(
        secret, str(nonce), timestamp
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/items", None),
        ("POST", "/api/items", b'{"name":"x"}'),
        ("GET", "/bpc/audit?limit=5", None),
        ("DELETE", "/api/ünïcødé/1", None),
    ],
    ids=["get", "post", "query-in-path", "non-ascii-path"],
)
def test_published_client_headers_parse_and_are_canonical(
    method: str, path: str, body: bytes | None
) -> None:
    """What sign_request sends parses, and its bytes are exactly authgate's canonical JSON."""
    keypair = generate_keypair()
    headers = sign_request(keypair["private_key"], "pair_abc", "MySecret1!", method, path, body)
    parsed = parse_signed_data(headers["X-BPC-Signed-Data"])
    members = {name: getattr(parsed, name) for name in PAYLOAD_MEMBERS}
    assert canonical_json(members) == parsed.raw
    assert (parsed.method, parsed.path, parsed.pair_id) == (method, path, "pair_abc")
    assert parsed.body_hash == body_hash(body or b"")
    assert parsed.secret_hmac == secret_hmac("MySecret1!", parsed.nonce, parsed.timestamp)


def test_jwk_fingerprint_equals_the_published_clients() -> None:
    """The key fingerprint matches the one generate_keypair reports."""
    keypair = generate_keypair()
    assert jwk_fingerprint(keypair["public_key_jwk"]) == keypair["fingerprint"]
