"""The one exception tree of authgate.

Every refusal authgate makes is an :class:`AuthGateError` with a stable ``reason``
(snake_case; part of the public API, renaming one is a changelog entry) and an HTTP
``status``, both class attributes. Only ``web/problem.py`` turns them into responses, and it
decides the body shape and headers from the class and its attributes alone.

The rule for code outside this module:

* A refusal is raised as a class of this tree, with a message that names the field or
  header at fault. Domain exceptions that can reach a caller (an HTTP client, or an operator
  at the CLI) are defined here, as refinements of the leaf whose reason they answer with
  (``PairRequestError`` is an :class:`InvalidRequest`), and re-exported by their domain
  module. No handler translates one into another with ``str(exc)``.
* Exceptions outside the tree are internal: a parser's fault that one verifier or reader
  maps to its own leaf at exactly one ``except`` (``WireError``, ``ProofFormatError``,
  ``StrictJSONError``; ``web/protocol.py``'s ``_HeadTimeout`` and ``_NotAPath``, which
  aiohttp's error handler carries to its one mapping), or an operator fault in stored state
  that is logged and answered 500 (``EnvelopeError``, ``PairRecordError``,
  ``ApiKeyUnreadable``, ``KeysUnreadable``).
  ``tests/unit/test_errors.py`` pins that list.
* A class whose subclasses carry their own reasons is a *group* (``BadRequest``,
  ``Unauthenticated``, ``BPCError``, ``OAuthError`` ...): it is caught, never raised. A
  subclass that keeps its parent's reason is a *refinement* for the code's sake (for
  example ``SecretProofInvalid`` counts toward lock-out); the client cannot tell it apart.

::

    AuthGateError                       (group; 500 internal_error)
    ├── InternalError (500)             internal_error (an unexpected fault, logged)
    ├── BadRequest (400)
    │   ├── InvalidTarget               invalid_target
    │   ├── MalformedHeader             malformed_header
    │   ├── MissingForwardedHeader      missing_forwarded_header
    │   ├── ClientCertMalformed         client_cert_malformed (RFC 9440 Client-Cert)
    │   ├── ForwardedClientCertMalformed  forwarded_client_cert_malformed (Envoy XFCC)
    │   ├── ClientCertConflict          client_cert_conflict (the two name different certs)
    │   ├── ForgedIdentityHeader        forged_identity_header (a door's answer path)
    │   ├── InvalidRequest              invalid_request
    │   │   ├── PairRequestError        (a pair lifecycle request; ``field`` names the member)
    │   │   ├── ApiKeyError             (an API key request)
    │   │   └── UserError               (an operator-user request, CLI only)
    │   ├── BodyTooLarge (413)          body_too_large
    │   └── RequestTimeout (408)        request_timeout (a head or body not sent in time)
    ├── Unauthenticated (401)           (WWW-Authenticate: ``scheme``, ``challenge_error``)
    │   ├── MissingCredential           credential_missing (a bare challenge, no error)
    │   │   └── MissingDPoPCredential   (a ``dpop: required`` route: a ``DPoP`` challenge)
    │   ├── LoginRefused                unauthenticated (pico /login, /wallet, /refresh)
    │   ├── TokenMalformed              token_malformed
    │   ├── TokenTooLarge               token_too_large
    │   ├── TokenExpired                token_expired
    │   ├── TokenLifetimeTooLong        token_lifetime_too_long
    │   ├── TokenNotYetValid            token_not_yet_valid
    │   ├── TokenSignatureInvalid       token_signature_invalid
    │   ├── TokenIssuerInvalid          token_issuer_invalid
    │   ├── TokenAudienceInvalid        token_audience_invalid
    │   ├── TokenResourceMismatch       token_resource_mismatch (RFC 8707: another resource's)
    │   ├── TokenAlgorithmNotAllowed    token_algorithm_not_allowed
    │   ├── TokenKeyUnknown             token_key_unknown
    │   ├── TokenRevoked                token_revoked
    │   ├── TokenTypeInvalid            token_type_invalid
    │   ├── DPoPError                   (DPoP, RFC 9449; a ``DPoP`` challenge)
    │   │   ├── DPoPProofInvalid        dpop_proof_invalid
    │   │   ├── DPoPProofReplayed       dpop_proof_replayed
    │   │   ├── DPoPBindingMismatch     dpop_binding_mismatch
    │   │   ├── DPoPNonceRequired       dpop_nonce_required (``DPoP-Nonce`` header)
    │   │   ├── DPoPRequired            dpop_required
    │   │   ├── DPoPBoundTokenAsBearer  dpop_bound_token_as_bearer
    │   │   └── DPoPNotAllowed          dpop_not_allowed (a ``Bearer`` challenge)
    │   ├── CertificateRequired         certificate_required (RFC 8705 §3)
    │   ├── CertificateBindingMismatch  certificate_binding_mismatch (RFC 8705 §3)
    │   ├── ProofInvalid                invalid_proof (one body for every HMAC failure)
    │   ├── FleetSecretInvalid          fleet_secret_invalid (pico /fleet/sessions)
    │   └── BPCError                    (BPC v1.0 codes, as the published client reads them)
    │       ├── BPCMissingHeaders       missing_headers
    │       ├── UnsupportedVersion      unsupported_version
    │       ├── InvalidSignedData       invalid_signed_data
    │       ├── TimestampExpired        timestamp_expired
    │       ├── MethodPathMismatch      method_path_mismatch
    │       ├── BodyHashMismatch        body_hash_mismatch
    │       ├── UnknownPair             unknown_pair
    │       ├── PairPending             pair_pending
    │       ├── PairRevoked             pair_revoked
    │       ├── PairExpired             pair_expired
    │       ├── PairLockedOut           pair_locked_out
    │       ├── SignatureInvalid        signature_invalid
    │       │   └── SecretProofInvalid  (counts toward lock-out)
    │       └── ReplayDetected          replay_detected
    ├── Forbidden (403)
    │   ├── NoMatchingRule              no_matching_rule
    │   ├── CredentialTypeNotAllowed    credential_type_not_allowed
    │   ├── ScopeDenied                 scope_denied (WWW-Authenticate: ``insufficient_scope``)
    │   ├── UntrustedProxy              untrusted_proxy
    │   ├── RegistrationClosed          registration_closed
    │   ├── OperatorRequired            operator_required
    │   └── CSRFRefused                 csrf_refused (a console form without its token, or
    │                                   posted from another origin or site)
    ├── NotFound (404)                  not_found
    │   ├── PairNotFound                (no such pair, or approval token)
    │   └── ApiKeyNotFound              (no such API key)
    ├── Conflict (409)                  conflict
    │   └── RotationRefused             (signing-key rotation now would be unsafe)
    ├── OAuthError                      RFC 6749 codes, answered {"error","error_description"}
    │   ├── OAuthInvalidRequest         invalid_request
    │   ├── OAuthInvalidClient (401)    invalid_client (``basic_challenge`` set at construction)
    │   ├── OAuthInvalidGrant           invalid_grant
    │   ├── OAuthInvalidScope           invalid_scope
    │   ├── OAuthInvalidTarget          invalid_target (RFC 8707)
    │   ├── OAuthInvalidDPoPProof       invalid_dpop_proof (RFC 9449 §5)
    │   ├── OAuthUseDPoPNonce           use_dpop_nonce (RFC 9449 §8, ``DPoP-Nonce`` header)
    │   ├── OAuthUnsupportedGrantType   unsupported_grant_type
    │   ├── OAuthUnsupportedTokenType   unsupported_token_type (RFC 7009)
    │   ├── OAuthUnauthorizedClient (403)  unauthorized_client
    │   └── OAuthInsufficientScope (403)   insufficient_scope
    ├── RateLimited (429)               rate_limited
    ├── DependencyUnavailable (503)
    │   ├── StoreUnavailable            store_unavailable
    │   └── IssuerUnavailable           issuer_unavailable
    └── UpstreamError (502)
        ├── UpstreamUnreachable         upstream_unreachable
        └── UpstreamTimeout (504)       upstream_timeout

OAuth reasons live in their own namespace (the OAuth body shape): ``invalid_request`` and
``invalid_target`` there are not authgate's :class:`InvalidRequest` and
:class:`InvalidTarget`.

:class:`ConfigError` is separate: it stops start-up and never reaches a client. The config
model's validators raise ``config.model.Problems`` (a ``ValueError``, so pydantic collects
it), which ``config/loader.py`` unpacks into a ``ConfigError``'s problems.

This module imports nothing from authgate: every other module may import it.
"""

