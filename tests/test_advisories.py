"""One regression test per known JWT/JWS attack, each named after its advisory.

Each docstring names the advisory (or the attack class where there is no single CVE) and
what authgate does instead. Tokens are forged byte by byte with the kit in
``tests/verifiers``; most go straight to the verifier, and the ones about network side
effects (``jku``) go through the real app over a socket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization

from authgate.client.dpop import DPoPKey
from authgate.crypto.jwks_cache import JWKSCache
from authgate.crypto.keys import KeyRing, SigningKey, b64url, has_roca_fingerprint
from authgate.errors import AuthGateError
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.verifiers.jwt_bearer import IssuerKeys, JWTBearerVerifier
from authgate.web.app import create_app
from tests.support import AUDIENCE, ISSUER, P256_ORDER, make_settings, serve_app
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
from tests.verifiers.test_jwt_dpop import Rig


@pytest.fixture
def gate(es: SigningKey, rs: SigningKey, ed: SigningKey) -> Harness:
    return Harness([es, rs, ed])


def hs256(secret: bytes, header: dict[str, Any], payload: dict[str, Any] | None = None) -> str:
    """A token MACed with ``secret``: what an attacker builds from a public key."""
    signing_input = f"{b64(dumps(header))}.{b64(dumps(payload or claims(sub='admin')))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def public_bytes(key: SigningKey, encoding: str) -> bytes:
    public = key.private_key.public_key()
    if encoding == "spki-pem":
        return public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if encoding == "pkcs1-pem":
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    if encoding == "openssh":
        return public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    if encoding == "raw":
        return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if encoding == "jwk":
        return json.dumps(key.public_jwk()).encode()
    raise AssertionError(encoding)


# --- algorithm attacks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "signature", "reason"),
    [
        ("none", "", "token_malformed"),
        ("None", "", "token_malformed"),
        ("NONE", b64(b"sig"), "token_algorithm_not_allowed"),
        ("none", b64(b"\x00" * 64), "token_algorithm_not_allowed"),
        ("", b64(b"sig"), "token_algorithm_not_allowed"),
    ],
    ids=[
        "none-unsigned",
        "None-unsigned",
        "NONE-junk-signature",
        "none-zero-signature",
        "empty-alg",
    ],
)
async def test_cve_2015_9235_alg_none(
    alg: str, signature: str, reason: str, es: SigningKey, gate: Harness
) -> None:
    """CVE-2015-9235 (jsonwebtoken < 4.2.2, McLean 2015): ``alg: none`` tokens accepted.

    authgate has no unsigned algorithm: the empty signature fails parsing, and ``none`` in
    any spelling is outside every allowlist."""
    token = (
        f"{b64(dumps({'alg': alg, 'kid': es.kid}))}.{b64(dumps(claims(sub='admin')))}.{signature}"
    )
    assert await gate.refusal(token) == reason


async def test_cve_2015_9235_hs256_signed_with_the_rsa_public_key(
    rs: SigningKey, gate: Harness
) -> None:
    """CVE-2015-9235 (jsonwebtoken < 4.2.2): HS256 keyed with the RSA public key's PEM.

    The algorithm comes from the issuer's allowlist and the key's binding, never from
    the token, and HMAC is never allowed."""
    token = hs256(public_bytes(rs, "spki-pem"), {"alg": "HS256", "typ": "JWT", "kid": rs.kid})
    assert await gate.refusal(token) == "token_algorithm_not_allowed"


async def test_cve_2017_11424_pkcs1_pem_public_key_as_hmac_secret(
    rs: SigningKey, gate: Harness
) -> None:
    """CVE-2017-11424 (PyJWT <= 1.5.0): PKCS#1 ``BEGIN RSA PUBLIC KEY`` slipped past the
    HMAC key blocklist. authgate has no blocklist to slip past: HMAC is never allowed."""
    token = hs256(public_bytes(rs, "pkcs1-pem"), {"alg": "HS256", "kid": rs.kid})
    assert await gate.refusal(token) == "token_algorithm_not_allowed"


@pytest.mark.parametrize(
    "encoding", ["openssh", "raw", "spki-pem", "jwk"], ids=["ssh-ed25519", "raw", "pem", "jwk-json"]
)
async def test_cve_2022_29217_key_confusion_hs256_with_public_key(
    encoding: str, ed: SigningKey, gate: Harness
) -> None:
    """CVE-2022-29217 (PyJWT < 2.4.0): an ``ssh-ed25519`` public key used as HMAC secret.

    Every encoding of the Ed25519 public key is refused as an HMAC key, by algorithm."""
    token = hs256(public_bytes(ed, encoding), {"alg": "HS256", "kid": ed.kid})
    assert await gate.refusal(token) == "token_algorithm_not_allowed"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"], ids=str)
async def test_cve_2024_33663_openssh_ecdsa_key_confusion(
    alg: str, es: SigningKey, gate: Harness
) -> None:
    """CVE-2024-33663 (python-jose <= 3.3.0): HMAC keyed with an OpenSSH ECDSA public key.

    No HMAC algorithm is ever accepted, whatever the key material."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    header = b64(dumps({"alg": alg, "kid": es.kid}))
    payload = b64(dumps(claims(sub="admin")))
    mac = hmac.new(public_bytes(es, "openssh"), f"{header}.{payload}".encode(), digest).digest()
    assert await gate.refusal(f"{header}.{payload}.{b64(mac)}") == "token_algorithm_not_allowed"


