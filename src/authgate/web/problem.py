"""The only place an :class:`AuthGateError` becomes an HTTP response.

Body: ``{"error": {"code": <reason>, "message": <text>}}`` (the shape the published BPC
client reads). 401 carries ``WWW-Authenticate``; 503 carries ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from authgate.errors import (
    AuthGateError,
    DependencyUnavailable,
    OAuthError,
    RateLimited,
    Unauthenticated,
)
from authgate.web.context import request_id

log = logging.getLogger("authgate.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)


def problem_response(exc: AuthGateError, *, request_id: str = "") -> web.Response:
    """The JSON error response for ``exc``."""
    if isinstance(exc, OAuthError):
        response = web.json_response(
            {"error": exc.code, "error_description": exc.message}, status=exc.http_status
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        if exc.basic_challenge:
            response.headers["WWW-Authenticate"] = 'Basic realm="authgate"'
        if request_id:
            response.headers["X-Request-Id"] = request_id
        return response
    response = web.json_response(
        {"error": {"code": exc.reason, "message": exc.message}}, status=exc.status
    )
    if isinstance(exc, Unauthenticated):
        description = exc.message.replace("\\", "").replace('"', "'")
        response.headers["WWW-Authenticate"] = (
            f'{exc.scheme} realm="authgate", error="invalid_token", '
            f'error_description="{description}"'
            if exc.reason != "credential_missing"
            else 'Bearer realm="authgate"'
        )
    if isinstance(exc, DependencyUnavailable):
        response.headers["Retry-After"] = "1"
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
        if exc.limit is not None:
            # IETF draft-ietf-httpapi-ratelimit-headers fields.
            response.headers["RateLimit-Limit"] = str(exc.limit)
            response.headers["RateLimit-Remaining"] = str(exc.remaining)
            response.headers["RateLimit-Reset"] = str(exc.reset_seconds)
            if exc.window_seconds is not None:
                response.headers["RateLimit-Policy"] = f"{exc.limit};w={exc.window_seconds}"
    response.headers["Cache-Control"] = "no-store"
    if request_id:
        response.headers["X-Request-Id"] = request_id
    return response


def problem_middleware(*, request_id_header: str) -> Middleware:
    """Attach a request id and translate refusals; an unexpected error is a logged 500."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_id(request, request_id_header)
        request[REQUEST_ID] = rid
        try:
            return await handler(request)
        except AuthGateError as exc:
            return problem_response(exc, request_id=rid)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("unhandled error", extra={"event": "internal_error", "request_id": rid})
            return problem_response(AuthGateError(), request_id=rid)

    return middleware