from __future__ import annotations

from typing import ClassVar


class AuthGateError(Exception):
    """Root of every refusal; carries a stable ``reason`` and an HTTP ``status``."""

    reason: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"
    # The RFC 9728 metadata URL of the protected resource whose rule refused (set by the
    # gate, which knows the rule): the challenge names it as ``resource_metadata``.
    resource_metadata: str | None = None

    def __init__(self, message: str | None = None, *, detail: str = "") -> None:
        self.message = message or self.default_message
        # For logs only, never sent to the client (uniform-answer errors hide it).
        self.detail = detail
        super().__init__(self.message)


class InternalError(AuthGateError):
    """An unexpected fault (a bug, or an unreadable stored record): logged, answered 500."""


class BadRequest(AuthGateError):
    """The request itself cannot be understood unambiguously."""

    reason = "bad_request"
    status = 400
    default_message = "bad request"


class InvalidTarget(BadRequest):
    """The request target is ambiguous (dot or empty segments, encoded separators, ...)."""

    reason = "invalid_target"
    default_message = "request target is not in canonical form"


class MalformedHeader(BadRequest):
    """A header authgate reads is malformed; the message names it."""

    reason = "malformed_header"
    default_message = "malformed header"


class ClientCertMalformed(BadRequest):
    """A trusted proxy's ``Client-Cert`` (RFC 9440) is not one DER certificate as an
    RFC 8941 byte sequence."""

    reason = "client_cert_malformed"
    default_message = "malformed Client-Cert header"


