"""JWTBearerVerifier on its own: strict parsing, algorithms and keys, claims, the cache."""

from __future__ import annotations

import hashlib
import hmac
import json
import string
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.crypto.jwks_cache import JWKSCache
from authgate.crypto.jws import parse_compact_jws
from authgate.crypto.keys import SigningKey
from authgate.errors import (
    AuthGateError,
    TokenMalformed,
    TokenSignatureInvalid,
    Unauthenticated,
)
from authgate.metrics import Metrics
from authgate.models import CredentialType, RequestContext
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.verifiers import jwt_bearer
from authgate.verifiers.jwt_bearer import (
    MAX_NUMERIC_DATE,
    IssuerKeys,
    JWTBearerVerifier,
    verify_signature,
)
from tests.support import AUDIENCE, ISSUER, P256_ORDER
from tests.verifiers import (
    CONTEXT,
    NOW,
    Harness,
    b64,
    claims,
    dumps,
    forge,
    header_for,
    mint,
    sign_segments,
    split,
)


def _leaves(cls: type[AuthGateError]) -> set[str]:
    return {cls.reason}.union(*(_leaves(sub) for sub in cls.__subclasses__()))


UNAUTHENTICATED_REASONS = frozenset(_leaves(Unauthenticated))


@pytest.fixture
def gate(es: SigningKey, rs: SigningKey, ed: SigningKey) -> Harness:
    return Harness([es, rs, ed])


@pytest.fixture
def uncached(es: SigningKey, rs: SigningKey, ed: SigningKey) -> Harness:
    return Harness([es, rs, ed], cache_size=0)


# --- valid tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["es", "rs", "ed"], ids=["ES256", "RS256", "EdDSA"])
async def test_valid_token_yields_principal(
    which: str, request: pytest.FixtureRequest, gate: Harness
) -> None:
    """A valid token of each supported algorithm yields its subject, scopes, jti and issuer."""
    key: SigningKey = request.getfixturevalue(which)
    token = mint(key, sub="alice", scope="read write", jti="jti-1")
    principal = await gate.accept(token)
    assert principal.subject == "alice"
    assert principal.credential_type is CredentialType.JWT
    assert principal.scopes == frozenset({"read", "write"})
    assert principal.credential_id == "jti-1"
    assert principal.issuer == ISSUER


async def test_token_signed_by_authgates_own_signer_verifies(es: SigningKey, gate: Harness) -> None:
    """``SigningKey.sign`` (PyJWT's encoder) produces tokens the strict parser accepts."""
    principal = await gate.accept(es.sign(claims(sub="bob")))
    assert principal.subject == "bob"


# --- extract ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"authorization": "Basic dXNlcjpwYXNz"}, None),
        ({"authorization": "Bearer abc.def.ghi"}, "abc.def.ghi"),
        ({"authorization": "bearer abc.def.ghi"}, "abc.def.ghi"),
        ({"authorization": "BEARER   abc.def.ghi  "}, "abc.def.ghi"),
    ],
    ids=["no-header", "basic", "bearer", "lower-case-scheme", "extra-spaces"],
)
def test_extract(gate: Harness, headers: dict[str, str], expected: str | None) -> None:
    """Only the Bearer scheme is ours; anything else is "not mine" (``None``)."""
    context = RequestContext(
        method="GET", path="/", query="", host="h", scheme="https", headers=headers, client_ip="::1"
    )
    assert gate.verifier.extract(context) == expected


def test_extract_empty_bearer_is_malformed(gate: Harness) -> None:
    """``Bearer`` with no token is a malformed credential, not an absent one."""
    context = RequestContext(
        method="GET",
        path="/",
        query="",
        host="h",
        scheme="https",
        headers={"authorization": "Bearer   "},
        client_ip="::1",
    )
    with pytest.raises(TokenMalformed):
        gate.verifier.extract(context)


# --- algorithms and keys ---------------------------------------------------------------


