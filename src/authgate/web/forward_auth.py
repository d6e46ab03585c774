"""Forward-auth front doors, one per proxy contract.

* ``/auth``               nginx ``auth_request`` (``X-Original-Method`` / ``X-Original-URI``)
* ``/auth/forward``       Traefik ``ForwardAuth`` and Caddy (``X-Forwarded-*``)
* ``/auth/envoy/<path>``  Envoy ``ext_authz`` HTTP service (``path_prefix: /auth/envoy``)

All answer 200 with identity headers (Envoy accepts nothing else as an allow), 401 with
``WWW-Authenticate``, 403 on denial, 503 when a store cannot answer.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from authgate.models import RequestContext
from authgate.web.context import ContextBuilder, request_id
from authgate.web.problem import Handler, Routes, refusal
from authgate.web.state import GATE, IDENTITY, REQUEST_CONTEXTS, SETTINGS

ENVOY_PREFIX = "/auth/envoy"

ContextFor = Callable[[ContextBuilder, web.Request, str], RequestContext]


def _door(context_for: ContextFor, doc: str) -> Handler:
    """A forward-auth handler. The doors answer their own refusals (no wrapper, no
    middleware): they are the hot path, and each layer costs a measurable share of it."""

    async def door(request: web.Request) -> web.Response:
        app = request.app
        rid = request_id(request, app[SETTINGS].server.request_id_header)
        try:
            context = context_for(app[REQUEST_CONTEXTS], request, rid)
            decision = await app[GATE].evaluate(context)
        except Exception as exc:  # noqa: BLE001 - refusal() answers or re-raises
            return refusal(exc, rid)
        headers = {
            **app[IDENTITY].for_decision(decision),
            "Cache-Control": "no-store",
            "X-Request-Id": rid,
        }
        return web.Response(status=200, headers=headers)

    door.__doc__ = doc
    return door


nginx_auth = _door(
    lambda b, request, rid: b.nginx(request, rid=rid), "nginx ``auth_request`` target."
)
traefik_auth = _door(
    lambda b, request, rid: b.traefik(request, rid=rid),
    "Traefik ``ForwardAuth`` / Caddy ``forward_auth`` target.",
)
envoy_auth = _door(
    lambda b, request, rid: b.envoy(request, rid=rid, prefix=ENVOY_PREFIX),
    "Envoy ``ext_authz`` HTTP service target.",
)


def add_routes(routes: Routes) -> None:
    """Register the forward-auth doors (every method: proxies keep the original one)."""
    router = routes.app.router
    router.add_route("*", "/auth", nginx_auth)
    router.add_route("*", "/auth/forward", traefik_auth)
    router.add_route("*", ENVOY_PREFIX + "/{tail:.*}", envoy_auth)