class ForwardedClientCertMalformed(BadRequest):
    """A trusted proxy's ``X-Forwarded-Client-Cert`` cannot be parsed, or its ``Cert``
    element is not one URL-encoded PEM certificate."""

    reason = "forwarded_client_cert_malformed"
    default_message = "malformed X-Forwarded-Client-Cert header"


class ClientCertConflict(BadRequest):
    """``Client-Cert`` and ``X-Forwarded-Client-Cert`` name different certificates."""

    reason = "client_cert_conflict"
    default_message = "Client-Cert and X-Forwarded-Client-Cert name different certificates"


class MissingForwardedHeader(BadRequest):
    """A trusted proxy did not send a header its forward-auth contract requires."""

    reason = "missing_forwarded_header"
    default_message = "forwarded request header missing"


class ForgedIdentityHeader(BadRequest):
    """A forward-auth request carries a header that spells one of authgate's identity
    headers (a configured name, or a name under an identity prefix), in any spelling a
    CGI-style upstream reads as that name; the message names it. authgate cannot remove a
    header the proxy forwards to the app, so it refuses the request."""

    reason = "forged_identity_header"
    default_message = "request carries an identity header only authgate may set"


class InvalidRequest(BadRequest):
    """An endpoint's request body or parameters are invalid; the message names the field."""

    reason = "invalid_request"
    default_message = "invalid request"