def _public_pem(key: SigningKey) -> bytes:
    return key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hs256(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    signing_input = f"{b64(dumps(header))}.{b64(dumps(payload))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


async def test_alg_none_without_signature_is_malformed(es: SigningKey, gate: Harness) -> None:
    """``alg: none`` with the empty signature it calls for fails parsing: a JWS needs one."""
    token = f"{b64(dumps({'alg': 'none', 'kid': es.kid}))}.{b64(dumps(claims()))}."
    assert await gate.refusal(token) == "token_malformed"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"], ids=str)
async def test_alg_none_with_any_signature_is_not_allowed(
    alg: str, es: SigningKey, gate: Harness
) -> None:
    """``none`` in any spelling is outside every allowlist, whatever signature follows."""
    token = f"{b64(dumps({'alg': alg, 'kid': es.kid}))}.{b64(dumps(claims()))}.{b64(b'x' * 64)}"
    assert await gate.refusal(token) == "token_algorithm_not_allowed"


@pytest.mark.parametrize("which", ["es", "rs", "ed"], ids=["ES256-key", "RS256-key", "EdDSA-key"])
async def test_hs256_signed_with_the_public_key_is_refused(
    which: str, request: pytest.FixtureRequest, gate: Harness
) -> None:
    """Key confusion: an HMAC over the public key's PEM bytes is refused by algorithm."""
    key: SigningKey = request.getfixturevalue(which)
    token = _hs256(_public_pem(key), {"alg": "HS256", "kid": key.kid}, claims())
    assert await gate.refusal(token) == "token_algorithm_not_allowed"


async def test_algorithm_outside_the_issuer_allowlist_is_refused(
    es: SigningKey, rs: SigningKey
) -> None:
    """A correctly signed RS256 token is refused when the issuer allows only ES256."""
    only_es = Harness([es, rs], algorithms=("ES256",))
    assert await only_es.refusal(mint(rs)) == "token_algorithm_not_allowed"
    assert (await only_es.accept(mint(es))).subject == "user-1"


@pytest.mark.parametrize(
    ("header_alg", "kid_of", "signer", "signer_alg"),
    [
        ("RS256", "es", "rs", "RS256"),
        ("ES256", "ed", "es", "ES256"),
        ("EdDSA", "es", "ed", "EdDSA"),
        ("PS256", "rs", "rs", "PS256"),
    ],
    ids=[
        "RS256-with-EC-kid",
        "ES256-with-Ed25519-kid",
        "EdDSA-with-EC-kid",
        "PS256-with-RS256-key",
    ],
)
async def test_algorithm_must_match_the_key(
    header_alg: str,
    kid_of: str,
    signer: str,
    signer_alg: str,
    request: pytest.FixtureRequest,
    es: SigningKey,
    rs: SigningKey,
    ed: SigningKey,
) -> None:
    """A token naming another algorithm than the one its ``kid``'s key is bound to is refused."""
    gate = Harness([es, rs, ed], algorithms=("ES256", "RS256", "EdDSA", "PS256"))
    kid_key: SigningKey = request.getfixturevalue(kid_of)
    signing_key: SigningKey = request.getfixturevalue(signer)
    header = b64(dumps({"alg": header_alg, "kid": kid_key.kid}))
    token = sign_segments(signing_key, header, b64(dumps(claims())), alg=signer_alg)
    assert await gate.refusal(token) == "token_algorithm_not_allowed"


async def test_missing_kid_is_unknown_when_the_ring_has_several_keys(
    es: SigningKey, gate: Harness
) -> None:
    """Without ``kid`` there is no way to choose among several keys."""
    token = forge(es, header=header_for(es, kid=None))
    assert await gate.refusal(token) == "token_key_unknown"


async def test_missing_kid_uses_the_only_key(es: SigningKey) -> None:
    """Without ``kid`` the single key of a one-key ring is used."""
    single = Harness([es])
    assert (await single.accept(forge(es, header=header_for(es, kid=None)))).subject == "user-1"


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        ("no-such-kid", "token_key_unknown"),
        ("", "token_key_unknown"),
        (7, "token_malformed"),
        (None, "token_key_unknown"),
        ("k" * 257, "token_malformed"),
        (["a"], "token_malformed"),
    ],
    ids=["unknown", "empty-with-several-keys", "integer", "absent", "too-long", "list"],
)
async def test_bad_kid(kid: Any, reason: str, es: SigningKey, gate: Harness) -> None:
    """An unknown or ill-typed ``kid`` is refused with its reason."""
    header = header_for(es)
    if kid is None:
        del header["kid"]
    else:
        header["kid"] = kid
    assert await gate.refusal(forge(es, header=header)) == reason


