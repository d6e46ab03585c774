"""Bearer JWT verifier (``Authorization: Bearer <compact JWS>``).

authgate parses the token itself, strictly, before any signature work: base64url in
canonical form, UTF-8 JSON without duplicate keys, NaN or Infinity, and numeric dates
that are finite and plausible. PyJWT is used for the signature primitive and JWK parsing
only, because its own decoder accepts duplicate keys, UTF-16 headers and absurd ``exp``.

Rules (RFC 8725): the algorithm must be in the issuer's allowlist, never ``none`` or an
HMAC algorithm; the key is chosen by the issuer named in ``iss`` and the token's ``kid``
and must belong to that algorithm's family; ``exp`` is required; ``nbf``, ``iat``, ``aud``
and ``iss`` are checked with a small leeway; the lifetime (``exp - iat``, or ``exp - now``
without ``iat``) is bounded per issuer; ``jti`` is checked against the revocation
store on every request, cached or not.

The steps are public so the test vectors exercise exactly the path tokens take:
:func:`authgate.crypto.jws.parse_compact_jws` (strict decoding),
:meth:`IssuerKeys.verify_jws` (algorithm, key, signature) and :func:`verify_signature`
(the primitive).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from math import inf
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import get_default_algorithms

from authgate.cache import LRUCache
from authgate.crypto.jwks_cache import JWKSCache
from authgate.crypto.jws import CompactJWS, parse_compact_jws, strict_json_object
from authgate.crypto.keys import ALGORITHM_KEY_TYPES, VerificationKey
from authgate.errors import (
    DPoPBindingMismatch,
    DPoPBoundTokenAsBearer,
    DPoPNotAllowed,
    DPoPProofInvalid,
    DPoPRequired,
    TokenAlgorithmNotAllowed,
    TokenAudienceInvalid,
    TokenExpired,
    TokenIssuerInvalid,
    TokenKeyUnknown,
    TokenLifetimeTooLong,
    TokenMalformed,
    TokenNotYetValid,
    TokenRevoked,
    TokenSignatureInvalid,
    TokenTooLarge,
    TokenTypeInvalid,
)
from authgate.metrics import Metrics
from authgate.models import CredentialType, Principal, RequestContext, Spend
from authgate.stores.base import Clock, RevocationStore, SystemClock
from authgate.verifiers.cert_binding import bound_certificate, check_certificate
from authgate.verifiers.dpop_binding import (
    DPoPCredential,
    ProofChecks,
    bound_key,
    dpop_credential,
    proof_refused,
)

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# Latest plausible NumericDate: 3000-01-01T00:00:00Z.
MAX_NUMERIC_DATE = 32_503_680_000
_ALLOWED_TYP = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_SIGNATURE_BYTES = {"ES256": 64, "ES384": 96, "EdDSA": 64}
_PYJWT_ALGORITHMS = get_default_algorithms()
# ES256/ES384 are verified with ``cryptography`` directly: the raw r||s signature becomes
# DER here and the ECDSA parameters are made once, where PyJWT rebuilds both per call (the
# cold path's cost after the verify itself). The curve is the algorithm's: VerificationKey
# refuses a key whose curve does not fit its ``alg``.
_ECDSA = {"ES256": ec.ECDSA(hashes.SHA256()), "ES384": ec.ECDSA(hashes.SHA384())}


@runtime_checkable
class LocallyKnownRevocations(Protocol):
    """Revocations this process can answer for without a store round trip (sometimes)."""

    def revoked_locally(self, jti: str) -> bool | None:
        """Whether ``jti`` is revoked, or ``None`` when only the store can tell."""
        ...


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; ``None`` for any other scheme."""
    if header is None:
        return None
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip(" ")
    if not token:
        raise TokenMalformed("empty bearer token")
    return token


def _revocation_ids(principal: Principal) -> tuple[str, ...]:
    """What revokes a token: its ``jti``, and its refresh family (refresh-token reuse)."""
    jti = principal.credential_id
    family = principal.claims.get("fam")
    if isinstance(family, str):
        return (jti, f"fam:{family}") if jti else (f"fam:{family}",)
    return (jti,) if jti else ()