class PairRequestError(InvalidRequest):
    """A pair lifecycle request is invalid; ``field`` names the member at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ApiKeyError(InvalidRequest):
    """An API key request is invalid; the message names the field."""


class UserError(InvalidRequest):
    """An operator-user request is invalid; the message names the field."""


class BodyTooLarge(BadRequest):
    """A body that must be read exceeds the configured limit."""

    reason = "body_too_large"
    status = 413
    default_message = "request body too large"


class Unauthenticated(AuthGateError):
    """No acceptable credential: answered 401 with ``WWW-Authenticate``."""

    reason = "unauthenticated"
    status = 401
    default_message = "authentication required"
    scheme: ClassVar[str] = "Bearer"
    # The RFC 6750 ``error`` of the challenge; ``None`` answers a bare challenge (no
    # credential was presented, so there is nothing to call invalid).
    challenge_error: ClassVar[str | None] = "invalid_token"


class MissingCredential(Unauthenticated):
    """No credential that any enabled verifier recognises was presented."""

    reason = "credential_missing"
    default_message = "no credential presented"
    challenge_error = None


class MissingDPoPCredential(MissingCredential):
    """No credential on a route whose rule requires DPoP: the bare challenge names
    ``DPoP``, the scheme the client must use (RFC 9449 §7.1)."""

    scheme = "DPoP"


class LoginRefused(Unauthenticated):
    """One of pico's login doors (password, wallet challenge or signature, refresh token)
    refused the credential; one reason for every failure."""


class TokenMalformed(Unauthenticated):
    """The bearer token is not a well-formed compact JWS with strict JSON."""

    reason = "token_malformed"
    default_message = "bearer token is malformed"


class TokenTooLarge(Unauthenticated):
    """The bearer token exceeds ``jwt.max_token_bytes``."""

    reason = "token_too_large"
    default_message = "bearer token is too large"


class TokenExpired(Unauthenticated):
    """``exp`` is in the past (beyond the leeway)."""

    reason = "token_expired"
    default_message = "token has expired"


class TokenLifetimeTooLong(Unauthenticated):
    """``exp - iat`` (``exp - now`` without ``iat``) exceeds the issuer's maximum lifetime
    (``jwt.max_token_lifetime_seconds``, ``max_lifetime_seconds`` of an external issuer)."""

    reason = "token_lifetime_too_long"
    default_message = "token lifetime exceeds the issuer's maximum"


class TokenNotYetValid(Unauthenticated):
    """``nbf`` or ``iat`` is in the future (beyond the leeway)."""

    reason = "token_not_yet_valid"
    default_message = "token is not yet valid"


class TokenSignatureInvalid(Unauthenticated):
    """The signature does not verify under the selected key."""

    reason = "token_signature_invalid"
    default_message = "token signature is invalid"


class TokenIssuerInvalid(Unauthenticated):
    """``iss`` is absent or names no configured issuer."""

    reason = "token_issuer_invalid"
    default_message = "token issuer is not accepted"


class TokenAudienceInvalid(Unauthenticated):
    """``aud`` does not name an audience this issuer is accepted for."""

    reason = "token_audience_invalid"
    default_message = "token audience is not accepted"


class TokenResourceMismatch(Unauthenticated):
    """The rule guards a protected resource whose identifier the token's ``aud`` does not
    name: a token issued for another resource (RFC 8707 §2, RFC 9068 §4)."""

    reason = "token_resource_mismatch"
    default_message = "token was not issued for this resource"


class TokenAlgorithmNotAllowed(Unauthenticated):
    """``alg`` is not in the issuer's allowlist, or does not fit the key."""

    reason = "token_algorithm_not_allowed"
    default_message = "token algorithm is not allowed"


class TokenKeyUnknown(Unauthenticated):
    """No key of the issuer matches the token's ``kid``."""

    reason = "token_key_unknown"
    default_message = "token signing key is unknown"


class TokenRevoked(Unauthenticated):
    """The token's ``jti`` is in the revocation store."""

    reason = "token_revoked"
    default_message = "token has been revoked"


class TokenTypeInvalid(Unauthenticated):
    """A token of another kind (for example a refresh token) was used as an access token."""

    reason = "token_type_invalid"
    default_message = "token is not an access token"


class DPoPError(Unauthenticated):
    """A DPoP (RFC 9449) refusal (a group): the challenge names the ``DPoP`` scheme."""

    reason = "dpop_error"
    scheme = "DPoP"
    default_message = "DPoP verification failed"


class DPoPProofInvalid(DPoPError):
    """The ``DPoP`` proof is missing, malformed or does not verify: wrong ``typ``, an
    algorithm outside the allow-list, a private or unusable ``jwk``, a bad signature,
    ``htm``/``htu`` not the request's, ``iat`` outside the window, a wrong ``ath``
    (RFC 9449 §4.3); the message names the check."""

    reason = "dpop_proof_invalid"
    challenge_error = "invalid_dpop_proof"
    default_message = "DPoP proof is invalid"


class DPoPProofReplayed(DPoPError):
    """The proof's ``jti`` was already spent (or predates the nonce store's epoch): a
    captured proof replayed (RFC 9449 §11.1)."""

    reason = "dpop_proof_replayed"
    challenge_error = "invalid_dpop_proof"
    default_message = "DPoP proof already used"


class DPoPBindingMismatch(DPoPError):
    """The proof's key is not the one the token is bound to (``cnf.jkt``), or a token
    without a binding was presented with the ``DPoP`` scheme (RFC 9449 §7.1)."""

    reason = "dpop_binding_mismatch"
    default_message = "DPoP proof key does not match the token's binding"


