"""Route rules compiled once; the first rule that matches decides (a :class:`Decision`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from authgate.config.model import PolicySettings, RateLimit, Rule
from authgate.errors import (
    AuthGateError,
    BPCMissingHeaders,
    MissingCredential,
    MissingDPoPCredential,
    NoMatchingRule,
    ScopeDenied,
    TokenResourceMismatch,
)
from authgate.models import CredentialType, Principal
from authgate.policy.resources import ProtectedResource

_ALL_CREDENTIALS = frozenset({CredentialType.JWT, CredentialType.BPC, CredentialType.HMAC})


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A rule ready to match: host patterns and path regex precompiled.

    Compared and hashed by identity: two rules are the same rule only if they are one
    object (a configured rule may share an id with the built-in default).
    """

    id: str
    hosts: tuple[re.Pattern[str], ...]
    path: re.Pattern[str] | None
    methods: frozenset[str]
    credentials: frozenset[CredentialType]
    scopes: frozenset[str]
    anonymous: bool
    upstream: str | None
    allow_unsigned_query: bool = False
    allow_unverified_body: bool = False
    hmac_bind_body: bool = False
    rate_limits: tuple[RateLimit, ...] = ()
    # BPC: the pair's scope limits methods. authgate's own lifecycle endpoints turn this
    # off so a read-only pair can still rotate or revoke itself.
    enforce_pair_scope: bool = True
    # The refusal when no credential is present (internal rules name their endpoint).
    missing_credential: type[AuthGateError] = MissingCredential
    missing_message: str | None = None
    # DPoP (RFC 9449): "required", "allowed" or "off" (config/model.py Rule.dpop).
    dpop: str = "allowed"
    # The protected resource the rule guards (RFC 9728 / RFC 8707), or ``None``.
    resource: ProtectedResource | None = None

    def matches(self, method: str, host: str, path: str) -> bool:
        """Whether this rule applies to the request."""
        if self.methods and method not in self.methods:
            return False
        if self.hosts and not any(h.fullmatch(host) for h in self.hosts):
            return False
        return self.path is None or self.path.fullmatch(path) is not None

    def check_scopes(self, principal: Principal) -> None:
        """Raise :class:`ScopeDenied` unless ``principal`` holds every required scope."""
        missing = self.scopes - principal.scopes
        if missing:
            raise ScopeDenied(
                f"missing scope: {' '.join(sorted(missing))}", scope=" ".join(sorted(self.scopes))
            )

    def check_resource(self, principal: Principal) -> None:
        """Raise :class:`TokenResourceMismatch` unless a JWT principal's ``aud`` names the
        rule's resource (other credential types carry no audience)."""
        resource = self.resource
        if resource is None or principal.credential_type is not CredentialType.JWT:
            return
        aud = principal.claims.get("aud")
        if aud != resource.identifier and not (
            isinstance(aud, list) and resource.identifier in aud
        ):
            raise TokenResourceMismatch()


class Decision(NamedTuple):
    """The outcome of ``Gate.evaluate``: an allowed principal on a matched rule (a tuple:
    made on every allowed request, where a frozen dataclass sets each field through
    ``object.__setattr__``)."""

    principal: Principal
    rule_id: str
    upstream: str | None
    rule: CompiledRule | None = None  # the rule itself (rule ids may repeat the built-in's)


def _host_pattern(host: str) -> re.Pattern[str]:
    host = host.lower()
    if host.startswith("*."):
        return re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*" + re.escape(host[1:]))
    return re.compile(re.escape(host))


def _prefix_pattern(prefix: str) -> re.Pattern[str]:
    stem = prefix.rstrip("/")
    if not stem:
        return re.compile(r"/.*", re.DOTALL)
    return re.compile(re.escape(stem) + r"(?:/.*)?", re.DOTALL)