async def test_cve_2026_48526_public_jwk_as_hmac_secret(es: SigningKey, gate: Harness) -> None:
    """CVE-2026-48526 (PyJWT < 2.13.0): a public JWK document accepted as an HMAC secret."""
    token = hs256(public_bytes(es, "jwk"), {"alg": "HS256", "kid": es.kid})
    assert await gate.refusal(token) == "token_algorithm_not_allowed"


async def test_algorithm_of_another_key_family_is_refused(
    es: SigningKey, rs: SigningKey, gate: Harness
) -> None:
    """RFC 8725 section 3.1 (algorithm substitution): an RS256 token under an ES256 kid."""
    token = sign_segments(rs, b64(dumps(header_for(rs, kid=es.kid))), b64(dumps(claims())))
    assert await gate.refusal(token) == "token_algorithm_not_allowed"


# --- signature attacks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 0), (0, 1), (1, 0), (P256_ORDER, P256_ORDER), (P256_ORDER, 1), (1, P256_ORDER)],
    ids=["r=s=0", "r=0", "s=0", "r=s=n", "r=n", "s=n"],
)
async def test_psychic_signature_cve_2022_21449_zero_rs(
    r: int, s: int, es: SigningKey, gate: Harness
) -> None:
    """CVE-2022-21449 ("psychic signatures", Java 15-18): r = s = 0 verified everything.

    Out-of-range r or s never verifies."""
    header, payload, _ = split(mint(es, sub="admin"))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert await gate.refusal(f"{header}.{payload}.{b64(signature)}") == "token_signature_invalid"


async def test_ecdsa_signature_malleability_cannot_dodge_revocation(
    es: SigningKey, gate: Harness
) -> None:
    """ECDSA malleability: (r, n - s) is a second valid signature of the same token.

    It verifies (documented), but revocation keys on ``jti`` and never on signature bytes,
    so the re-shaped twin is revoked with the original."""
    token = mint(es, jti="revoked-twin")
    header, payload, signature = split(token)
    s = int.from_bytes(signature[32:], "big")
    twin = f"{header}.{payload}.{b64(signature[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"
    assert (await gate.accept(twin)).credential_id == "revoked-twin"
    await gate.stores.revocations.revoke("revoked-twin", expires_at_ms=(NOW + 600) * 1000)
    assert await gate.refusal(token) == "token_revoked"
    assert await gate.refusal(twin) == "token_revoked"


@pytest.mark.parametrize("extra", [b"\x00", b"\x00\x00"], ids=["one-zero", "two-zeros"])
async def test_es256_signature_with_trailing_bytes_is_refused(
    extra: bytes, es: SigningKey, gate: Harness
) -> None:
    """Wycheproof "TrailingZeros" / "SignatureTooLong": ES256 is exactly 64 bytes."""
    header, payload, signature = split(mint(es))
    token = f"{header}.{payload}.{b64(signature + extra)}"
    assert await gate.refusal(token) == "token_signature_invalid"


