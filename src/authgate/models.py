"""Frozen value objects that flow through the decision path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple


class CredentialType(StrEnum):
    """The kinds of credential authgate verifies; values appear in config and headers."""

    JWT = "jwt"
    BPC = "bpc"
    HMAC = "hmac"
    ANONYMOUS = "anonymous"


class RequestContext(NamedTuple):
    """What the decision needs to know about one request, whichever door it came through.

    Immutable (a named tuple: built for every request, it costs a quarter of a frozen
    dataclass's ``__init__``; ``_replace`` gives a changed copy).

    ``path`` is the canonical path (see ``policy.target``) and ``query`` the raw query
    string (without ``?``); ``path`` plus ``query`` is exactly what the upstream receives.
    ``headers`` maps lower-case names to values. ``read_body`` is ``None`` when the body is
    not available (nginx ``auth_request``). ``raw_target`` is the target exactly as the
    client sent it (what a BPC client signs); it passed canonicalisation, so it is not
    ambiguous, only possibly spelled differently from ``target``.
    """

    method: str
    path: str
    query: str
    host: str
    scheme: str
    headers: Mapping[str, str]
    client_ip: str
    request_id: str = ""
    read_body: Callable[[], Awaitable[bytes]] | None = None
    raw_target: str = ""
    # The W3C traceparent/tracestate of a trusted proxy, kept by the door only when tracing
    # is on (authgate/tracing.py); None otherwise, whatever the client sent.
    trace_carrier: Mapping[str, str] | None = None
    # The x5t#S256 thumbprint of the client certificate a trusted proxy forwarded
    # (Client-Cert or X-Forwarded-Client-Cert, RFC 8705 §3); None otherwise.
    client_cert: str | None = None

    @property
    def target(self) -> str:
        """Path and query as the upstream receives them."""
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as established by exactly one verifier."""

    subject: str
    credential_type: CredentialType
    scopes: frozenset[str] = frozenset()
    credential_id: str = ""
    issuer: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict)
    # What the decision still owes the stores (a nonce to spend): the gate does it, with
    # the rule's credential limits and the audit entry, in one round trip.
    spend: Spend | None = None


@dataclass(frozen=True, slots=True)
class Spend:
    """A single-use value a verifier checked but did not spend.

    The gate spends ``nonce`` (under ``scope``) exactly once, charging the rule's
    credential rate limits and writing ``audit`` in the same store operation. ``refuse``
    turns a nonce outcome other than fresh or rate-limited (a replay, or a request signed
    before the store's epoch) into the verifier's own refusal (charging and auditing it as
    the verifier charges and audits its other refusals).
    """

    scope: str
    nonce: str
    ttl_ms: int
    signed_at_ms: int
    refuse: Callable[[str], Awaitable[Exception]]
    audit: Mapping[str, Any] | None = None
    audit_cap: int = 0


ANONYMOUS = Principal(subject="", credential_type=CredentialType.ANONYMOUS)
