"""DPoP proofs (RFC 9449 §4), checked one step at a time; no HTTP and no store here.

A proof is a compact JWS whose header carries the client's public key (``jwk``). The
checks of RFC 9449 §4.3, in the order :meth:`ProofChecker.check` runs them, each a small
function that raises :class:`~authgate.errors.DPoPProofInvalid` naming the check:

1. at most ``max_proof_bytes``; a compact JWS decoded strictly (``crypto/jws.py``);
2. ``typ`` is exactly ``dpop+jwt``; ``alg`` is in the allow-list (asymmetric only: never
   ``none`` or an HMAC algorithm, which the allow-list cannot even name);
3. ``jwk`` is a public key usable with ``alg`` (a private member is refused by name;
   RSA under 2048 bits or with the ROCA fingerprint is refused as unusable);
4. the signature verifies with that key (ES256/ES384/EdDSA signatures of exact length);
5. ``jti`` (printable ASCII, at most 256 characters), ``htm`` equal to the request's
   method, ``htu`` equal to the request's URL (scheme, host and path, normalised; query
   and fragment ignored: §4.3 with RFC 3986 §6.2.2 and §6.2.3);
6. ``iat`` an integer within ``window`` seconds of now (either side);
7. ``ath`` = base64url(SHA-256(access token)) when a token is presented (§4.3, 9.);
8. the server nonce, when required (§8): a missing or stale one is
   :class:`~authgate.errors.DPoPNonceRequired`, carrying a fresh nonce.

The result names the key's RFC 7638 thumbprint (``jkt``), which the caller compares with
the token's ``cnf.jkt``, and the ``jti`` the caller spends in the nonce store (exactly once
across replicas: the gate's one round trip).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authgate.crypto.jws import parse_compact_jws, strict_json_object
from authgate.crypto.keys import ALGORITHM_KEY_TYPES, VerificationKey, b64url, thumbprint
from authgate.errors import (
    DPoPNonceRequired,
    DPoPProofInvalid,
    InvalidTarget,
    TokenAlgorithmNotAllowed,
    TokenMalformed,
    TokenSignatureInvalid,
)
from authgate.models import RequestContext
from authgate.policy.target import canonicalize
from authgate.verifiers.jwt_bearer import verify_signature

PROOF_TYP = "dpop+jwt"
MAX_JTI = 256
MAX_HTU = 4096
_JTI = re.compile(r"[\x21-\x7e]{1,256}")
# JWK members only a private or symmetric key has (RFC 7517, 7518): a proof never carries them.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NONCE_LABEL = b"authgate-dpop-nonce\x00"
_NONCE = re.compile(r"([0-9a-f]{1,12})\.([A-Za-z0-9_-]{22})")
_B64URL = re.compile(r"[A-Za-z0-9_-]{1,1400}")
_COORDINATE_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66, "Ed25519": 32}


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A proof that passed every check: its key's thumbprint, ``jti`` and ``iat``."""

    jkt: str
    jti: str
    iat: int


def ath_of(access_token: str) -> str:
    """The ``ath`` claim for ``access_token``: base64url(SHA-256(ASCII token))."""
    return b64url(hashlib.sha256(access_token.encode("ascii", "surrogateescape")).digest())


def _origin(scheme: str, host: str, port: int | None) -> str:
    """``scheme://host[:port]`` normalised; ``""`` when no host is left (``.`` alone)."""
    host = host.lower().rstrip(".")
    if not host:
        return ""
    if ":" in host:  # an IPv6 literal, which urlsplit returns without its brackets
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def request_url(scheme: str, host: str, path: str) -> str:
    """The URL the proof's ``htu`` must name: the request as the door reconstructed it
    (``path`` is already canonical, ``policy/target.py``); ``""`` when it has no host."""
    if not host:
        return ""
    try:
        parts = urlsplit(f"{scheme.lower()}://{host}")
        port = parts.port
    except ValueError:
        return ""
    origin = _origin(scheme.lower(), parts.hostname or "", port)
    return origin + path if origin else ""


