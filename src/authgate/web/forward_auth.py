"""Forward-auth front doors, one per proxy contract.

* ``/auth``               nginx ``auth_request`` (``X-Original-Method`` / ``X-Original-URI``)
* ``/auth/forward``       Traefik ``ForwardAuth`` and Caddy (``X-Forwarded-*``)
* ``/auth/envoy/<path>``  Envoy ``ext_authz`` HTTP service (``path_prefix: /auth/envoy``)

All answer 200 with identity headers (Envoy accepts nothing else as an allow), 401 with
``WWW-Authenticate``, 403 on denial, 503 when a store cannot answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from authgate.models import RequestContext
from authgate.pipeline import Gate
from authgate.policy.rules import Decision
from authgate.web.context import ContextBuilder, request_id
from authgate.web.identity import IdentityHeaders
from authgate.web.problem import Handler, Routes, refusal
from authgate.web.repeat import ENVOY, NGINX, TRAEFIK, Door, Grant, RepeatGrants

ENVOY_PREFIX = "/auth/envoy"

ContextFor = Callable[[ContextBuilder, web.Request, str], RequestContext]


class DoorState:
    """What the doors of one application use; filled in at start-up (``web/app.py``).

    Handlers hold this object itself rather than fetching application state on every
    request: they are the hot path, and each lookup costs a measurable share of it.
    """

    def __init__(self, builder: ContextBuilder, request_id_header: str) -> None:
        self.builder = builder
        self.request_id_header = request_id_header
        self.gate: Gate | None = None
        self.identity: IdentityHeaders | None = None
        self.repeats: RepeatGrants | None = None

    def start(self, *, gate: Gate, identity: IdentityHeaders, repeats: RepeatGrants) -> None:
        """Attach what the application built at start-up."""
        self.gate = gate
        self.identity = identity
        self.repeats = repeats


def _door(state: DoorState, door: Door, context_for: ContextFor, doc: str) -> Handler:
    """A forward-auth handler: a repeat grant when one provably holds (``web/repeat.py``),
    else the full path. The doors answer their own refusals (no wrapper, no middleware)."""
    name = door.name

    async def handler(request: web.Request) -> web.Response:
        rid = request_id(request, state.request_id_header)
        gate, identity, repeats = state.gate, state.identity, state.repeats
        if gate is None or identity is None or repeats is None:
            raise RuntimeError("forward-auth state was not started")  # pragma: no cover
        headers: Mapping[str, str] | None
        try:
            memory = repeats.doors[name]
            found = memory.answer(request, rid)
            if isinstance(found, Grant):
                decision: Decision = found.decision
                headers = found.headers
            else:
                repeats.misses.value += 1.0  # CounterChild.inc, inlined
                context = context_for(state.builder, request, rid)
                decision = await gate.evaluate(context)
                headers = None
                memory.remember(found, request, context, decision, identity)
        except Exception as exc:  # noqa: BLE001 - refusal() answers or re-raises
            return refusal(exc, rid)
        response = web.Response(
            status=200,
            headers=headers if headers is not None else identity.response_headers(decision),
        )
        response.headers["X-Request-Id"] = rid
        return response

    handler.__doc__ = doc
    return handler


def add_routes(routes: Routes, state: DoorState) -> None:
    """Register the forward-auth doors (every method: proxies keep the original one)."""
    router = routes.app.router
    router.add_route(
        "*",
        "/auth",
        _door(
            state,
            NGINX,
            lambda b, request, rid: b.nginx(request, rid=rid),
            "nginx ``auth_request`` target.",
        ),
    )
    router.add_route(
        "*",
        "/auth/forward",
        _door(
            state,
            TRAEFIK,
            lambda b, request, rid: b.traefik(request, rid=rid),
            "Traefik ``ForwardAuth`` / Caddy ``forward_auth`` target.",
        ),
    )
    router.add_route(
        "*",
        ENVOY_PREFIX + "/{tail:.*}",
        _door(
            state,
            ENVOY,
            lambda b, request, rid: b.envoy(request, rid=rid, prefix=ENVOY_PREFIX),
            "Envoy ``ext_authz`` HTTP service target.",
        ),
    )