class DPoPNonceRequired(DPoPError):
    """The proof lacks the server nonce, or carries a stale one (RFC 9449 §8): the answer
    carries a fresh one in ``DPoP-Nonce`` for the client to retry with."""

    reason = "dpop_nonce_required"
    challenge_error = "use_dpop_nonce"
    default_message = "a DPoP proof with the server's nonce is required"

    def __init__(self, message: str | None = None, *, nonce: str, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.nonce = nonce


class DPoPRequired(DPoPError):
    """A plain bearer token on a route whose rule says ``dpop: required``."""

    reason = "dpop_required"
    default_message = "this route requires a DPoP-bound token and proof"


class DPoPBoundTokenAsBearer(DPoPError):
    """A DPoP-bound token (``cnf.jkt``) presented with the ``Bearer`` scheme, without a
    proof: a leaked token replayed as a bearer token (RFC 9449 §7.2)."""

    reason = "dpop_bound_token_as_bearer"
    default_message = "a DPoP-bound token must be presented with the DPoP scheme and a proof"


class DPoPNotAllowed(DPoPError):
    """The ``DPoP`` scheme on a route whose rule says ``dpop: off``."""

    reason = "dpop_not_allowed"
    scheme = "Bearer"
    default_message = "DPoP is not accepted on this route"


class CertificateRequired(Unauthenticated):
    """A token bound to a certificate (``cnf["x5t#S256"]``) came without one from a trusted
    proxy: a stolen token replayed without the client's TLS key (RFC 8705 §3)."""

    reason = "certificate_required"
    default_message = "this token is bound to a client certificate; none was presented"


class CertificateBindingMismatch(Unauthenticated):
    """The presented client certificate is not the one the token is bound to (RFC 8705 §3)."""

    reason = "certificate_binding_mismatch"
    default_message = "the client certificate does not match the token's binding"


class ProofInvalid(Unauthenticated):
    """Any HMAC challenge-proof failure: one identical answer, so there is no oracle."""

    reason = "invalid_proof"
    scheme = "AGProof"
    default_message = "challenge proof rejected"


class FleetSecretInvalid(Unauthenticated):
    """``X-Fleet-Secret`` is missing or is not the configured fleet secret."""

    reason = "fleet_secret_invalid"
    default_message = "X-Fleet-Secret is missing or wrong"
    scheme = "FleetSecret"
    challenge_error = None


class BPCError(Unauthenticated):
    """A BPC signed request was refused; ``reason`` is a BPC v1.0 error code."""

    reason = "bpc_error"
    scheme = "BPC"
    default_message = "BPC verification failed"
    # Whether the failure proves possession of the device key (counts toward lock-out).
    proves_device_key: ClassVar[bool] = False


class BPCMissingHeaders(BPCError):
    """Some, not all, of the four X-BPC-* headers were sent."""

    reason = "missing_headers"
    default_message = "BPC headers missing"


class UnsupportedVersion(BPCError):
    """``X-BPC-Version`` or the payload's ``version`` is not ``1.0``."""

    reason = "unsupported_version"
    default_message = "unsupported BPC version"


class InvalidSignedData(BPCError):
    """``X-BPC-Signed-Data`` is not a strict canonical payload."""

    reason = "invalid_signed_data"
    default_message = "signed data is invalid"


class TimestampExpired(BPCError):
    """The signed timestamp is outside the window (or before the store epoch)."""

    reason = "timestamp_expired"
    default_message = "request timestamp outside the allowed window"


class MethodPathMismatch(BPCError):
    """The signed method or path is not the request's."""

    reason = "method_path_mismatch"
    default_message = "signed method or path does not match the request"


class BodyHashMismatch(BPCError):
    """The signed body hash is not the body's (or the body was not available)."""

    reason = "body_hash_mismatch"
    default_message = "body hash does not match"


class UnknownPair(BPCError):
    """No pair has this id."""

    reason = "unknown_pair"
    default_message = "unknown pair"


class PairPending(BPCError):
    """The pair awaits operator approval."""

    reason = "pair_pending"
    default_message = "pair is pending approval"


class PairRevoked(BPCError):
    """The pair was revoked."""

    reason = "pair_revoked"
    default_message = "pair has been revoked"


class PairExpired(BPCError):
    """The pair is past ``expires_at``."""

    reason = "pair_expired"
    default_message = "pair has expired"


class PairLockedOut(BPCError):
    """Too many requests signed with the device key carried a wrong secret."""

    reason = "pair_locked_out"
    default_message = "pair is locked out"


class SignatureInvalid(BPCError):
    """The device-key signature, or the secret proof inside it, does not verify."""

    reason = "signature_invalid"
    default_message = "signature is invalid"


class SecretProofInvalid(SignatureInvalid):
    """Valid device-key signature but wrong ``secret_hmac``: counts toward lock-out."""

    default_message = "secret proof does not match"
    proves_device_key = True


class ReplayDetected(BPCError):
    """The nonce was already used."""

    reason = "replay_detected"
    default_message = "nonce already used"


class OAuthError(AuthGateError):
    """An RFC 6749 / 7009 / 7662 error (a group): a leaf's ``reason`` is the OAuth ``error``.

    ``web/problem.py`` answers these in the OAuth shape
    (``{"error": ..., "error_description": ...}``) rather than authgate's own.
    """

    reason = "oauth_error"
    status = 400
    default_message = "invalid request"


class OAuthInvalidRequest(OAuthError):
    """A parameter is missing, repeated or malformed; the message names it."""

    reason = "invalid_request"


class OAuthInvalidClient(OAuthError):
    """Client authentication failed (RFC 6749 §5.2): 401.

    ``basic_challenge`` (given at construction) adds ``WWW-Authenticate: Basic``: the
    client tried HTTP Basic, or sent no credentials where they are required.
    """

    reason = "invalid_client"
    status = 401
    default_message = "client authentication failed"

    def __init__(
        self, message: str | None = None, *, basic_challenge: bool, detail: str = ""
    ) -> None:
        super().__init__(message, detail=detail)
        self.basic_challenge = basic_challenge


class OAuthInvalidGrant(OAuthError):
    """The grant (password, refresh token, BPC signature) is invalid."""

    reason = "invalid_grant"
    default_message = "invalid grant"


class OAuthInvalidScope(OAuthError):
    """The requested scope exceeds what the grant allows, or is malformed."""

    reason = "invalid_scope"
    default_message = "invalid scope"


class OAuthInvalidTarget(OAuthError):
    """The requested audience (``resource``, RFC 8707) is not served here."""

    reason = "invalid_target"
    default_message = "invalid target"


class OAuthInvalidDPoPProof(OAuthError):
    """The ``DPoP`` proof sent to ``/token`` is invalid or replayed (RFC 9449 §5)."""

    reason = "invalid_dpop_proof"
    default_message = "invalid DPoP proof"


class OAuthUseDPoPNonce(OAuthError):
    """``/token`` wants a proof carrying its nonce (RFC 9449 §8): ``nonce`` goes in the
    ``DPoP-Nonce`` header."""

    reason = "use_dpop_nonce"
    default_message = "a DPoP proof with the server's nonce is required"

    def __init__(self, message: str | None = None, *, nonce: str, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.nonce = nonce


class OAuthUnsupportedGrantType(OAuthError):
    """``grant_type`` is not one authgate supports."""

    reason = "unsupported_grant_type"
    default_message = "unsupported grant type"


class OAuthUnsupportedTokenType(OAuthError):
    """``token_type_hint`` names a kind of token authgate does not revoke (RFC 7009)."""

    reason = "unsupported_token_type"
    default_message = "unsupported token type"


class OAuthUnauthorizedClient(OAuthError):
    """The authenticated client may not act on this token: 403."""

    reason = "unauthorized_client"
    status = 403
    default_message = "unauthorized client"


class OAuthInsufficientScope(OAuthError):
    """The authenticated client lacks the scope the endpoint needs: 403."""

    reason = "insufficient_scope"
    status = 403
    default_message = "insufficient scope"


class RateLimited(AuthGateError):
    """Too many requests (or too many failures) from this client or credential."""

    reason = "rate_limited"
    status = 429
    default_message = "rate limit exceeded"

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after_seconds: int = 1,
        limit: int | None = None,
        remaining: int = 0,
        reset_seconds: int | None = None,
        window_seconds: int | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message, detail=detail)
        self.retry_after_seconds = max(1, retry_after_seconds)
        self.limit = limit
        self.remaining = remaining
        self.reset_seconds = (
            reset_seconds if reset_seconds is not None else self.retry_after_seconds
        )
        self.window_seconds = window_seconds


class Forbidden(AuthGateError):
    """The caller is known (or need not be) but may not do this."""

    reason = "forbidden"
    status = 403
    default_message = "forbidden"


class NoMatchingRule(Forbidden):
    """No policy rule matches the request and the default action is deny."""

    reason = "no_matching_rule"
    default_message = "no policy rule allows this request"


class CredentialTypeNotAllowed(Forbidden):
    """The presented credential type is not allowed on the matched route."""

    reason = "credential_type_not_allowed"
    default_message = "this credential type is not allowed on this route"


class ScopeDenied(Forbidden):
    """The principal lacks a scope the matched route requires; ``scope`` lists the scopes
    the route needs (the RFC 6750 §3 ``scope`` of the ``insufficient_scope`` challenge)."""

    reason = "scope_denied"
    default_message = "insufficient scope"

    def __init__(self, message: str | None = None, *, scope: str = "", detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.scope = scope


class UntrustedProxy(Forbidden):
    """A forward-auth request came from an address not in ``trusted_proxies``."""

    reason = "untrusted_proxy"
    default_message = "forward-auth requests are accepted from trusted proxies only"


class RegistrationClosed(Forbidden):
    """Pair registration is disabled, or needs the operator token."""

    reason = "registration_closed"
    default_message = "pair registration is closed"


class OperatorRequired(Forbidden):
    """The action needs an operator: the operator token (``bpc.operator_token``), or an
    operator's console session."""

    reason = "operator_required"
    default_message = "operator token required"


class CSRFRefused(Forbidden):
    """A console form posted without its session's CSRF token, with another one, or from
    another origin or site."""

    reason = "csrf_refused"
    default_message = "the form's CSRF token is missing or wrong"


class NotFound(AuthGateError):
    """The named object does not exist."""

    reason = "not_found"
    status = 404
    default_message = "not found"


class MalformedRequest(BadRequest):
    """aiohttp's HTTP parser refused the request (request line, header size, not HTTP)."""

    reason = "malformed_request"
    default_message = "malformed HTTP request"


class RequestTimeout(BadRequest):
    """The client did not send the request head within ``server.header_read_timeout_seconds``,
    or its body stalled for ``server.body_read_timeout_seconds``."""

    reason = "request_timeout"
    status = 408
    default_message = "the request was not received in time"


class MethodNotAllowed(AuthGateError):
    """The path exists; the method is not one it takes (``allow`` lists those)."""

    reason = "method_not_allowed"
    status = 405
    default_message = "method not allowed on this path"

    def __init__(self, allow: str, message: str | None = None) -> None:
        super().__init__(message)
        self.allow = allow


class PairNotFound(NotFound):
    """No such pair, or no pending pair for an approval token (``detail``: the id asked)."""

    default_message = "pair not found"


class ApiKeyNotFound(NotFound):
    """No such API key (``detail``: the id asked)."""

    default_message = "no such API key"


class UserNotFound(NotFound):
    """No such password user (``detail``: the name asked)."""

    default_message = "no such user"


class Conflict(AuthGateError):
    """The action is refused in the current state (for example a rotation too early)."""

    reason = "conflict"
    status = 409
    default_message = "conflict"


class RotationRefused(Conflict):
    """Rotation now would sign with a key verifiers may not have fetched yet (or the keys
    come from files); the message says what to do."""


class DependencyUnavailable(AuthGateError):
    """Something the decision needs cannot answer: fail closed with 503."""

    reason = "dependency_unavailable"
    status = 503
    default_message = "a dependency is unavailable"


class StoreUnavailable(DependencyUnavailable):
    """A store (Redis) did not answer within its deadline, or errored."""

    reason = "store_unavailable"
    default_message = "state store unavailable"


class IssuerUnavailable(DependencyUnavailable):
    """An external issuer's JWKS could not be fetched and no good copy is cached."""

    reason = "issuer_unavailable"
    default_message = "token issuer keys unavailable"


class UpstreamError(AuthGateError):
    """The proxied upstream failed."""

    reason = "upstream_error"
    status = 502
    default_message = "upstream error"


class UpstreamUnreachable(UpstreamError):
    """The upstream refused or dropped the connection."""

    reason = "upstream_unreachable"
    default_message = "upstream unreachable"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the configured timeout."""

    reason = "upstream_timeout"
    status = 504
    default_message = "upstream timed out"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every ``(key, message)`` found."""

    def __init__(
        self, problems: list[tuple[str, str]], *, heading: str = "invalid configuration"
    ) -> None:
        self.problems = problems
        if len(problems) == 1:  # one problem, one line
            ((key, msg),) = problems
            super().__init__(f"{heading}: {key}: {msg}")
            return
        lines = "\n".join(f"  {key}: {msg}" for key, msg in problems)
        super().__init__(f"{heading} ({len(problems)} problems):\n{lines}")