def normalize_htu(htu: str) -> str:
    """``htu`` in the form :func:`request_url` produces, or :class:`DPoPProofInvalid`.

    Scheme and host lower-cased, the scheme's default port dropped, an empty path read as
    ``/``, the path canonicalised as request paths are (unreserved escapes decoded, hex
    upper-cased; ambiguous paths refused); query and fragment dropped (RFC 9449 §4.3).
    """
    if len(htu) > MAX_HTU or not htu.isascii() or any(c <= " " or c == "\x7f" for c in htu):
        raise DPoPProofInvalid("proof 'htu' is not a URL")
    try:
        parts = urlsplit(htu)
        port = parts.port
    except ValueError:
        raise DPoPProofInvalid("proof 'htu' is not a URL") from None
    scheme = parts.scheme.lower()
    origin = _origin(scheme, parts.hostname or "", port) if scheme in _DEFAULT_PORTS else ""
    if not origin or "@" in parts.netloc:
        raise DPoPProofInvalid("proof 'htu' is not an http(s) URL with a host")
    try:
        path = canonicalize(parts.path or "/").path
    except InvalidTarget:
        raise DPoPProofInvalid("proof 'htu' has an ambiguous path") from None
    return origin + path


class ServerNonces:
    """Stateless server nonces (RFC 9449 §8): ``<issued, hex>.<MAC>``, valid for ``ttl``
    seconds on every replica that shares the secret; nothing is stored."""

    def __init__(self, *, secret: bytes, ttl_seconds: int, skew_seconds: int) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        self._skew = skew_seconds

    def _mac(self, issued: int) -> str:
        digest = hmac.new(self._secret, _NONCE_LABEL + str(issued).encode(), "sha256").digest()
        return b64url(digest[:16])

    def issue(self, now: float) -> str:
        """A fresh nonce."""
        issued = int(now)
        return f"{issued:x}.{self._mac(issued)}"

    def check(self, nonce: object, now: float) -> None:
        """Raise :class:`DPoPNonceRequired` (with a fresh nonce) unless ``nonce`` is current."""
        problem = self._problem(nonce, now)
        if problem is not None:
            raise DPoPNonceRequired(nonce=self.issue(now), detail=problem)

    def _problem(self, nonce: object, now: float) -> str | None:
        if nonce is None:
            return "proof has no nonce"
        match = _NONCE.fullmatch(nonce) if isinstance(nonce, str) else None
        if match is None:
            return "proof nonce is not one of ours"
        issued = int(match.group(1), 16)
        if not hmac.compare_digest(match.group(2), self._mac(issued)):
            return "proof nonce is not one of ours"
        if issued > now + self._skew or now - issued > self._ttl:
            return "proof nonce is stale"
        return None


def _canonical_key_members(jwk: Mapping[str, Any]) -> bool:
    """Whether the key's members have their one canonical spelling (RFC 7518 §6): unpadded,
    canonical base64url; EC and OKP coordinates of their curve's full length; RSA integers
    without leading zero bytes. A key spelled two ways would have two thumbprints (found by
    fuzzing: PyJWK decodes ``x`` with stray characters to the same key)."""
    for name in ("x", "y", "n", "e"):
        value = jwk.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or _B64URL.fullmatch(value) is None or len(value) % 4 == 1:
            return False
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        if b64url(raw) != value:
            return False
        if name in ("x", "y") and len(raw) != _COORDINATE_BYTES.get(str(jwk.get("crv")), -1):
            return False
        if name in ("n", "e") and raw[:1] == b"\x00":
            return False
    return True


def _header_key(
    header: Mapping[str, Any], alg: str, algorithms: Collection[str]
) -> VerificationKey:
    typ = header.get("typ")
    if typ != PROOF_TYP:
        raise DPoPProofInvalid("proof header 'typ' must be dpop+jwt")
    if alg not in algorithms or alg not in ALGORITHM_KEY_TYPES:
        raise DPoPProofInvalid("proof algorithm is not allowed")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise DPoPProofInvalid("proof header 'jwk' is missing")
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        raise DPoPProofInvalid("proof 'jwk' carries private key material")
    if not _canonical_key_members(jwk):
        raise DPoPProofInvalid("proof 'jwk' members are not canonical base64url of full length")
    key = VerificationKey.from_jwk(jwk, allowed=(alg,))
    if key is None:
        raise DPoPProofInvalid("proof 'jwk' is not a public key usable with its algorithm")
    return key


def _key_thumbprint(jwk: Mapping[str, Any]) -> str:
    try:
        return thumbprint(jwk)
    except (KeyError, TypeError, ValueError):  # pragma: no cover - from_jwk checked members
        raise DPoPProofInvalid("proof 'jwk' lacks a member its thumbprint needs") from None


