"""The token exchange grant of ``POST /token`` (RFC 8693).

An authenticated client (an API key named in ``tokens.exchange``) trades a subject token
(authgate's own access token, or an external issuer's the client's policy names) for an
access token restricted to one audience it may ask for, with at most the subject's scopes,
never living longer than the subject token. With an ``actor_token`` the new token says who
acts for whom: ``act`` names the actor, and a delegation the subject token already carried
nests inside it (RFC 8693 §4.1). Both tokens are decided by ``Gate.evaluate`` under
internal rules, so their refusals are counted and logged as any bearer token's are.

Every refusal is counted in ``authgate_token_exchanges_total{outcome="denied", reason}``
and logged (``event: token_exchange``) with a stable reason from :data:`REASONS`; tokens
never are.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from authgate.apikeys import ApiKey
from authgate.errors import (
    AuthGateError,
    DependencyUnavailable,
    OAuthError,
    OAuthInvalidRequest,
    OAuthInvalidScope,
    OAuthInvalidTarget,
    OAuthUnauthorizedClient,
    RateLimited,
)
from authgate.models import Principal
from authgate.policy.resources import requested_resource
from authgate.policy.rules import EXCHANGE_ACTOR_RULE, EXCHANGE_SUBJECT_RULE, CompiledRule
from authgate.tokens.issuer import scopes_from
from authgate.web.callers import own_context
from authgate.web.problem import REQUEST_ID
from authgate.web.state import METRICS, SERVICES, SETTINGS

log = logging.getLogger("authgate.web")

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a type URI
JWT = "urn:ietf:params:oauth:token-type:jwt"
# Subject and actor tokens are JWT access tokens, named either way (RFC 8693 §3).
_TOKEN_TYPES = (ACCESS_TOKEN, JWT)

# The stable reasons of a refused exchange (the metric's ``reason`` label, the log's
# ``reason`` field); the client sees the RFC 8693 §2.2.2 error code.
REASONS = {
    "client_not_allowed": "the client is not in tokens.exchange",
    "malformed": "a parameter is missing, repeated or of an unsupported type",
    "subject_token_invalid": "the gate refused the subject token",
    "subject_issuer_not_allowed": "the subject token's issuer is not in the client's policy",
    "subject_sender_constrained": "the subject token is bound to a key (cnf)",
    "actor_token_invalid": "the gate refused the actor token",
    "audience_not_allowed": "the audience is not one the client may exchange for",
    "scope_widening": "the requested scope exceeds the subject token's",
}


def _refuse(cls: type[OAuthError], reason: str, message: str) -> OAuthError:
    """An RFC 8693 refusal whose ``detail`` is the stable exchange reason."""
    assert reason in REASONS
    return cls(message, detail=reason)


async def _decided(
    request: web.Request, token: str, rule: CompiledRule, reason: str, name: str
) -> Principal:
    """The principal of ``token`` as the gate decides it under ``rule``; a refusal is
    ``invalid_request`` (RFC 8693 §2.2.2), an unavailable store or a rate limit stays one."""
    context = own_context(request)._replace(headers={"authorization": f"Bearer {token}"})
    try:
        decision = await request.app[SERVICES].gate.evaluate(context, rule)
    except (DependencyUnavailable, RateLimited):
        raise
    except AuthGateError as exc:
        raise _refuse(OAuthInvalidRequest, reason, f"{name} refused: {exc.reason}") from None
    return decision.principal


def _token_param(form: dict[str, str], name: str, *, required: bool) -> str | None:
    value = form.get(name)
    kind = form.get(f"{name}_type")
    if not value:
        if required:
            raise _refuse(OAuthInvalidRequest, "malformed", f"{name} is required")
        if kind is not None:
            raise _refuse(OAuthInvalidRequest, "malformed", f"{name}_type without {name}")
        return None
    if kind not in _TOKEN_TYPES:
        raise _refuse(
            OAuthInvalidRequest, "malformed", f"{name}_type must be an access token or a JWT"
        )
    return value


def _audience(form: dict[str, str], allowed: tuple[str, ...], resources: frozenset[str]) -> str:
    audience, resource = form.get("audience"), form.get("resource")
    if audience and resource:
        raise _refuse(OAuthInvalidRequest, "malformed", "give resource or audience, not both")
    if resource:
        try:
            audience = requested_resource(resource, resources)
        except OAuthInvalidTarget as exc:
            raise _refuse(OAuthInvalidTarget, "audience_not_allowed", exc.message) from None
    if not audience:
        raise _refuse(OAuthInvalidRequest, "malformed", "audience or resource is required")
    if audience not in allowed:
        raise _refuse(
            OAuthInvalidTarget, "audience_not_allowed", "this client may not exchange for it"
        )
    return audience


def _act(actor: Principal, subject: Principal) -> dict[str, Any] | None:
    """The ``act`` claim: the actor, with any delegation the subject token carried nested
    inside (RFC 8693 §4.1); without an actor, the subject's own ``act`` is kept."""
    prior = subject.claims.get("act")
    act: dict[str, Any] = {"sub": actor.subject, "iss": actor.issuer}
    if isinstance(prior, dict):
        act["act"] = prior
    return act


