"""``Gate.evaluate``: the one decision path, shared by the proxy and every forward-auth door.

policy (first matching rule) -> the first verifier whose credential is present decides
-> credential type allowed on the rule -> required scopes -> :class:`Decision`.
Every outcome is counted and logged here, with a stable reason, never a secret.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Protocol

from authgate.errors import (
    AuthGateError,
    CredentialTypeNotAllowed,
    MissingCredential,
)
from authgate.metrics import CounterChild, HistogramChild, Metrics
from authgate.models import ANONYMOUS, CredentialType, Principal, RequestContext
from authgate.policy.limits import checks_for, raise_if_limited
from authgate.policy.rules import CompiledRule, Decision, Policy
from authgate.stores.base import RateLimitStore

log = logging.getLogger("authgate.decision")


class Verifier(Protocol):
    """One credential type: ``extract`` says "not mine" with ``None``; ``verify`` raises."""

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
        access_log: bool = True,
    ) -> None:
        self._rate_limits = rate_limits
        self._policy = policy
        self._verifiers = tuple(verifiers)
        self._metrics = metrics
        self._access_log = access_log
        self._children: dict[tuple[str, str, str], tuple[CounterChild, HistogramChild]] = {}

    @property
    def policy(self) -> Policy:
        """The compiled route rules."""
        return self._policy

    async def evaluate(self, context: RequestContext) -> Decision:
        """Return the decision for ``context`` or raise the refusal."""
        started = time.perf_counter()
        credential_type = "none"
        rule_id = ""
        try:
            rule = self._policy.match(context.method, context.host, context.path)
            rule_id = rule.id
            if rule.rate_limits:
                await self._limit(rule, "client", f"client:{context.client_ip}")
            principal = ANONYMOUS
            for verifier in self._verifiers:
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
                    raise MissingCredential()
                credential_type = CredentialType.ANONYMOUS.value
            if rule.rate_limits and not principal.limits_applied:
                await self._limit(rule, "credential", _credential_identity(principal, context))
            rule.check_scopes(principal)
        except AuthGateError as exc:
            self.record(
                "denied",
                exc.reason,
                credential_type,
                rule_id,
                "",
                context.request_id,
                context.method,
                context.client_ip,
                started,
                detail=exc.detail,
            )
            raise
        self.record(
            "granted",
            "ok",
            credential_type,
            rule_id,
            principal.subject,
            context.request_id,
            context.method,
            context.client_ip,
            started,
        )
        return Decision(principal=principal, rule_id=rule.id, upstream=rule.upstream, rule=rule)

    async def _limit(self, rule: CompiledRule, by: str, tag: str) -> None:
        checks = checks_for(rule, by)
        if checks:
            results = await self._rate_limits.hit_many(tag, checks)
            raise_if_limited(results, checks, by=by)

    def record(
        self,
        outcome: str,
        reason: str,
        credential: str,
        rule_id: str,
        subject: str,
        request_id: str,
        method: str,
        client_ip: str,
        started: float,
        *,
        detail: str = "",
    ) -> None:
        """Count and log one decision (every decision, whichever path reached it);
        ``started`` is the ``time.perf_counter()`` reading when deciding began and
        ``detail`` what a refusal hides from the client but an operator needs (never a
        secret: the errors' ``detail`` strings are fixed phrases)."""
        elapsed = time.perf_counter() - started
        count, seconds = self.children(outcome, reason, credential)
        count.value += 1.0  # CounterChild.inc and HistogramChild.observe, inlined
        seconds.counts[bisect_left(seconds.bounds, elapsed)] += 1
        seconds.sum += elapsed
        if self._access_log:
            self.log(
                outcome,
                reason,
                credential,
                rule_id,
                subject,
                request_id,
                method,
                client_ip,
                detail=detail,
            )

    def children(
        self, outcome: str, reason: str, credential: str
    ) -> tuple[CounterChild, HistogramChild]:
        """The decision counter and latency histogram of one label combination."""
        key = (outcome, reason, credential)
        children = self._children.get(key)
        if children is None:  # bind each label combination once
            children = (
                self._metrics.decisions.labels(outcome, reason, credential),
                self._metrics.decision_seconds.labels(outcome),
            )
            self._children[key] = children
        return children

    @property
    def access_log(self) -> bool:
        """Whether every decision is logged."""
        return self._access_log

    def log(
        self,
        outcome: str,
        reason: str,
        credential: str,
        rule_id: str,
        subject: str,
        request_id: str,
        method: str,
        client_ip: str,
        *,
        detail: str = "",
    ) -> None:
        """The access-log line of one decision."""
        log.info(
            "decision",
            extra={
                "event": "decision",
                "granted": outcome == "granted",
                "reason": reason,
                "rule_id": rule_id,
                "verifier": credential,
                "subject": subject,
                "request_id": request_id,
                "method": method,
                "client_ip": client_ip,
                "detail": detail,
            },
        )