def _jti(claims: Mapping[str, Any]) -> str:
    jti = claims.get("jti")
    if not isinstance(jti, str) or _JTI.fullmatch(jti) is None:
        raise DPoPProofInvalid("proof 'jti' must be 1 to 256 printable ASCII characters")
    return jti


def _htm(claims: Mapping[str, Any], method: str) -> None:
    if claims.get("htm") != method:
        raise DPoPProofInvalid("proof 'htm' is not the request's method")


def _htu(claims: Mapping[str, Any], urls: Collection[str]) -> None:
    htu = claims.get("htu")
    if not isinstance(htu, str):
        raise DPoPProofInvalid("proof 'htu' is missing")
    if normalize_htu(htu) not in urls:
        raise DPoPProofInvalid("proof 'htu' is not the request's URL")


def _iat(claims: Mapping[str, Any], now: float, window: int) -> int:
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int):
        raise DPoPProofInvalid("proof 'iat' must be an integer NumericDate")
    if abs(now - iat) > window:
        raise DPoPProofInvalid("proof 'iat' is outside the accepted window")
    return iat


def _ath(claims: Mapping[str, Any], access_token: str) -> None:
    ath = claims.get("ath")
    if not isinstance(ath, str) or not ath.isascii():
        raise DPoPProofInvalid("proof 'ath' is missing")
    if not hmac.compare_digest(ath, ath_of(access_token)):
        raise DPoPProofInvalid("proof 'ath' is not the hash of the presented token")


class ProofChecker:
    """Checks DPoP proofs against one request (see the module docstring for the steps)."""

    def __init__(
        self,
        *,
        algorithms: Collection[str],
        window_seconds: int,
        max_proof_bytes: int,
        nonces: ServerNonces | None = None,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        self.window_seconds = window_seconds
        self._max_bytes = max_proof_bytes
        self._nonces = nonces

    def check(
        self,
        proof: str,
        *,
        method: str,
        urls: Collection[str],
        now: float,
        access_token: str | None = None,
    ) -> DPoPProof:
        """The checked proof, or a :class:`~authgate.errors.DPoPError` leaf.

        ``urls`` are the normalised URLs the request may be named by (usually one:
        :func:`request_url`); ``access_token`` is the token presented with the proof (its
        hash must be ``ath``), ``None`` at the token endpoint.
        """
        if len(proof) > self._max_bytes:
            raise DPoPProofInvalid("DPoP proof is too large")
        try:
            jws = parse_compact_jws(proof)
            key = _header_key(jws.header, jws.alg, self.algorithms)
            verify_proof_signature(key, jws.alg, jws.signing_input, jws.signature)
            claims = strict_json_object(jws.payload, "payload")
        except TokenMalformed as exc:
            raise DPoPProofInvalid(f"DPoP proof is malformed: {exc.message}") from None
        jti = _jti(claims)
        _htm(claims, method)
        _htu(claims, urls)
        iat = _iat(claims, now, self.window_seconds)
        if access_token is not None:
            _ath(claims, access_token)
        if self._nonces is not None:
            self._nonces.check(claims.get("nonce"), now)
        return DPoPProof(jkt=_key_thumbprint(jws.header["jwk"]), jti=jti, iat=iat)

    def check_request(
        self, proof: str, context: RequestContext, *, now: float, access_token: str
    ) -> DPoPProof:
        """:meth:`check` against the request as the door reconstructed it."""
        url = request_url(context.scheme, context.host, context.path)
        if not url:
            raise DPoPProofInvalid("the request has no host to match the proof's 'htu'")
        return self.check(
            proof, method=context.method, urls=(url,), now=now, access_token=access_token
        )

    def fresh_nonce(self, now: float) -> str | None:
        """A nonce to hand out, when nonces are required."""
        return self._nonces.issue(now) if self._nonces is not None else None


def verify_proof_signature(
    key: VerificationKey, alg: str, signing_input: bytes, signature: bytes
) -> None:
    """The bearer verifier's signature check (exact signature lengths), as a proof error."""
    try:
        verify_signature(alg, key, signing_input, signature)
    except (TokenSignatureInvalid, TokenAlgorithmNotAllowed):
        raise DPoPProofInvalid("proof signature does not verify with its 'jwk'") from None