# --- strict JSON and base64url ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        (b'{"alg":"ES256","alg":"ES256","kid":"KID"}', None),
        (b'{"alg":"none","alg":"ES256","kid":"KID"}', None),
        (None, "sub"),
        (None, "exp"),
        (None, "iss"),
    ],
    ids=[
        "header-alg-twice",
        "header-alg-none-then-es256",
        "payload-sub",
        "payload-exp",
        "payload-iss",
    ],
)
async def test_duplicate_json_members_are_refused(
    header: bytes | None, payload: str | None, es: SigningKey, gate: Harness
) -> None:
    """A validly signed token with a repeated JSON member is refused (parsers disagree on it)."""
    raw_header = header.replace(b"KID", es.kid.encode()) if header else None
    raw_payload = None
    if payload is not None:
        body = dumps(claims())
        value = json.dumps(claims()[payload]).encode()
        raw_payload = body[:-1] + b',"' + payload.encode() + b'":' + value + b"}"
    token = forge(es, header=raw_header, payload=raw_payload)
    assert await gate.refusal(token) == "token_malformed"


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-16"),
        lambda text: text.encode("utf-16-le"),
        lambda text: text.encode("utf-32"),
        lambda text: b"\xef\xbb\xbf" + text.encode(),
        lambda text: text.encode().replace(b"ES256", b"ES\xff256"),
    ],
    ids=["utf-16-bom", "utf-16-le", "utf-32", "utf-8-bom", "invalid-utf-8"],
)
async def test_header_must_be_plain_utf8(
    encode: Callable[[str], bytes], es: SigningKey, gate: Harness
) -> None:
    """The header is UTF-8 JSON only (PyJWT would decode UTF-16 and UTF-32)."""
    token = forge(es, header=encode(json.dumps(header_for(es))))
    assert await gate.refusal(token) == "token_malformed"


async def test_payload_in_utf16_is_refused(es: SigningKey, gate: Harness) -> None:
    """The payload is UTF-8 JSON only."""
    token = forge(es, payload=json.dumps(claims()).encode("utf-16"))
    assert await gate.refusal(token) == "token_malformed"


@pytest.mark.parametrize(
    "payload",
    [b"", b"[1,2]", b'"text"', b"null", b"{", b'{"a":1} {"b":2}', b"\x00"],
    ids=["empty", "array", "string", "null", "truncated", "two-objects", "nul"],
)
async def test_payload_must_be_one_json_object(
    payload: bytes, es: SigningKey, gate: Harness
) -> None:
    """A payload that is not exactly one JSON object is malformed, even when signed."""
    assert await gate.refusal(forge(es, payload=payload)) == "token_malformed"


def _der(raw: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _non_canonical_last_char(segment: str) -> str:
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    index = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[index | 1 if index % 2 == 0 else index & ~1]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h, p, s: f"{h}=.{p}.{s}",
        lambda h, p, s: f"{h}.{p}.{s}==",
        lambda h, p, s: f"{h}.{p}.{s[:10]} {s[10:]}",
        lambda h, p, s: f"{h}.{p}.{s[:-1]}",
        lambda h, p, s: f"{h}.{p}.{_non_canonical_last_char(s)}",
        lambda h, p, s: f"{h}.{p}.{s}.",
        lambda h, p, s: f"{h}.{p}",
        lambda h, p, s: f"{h}..{s}",
        lambda h, p, s: f".{p}.{s}",
        lambda h, p, s: f"{h}.{p}.{s}".replace(".", "\u2024"),
        lambda h, p, s: f"{h}.{p}.{s}\u00e9",
    ],
    ids=[
        "padded-header",
        "padded-signature",
        "space-in-signature",
        "signature-length-mod-4-is-1",
        "non-canonical-trailing-bits",
        "four-segments",
        "two-segments",
        "empty-payload-segment-with-signature-of-other",
        "empty-header",
        "unicode-dots",
        "non-ascii",
    ],
)
async def test_non_canonical_base64url_is_refused(
    mangle: Callable[[str, str, str], str], es: SigningKey, gate: Harness
) -> None:
    """Only exact, unpadded, canonical base64url in three segments is accepted."""
    token = mint(es)
    header, payload, signature = token.split(".")
    mangled = mangle(header, payload, signature)
    assert mangled != token
    assert await gate.refusal(mangled) in {"token_malformed", "token_signature_invalid"}


async def test_non_canonical_trailing_bits_decode_to_the_same_signature(es: SigningKey) -> None:
    """The trailing-bits case would verify without the canonical check: its bytes are equal."""
    token = mint(es)
    header, payload, signature = token.split(".")
    twin = _non_canonical_last_char(signature)
    assert twin != signature
    assert split(f"{header}.{payload}.{twin}")[2] == split(token)[2]
    with pytest.raises(TokenMalformed, match="canonical"):
        parse_compact_jws(f"{header}.{payload}.{twin}")


