"""Forward-auth front doors, one per proxy contract.

* ``/auth``               nginx ``auth_request`` (``X-Original-Method`` / ``X-Original-URI``)
* ``/auth/forward``       Traefik ``ForwardAuth`` and Caddy (``X-Forwarded-*``)
* ``/auth/envoy/<path>``  Envoy ``ext_authz`` HTTP service (``path_prefix: /auth/envoy``)

All answer 200 with identity headers (Envoy accepts nothing else as an allow), 401 with
``WWW-Authenticate``, 403 on denial, 503 when a store cannot answer.
"""

from __future__ import annotations

from aiohttp import web

from authgate.models import RequestContext
from authgate.web.problem import REQUEST_ID
from authgate.web.state import GATE, IDENTITY, REQUEST_CONTEXTS

ENVOY_PREFIX = "/auth/envoy"


async def _answer(request: web.Request, context: RequestContext) -> web.Response:
    decision = await request.app[GATE].evaluate(context)
    headers = {
        **request.app[IDENTITY].for_decision(decision),
        "Cache-Control": "no-store",
        "X-Request-Id": context.request_id,
    }
    return web.Response(status=200, headers=headers)


async def nginx_auth(request: web.Request) -> web.Response:
    """nginx ``auth_request`` target."""
    context = request.app[REQUEST_CONTEXTS].nginx(request, rid=request[REQUEST_ID])
    return await _answer(request, context)


async def traefik_auth(request: web.Request) -> web.Response:
    """Traefik ``ForwardAuth`` / Caddy ``forward_auth`` target."""
    context = request.app[REQUEST_CONTEXTS].traefik(request, rid=request[REQUEST_ID])
    return await _answer(request, context)


async def envoy_auth(request: web.Request) -> web.Response:
    """Envoy ``ext_authz`` HTTP service target."""
    context = request.app[REQUEST_CONTEXTS].envoy(
        request, rid=request[REQUEST_ID], prefix=ENVOY_PREFIX
    )
    return await _answer(request, context)


def add_routes(app: web.Application) -> None:
    """Register the forward-auth doors (every method: proxies keep the original one)."""
    app.router.add_route("*", "/auth", nginx_auth)
    app.router.add_route("*", "/auth/forward", traefik_auth)
    app.router.add_route("*", ENVOY_PREFIX + "/{tail:.*}", envoy_auth)