# --- header-supplied keys --------------------------------------------------------------


async def test_cve_2018_0114_embedded_jwk_header_is_ignored(es: SigningKey, gate: Harness) -> None:
    """CVE-2018-0114 (node-jose < 0.11.0): the key embedded in the ``jwk`` header was trusted.

    authgate never reads ``jwk`` from a token; the attacker's signature fails under ours."""
    attacker = SigningKey.generate("ES256")
    for kid in (es.kid, attacker.kid):
        header = {"alg": "ES256", "kid": kid, "jwk": attacker.public_jwk()}
        token = forge(attacker, header=header, payload=claims(sub="admin"))
        assert await gate.refusal(token) in {"token_signature_invalid", "token_key_unknown"}


class CountingJWKS:
    """An attacker-controlled key server that records every request it gets."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.hits: list[str] = []

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            return web.json_response({"keys": [self.key.public_jwk()]})

        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        return app


@pytest.mark.parametrize("member", ["jku", "x5u"], ids=str)
async def test_jku_header_is_never_fetched(member: str, es: SigningKey) -> None:
    """JWKS/X.509 URL injection (RFC 8725 section 3.10, PortSwigger "jku header injection"):
    a token naming its own key URL must not make authgate fetch it, nor trust what is there.
    """
    attacker = SigningKey.generate("ES256")
    jwks = CountingJWKS(attacker)
    async with serve_app(jwks.app()) as port:
        url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        token = forge(
            attacker,
            header={"alg": "ES256", "kid": attacker.kid, member: url},
            payload={**claims(sub="admin", scope="admin"), "exp": 4_000_000_000},
        )
        settings = make_settings(policy={"rules": [{"id": "api", "path_prefix": "/api"}]})
        app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([es]))
        async with TestClient(TestServer(app)) as client:
            resp = await client.get(
                "/auth",
                headers={
                    "Authorization": f"Bearer {token}",
                    "X-Original-URI": "/api/x",
                    "X-Original-Method": "GET",
                },
            )
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "token_key_unknown"
    assert jwks.hits == []


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../../../dev/null",
        "/dev/null",
        "..\\..\\windows\\win.ini",
        "x' UNION SELECT 'secret' --",
        "key\x00.pem",
        "$(curl evil.test)",
        "*",
    ],
    ids=["dotdot-dev-null", "dev-null", "backslashes", "sql-injection", "nul", "shell", "wildcard"],
)
@pytest.mark.parametrize("alg", ["HS256", "ES256"], ids=str)
async def test_kid_path_traversal_is_just_an_unknown_kid(kid: str, alg: str, gate: Harness) -> None:
    """``kid`` injection (path traversal to /dev/null for an empty HMAC key, SQL injection):
    ``kid`` is only ever a dictionary key, so hostile values are simply unknown."""
    if alg == "HS256":
        token = hs256(b"", {"alg": "HS256", "kid": kid})
        expected = "token_algorithm_not_allowed"
    else:
        attacker = SigningKey.generate("ES256")
        token = forge(attacker, header={"alg": "ES256", "kid": kid}, payload=claims(sub="admin"))
        expected = "token_key_unknown"
    assert await gate.refusal(token) == expected


async def test_key_of_another_issuer_cannot_sign_for_ours(es: SigningKey) -> None:
    """Issuer/key mixing (RFC 8725 section 3.8): a key trusted for an external issuer must
    not validate tokens that claim to come from authgate itself."""
    partner = SigningKey.generate("ES256")

    async def fetch(url: str) -> bytes:
        return json.dumps({"keys": [partner.public_jwk()]}).encode()

    clock = ManualClock(NOW * 1000)
    verifier = JWTBearerVerifier(
        issuers=[
            IssuerKeys(
                issuer=ISSUER,
                audiences=frozenset({AUDIENCE}),
                algorithms=frozenset({"ES256"}),
                require_jti=True,
                key_ring=KeyRing([es]),
            ),
            IssuerKeys(
                issuer="https://partner.test",
                audiences=frozenset({AUDIENCE}),
                algorithms=frozenset({"ES256"}),
                require_jti=False,
                jwks=JWKSCache(
                    url="https://partner.test/jwks",
                    fetch=fetch,
                    algorithms=["ES256"],
                    ttl_seconds=300,
                    min_refresh_interval_seconds=30,
                ),
            ),
        ],
        revocations=MemoryStores(clock).revocations,
        clock=clock,
        leeway_seconds=30,
        max_token_bytes=8192,
        cache_size=10,
    )
    own_claim = mint(partner, iss=ISSUER, sub="admin")
    with pytest.raises(AuthGateError) as refused:
        await verifier.verify(own_claim, CONTEXT)
    assert refused.value.reason == "token_key_unknown"
    partner_claim = mint(partner, iss="https://partner.test", sub="partner-user")
    assert (await verifier.verify(partner_claim, CONTEXT)).issuer == "https://partner.test"


async def test_cve_2017_15361_roca_key_in_a_jwks_is_never_used() -> None:
    """CVE-2017-15361 (ROCA): RSA keys from Infineon RSALib are factorable; a JWKS entry
    whose modulus has that structure is dropped, so its kid is unknown."""
    primorial = 2 * math.prod(p for p in range(3, 168) if all(p % q for q in range(2, p)))
    n = primorial * 2 ** (2048 - primorial.bit_length()) + pow(65537, 12345, primorial)
    assert n.bit_length() == 2048
    assert has_roca_fingerprint(n)
    assert not has_roca_fingerprint(n + 2)

    def rsa_jwk(kid: str, modulus: int) -> dict[str, str]:
        return {
            "kty": "RSA",
            "kid": kid,
            "alg": "RS256",
            "e": "AQAB",
            "n": b64url(modulus.to_bytes(256, "big")),
        }

    async def fetch(url: str) -> bytes:
        return json.dumps({"keys": [rsa_jwk("roca", n), rsa_jwk("control", n + 2)]}).encode()

    cache = JWKSCache(
        url="https://hsm.test/jwks",
        fetch=fetch,
        algorithms=["RS256"],
        ttl_seconds=300,
        min_refresh_interval_seconds=30,
    )
    assert await cache.get("roca") is None
    assert await cache.get("control") is not None, "same size and shape, without the fingerprint"


# --- parser differentials --------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "raw"),
    [
        ("payload", b'{"sub":"user","sub":"admin"}'),
        ("payload", b'{"scope":"read","scope":"admin"}'),
        ("payload", b'{"iss":"https://evil.test","iss":"ISSUER"}'),
        ("header", b'{"alg":"none","alg":"ES256","kid":"KID"}'),
        ("header", b'{"kid":"unknown","kid":"KID","alg":"ES256"}'),
    ],
    ids=["sub", "scope", "iss", "header-alg", "header-kid"],
)
async def test_duplicate_claim_smuggling(
    where: str, raw: bytes, es: SigningKey, gate: Harness
) -> None:
    """Duplicate-key smuggling (parser differential, RFC 8259 section 4 leaves it undefined):
    an issuer or proxy may read the first value and the verifier the last. Any repeated
    member is refused, even in a validly signed token."""
    base = dumps(claims(sub="user", scope="read"))
    if where == "payload":
        extra = raw[1:-1].replace(b"ISSUER", ISSUER.encode())
        payload = base[:-1] + b"," + extra + b"}"
        token = forge(es, payload=payload)
    else:
        token = forge(es, header=raw.replace(b"KID", es.kid.encode()), payload=base)
    assert await gate.refusal(token) == "token_malformed"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"], ids=str)
async def test_utf16_header_parser_differential(codec: str, es: SigningKey, gate: Harness) -> None:
    """PyJWT's ``json.loads(bytes)`` auto-detects UTF-16/32, which RFC 7515 does not allow:
    a second reading of the same bytes. Only UTF-8 is accepted."""
    header = json.dumps(header_for(es)).encode(codec)
    assert await gate.refusal(forge(es, header=header)) == "token_malformed"


async def test_cve_2022_39227_mixed_json_and_compact_serialization(
    es: SigningKey, gate: Harness
) -> None:
    """CVE-2022-39227 (python-jwt < 3.3.4): a JSON-serialised JWS wrapping a forged compact
    token made the claims check and the signature check read different payloads.

    Only the compact form is accepted."""
    header, payload, signature = mint(es).split(".")
    forged = b64(dumps(claims(sub="admin", scope="admin")))
    token = json.dumps(
        {
            f"  {header}.{forged}.": "",
            "protected": header,
            "payload": payload,
            "signature": signature,
        }
    )
    assert await gate.refusal(token) == "token_malformed"


@pytest.mark.parametrize(
    "iss",
    [ISSUER[8:], ISSUER[:-1], ISSUER.upper(), f"{ISSUER}.evil.test", [ISSUER]],
    ids=["substring", "prefix", "case", "suffix-domain", "list"],
)
async def test_cve_2024_53861_issuer_partial_match(iss: Any, es: SigningKey, gate: Harness) -> None:
    """CVE-2024-53861 (PyJWT 2.10.0): ``iss`` was checked with ``in`` against a string, so
    any substring matched. authgate selects the issuer by exact string."""
    assert await gate.refusal(mint(es, iss=iss)) in {"token_issuer_invalid", "token_malformed"}


# --- claim attacks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "exp",
    [10**20, 1e300, 32_503_680_001, "9999999999", True],
    ids=["huge-int", "huge-float", "year-3000", "string", "bool"],
)
async def test_absurd_exp_never_means_forever(exp: Any, es: SigningKey, gate: Harness) -> None:
    """Far-future or ill-typed ``exp`` (PyJWT accepts absurd values): a token that never
    expires is refused."""
    assert await gate.refusal(mint(es, exp=exp)) == "token_malformed"


@pytest.mark.parametrize(
    ("header", "extra"),
    [({"typ": "refresh+jwt"}, {}), ({}, {"type": "refresh"}), ({}, {"token_use": "refresh"})],
    ids=["typ", "type-claim", "token_use-claim"],
)
async def test_refresh_token_substitution(
    header: dict[str, str], extra: dict[str, str], es: SigningKey, gate: Harness
) -> None:
    """Cross-JWT confusion (RFC 8725 section 2.8): a refresh token presented as an access
    token is refused."""
    token = forge(es, header=header_for(es, **header), payload=claims(**extra))
    assert await gate.refusal(token) == "token_type_invalid"


async def test_header_injection_through_subject(es: SigningKey, gate: Harness) -> None:
    """Response splitting through claims (CWE-113): a ``sub`` carrying CR LF could forge
    identity headers upstream; it is refused before any header is built."""
    payload = json.dumps(claims(sub="alice\r\nX-Authgate-Scopes: admin")).encode()
    assert await gate.refusal(forge(es, payload=payload)) == "token_malformed"


async def test_rfc_9449_7_2_bound_token_downgraded_to_bearer() -> None:
    """RFC 9449 §7.2: a stolen DPoP-bound token replayed as a plain bearer token, without
    the key, is refused (``dpop_bound_token_as_bearer``), cached or not."""
    rig = Rig()
    key = DPoPKey.generate()
    token = rig.token(key)
    proof = key.proof("GET", "https://app.test/api", access_token=token, iat=NOW)
    assert await rig.decide(f"DPoP {token}", proof) == "ok"  # now cached
    assert await rig.decide(f"Bearer {token}") == "dpop_bound_token_as_bearer"


async def test_rfc_9449_11_1_dpop_proof_replay() -> None:
    """RFC 9449 §11.1: a captured proof replayed with its token is refused
    (``dpop_proof_replayed``): its ``jti`` is spent in the nonce store."""
    rig = Rig()
    key = DPoPKey.generate()
    token = rig.token(key)
    proof = key.proof("GET", "https://app.test/api", access_token=token, iat=NOW)
    assert await rig.decide(f"DPoP {token}", proof) == "ok"
    assert await rig.decide(f"DPoP {token}", proof) == "dpop_proof_replayed"