@pytest.mark.parametrize(
    "std_b64",
    [
        lambda seg: seg.replace("-", "+").replace("_", "/"),
    ],
    ids=["plus-slash-alphabet"],
)
async def test_standard_base64_alphabet_is_refused(
    std_b64: Callable[[str], str], es: SigningKey, gate: Harness
) -> None:
    """``+`` and ``/`` (standard base64) are not base64url."""
    for _ in range(50):
        token = mint(es)
        header, payload, signature = token.split(".")
        if std_b64(signature) != signature:
            break
    else:  # pragma: no cover - 50 signatures without '-' or '_' is vanishingly unlikely
        pytest.fail("no signature with '-' or '_'")
    assert await gate.refusal(f"{header}.{payload}.{std_b64(signature)}") == "token_malformed"


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf")],
    ids=["NaN", "Infinity", "-Infinity"],
)
@pytest.mark.parametrize("claim", ["exp", "custom"], ids=["in-exp", "in-custom-claim"])
async def test_nan_and_infinity_are_refused(
    claim: str, value: float, es: SigningKey, gate: Harness
) -> None:
    """The non-standard JSON constants are refused anywhere in the payload."""
    payload = dumps(claims(**{claim: value}))
    assert b"NaN" in payload or b"Infinity" in payload
    assert await gate.refusal(forge(es, payload=payload)) == "token_malformed"


# --- numeric dates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "exp",
    [
        True,
        "1700000300",
        float(NOW + 300),
        NOW + 300.5,
        -1,
        MAX_NUMERIC_DATE + 1,
        10**20,
        10**400,
        [NOW + 300],
        {"t": NOW + 300},
    ],
    ids=[
        "bool",
        "string",
        "integral-float",
        "fractional",
        "negative",
        "after-year-3000",
        "absurd",
        "huge",
        "list",
        "object",
    ],
)
async def test_exp_must_be_a_plausible_integer(exp: Any, es: SigningKey, gate: Harness) -> None:
    """``exp`` is an integer NumericDate between 1970 and 3000; anything else is malformed."""
    assert await gate.refusal(mint(es, exp=exp)) == "token_malformed"


@pytest.mark.parametrize("claim", ["nbf", "iat"], ids=str)
@pytest.mark.parametrize(
    "value",
    [True, "0", 1.5, -5, MAX_NUMERIC_DATE + 1],
    ids=["bool", "string", "float", "neg", "big"],
)
async def test_nbf_and_iat_follow_the_same_rule(
    claim: str, value: Any, es: SigningKey, gate: Harness
) -> None:
    """``nbf`` and ``iat`` are checked exactly like ``exp`` when present."""
    assert await gate.refusal(mint(es, **{claim: value})) == "token_malformed"


async def test_exp_is_required(es: SigningKey, gate: Harness) -> None:
    """A token without ``exp`` never expires, so it is refused."""
    assert await gate.refusal(mint(es, exp=None)) == "token_malformed"
    assert await gate.refusal(forge(es, payload={**claims(), "exp": None})) == "token_malformed"


async def test_exp_at_the_year_3000_bound_is_accepted(es: SigningKey, gate: Harness) -> None:
    """The plausibility bound itself is still a valid date."""
    assert (await gate.accept(mint(es, exp=MAX_NUMERIC_DATE))).subject == "user-1"


async def test_expiry_leeway_edges(es: SigningKey, uncached: Harness) -> None:
    """With 30 s leeway a token is accepted until exp+29 s and refused from exp+30 s."""
    token = mint(es, exp=NOW + 60)
    uncached.clock.advance((60 + 29) * 1000)
    assert (await uncached.accept(token)).subject == "user-1"
    uncached.clock.advance(1000)
    assert await uncached.refusal(token) == "token_expired"


@pytest.mark.parametrize("claim", ["nbf", "iat"], ids=str)
async def test_future_nbf_and_iat_leeway_edges(
    claim: str, es: SigningKey, uncached: Harness
) -> None:
    """``nbf``/``iat`` up to 30 s ahead are tolerated; 31 s ahead is not yet valid."""
    assert (await uncached.accept(mint(es, **{claim: NOW + 30}))).subject == "user-1"
    assert await uncached.refusal(mint(es, **{claim: NOW + 31})) == "token_not_yet_valid"