async def exchange(
    request: web.Request,
    form: dict[str, str],
    key: ApiKey,
    *,
    jkt: str | None = None,
    x5t: str | None = None,
) -> dict[str, Any]:
    """Exchange the form's subject token for the authenticated ``key``: the RFC 8693
    §2.2.1 response, or an :class:`OAuthError` (counted and logged). ``jkt`` and ``x5t``
    bind the new token to the requester's DPoP key or client certificate."""
    counter = request.app[METRICS].token_exchanges
    rid = request.get(REQUEST_ID, "")
    try:
        body, subject = await _exchange(request, form, key, jkt=jkt, x5t=x5t)
    except AuthGateError as exc:
        reason = exc.detail if exc.detail in REASONS else exc.reason
        counter.labels("denied", reason).inc()
        log.info(
            "token exchange refused",
            extra={
                "event": "token_exchange",
                "granted": False,
                "reason": reason,
                "rule_id": "token-exchange",
                "subject": f"apikey:{key.key_id}",
                "request_id": rid,
            },
        )
        raise
    counter.labels("granted", "ok").inc()
    log.info(
        "token exchanged",
        extra={
            "event": "token_exchange",
            "granted": True,
            "reason": "ok",
            "rule_id": "token-exchange",
            "subject": subject,
            "request_id": rid,
        },
    )
    return body


async def _exchange(
    request: web.Request,
    form: dict[str, str],
    key: ApiKey,
    *,
    jkt: str | None = None,
    x5t: str | None = None,
) -> tuple[dict[str, Any], str]:
    settings = request.app[SETTINGS]
    issuer = request.app[SERVICES].issuer
    policy = next((p for p in settings.tokens.exchange if p.client_id == key.key_id), None)
    if policy is None:
        raise _refuse(
            OAuthUnauthorizedClient, "client_not_allowed", "this client may not exchange tokens"
        )
    subject_token = _token_param(form, "subject_token", required=True)
    actor_token = _token_param(form, "actor_token", required=False)
    wanted = form.get("requested_token_type")
    if wanted is not None and wanted not in _TOKEN_TYPES:
        raise _refuse(OAuthInvalidRequest, "malformed", "only access tokens are issued by exchange")
    audience = _audience(form, policy.audiences, issuer.resources)
    requested = scopes_from(form.get("scope"))

    assert subject_token is not None
    subject = await _decided(
        request, subject_token, EXCHANGE_SUBJECT_RULE, "subject_token_invalid", "subject_token"
    )
    if subject.issuer not in (policy.subject_issuers or (settings.jwt.issuer,)):
        raise _refuse(
            OAuthInvalidRequest,
            "subject_issuer_not_allowed",
            "subject_token's issuer is not accepted for this client",
        )
    if "cnf" in subject.claims:
        # A bound token's holder proves a key; the exchanged token would shed the binding.
        raise _refuse(
            OAuthInvalidRequest,
            "subject_sender_constrained",
            "a sender-constrained subject_token cannot be exchanged",
        )
    if requested is not None and not requested <= subject.scopes:
        raise _refuse(
            OAuthInvalidScope, "scope_widening", "requested scope exceeds the subject token's"
        )
    act = subject.claims.get("act")
    if actor_token is not None:
        actor = await _decided(
            request, actor_token, EXCHANGE_ACTOR_RULE, "actor_token_invalid", "actor_token"
        )
        act = _act(actor, subject)

    extra: dict[str, Any] = {"client_id": key.key_id}
    if isinstance(act, dict):
        extra["act"] = act
    if subject.issuer != issuer.issuer:
        extra["subject_issuer"] = subject.issuer
    exp = subject.claims.get("exp")
    now = request.app[SERVICES].clock.now_ms() // 1000
    remaining = int(exp) - now if isinstance(exp, int | float) else 0
    ttl = max(1, min(settings.tokens.access_ttl_seconds, remaining))
    issued = await issuer.issue(
        subject=subject.subject,
        scopes=subject.scopes if requested is None else requested,
        audience=audience,
        ttl_seconds=ttl,
        extra=extra,
        minted_by=f"token_exchange:{key.key_id}",
        jkt=jkt,
        x5t=x5t,
    )
    body = issued.response()
    body["issued_token_type"] = ACCESS_TOKEN
    return body, subject.subject
