"""Answers aiohttp gives before any handler runs, made authgate's own.

* Requests aiohttp's HTTP parser refuses (a malformed request line, a header over
  ``server.max_header_bytes``, bytes that are not HTTP) get authgate's JSON problem body
  with a stable code, never aiohttp's text, which echoes the offending bytes (an
  ``Authorization`` value among them) back to the client and into the log.
* ``Server`` names authgate, not the Python and aiohttp versions.
* A path no route claims (when no upstream is configured) is a JSON 404, and a method a
  route does not take a JSON 405 with ``Allow``: :func:`not_found`, registered last.

aiohttp builds those first two answers in ``RequestHandler.handle_error`` and from the
module constant ``SERVER_SOFTWARE``; :func:`install` replaces both for the process (authgate
is the only application a serving process runs). ``tests/web/test_protocol.py`` checks the
answers on the installed aiohttp, so a release that moves either shows up at once.

A serving process (:class:`Runner`, used by ``web/drain.py``) also bounds how long a client
may hold a connection without sending a request, which aiohttp alone does not: its only
timer is the keep-alive one (3630 s by default, started when the connection opens), so a
client trickling a head one byte at a time held a connection for an hour, and a stalled
body for ever. :class:`Handler` adds

* a **head deadline** (``server.header_read_timeout_seconds``): from the connection's start
  for its first request, from the first byte for a later one, until the head is parsed; then
  408 ``request_timeout`` and close, or a silent close when nothing at all was sent;
* a **body pause bound** (``server.body_read_timeout_seconds``): a request body that gets no
  byte for that long fails its reader with 408 ``request_timeout`` (the proxy, the BPC body
  hash and the JSON endpoints all read through it);
* a JSON 400 ``invalid_target`` for targets that are not a path (``CONNECT host:port``,
  ``OPTIONS *``, authority-form), which no route can match and aiohttp answered with a
  plain-text 404.

``tests/integration/test_malformed_traffic.py`` runs them against a real process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import http_exceptions, streams, web, web_protocol, web_response

from authgate.errors import (
    AuthGateError,
    BodyTooLarge,
    InternalError,
    InvalidTarget,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
)
from authgate.web.problem import problem_response

log = logging.getLogger("authgate.web")

SERVER = "authgate"


class _HeadTimeout(http_exceptions.HttpProcessingError):
    """The head was not complete by the deadline (internal: answered 408 ``request_timeout``)."""

    code = 408
    message = "request head not received in time"


class _NotAPath(http_exceptions.BadHttpMessage):
    """A target no route can match: ``CONNECT``, ``*``, authority-form (answered 400
    ``invalid_target``)."""


def _refusal(status: int, exc: BaseException | None) -> AuthGateError:
    if status == 413:
        return BodyTooLarge()
    if status == 408:
        return RequestTimeout("the request head was not received in time")
    if status >= 500:
        return InternalError()
    if isinstance(exc, http_exceptions.InvalidURLError):
        # A control, space-like or non-ASCII byte in the request target itself: the same
        # answer as the encoded forms get from policy/target.py.
        return InvalidTarget("request target contains a non-printable or non-ASCII character")
    if isinstance(exc, _NotAPath):
        return InvalidTarget("the request target must be a path; CONNECT and '*' are not served")
    if isinstance(exc, http_exceptions.LineTooLong):
        return MalformedRequest("the request line or a header is too long")
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return MalformedRequest("not an HTTP request")
    return MalformedRequest()


def _handle_error(
    self: web_protocol.RequestHandler,
    request: Any,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """``RequestHandler.handle_error`` with a JSON problem body that repeats nothing the
    client sent; logged by error type only (the exception's text may hold header bytes)."""
    if request.writer.output_size > 0:
        raise ConnectionError("response already started; cannot send the error")
    refusal = _refusal(status, exc)
    if status >= 500:
        log.error(
            "request failed before a handler answered",
            exc_info=exc,
            extra={"event": "internal_error", "status": status},
        )
    else:
        log.info(
            "malformed HTTP request refused",
            extra={
                "event": "malformed_http",
                "status": status,
                "error": type(exc).__name__ if exc is not None else "",
            },
        )
    response = problem_response(refusal)
    response.set_status(status)
    response.force_close()
    return response


class Handler(web_protocol.RequestHandler):
    """aiohttp's connection handler with a head deadline, a body pause bound and a JSON
    answer for targets that are not paths (module docstring)."""

    __slots__ = (
        "_body_bytes",
        "_body_seconds",
        "_body_timer",
        "_head_bytes",
        "_head_seconds",
        "_head_timer",
        "_last_payload",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        header_read_timeout: float,
        body_read_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._head_seconds = header_read_timeout
        self._body_seconds = body_read_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_bytes = 0
        self._last_payload: streams.StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head()  # the first request's head is due from the connection's start

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        """No head parsed and not yet handled, no handler running, no body still arriving."""
        return (
            not self._messages
            and not self._request_in_progress
            and not self._upgraded
            and (self._last_payload is None or self._last_payload.is_eof())
        )

    def _arm_head(self) -> None:
        self._head_bytes = 0
        self._head_timer = self._loop.call_later(self._head_seconds, self._head_timeout)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._force_close or self._close:
            return
        # A later request's head is due from its first byte. The timer is armed only when
        # this chunk leaves the head incomplete: a head that arrives whole (nearly every
        # request) costs no timer.
        starts_head = self._head_timer is None and data and self._between_requests()
        self._head_bytes += len(data)
        self._body_bytes += len(data)
        before = self._request_count
        super().data_received(data)
        parsed = self._request_count - before
        if not parsed or not self._messages:
            if starts_head and not parsed and not self._force_close and not self._close:
                self._arm_head()
                self._head_bytes = len(data)
            return
        self._disarm_head()
        for index in range(max(0, len(self._messages) - parsed), len(self._messages)):
            message, payload = self._messages[index]
            if isinstance(message, web_protocol._ErrInfo):
                continue
            if message.method == "CONNECT" or not message.url.path.startswith("/"):
                self._messages[index] = (
                    web_protocol._ErrInfo(400, _NotAPath("not a path"), "not a path"),
                    streams.EMPTY_PAYLOAD,
                )
                self._close = True  # nothing after it is read
                continue
            self._last_payload = payload
        if self._last_payload is not None and not self._last_payload.is_eof():
            self._watch_body(self._last_payload)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._force_close or self._close or self.transport is None:
            return
        if not self._between_requests():  # pragma: no cover - disarmed when a head parses
            return
        log.info(
            "request head not received in time",
            extra={"event": "request_timeout", "bytes": self._head_bytes},
        )
        if not self._head_bytes:
            self.force_close()  # nothing was asked: nothing to answer
            return
        self._close = True  # read nothing more; answer, then close
        self._messages.append(
            (web_protocol._ErrInfo(408, _HeadTimeout(), "timeout"), streams.EMPTY_PAYLOAD)
        )
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _watch_body(self, payload: streams.StreamReader) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_bytes = 0
        self._body_timer = self._loop.call_later(self._body_seconds, self._body_check, payload)

    def _body_check(self, payload: streams.StreamReader) -> None:
        self._body_timer = None
        if payload.is_eof() or self._force_close or self.transport is None:
            return
        if self._body_bytes:
            self._watch_body(payload)  # progress: watch the next pause
            return
        log.info("request body stalled", extra={"event": "request_timeout"})
        if not self._request_in_progress:
            self.force_close()  # the answer is sent; aiohttp was draining the rest
            return
        # The handler's read fails with 408; no lingering read of the rest afterwards
        # (it would raise the same error), the connection closes after the answer.
        payload.set_exception(RequestTimeout("the request body stalled"))
        self._lingering_time = 0.0
        self._close = True


class Server(web.Server):
    """aiohttp's server with :class:`Handler` connections."""

    def __init__(
        self, server: web.Server, *, header_read_timeout: float, body_read_timeout: float
    ) -> None:
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
        self._timeouts = {
            "header_read_timeout": header_read_timeout,
            "body_read_timeout": body_read_timeout,
        }

    def __call__(self) -> web_protocol.RequestHandler:
        return Handler(self, loop=self._loop, **self._timeouts, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` whose server is :class:`Server`."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_read_timeout: float,
        body_read_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._timeouts = {
            "header_read_timeout": header_read_timeout,
            "body_read_timeout": body_read_timeout,
        }

    async def _make_server(self) -> web.Server:
        return Server(await super()._make_server(), **self._timeouts)


def install() -> None:
    """Make aiohttp's own answers authgate's (idempotent)."""
    web_protocol.RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]
    web_response.SERVER_SOFTWARE = SERVER  # type: ignore[attr-defined]  # not re-exported


async def not_found(request: web.Request) -> web.StreamResponse:
    """The last route when nothing is proxied: a JSON 405 when another route takes the
    path with other methods, else a JSON 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    allowed.discard("*")
    if allowed:
        allow = ", ".join(sorted(allowed))
        raise MethodNotAllowed(allow, f"{request.method} is not allowed here; allowed: {allow}")
    raise NotFound("no such endpoint")
