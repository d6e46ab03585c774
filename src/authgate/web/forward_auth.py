"""Forward-auth front doors, one per proxy contract (each a :class:`~authgate.web.context.Door`).

* ``/auth``               nginx ``auth_request`` (``X-Original-Method`` / ``X-Original-URI``)
* ``/auth/forward``       Traefik ``ForwardAuth`` and Caddy (``X-Forwarded-*``)
* ``/auth/envoy/<path>``  Envoy ``ext_authz`` HTTP service (``path_prefix: /auth/envoy``)

All answer 200 with identity headers (Envoy accepts nothing else as an allow), 401 with
``WWW-Authenticate``, 403 on denial, 503 when a store cannot answer. Every request is
decided by ``Gate.evaluate``; there is no other path.
"""

from __future__ import annotations

from aiohttp import web

from authgate.pipeline import Gate
from authgate.web.context import Door, Doors, request_id
from authgate.web.identity import IdentityHeaders
from authgate.web.problem import TAIL, Handler, Routes, response_for


def _handler(door: Door, gate: Gate, identity: IdentityHeaders, request_id_header: str) -> Handler:
    """The door's handler: its context, the gate's decision, the identity headers. It
    answers its own refusals (no wrapper, no middleware: this is the hot path)."""

    async def handler(request: web.Request) -> web.Response:
        rid = request_id(request, request_id_header)
        try:
            decision = await gate.evaluate(door.context(request, rid))
        except Exception as exc:  # noqa: BLE001 - response_for() answers or re-raises
            return response_for(exc, rid)
        response = web.Response(status=200, headers=identity.response_headers(decision))
        response.headers["X-Request-Id"] = rid
        return response

    handler.__doc__ = door.__doc__
    return handler


def add_routes(
    routes: Routes, doors: Doors, *, gate: Gate, identity: IdentityHeaders, request_id_header: str
) -> None:
    """Register the forward-auth doors (every method: proxies keep the original one)."""
    router = routes.app.router
    for path, door in (
        ("/auth", doors.nginx),
        ("/auth/forward", doors.traefik),
        (doors.envoy.prefix + "/" + TAIL, doors.envoy),
    ):
        router.add_route("*", path, _handler(door, gate, identity, request_id_header))
