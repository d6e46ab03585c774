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
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import http_exceptions, web, web_protocol, web_response

from authgate.errors import (
    AuthGateError,
    BodyTooLarge,
    InternalError,
    InvalidTarget,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
)
from authgate.web.problem import problem_response

log = logging.getLogger("authgate.web")

SERVER = "authgate"


def _refusal(status: int, exc: BaseException | None) -> AuthGateError:
    if status == 413:
        return BodyTooLarge()
    if status >= 500:
        return InternalError()
    if isinstance(exc, http_exceptions.InvalidURLError):
        # A control, space-like or non-ASCII byte in the request target itself: the same
        # answer as the encoded forms get from policy/target.py.
        return InvalidTarget("request target contains a non-printable or non-ASCII character")
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