async def test_zero_leeway_is_exact(es: SigningKey) -> None:
    """Without leeway a token is refused at exactly ``exp``."""
    gate = Harness([es], leeway_seconds=0, cache_size=0)
    token = mint(es, exp=NOW + 1)
    assert (await gate.accept(token)).subject == "user-1"
    gate.clock.advance(1000)
    assert await gate.refusal(token) == "token_expired"


# --- other claims ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aud", "reason"),
    [
        ([AUDIENCE], None),
        (["other", AUDIENCE], None),
        (["other"], "token_audience_invalid"),
        ("other", "token_audience_invalid"),
        ([], "token_malformed"),
        ([AUDIENCE, 7], "token_malformed"),
        (7, "token_malformed"),
        ({"aud": AUDIENCE}, "token_malformed"),
    ],
    ids=[
        "list",
        "list-with-other",
        "list-without-ours",
        "other",
        "empty-list",
        "non-string",
        "int",
        "object",
    ],
)
async def test_audience(aud: Any, reason: str | None, es: SigningKey, gate: Harness) -> None:
    """``aud`` may be a string or a list of strings, one of which must be ours."""
    token = mint(es, aud=aud)
    if reason is None:
        assert (await gate.accept(token)).subject == "user-1"
    else:
        assert await gate.refusal(token) == reason


async def test_audience_is_required(es: SigningKey, gate: Harness) -> None:
    """A token without ``aud`` could be meant for anyone: refused."""
    assert await gate.refusal(mint(es, aud=None)) == "token_audience_invalid"


@pytest.mark.parametrize(
    ("iss", "reason"),
    [
        (None, "token_issuer_invalid"),
        ("https://evil.test", "token_issuer_invalid"),
        (ISSUER + "/", "token_issuer_invalid"),
        (ISSUER[:-1], "token_issuer_invalid"),
        ([ISSUER], "token_malformed"),
        ("", "token_malformed"),
    ],
    ids=["missing", "other", "trailing-slash", "prefix", "list", "empty"],
)
async def test_issuer_must_match_exactly(
    iss: Any, reason: str, es: SigningKey, gate: Harness
) -> None:
    """``iss`` selects the issuer by exact string; anything else is refused."""
    assert await gate.refusal(mint(es, iss=iss)) == reason


@pytest.mark.parametrize(
    "sub",
    [None, "", 42, ["alice"], "x" * 4097],
    ids=["missing", "empty", "integer", "list", "too-long"],
)
async def test_subject_is_a_required_string(sub: Any, es: SigningKey, gate: Harness) -> None:
    """``sub`` is a non-empty string of at most 4096 characters (ML-DSA-65 keys are 3904)."""
    assert await gate.refusal(mint(es, sub=sub)) == "token_malformed"


@pytest.mark.parametrize(
    "sub",
    ["alice\nX-Admin: 1", "alice\r", "nul\x00", "tab\t", "esc\x1b[31m", "del\x7f", "lone\ud800"],
    ids=["newline", "cr", "nul", "tab", "escape", "del", "lone-surrogate"],
)
async def test_control_characters_in_subject_are_refused(
    sub: str, es: SigningKey, gate: Harness
) -> None:
    """Control characters (and lone surrogates) in ``sub`` never reach headers or logs."""
    payload = json.dumps(claims(sub=sub)).encode("ascii")  # \\u escapes keep it ASCII
    assert await gate.refusal(forge(es, payload=payload)) == "token_malformed"


async def test_jti_is_required_for_own_tokens(es: SigningKey, gate: Harness) -> None:
    """authgate's own tokens must carry ``jti`` (revocation needs it)."""
    assert await gate.refusal(mint(es, jti=None)) == "token_malformed"


async def test_jti_may_be_absent_when_not_required(es: SigningKey) -> None:
    """An issuer configured without ``require_jti`` accepts tokens without one."""
    lax = Harness([es], require_jti=False)
    assert (await lax.accept(mint(es, jti=None))).credential_id == ""


@pytest.mark.parametrize(
    "scope",
    ["read  write", 'read "x"', 7, ["read", 7], ["a b"]],
    ids=["double-space", "quote", "integer", "non-string-item", "space-in-item"],
)
async def test_bad_scope_is_malformed(scope: Any, es: SigningKey, gate: Harness) -> None:
    """``scope`` must be space-separated scope tokens or a list of them."""
    assert await gate.refusal(mint(es, scope=scope)) == "token_malformed"


