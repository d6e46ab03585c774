"""``Gate.evaluate``: the one decision path, for every door and every endpoint.

policy (first matching rule, or the internal rule of one of authgate's own endpoints)
-> the client's rate limits -> the first verifier whose credential is present decides
-> credential type allowed on the rule -> what the verifier left to spend (a nonce), with
the credential's rate limits, in one store round trip -> required scopes -> :class:`Decision`.
Rate limits are decided here and nowhere else. Every outcome is counted and logged here,
with a stable reason, never a secret.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Protocol

from authgate.access_log import DecisionLog
from authgate.decisions import RecentDecisions
from authgate.errors import (
    AuthGateError,
    CredentialTypeNotAllowed,
)
from authgate.metrics import CounterChild, HistogramChild, Metrics
from authgate.models import ANONYMOUS, CredentialType, Principal, RequestContext, Spend
from authgate.policy.limits import checks_for, raise_if_limited
from authgate.policy.rules import CompiledRule, Decision, Policy
from authgate.stores.base import NonceOutcome, NonceStore, RateLimitStore


class Verifier(Protocol):
    """One credential type: ``extract`` says "not mine" with ``None``; ``verify`` raises.

    A verifier checks and returns who is calling; a single-use value it checked (a nonce)
    comes back as the principal's ``spend`` for the gate to spend, never spent by it.
    """

    credential_type: CredentialType

    def extract(self, context: RequestContext) -> Any | None:
        """The credential, or ``None`` when the request does not carry this type."""
        ...

    async def verify(
        self, credential: Any, context: RequestContext, rule: CompiledRule | None = None
    ) -> Principal:
        """A principal, or an :class:`AuthGateError` leaf; ``rule`` carries route options."""
        ...


def _credential_identity(principal: Principal, context: RequestContext) -> str:
    """Whose budget a credential limit charges: a JWT's issuer and subject (every token of
    one subject shares it, so refreshing gives no fresh budget), else the credential id."""
    kind = principal.credential_type.value
    if principal.credential_type is CredentialType.JWT:
        return f"{kind}:{principal.issuer}:{principal.subject}"
    return f"{kind}:{principal.credential_id or principal.subject or context.client_ip}"


class Gate:
    """Decides who is calling and whether they may do this."""

    def __init__(
        self,
        *,
        policy: Policy,
        verifiers: Sequence[Verifier],
        metrics: Metrics,
        rate_limits: RateLimitStore,
        nonces: NonceStore,
        access_log: DecisionLog | None = None,
        recent: RecentDecisions | None = None,
    ) -> None:
        self._rate_limits = rate_limits
        self._nonces = nonces
        self._policy = policy
        self._verifiers = tuple(verifiers)
        self._metrics = metrics
        self._access_log = access_log or DecisionLog(
            enabled=True, dropped=metrics.access_log_dropped.labels()
        )
        self._recent = recent  # the console's decision view (None unless it is enabled)
        self._children: dict[tuple[str, str, str], tuple[CounterChild, HistogramChild]] = {}
        self._internal: dict[CompiledRule, tuple[Verifier, ...]] = {}

    @property
    def policy(self) -> Policy:
        """The compiled route rules."""
        return self._policy

    def reconfigure(self, *, policy: Policy, verifiers: Sequence[Verifier]) -> None:
        """Decide later requests with ``policy`` and ``verifiers`` (a config reload).

        The references are replaced between two requests' steps, never inside one:
        :meth:`evaluate` reads both before its first ``await``, so a request in flight
        finishes with the policy and verifiers it started with.
        """
        self._policy, self._verifiers, self._internal = policy, tuple(verifiers), {}

    async def evaluate(self, context: RequestContext, rule: CompiledRule | None = None) -> Decision:
        """Return the decision for ``context`` or raise the refusal.

        ``rule`` is the internal rule of one of authgate's own endpoints (which the policy
        does not route); only the verifiers of its credential types are consulted.
        """
        started = time.perf_counter()
        credential_type = "none"
        rule_id = ""
        try:
            if rule is None:
                rule = self._policy.match(context.method, context.host, context.path)
                verifiers = self._verifiers
            else:
                verifiers = self._verifiers_for(rule)
            rule_id = rule.id
            if rule.rate_limits:
                await self._limit(rule, "client", f"client:{context.client_ip}")
            principal = ANONYMOUS
            for verifier in verifiers:
                credential = verifier.extract(context)
                if credential is None:
                    continue
                credential_type = verifier.credential_type.value
                if verifier.credential_type not in rule.credentials:
                    raise CredentialTypeNotAllowed(
                        f"credential type {credential_type!r} is not allowed on this route"
                    )
                principal = await verifier.verify(credential, context, rule)
                break
            else:
                if not rule.anonymous:
                    raise rule.missing_credential(rule.missing_message)
                credential_type = CredentialType.ANONYMOUS.value
            if principal.spend is not None:
                await self._spend(principal.spend, rule)
            elif rule.rate_limits:
                await self._limit(rule, "credential", _credential_identity(principal, context))
            if rule.resource is not None:
                rule.check_resource(principal)
            rule.check_scopes(principal)
        except AuthGateError as exc:
            if rule is not None and rule.resource is not None:
                exc.resource_metadata = rule.resource.metadata_url
            self._record(
                "denied",
                exc.reason,
                credential_type,
                rule_id,
                "",
                context,
                started,
                detail=exc.detail,
            )
            raise
        self._record("granted", "ok", credential_type, rule_id, principal.subject, context, started)
        return Decision(principal=principal, rule_id=rule.id, upstream=rule.upstream, rule=rule)

    def _verifiers_for(self, rule: CompiledRule) -> tuple[Verifier, ...]:
        verifiers = self._internal.get(rule)
        if verifiers is None:
            verifiers = tuple(v for v in self._verifiers if v.credential_type in rule.credentials)
            self._internal[rule] = verifiers
        return verifiers

    async def _spend(self, spend: Spend, rule: CompiledRule) -> None:
        """Spend the verifier's nonce with the credential's limits and audit: one round trip."""
        checks = checks_for(rule, "credential") if rule.rate_limits else []
        outcome, results = await self._nonces.consume_limited(
            spend.scope,
            spend.nonce,
            ttl_ms=spend.ttl_ms,
            signed_at_ms=spend.signed_at_ms,
            limits=checks,
            audit=spend.audit,
            audit_cap=spend.audit_cap,
        )
        if outcome is NonceOutcome.FRESH:
            return
        if outcome is NonceOutcome.RATE_LIMITED:
            raise_if_limited(results, checks, by="credential")
        raise await spend.refuse(outcome.value)

    async def _limit(self, rule: CompiledRule, by: str, tag: str) -> None:
        checks = checks_for(rule, by)
        if checks:
            results = await self._rate_limits.hit_many(tag, checks)
            raise_if_limited(results, checks, by=by)

    def _record(
        self,
        outcome: str,
        reason: str,
        credential: str,
        rule_id: str,
        subject: str,
        context: RequestContext,
        started: float,
        *,
        detail: str = "",
    ) -> None:
        """Count and log one decision; ``started`` is the ``time.perf_counter()`` reading
        when deciding began and ``detail`` what a refusal hides from the client but an
        operator needs (never a secret: the errors' ``detail`` strings are fixed phrases)."""
        elapsed = time.perf_counter() - started
        key = (outcome, reason, credential)
        children = self._children.get(key)
        if children is None:  # bind each label combination once
            children = (
                self._metrics.decisions.labels(outcome, reason, credential),
                self._metrics.decision_seconds.labels(outcome),
            )
            self._children[key] = children
        count, seconds = children
        count.value += 1.0  # CounterChild.inc and HistogramChild.observe, inlined
        seconds.counts[bisect_left(seconds.bounds, elapsed)] += 1
        seconds.sum += elapsed
        self._access_log.record(
            outcome == "granted",
            reason,
            rule_id,
            credential,
            subject,
            context.request_id,
            context.method,
            context.client_ip,
            detail,
        )
        if self._recent is not None:
            self._recent.add(
                granted=outcome == "granted",
                reason=reason,
                rule_id=rule_id,
                credential=credential,
                subject=subject,
                client_ip=context.client_ip,
                method=context.method,
                request_id=context.request_id,
                detail=detail,
            )
