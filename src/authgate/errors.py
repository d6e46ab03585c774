"""The one exception tree of authgate.

Every refusal authgate makes is an :class:`AuthGateError` leaf with a stable
``reason`` (snake_case; part of the public API, renaming one is a changelog entry)
and an HTTP ``status``. Only ``web/problem.py`` turns them into responses.

::

    AuthGateError
    ├── BadRequest (400)
    │   ├── InvalidTarget               invalid_target
    │   ├── MalformedHeader             malformed_header
    │   ├── MissingForwardedHeader      missing_forwarded_header
    │   └── BodyTooLarge (413)          body_too_large
    ├── Unauthenticated (401)
    │   ├── MissingCredential           credential_missing
    │   ├── TokenMalformed              token_malformed
    │   ├── TokenTooLarge               token_too_large
    │   ├── TokenExpired                token_expired
    │   ├── TokenNotYetValid            token_not_yet_valid
    │   ├── TokenSignatureInvalid       token_signature_invalid
    │   ├── TokenIssuerInvalid          token_issuer_invalid
    │   ├── TokenAudienceInvalid        token_audience_invalid
    │   ├── TokenAlgorithmNotAllowed    token_algorithm_not_allowed
    │   ├── TokenKeyUnknown             token_key_unknown
    │   ├── TokenRevoked                token_revoked
    │   └── TokenTypeInvalid            token_type_invalid
    ├── Forbidden (403)
    │   ├── NoMatchingRule              no_matching_rule
    │   ├── CredentialTypeNotAllowed    credential_type_not_allowed
    │   ├── ScopeDenied                 scope_denied
    │   └── UntrustedProxy              untrusted_proxy
    ├── DependencyUnavailable (503)
    │   ├── StoreUnavailable            store_unavailable
    │   └── IssuerUnavailable           issuer_unavailable
    └── UpstreamError (502)
        ├── UpstreamUnreachable         upstream_unreachable
        └── UpstreamTimeout (504)       upstream_timeout

:class:`ConfigError` is separate: it stops start-up and never reaches a client.
"""

from __future__ import annotations

from typing import ClassVar


class AuthGateError(Exception):
    """Root of every refusal; carries a stable ``reason`` and an HTTP ``status``."""

    reason: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


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


class MissingForwardedHeader(BadRequest):
    """A trusted proxy did not send a header its forward-auth contract requires."""

    reason = "missing_forwarded_header"
    default_message = "forwarded request header missing"


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


class MissingCredential(Unauthenticated):
    """No credential that any enabled verifier recognises was presented."""

    reason = "credential_missing"
    default_message = "no credential presented"


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
    """The principal lacks a scope the matched route requires."""

    reason = "scope_denied"
    default_message = "insufficient scope"


class UntrustedProxy(Forbidden):
    """A forward-auth request came from an address not in ``trusted_proxies``."""

    reason = "untrusted_proxy"
    default_message = "forward-auth requests are accepted from trusted proxies only"


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

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {key}: {msg}" for key, msg in problems)
        super().__init__(f"invalid configuration:\n{lines}")
