"""The callers of authgate's own endpoints, decided by the gate like any other request.

Each endpoint that authenticates its caller names an internal rule (``policy/rules.py``:
the admin API, the pico endpoints, the BPC lifecycle, the BPC token exchange); the request
is seen through the sidecar door and ``Gate.evaluate`` decides, so the decision is counted,
logged with its reason and rate-limited exactly as a proxied request's is.
"""

from __future__ import annotations

from aiohttp import web

from authgate.models import Principal, RequestContext
from authgate.policy.rules import CompiledRule
from authgate.web.problem import REQUEST_ID
from authgate.web.state import DOORS, SERVICES


def own_context(request: web.Request) -> RequestContext:
    """The request to one of authgate's own endpoints, as the sidecar door reads it."""
    return request.app[DOORS].sidecar.context(request, request[REQUEST_ID])


async def caller(
    request: web.Request, rule: CompiledRule, context: RequestContext | None = None
) -> Principal:
    """Who calls: the gate's decision under ``rule``, or its refusal."""
    context = context or own_context(request)
    decision = await request.app[SERVICES].gate.evaluate(context, rule)
    return decision.principal