@pytest.mark.parametrize(
    "crit",
    [["exp"], [], "b64"],
    ids=["crit-exp", "crit-empty", "crit-string"],
)
async def test_crit_header_is_refused(crit: Any, es: SigningKey, gate: Harness) -> None:
    """No header extension is understood, so any ``crit`` is refused."""
    token = forge(es, header=header_for(es, crit=crit, exp=NOW))
    assert await gate.refusal(token) == "token_malformed"


@pytest.mark.parametrize(
    ("typ", "reason"),
    [
        ("JWT", None),
        ("at+jwt", None),
        ("application/at+JWT", None),
        (None, None),
        ("refresh+jwt", "token_type_invalid"),
        ("authgate-identity+jwt", "token_type_invalid"),
        ("JOSE", "token_type_invalid"),
        (1, "token_type_invalid"),
    ],
    ids=["jwt", "at+jwt", "media-type", "absent", "refresh", "identity", "jose", "integer"],
)
async def test_typ_header(typ: Any, reason: str | None, es: SigningKey, gate: Harness) -> None:
    """Only access-token ``typ`` values (or none) are accepted."""
    token = forge(es, header=header_for(es, typ=typ))
    if reason is None:
        assert (await gate.accept(token)).subject == "user-1"
    else:
        assert await gate.refusal(token) == reason


@pytest.mark.parametrize(
    "marker", [{"type": "refresh"}, {"token_use": "refresh"}], ids=["type", "token_use"]
)
async def test_refresh_token_claims_are_refused(
    marker: dict[str, str], es: SigningKey, gate: Harness
) -> None:
    """A refresh token is not an access token, even with an access-token ``typ``."""
    assert await gate.refusal(mint(es, **marker)) == "token_type_invalid"


async def test_token_size_limit(es: SigningKey) -> None:
    """A token one byte over ``max_token_bytes`` is token_too_large; at the limit it is read."""
    token = mint(es)
    at_limit = Harness([es], max_token_bytes=len(token))
    assert (await at_limit.accept(token)).subject == "user-1"
    below = Harness([es], max_token_bytes=len(token) - 1)
    assert await below.refusal(token) == "token_too_large"


async def test_huge_token_is_refused_before_parsing(es: SigningKey, gate: Harness) -> None:
    """A megabyte of garbage is refused on size alone."""
    assert await gate.refusal("a" * 1_000_000) == "token_too_large"


# --- signatures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reshape",
    [
        lambda sig: sig[:-1],
        lambda sig: sig + b"\x00",
        lambda sig: b"\x00" + sig,
        lambda sig: sig[:32],
        lambda sig: sig + sig,
        _der,
    ],
    ids=[
        "63-bytes",
        "65-bytes-trailing-zero",
        "65-bytes-leading-zero",
        "32-bytes",
        "128-bytes",
        "DER",
    ],
)
async def test_es256_signature_must_be_64_bytes(
    reshape: Callable[[bytes], bytes], es: SigningKey, gate: Harness
) -> None:
    """An ES256 signature is raw r||s of exactly 64 bytes; no other size or encoding."""
    header, payload, signature = split(mint(es))
    assert len(signature) == 64
    token = f"{header}.{payload}.{b64(reshape(signature))}"
    assert await gate.refusal(token) == "token_signature_invalid"


class _LenientES256:
    """A primitive that accepts every signature: stands in for a lax library."""

    def __init__(self) -> None:
        self.calls = 0

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        self.calls += 1
        return True


