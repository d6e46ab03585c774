"""Forward-auth front doors, one per proxy contract (each a :class:`~authgate.web.context.Door`).

* ``/auth``               nginx ``auth_request`` (``X-Original-Method`` / ``X-Original-URI``)
* ``/auth/forward``       Traefik ``ForwardAuth`` and Caddy (``X-Forwarded-*``)
* ``/auth/envoy/<path>``  Envoy ``ext_authz`` HTTP service (``path_prefix: /auth/envoy``)

All answer 200 with identity headers (Envoy accepts nothing else as an allow), 401 with
``WWW-Authenticate``, 403 on denial, 503 when a store cannot answer. Every request is
decided by ``Gate.evaluate``; there is no other path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from authgate.pipeline import Gate
from authgate.web.context import Door, Doors, request_id
from authgate.web.identity import IdentityHeaders
from authgate.web.problem import TAIL, Handler, Routes, response_for
from authgate.web.protocol import SERVER
from authgate.web.state import DRAINING

_SERVER_LINE = f"Server: {SERVER}\r\n".encode()
_STATUS_LINES = {(1, 1): b"HTTP/1.1 200 OK\r\n", (1, 0): b"HTTP/1.0 200 OK\r\n"}


class _Date:
    """The ``Date`` header line, formatted once per second (as aiohttp does its own)."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def current(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
        return self.line


_DATE = _Date()


class Allow(web.StreamResponse):
    """A forward-auth door's 200, written as one piece.

    aiohttp's ``Response`` builds a header multidict, fills in Content-Length, Date, Server
    and Connection, runs the ``on_response_prepare`` signal and serialises the headers on
    every request: about a third of a bare aiohttp request's CPU time. This answer always
    has the same shape (200, no body, the principal's identity block, which
    :class:`IdentityHeaders` serialises once per principal, and the request id), so it is
    joined from bytes instead. It carries what aiohttp's path adds, the same way:
    ``Content-Length: 0`` (not on HEAD), ``Date``, ``Server: authgate``, ``Connection:
    keep-alive`` for an HTTP/1.0 keep-alive request and ``Connection: close`` when the
    connection ends (the client asked, or shutdown is draining connections: what
    ``Drain.close_connections`` does for every other response).
    ``tests/web/test_forward_auth_response.py`` compares the bytes with what aiohttp's
    ``Response`` writes for the same answer.
    """

    def __init__(self, identity_block: bytes, request_id: str, draining: list[bool]) -> None:
        super().__init__(status=200)
        self._identity_block = identity_block
        self._request_id = request_id
        self._draining = draining

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is not None:
            return self._payload_writer
        self._req = request
        writer = self._payload_writer = request._payload_writer
        keep_alive = request.keep_alive and not self._draining[0]
        self._keep_alive = keep_alive
        version = request.version
        status_line = _STATUS_LINES.get((version.major, version.minor))
        if status_line is None:  # pragma: no cover - the parser accepts HTTP/1.x only
            status_line = f"HTTP/{version.major}.{version.minor} 200 OK\r\n".encode()
        if keep_alive:
            connection = b"Connection: keep-alive\r\n" if version == (1, 0) else b""
        else:
            connection = b"Connection: close\r\n" if version == (1, 1) else b""
        head = b"".join(
            (
                status_line,
                self._identity_block,
                b"X-Request-Id: ",
                self._request_id.encode("ascii"),  # request_id() admits [A-Za-z0-9._:-] only
                # RFC 9110 §8.6: a HEAD answer's length would be a GET's, unknown here.
                b"\r\n" if request.method == "HEAD" else b"\r\nContent-Length: 0\r\n",
                _DATE.current(),
                _SERVER_LINE,
                connection,
                b"\r\n",
            )
        )
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("cannot write to a closing transport")
        writer.output_size += len(head)
        transport.write(head)
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        self._eof_sent = True


def _handler(
    door: Door, gate: Gate, identity: IdentityHeaders, request_id_header: str, draining: list[bool]
) -> Handler:
    """The door's handler: its context, the gate's decision, the identity headers. It
    answers its own refusals (no wrapper, no middleware: this is the hot path)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        rid = request_id(request, request_id_header)
        try:
            decision = await gate.evaluate(door.context(request, rid))
        except Exception as exc:  # noqa: BLE001 - response_for() answers or re-raises
            return response_for(exc, rid)
        return Allow(identity.response_bytes(decision), rid, draining)

    handler.__doc__ = door.__doc__
    return handler


class _DoorDispatch:
    """The application's request handler: the forward-auth doors' requests go straight to
    their handler, everything else to aiohttp's router (``Application._handle``).

    The doors are the hot path, and aiohttp's router walk, its per-request match info and
    its middleware check cost about a sixth of an allowed request. The match is the
    router's own for these routes: the same path (``rel_url.path_safe``), ``/auth`` and
    ``/auth/forward`` exactly, the Envoy prefix followed by ``/``, any method. The request
    gets the route's match info (built once, frozen; no door reads its ``tail``), so
    ``request.app`` and the ``on_response_prepare`` signals (``Drain.close_connections``)
    work as through the router. A request with ``Expect`` goes through the router, which
    answers ``100 Continue``.
    """

    def __init__(
        self,
        routed: Callable[[web.Request], Awaitable[web.StreamResponse]],
        exact: dict[str, tuple[Handler, UrlMappingMatchInfo]],
        prefix: str,
        prefixed: tuple[Handler, UrlMappingMatchInfo],
    ) -> None:
        self._routed = routed
        self._exact = exact
        self._prefix = prefix
        self._prefixed = prefixed

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.path_safe
        door = self._exact.get(path)
        if door is None and path.startswith(self._prefix):
            door = self._prefixed
        if door is None or hdrs.EXPECT in request.headers:
            return await self._routed(request)
        handler, request._match_info = door
        return await handler(request)


def _match_info(app: web.Application, route: web.AbstractRoute) -> UrlMappingMatchInfo:
    info = UrlMappingMatchInfo({}, route)
    info.add_app(app)
    info.freeze()
    return info


def add_routes(
    routes: Routes, doors: Doors, *, gate: Gate, identity: IdentityHeaders, request_id_header: str
) -> None:
    """Register the forward-auth doors (every method: proxies keep the original one), and
    dispatch their requests before the router (:class:`_DoorDispatch`)."""
    app = routes.app
    router = app.router
    draining = app[DRAINING]
    doors_by_path: dict[str, tuple[Handler, UrlMappingMatchInfo]] = {}
    for path, door in (
        ("/auth", doors.nginx),
        ("/auth/forward", doors.traefik),
        (doors.envoy.prefix + "/" + TAIL, doors.envoy),
    ):
        handler = _handler(door, gate, identity, request_id_header, draining)
        route = router.add_route("*", path, handler)
        doors_by_path[path] = (handler, _match_info(app, route))
    envoy = doors_by_path.pop(doors.envoy.prefix + "/" + TAIL)
    # aiohttp's server takes app._handle when it is made (Application._make_handler).
    app._handle = _DoorDispatch(  # type: ignore[method-assign]
        app._handle, doors_by_path, doors.envoy.prefix + "/", envoy
    )
