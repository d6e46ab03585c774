"""The only place an :class:`AuthGateError` becomes an HTTP response.

Body: ``{"error": {"code": <reason>, "message": <text>}}`` (the shape the published BPC
client reads); :class:`OAuthError` leaves answer ``{"error", "error_description"}``. 401
and a scope refusal (403 ``scope_denied``) carry ``WWW-Authenticate`` (built by
:func:`www_authenticate` alone); 503 carries ``Retry-After``. Status, shape and headers follow
from the exception's class and attributes only, never from its reason string.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from authgate.errors import (
    AuthGateError,
    DependencyUnavailable,
    DPoPNonceRequired,
    InternalError,
    MethodNotAllowed,
    OAuthError,
    OAuthInvalidClient,
    OAuthUseDPoPNonce,
    RateLimited,
    ScopeDenied,
    Unauthenticated,
)
from authgate.web.context import request_id

log = logging.getLogger("authgate.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
# The rest of a path, whatever it holds: aiohttp matches routes against the *decoded* path,
# where ``%0a`` is a newline that ``.*`` would not match (a plain-text 404 instead of the
# door's JSON 400 ``invalid_target``).
TAIL = "{tail:(?s:.*)}"


def _quoted(value: str) -> str:
    """``value`` as a quoted-string in the characters RFC 6750 §3 allows in a challenge's
    values (printable ASCII without ``"`` and ``\\``): a description is ours, a URL the
    operator's, and neither may break the header."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in value)
    return '"' + cleaned.replace("\\", "").replace('"', "'") + '"'


def www_authenticate(
    schemes: Sequence[str],
    *,
    realm: str = "authgate",
    error: str | None = None,
    description: str | None = None,
    scope: str = "",
    resource_metadata: str | None = None,
) -> list[str]:
    """One ``WWW-Authenticate`` challenge per scheme (RFC 6750 §3, RFC 9728 §5.1).

    ``error`` (with ``error_description``) is left out when no credential was presented
    (RFC 6750 §3.1); ``scope`` names the scopes the resource needs; ``resource_metadata``
    is the protected resource's metadata URL, which is where a client such as an MCP client
    starts its discovery. The parameters are the same for every scheme (``Bearer`` and
    ``DPoP`` challenge alike).
    """
    params = [f"realm={_quoted(realm)}"]
    if resource_metadata is not None:
        params.append(f"resource_metadata={_quoted(resource_metadata)}")
    if error is not None:
        params.append(f"error={_quoted(error)}")
        if description:
            params.append(f"error_description={_quoted(description)}")
    if scope:
        params.append(f"scope={_quoted(scope)}")
    return [f"{scheme} {', '.join(params)}" for scheme in schemes]


def problem_response(exc: AuthGateError, *, request_id: str = "") -> web.Response:
    """The JSON error response for ``exc``."""
    if isinstance(exc, OAuthError):
        response = web.json_response(
            {"error": exc.reason, "error_description": exc.message}, status=exc.status
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        if isinstance(exc, OAuthInvalidClient) and exc.basic_challenge:
            response.headers["WWW-Authenticate"] = 'Basic realm="authgate"'
        if isinstance(exc, OAuthUseDPoPNonce):
            response.headers["DPoP-Nonce"] = exc.nonce
        if request_id:
            response.headers["X-Request-Id"] = request_id
        return response
    response = web.json_response(
        {"error": {"code": exc.reason, "message": exc.message}}, status=exc.status
    )
    if isinstance(exc, Unauthenticated):
        for challenge in www_authenticate(
            (exc.scheme,),
            error=exc.challenge_error,
            description=exc.message,
            resource_metadata=exc.resource_metadata,
        ):
            response.headers.add("WWW-Authenticate", challenge)
        if isinstance(exc, DPoPNonceRequired):
            response.headers["DPoP-Nonce"] = exc.nonce  # RFC 9449 §8
    elif isinstance(exc, ScopeDenied):
        # RFC 6750 §3.1: a token without the scope the resource needs.
        for challenge in www_authenticate(
            ("Bearer",),
            error="insufficient_scope",
            description=exc.message,
            scope=exc.scope,
            resource_metadata=exc.resource_metadata,
        ):
            response.headers.add("WWW-Authenticate", challenge)
    if isinstance(exc, DependencyUnavailable):
        response.headers["Retry-After"] = "1"
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = exc.allow
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


def response_for(exc: Exception, request_id: str) -> web.Response:
    """The response for an exception a handler raised: its problem response, or a logged 500.

    ``web.HTTPException`` is re-raised for aiohttp to answer (it is a response, not a fault).
    """
    if isinstance(exc, AuthGateError):
        return problem_response(exc, request_id=request_id)
    if isinstance(exc, web.HTTPException):
        raise exc
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"event": "internal_error", "request_id": request_id},
    )
    return problem_response(InternalError(), request_id=request_id)


def guarded(handler: Handler, *, request_id_header: str) -> Handler:
    """``handler`` with a request id attached and refusals translated.

    A wrapper per handler rather than an application middleware: with no middleware
    aiohttp skips its middleware chain on every request, including the forward-auth doors,
    which answer their own refusals (see ``web/forward_auth.py``).
    """

    async def guarded_handler(request: web.Request) -> web.StreamResponse:
        rid = request_id(request, request_id_header)
        request[REQUEST_ID] = rid
        try:
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 - every fault becomes a response
            return response_for(exc, rid)

    guarded_handler.__name__ = getattr(handler, "__name__", "handler")
    guarded_handler.__doc__ = handler.__doc__
    return guarded_handler


class Routes:
    """Registers an application's handlers, each :func:`guarded`."""

    def __init__(self, app: web.Application, *, request_id_header: str) -> None:
        self.app = app
        self._header = request_id_header

    def add(self, method: str, path: str, handler: Handler) -> None:
        """``method`` (``*`` for every method) on ``path``."""
        self.app.router.add_route(method, path, guarded(handler, request_id_header=self._header))

    def get(self, path: str, handler: Handler) -> None:
        """GET (and HEAD) on ``path``."""
        self.app.router.add_get(path, guarded(handler, request_id_header=self._header))

    def post(self, path: str, handler: Handler) -> None:
        """POST on ``path``."""
        self.add("POST", path, handler)

    def delete(self, path: str, handler: Handler) -> None:
        """DELETE on ``path``."""
        self.add("DELETE", path, handler)