@pytest.mark.parametrize("size", [0, 63, 65, 72], ids=["empty", "63", "65", "72-DER-sized"])
def test_length_rule_does_not_rely_on_the_library(
    size: int, es: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """authgate's own 64-byte rule refuses a wrong size before the primitive runs at all."""
    lenient = _LenientES256()
    monkeypatch.setitem(jwt_bearer._PYJWT_ALGORITHMS, "ES256", lenient)
    monkeypatch.setattr(jwt_bearer, "_ECDSA", {})  # ES256 through the stand-in only
    with pytest.raises(TokenSignatureInvalid):
        verify_signature("ES256", es.verification_key(), b"input", b"\x01" * size)
    assert lenient.calls == 0
    verify_signature("ES256", es.verification_key(), b"input", b"\x01" * 64)
    assert lenient.calls == 1, "the stand-in really is the primitive in use"


@pytest.mark.parametrize("which", ["es", "rs", "ed"], ids=["ES256", "RS256", "EdDSA"])
async def test_signature_from_another_key_of_the_same_type_is_refused(
    which: str, request: pytest.FixtureRequest, gate: Harness
) -> None:
    """A token signed by a stranger's key under our ``kid`` is refused."""
    ours: SigningKey = request.getfixturevalue(which)
    stranger = SigningKey.generate(ours.alg)
    header = b64(dumps(header_for(ours)))
    token = sign_segments(stranger, header, b64(dumps(claims())))
    assert await gate.refusal(token) == "token_signature_invalid"


async def test_high_s_twin_verifies_but_cannot_dodge_revocation(
    es: SigningKey, gate: Harness
) -> None:
    """ECDSA is malleable: (r, n-s) verifies too, but revocation keys on ``jti``, not bytes."""
    token = mint(es, jti="malleable")
    header, payload, signature = split(token)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    twin = f"{header}.{payload}.{b64(r.to_bytes(32, 'big') + (P256_ORDER - s).to_bytes(32, 'big'))}"
    assert twin != token
    # Documented behaviour: the re-shaped signature is valid ECDSA and is accepted.
    assert (await gate.accept(token)).credential_id == "malleable"
    assert (await gate.accept(twin)).credential_id == "malleable"
    await gate.stores.revocations.revoke("malleable", expires_at_ms=(NOW + 3600) * 1000)
    assert await gate.refusal(token) == "token_revoked"
    assert await gate.refusal(twin) == "token_revoked"


# --- the verified-token cache ----------------------------------------------------------


class _Issuer:
    """A JWKS endpoint whose document can be changed, and a monotonic clock to match."""

    def __init__(self, key: SigningKey) -> None:
        self.document: dict[str, Any] = {"keys": [key.public_jwk()]}
        self.now = 0.0

    async def fetch(self, url: str) -> bytes:
        return dumps(self.document)

    def monotonic(self) -> float:
        return self.now


async def test_second_verification_is_a_cache_hit_that_needs_no_key(es: SigningKey) -> None:
    """Once verified, a token is served from the cache even after its key has gone."""
    issuer = _Issuer(es)
    cache = JWKSCache(
        url="https://jwks.test/keys",
        fetch=issuer.fetch,
        algorithms=["ES256"],
        ttl_seconds=10,
        min_refresh_interval_seconds=1,
        monotonic=issuer.monotonic,
    )
    clock = ManualClock(NOW * 1000)
    metrics = Metrics()
    verifier = JWTBearerVerifier(
        issuers=[
            IssuerKeys(
                issuer=ISSUER,
                audiences=frozenset({AUDIENCE}),
                algorithms=frozenset({"ES256"}),
                require_jti=False,
                jwks=cache,
            )
        ],
        revocations=MemoryStores(clock).revocations,
        clock=clock,
        leeway_seconds=0,
        max_token_bytes=8192,
        cache_size=10,
        metrics=metrics,
    )
    token = mint(es)
    assert (await verifier.verify(token, CONTEXT)).subject == "user-1"
    assert cache.fetch_count == 1

    issuer.document = {"keys": []}  # the issuer drops the key ...
    issuer.now = 100.0  # ... and the cached key set is stale
    assert (await verifier.verify(token, CONTEXT)).subject == "user-1"
    assert cache.fetch_count == 1, "a cached token needs no key lookup at all"
    hits = metrics.registry.get_sample_value(
        "authgate_cache_lookups_total", {"cache": "jwt", "result": "hit"}
    )
    assert hits == 1.0

    # Control: the key really is gone, so only the cache made the second call succeed.
    with pytest.raises(AuthGateError) as refused:
        await verifier.verify(mint(es), CONTEXT)
    assert refused.value.reason == "token_key_unknown"


async def test_cached_token_still_expires(es: SigningKey, gate: Harness) -> None:
    """Expiry is re-checked on every cache hit as the clock moves."""
    token = mint(es, exp=NOW + 60)
    assert (await gate.accept(token)).subject == "user-1"
    gate.clock.advance((60 + 30) * 1000)
    assert await gate.refusal(token) == "token_expired"
    assert gate.cache_lookups("hit") == 1.0


async def test_cached_token_is_still_checked_for_revocation(es: SigningKey, gate: Harness) -> None:
    """Revocation applies to a token already in the cache."""
    token = mint(es, jti="revoke-me")
    assert (await gate.accept(token)).subject == "user-1"
    assert (await gate.accept(token)).subject == "user-1"
    await gate.stores.revocations.revoke("revoke-me", expires_at_ms=(NOW + 600) * 1000)
    assert await gate.refusal(token) == "token_revoked"
    assert gate.cache_lookups("hit") == 2.0


async def test_revoked_token_is_never_cached(es: SigningKey, gate: Harness) -> None:
    """A token revoked before its first use is refused and stays refused."""
    await gate.stores.revocations.revoke("early", expires_at_ms=(NOW + 600) * 1000)
    token = mint(es, jti="early")
    assert await gate.refusal(token) == "token_revoked"
    assert await gate.refusal(token) == "token_revoked"
    assert gate.cache_lookups("hit") == 0.0


async def test_cache_is_bounded(es: SigningKey) -> None:
    """A cache of size 3 holds at most 3 tokens: re-verifying 10 gives at most 3 hits."""
    gate = Harness([es], cache_size=3)
    tokens = [mint(es) for _ in range(10)]
    for token in tokens:
        await gate.accept(token)
    assert gate.cache_lookups("hit") == 0.0
    for token in reversed(tokens):
        await gate.accept(token)
    assert gate.cache_lookups("hit") == 3.0


async def test_cache_size_zero_disables_the_cache(es: SigningKey, uncached: Harness) -> None:
    """With ``cache_size: 0`` every verification is a full one and nothing is counted."""
    token = mint(es)
    await uncached.accept(token)
    await uncached.accept(token)
    assert uncached.cache_lookups("hit") == 0.0
    assert uncached.cache_lookups("miss") == 0.0


# --- properties ------------------------------------------------------------------------

_SCOPE = st.from_regex(r"[a-z][a-z0-9:._-]{0,15}", fullmatch=True)
_SUBJECT = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    sub=_SUBJECT,
    scopes=st.lists(_SCOPE, max_size=5, unique=True),
    lifetime=st.integers(min_value=1, max_value=10**6),
    aud_as_list=st.booleans(),
)
async def test_round_trip(
    es: SigningKey, sub: str, scopes: list[str], lifetime: int, aud_as_list: bool
) -> None:
    """Any well-formed claims set survives mint -> verify unchanged."""
    gate = Harness([es])
    token = mint(
        es,
        sub=sub,
        scope=" ".join(scopes) if scopes else None,
        exp=NOW + lifetime,
        aud=[AUDIENCE] if aud_as_list else AUDIENCE,
    )
    principal = await gate.accept(token)
    assert principal.subject == sub
    assert principal.scopes == frozenset(scopes)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