def _glob_pattern(glob: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            parts.append(".*")
            i += 2
        elif glob[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(parts), re.DOTALL)


def compile_rule(rule: Rule) -> CompiledRule:
    """Compile one configured rule."""
    path: re.Pattern[str] | None = None
    if rule.path_prefix is not None:
        path = _prefix_pattern(rule.path_prefix)
    elif rule.path_glob is not None:
        path = _glob_pattern(rule.path_glob)
    return CompiledRule(
        id=rule.id,
        hosts=tuple(_host_pattern(h) for h in rule.hosts),
        path=path,
        methods=frozenset(rule.methods),
        credentials=frozenset(rule.credentials),
        scopes=frozenset(rule.scopes),
        anonymous=rule.anonymous,
        upstream=rule.upstream.rstrip("/") if rule.upstream else None,
        allow_unsigned_query=rule.allow_unsigned_query,
        allow_unverified_body=rule.allow_unverified_body,
        hmac_bind_body=rule.hmac_bind_body,
        rate_limits=rule.rate_limits,
        dpop=rule.dpop,
        missing_credential=(
            MissingDPoPCredential if rule.dpop == "required" else MissingCredential
        ),
        resource=ProtectedResource.of(rule.resource) if rule.resource is not None else None,
    )


_DEFAULT_AUTHENTICATE = CompiledRule(
    id="default",
    hosts=(),
    path=None,
    methods=frozenset(),
    credentials=_ALL_CREDENTIALS,
    scopes=frozenset(),
    anonymous=False,
    upstream=None,
)


def internal_rule(
    rule_id: str,
    credential: CredentialType,
    *,
    scopes: frozenset[str] = frozenset(),
    missing: type[AuthGateError] = MissingCredential,
    missing_message: str,
    enforce_pair_scope: bool = True,
) -> CompiledRule:
    """The rule of one of authgate's own endpoints: the policy never routes to it; the
    endpoint hands it to ``Gate.evaluate`` so its callers are decided, counted, logged and
    limited like any other request."""
    return CompiledRule(
        id=rule_id,
        hosts=(),
        path=None,
        methods=frozenset(),
        credentials=frozenset({credential}),
        scopes=scopes,
        anonymous=False,
        upstream=None,
        enforce_pair_scope=enforce_pair_scope,
        missing_credential=missing,
        missing_message=missing_message,
    )


# A pair rotates, revokes or reads itself whatever methods its scope allows.
LIFECYCLE_RULE = internal_rule(
    "bpc-lifecycle",
    CredentialType.BPC,
    missing=BPCMissingHeaders,
    missing_message="this endpoint needs a BPC-signed request",
    enforce_pair_scope=False,
)
# The BPC token-exchange grant of ``/token``.
EXCHANGE_RULE = internal_rule(
    "token-bpc-exchange",
    CredentialType.BPC,
    missing=BPCMissingHeaders,
    missing_message="the BPC grant needs a BPC-signed request",
    enforce_pair_scope=False,
)
# The subject and actor tokens of an RFC 8693 exchange (``/token``), decided like bearer
# tokens at the gate.
EXCHANGE_SUBJECT_RULE = internal_rule(
    "token-exchange-subject",
    CredentialType.JWT,
    missing_message="subject_token is required",
)
EXCHANGE_ACTOR_RULE = internal_rule(
    "token-exchange-actor",
    CredentialType.JWT,
    missing_message="actor_token is required",
)
# The pico endpoints that take a bearer token (roles are checked by the endpoint).
BEARER_CALLER_RULE = internal_rule(
    "bearer-caller",
    CredentialType.JWT,
    missing_message="this endpoint needs a bearer token",
)


def admin_rule(admin_scope: str) -> CompiledRule:
    """The admin API's rule: a bearer JWT holding ``admin_scope``."""
    return internal_rule(
        "admin-api",
        CredentialType.JWT,
        scopes=frozenset({admin_scope}),
        missing_message="the admin API needs a bearer token",
    )


class Policy:
    """Ordered rules plus the default action."""

    def __init__(self, rules: Sequence[CompiledRule], *, default_action: str) -> None:
        self.rules = tuple(rules)
        self.default_action = default_action

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> Policy:
        """Compile the configured policy."""
        return cls(
            [compile_rule(r) for r in settings.rules], default_action=settings.default_action
        )

    def match(self, method: str, host: str, path: str) -> CompiledRule:
        """The first matching rule, the default rule, or :class:`NoMatchingRule`."""
        host = normalize_host(host)
        for rule in self.rules:
            if rule.matches(method, host, path):
                return rule
        if self.default_action == "authenticate":
            return _DEFAULT_AUTHENTICATE
        raise NoMatchingRule()


def normalize_host(host: str) -> str:
    """Lower-case, without port and without a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, _, _port = host.partition(":")
    return name.rstrip(".")