def token_digest(token: str) -> bytes:
    """What the verified-token cache is keyed by: tokens themselves are never kept."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class LocalKeys(Protocol):
    """authgate's own keys (a fixed ring or the reloadable key manager)."""

    def verification_key(self, kid: str) -> VerificationKey | None:
        """The public key for ``kid``."""
        ...

    def only_key(self) -> VerificationKey | None:
        """The single key, when there is exactly one."""
        ...


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    """How tokens of one issuer are checked."""

    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    require_jti: bool
    key_ring: LocalKeys | None = None
    jwks: JWKSCache | None = None
    # The longest lifetime accepted: exp - iat, or exp - now without iat.
    max_lifetime_seconds: float = inf

    async def key(self, kid: str) -> VerificationKey | None:
        """The verification key for ``kid`` (``""`` when the token has none)."""
        if self.key_ring is not None:
            return self.key_ring.verification_key(kid) if kid else self.key_ring.only_key()
        if self.jwks is not None:
            return await self.jwks.get(kid)
        return None

    async def verify_jws(self, jws: CompactJWS) -> VerificationKey:
        """Check ``jws``'s algorithm, key and signature; returns the key that signed it.

        The allowlist is checked before any key lookup, so a token naming ``none`` or an
        HMAC algorithm never causes a JWKS fetch.
        """
        if jws.alg not in self.algorithms or jws.alg not in ALGORITHM_KEY_TYPES:
            raise TokenAlgorithmNotAllowed(f"algorithm {jws.alg!r} is not allowed for this issuer")
        key = await self.key(jws.kid)
        if key is None:
            raise TokenKeyUnknown()
        verify_signature(jws.alg, key, jws.signing_input, jws.signature)
        return key


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token that passed every check but time and revocation (the verified-token cache)."""

    principal: Principal
    exp: float
    nbf: float | None
    iat: float | None
    revocation_ids: tuple[str, ...]  # what revokes it (see _revocation_ids)
    # The window _check_times accepts, leeway included: valid_from <= now < valid_until.
    valid_from: float
    valid_until: float
    # The DPoP key the token is bound to (cnf.jkt): it is refused as a bearer token.
    jkt: str | None = None
    # The client certificate the token is bound to (cnf["x5t#S256"], RFC 8705 §3.1).
    x5t: str | None = None
    # Whether either binding is set: the one attribute the plain bearer path reads.
    bound: bool = False


def verify_signature(
    alg: str, key: VerificationKey, signing_input: bytes, signature: bytes
) -> None:
    """Raise unless ``signature`` is a valid ``alg`` signature of ``signing_input`` by ``key``.

    ``key`` must be bound to ``alg`` (else :class:`TokenAlgorithmNotAllowed`). ES256, ES384
    and EdDSA signatures must have exactly their raw length (ES256: r||s, 64 bytes), so
    DER, truncated or re-sized encodings never reach the primitive. Any other failure is
    :class:`TokenSignatureInvalid`.
    """
    if key.alg != alg or alg not in ALGORITHM_KEY_TYPES:
        raise TokenAlgorithmNotAllowed("token algorithm does not match its key")
    expected = _SIGNATURE_BYTES.get(alg)
    if expected is not None and len(signature) != expected:
        raise TokenSignatureInvalid()
    try:
        ecdsa = _ECDSA.get(alg)
        if ecdsa is not None and isinstance(key.key, ec.EllipticCurvePublicKey):
            half = len(signature) // 2
            der = encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.key.verify(der, signing_input, ecdsa)
            valid = True
        else:
            valid = _PYJWT_ALGORITHMS[alg].verify(signing_input, key.key, signature)
    except (ValueError, TypeError, InvalidSignature):
        valid = False
    if not valid:
        raise TokenSignatureInvalid()


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required or name in claims:
            raise TokenMalformed(f"claim {name!r} is required and must be a number")
        return None
    # Integers only (DESIGN.md, strict parsing): a float date has no legitimate use here and
    # invites rounding disagreements between issuer and verifier.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenMalformed(f"claim {name!r} must be an integer NumericDate")
    if value < 0 or value > MAX_NUMERIC_DATE:
        raise TokenMalformed(f"claim {name!r} is out of range")
    return float(value)


# C0 controls, DEL and lone surrogates: never part of an identifier a header may carry.
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def _string_claim(claims: Mapping[str, Any], name: str, *, max_len: int = 1024) -> str | None:
    value = claims.get(name)
    if value is None:
        if name in claims:
            raise TokenMalformed(f"claim {name!r} must be a string")
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise TokenMalformed(f"claim {name!r} must be a non-empty string")
    if _CONTROL_OR_SURROGATE.search(value) is not None:
        raise TokenMalformed(f"claim {name!r} contains a control character")
    return value


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp"))
    if raw is None:
        return frozenset()
    items: Sequence[Any]
    if isinstance(raw, str):
        items = raw.split(" ") if raw else []
    elif isinstance(raw, list):
        items = raw
    else:
        raise TokenMalformed("claim 'scope' must be a string or a list of strings")
    if len(items) > 256:
        raise TokenMalformed("claim 'scope' has too many entries")
    for item in items:
        if not isinstance(item, str) or _SCOPE_TOKEN.fullmatch(item) is None:
            raise TokenMalformed("claim 'scope' has an invalid scope token")
    return frozenset(items)


def _audiences(claims: Mapping[str, Any]) -> frozenset[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return frozenset({aud})
    if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        return frozenset(aud)
    if aud is None:
        raise TokenAudienceInvalid("claim 'aud' is required")
    raise TokenMalformed("claim 'aud' must be a string or a list of strings")


def _check_bearer_binding(entry: VerifiedToken, context: RequestContext) -> None:
    """A bound token presented as ``Bearer``: refused when DPoP-bound (RFC 9449 §7.2),
    accepted when certificate-bound only with its certificate (RFC 8705 §3), checked on
    every request (the cache keeps the token's verification, not the connection's)."""
    if entry.jkt is not None:
        raise DPoPBoundTokenAsBearer()
    if entry.x5t is not None:
        check_certificate(entry.x5t, context.client_cert)


class JWTBearerVerifier:
    """Verifies bearer JWTs from authgate's own key ring and external JWKS issuers."""

    credential_type = CredentialType.JWT

    def __init__(
        self,
        *,
        issuers: Sequence[IssuerKeys],
        revocations: RevocationStore,
        clock: Clock,
        leeway_seconds: int,
        max_token_bytes: int,
        cache_size: int,
        metrics: Metrics | None = None,
        dpop: ProofChecks | None = None,
    ) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._dpop = dpop
        self._revocations = revocations
        self._clock = clock
        # The time in seconds: the system clock's own function when that is the clock (no
        # Python frame on the hot path), else the injected clock's reading.
        self._seconds: Callable[[], float] = (
            time.time if type(clock) is SystemClock else lambda: clock.now_ms() / 1000
        )
        self._leeway = leeway_seconds
        self._max_bytes = max_token_bytes
        self._cache_size = cache_size
        self._cache: LRUCache[bytes, VerifiedToken] = LRUCache(cache_size)
        self._metrics = metrics
        self._cache_counters: dict[str, Any] = {}  # bound metric children
        self._revoked_locally = (
            revocations.revoked_locally
            if isinstance(revocations, LocallyKnownRevocations)
            else None
        )

    @property
    def max_token_bytes(self) -> int:
        """Longer bearer tokens are refused before any other work."""
        return self._max_bytes

    def extract(self, context: RequestContext) -> str | DPoPCredential | None:
        """The bearer token, the DPoP token with its proof, or ``None`` when the request
        carries neither."""
        header = context.headers.get("authorization")
        token = bearer_token(header)
        if token is None and header is not None and self._dpop is not None:
            return dpop_credential(header, context.headers.get("dpop"))
        return token

    async def verify(
        self, token: str | DPoPCredential, context: RequestContext, rule: Any | None = None
    ) -> Principal:
        """A principal for ``token``, or a :class:`~authgate.errors.Unauthenticated` leaf.

        ``rule`` is the matched ``CompiledRule`` (its ``dpop`` mode is read here).
        """
        if type(token) is not str:
            return await self._verify_dpop(token, context, rule)  # type: ignore[arg-type]
        if rule is not None and rule.dpop == "required":
            raise DPoPRequired()
        if len(token) > self._max_bytes:
            raise TokenTooLarge(f"bearer token exceeds {self._max_bytes} bytes")
        digest = token_digest(token)
        now = self._seconds()
        cached = self._cache.get(digest) if self._cache_size else None
        if cached is not None:
            self._count_cache("hit")
            self._cache.move_to_end(digest)
            self._check_times(cached.exp, cached.nbf, cached.iat, now)
            if not self._known_unrevoked(cached.revocation_ids):
                await self._check_revoked(cached.revocation_ids)
            if cached.bound:
                _check_bearer_binding(cached, context)
            return cached.principal
        if self._cache_size:
            self._count_cache("miss")
        entry = await self._verify_uncached(token, now)
        await self._check_revoked(entry.revocation_ids)
        self._cache.put(digest, entry)
        if entry.bound:
            _check_bearer_binding(entry, context)
        return entry.principal

    async def _verify_dpop(
        self, credential: DPoPCredential, context: RequestContext, rule: Any | None
    ) -> Principal:
        """A DPoP-bound token with its proof (RFC 9449 §7.1).

        The token's own verification goes through the verified-token cache like a bearer
        token's; the proof is checked on every request (it changes with every request) and
        its ``jti`` is left for the gate to spend, in its one store round trip.
        """
        checker = self._dpop
        if checker is None:  # pragma: no cover - extract() returns no DPoP credential then
            raise DPoPNotAllowed()
        if rule is not None and rule.dpop == "off":
            raise DPoPNotAllowed()
        token = credential.token
        if len(token) > self._max_bytes:
            raise TokenTooLarge(f"DPoP token exceeds {self._max_bytes} bytes")
        if credential.proof is None:
            raise DPoPProofInvalid("the DPoP header with the proof is missing")
        now = self._seconds()
        entry = await self._entry(token, now)
        if entry.jkt is None:
            raise DPoPBindingMismatch("the token is not DPoP-bound: present it as Bearer")
        proof = checker.check_request(credential.proof, context, now=now, access_token=token)
        if not hmac.compare_digest(proof.jkt, entry.jkt):
            raise DPoPBindingMismatch()
        if entry.x5t is not None:
            check_certificate(entry.x5t, context.client_cert)
        principal = entry.principal
        # Until the proof could no longer be accepted (iat + window), plus a second for the
        # NumericDate's resolution: a replay in that last second finds the jti still spent.
        until_ms = (proof.iat + checker.window_seconds + 1) * 1000
        spend = Spend(
            # The subject's own namespace: the rule's credential limits charge the same
            # budget as the subject's bearer tokens (pipeline._credential_identity).
            scope=f"jwt:{principal.issuer}:{principal.subject}",
            nonce=proof.jti,
            ttl_ms=max(1, until_ms - int(now * 1000)),
            signed_at_ms=proof.iat * 1000,
            refuse=proof_refused,
        )
        return replace(principal, spend=spend)

    async def _entry(self, token: str, now: float) -> VerifiedToken:
        """The token's verification (cached), with its time and revocation checks: the
        bearer path of :meth:`verify` inlines the same steps (no extra frame there)."""
        digest = token_digest(token)
        cached = self._cache.get(digest) if self._cache_size else None
        if cached is not None:
            self._count_cache("hit")
            self._cache.move_to_end(digest)
            self._check_times(cached.exp, cached.nbf, cached.iat, now)
            if not self._known_unrevoked(cached.revocation_ids):
                await self._check_revoked(cached.revocation_ids)
            return cached
        if self._cache_size:
            self._count_cache("miss")
        entry = await self._verify_uncached(token, now)
        await self._check_revoked(entry.revocation_ids)
        self._cache.put(digest, entry)
        return entry

    def _count_cache(self, result: str) -> None:
        counter = self._cache_counters.get(result)
        if counter is None and self._metrics is not None:
            counter = self._metrics.cache_lookups.labels("jwt", result)
            self._cache_counters[result] = counter
        if counter is not None:
            counter.inc()

    def _known_unrevoked(self, revocation_ids: tuple[str, ...]) -> bool:
        """Whether this process knows, without the store, that none of these is revoked."""
        revoked_locally = self._revoked_locally
        if revoked_locally is None:
            return False
        for revocation_id in revocation_ids:  # noqa: SIM110 - no generator on the hot path
            if revoked_locally(revocation_id) is not False:
                return False
        return True

    async def _check_revoked(self, revocation_ids: tuple[str, ...]) -> None:
        for revocation_id in revocation_ids:
            if await self._revocations.is_revoked(revocation_id):
                raise TokenRevoked(
                    "token family has been revoked" if revocation_id.startswith("fam:") else None
                )

    def _check_times(self, exp: float, nbf: float | None, iat: float | None, now: float) -> None:
        if exp + self._leeway <= now:
            raise TokenExpired()
        if nbf is not None and nbf - self._leeway > now:
            raise TokenNotYetValid("token 'nbf' is in the future")
        if iat is not None and iat - self._leeway > now:
            raise TokenNotYetValid("token 'iat' is in the future")

    def _check_lifetime(self, exp: float, iat: float | None, now: float, limit: float) -> None:
        """Refuse a token that lives longer than its issuer allows: ``exp - iat``, or, when
        the token does not say when it was issued, ``exp - now`` (with the leeway)."""
        if iat is not None:
            if exp - iat > limit:
                raise TokenLifetimeTooLong()
        elif exp - now > limit + self._leeway:
            raise TokenLifetimeTooLong("token without 'iat' expires beyond the maximum lifetime")

    async def _verify_uncached(self, token: str, now: float) -> VerifiedToken:
        jws = parse_compact_jws(token)
        typ = jws.header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ALLOWED_TYP):
            raise TokenTypeInvalid("token header 'typ' is not an access-token type")
        payload = strict_json_object(jws.payload, "payload")

        iss = _string_claim(payload, "iss")
        issuer = self._issuers.get(iss) if iss is not None else None
        if issuer is None:
            raise TokenIssuerInvalid()
        await issuer.verify_jws(jws)

        if payload.get("type") == "refresh" or payload.get("token_use") == "refresh":
            raise TokenTypeInvalid("a refresh token cannot be used as an access token")
        exp = _numeric_date(payload, "exp", required=True)
        if exp is None:  # pragma: no cover - required=True already raised
            raise TokenMalformed("claim 'exp' is required")
        nbf = _numeric_date(payload, "nbf", required=False)
        iat = _numeric_date(payload, "iat", required=False)
        self._check_times(exp, nbf, iat, now)
        self._check_lifetime(exp, iat, now, issuer.max_lifetime_seconds)
        if not (_audiences(payload) & issuer.audiences):
            raise TokenAudienceInvalid()
        # ML-DSA-65 wallet identities are 3904 hex characters.
        subject = _string_claim(payload, "sub", max_len=4096)
        if subject is None:
            raise TokenMalformed("claim 'sub' is required")
        jti = _string_claim(payload, "jti", max_len=256)
        if jti is None and issuer.require_jti:
            raise TokenMalformed("claim 'jti' is required")
        jkt = bound_key(payload)
        x5t = bound_certificate(payload)
        principal = Principal(
            subject=subject,
            credential_type=CredentialType.JWT,
            scopes=_scopes(payload),
            credential_id=jti or "",
            issuer=issuer.issuer,
            claims=payload,
        )
        return VerifiedToken(
            principal=principal,
            exp=exp,
            nbf=nbf,
            iat=iat,
            revocation_ids=_revocation_ids(principal),
            valid_from=max(nbf if nbf is not None else -inf, iat if iat is not None else -inf)
            - self._leeway,
            valid_until=exp + self._leeway,
            jkt=jkt,
            x5t=x5t,
            bound=jkt is not None or x5t is not None,
        )