async def test_one_character_mutation_is_always_refused(
    es: SigningKey, data: st.DataObject
) -> None:
    """Changing any one character of a valid token never yields a principal."""
    gate = Harness([es])
    token = mint(es)
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1), label="position")
    char = data.draw(
        st.characters(min_codepoint=0, max_codepoint=0xFF).filter(lambda c: c != token[position]),
        label="char",
    )
    mutated = token[:position] + char + token[position + 1 :]
    assert await gate.refusal(mutated) in UNAUTHENTICATED_REASONS


_SEGMENT = st.from_regex(r"[A-Za-z0-9_-]{0,60}", fullmatch=True)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    token=st.one_of(
        st.text(max_size=200),
        st.builds(lambda a, b, c: f"{a}.{b}.{c}", _SEGMENT, _SEGMENT, _SEGMENT),
        st.builds(
            lambda h, p, s: f"{b64(dumps(h))}.{b64(dumps(p))}.{b64(s)}",
            _JSON,
            _JSON,
            st.binary(max_size=70),
        ),
        st.builds(
            lambda extra, p, s: f"{b64(dumps({'alg': 'ES256', **extra}))}.{b64(dumps(p))}.{b64(s)}",
            st.dictionaries(st.sampled_from(["kid", "typ", "crit", "jku"]), _JSON, max_size=3),
            st.fixed_dictionaries({"iss": st.just(ISSUER)}, optional={"sub": _JSON, "exp": _JSON}),
            st.binary(min_size=64, max_size=64),
        ),
    )
)
async def test_malformed_input_raises_only_documented_refusals(es: SigningKey, token: str) -> None:
    """Whatever the bytes, the verifier refuses with an Unauthenticated leaf, never crashes."""
    gate = Harness([es])
    with pytest.raises(Unauthenticated) as refused:
        await gate.verifier.verify(token, CONTEXT)
    assert refused.value.reason in UNAUTHENTICATED_REASONS
