"""What every console handler shares: the session, the POST checks, the response headers.

Each console handler is wrapped by :func:`page`: an :class:`AuthGateError` it raises becomes
an HTML page naming the stable reason (``data-error``) with the error's status, and every
response, refusals and static files included, carries the security headers below.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from authgate.errors import (
    AuthGateError,
    BodyTooLarge,
    CSRFRefused,
    InvalidRequest,
    OperatorRequired,
)
from authgate.operator import Operator
from authgate.web.callers import own_context
from authgate.web.console import render
from authgate.web.console.session import COOKIE, ConsoleSession, SessionSigner
from authgate.web.problem import REQUEST_ID
from authgate.web.state import SERVICES, SETTINGS

log = logging.getLogger("authgate.console")

MAX_FORM_BYTES = 64 * 1024

# No inline script or style anywhere; nothing from another origin; never framed.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on
    # form posts, which the origin check below would refuse.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Console:
    """The console's own state: where it lives and how its sessions are signed."""

    prefix: str
    signer: SessionSigner


CONSOLE = web.AppKey("console", Console)


def console(request: web.Request) -> Console:
    """The console state of the application serving ``request``."""
    return request.app[CONSOLE]


def html(
    request: web.Request,
    title: str,
    body: str,
    *,
    status: int = 200,
    active: str | None = None,
    session: ConsoleSession | None = None,
) -> web.Response:
    """A whole page (navigation when an operator is signed in)."""
    c = console(request)
    signed_in = session is not None and session.signed_in
    text = render.layout(
        c.prefix,
        title,
        body,
        active=active,
        operator=session.subject if session is not None and signed_in else "",
        csrf=c.signer.csrf(session) if session is not None else "",
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def redirect(location: str) -> web.Response:
    """303 See Other (after a POST, or to the sign-in page)."""
    return web.Response(status=303, headers={"Location": location})


def set_session(request: web.Request, response: web.StreamResponse, value: str) -> None:
    """Set the session cookie: HttpOnly, SameSite=Strict, Secure over https (the scheme as
    the door reconstructs it, so a TLS-terminating proxy counts), scoped to the console."""
    c = console(request)
    response.set_cookie(
        COOKIE,
        value,
        path=f"{c.prefix}/",
        httponly=True,
        samesite="Strict",
        secure=own_context(request).scheme == "https",
        max_age=request.app[SETTINGS].console.session_ttl_seconds,
    )


def clear_session(request: web.Request, response: web.StreamResponse) -> None:
    """Remove the session cookie."""
    response.del_cookie(COOKIE, path=f"{console(request).prefix}/")


def cookie_session(request: web.Request) -> ConsoleSession | None:
    """The session the cookie carries (signed in or not), or ``None``."""
    return console(request).signer.read(request.cookies.get(COOKIE))


async def operator_session(request: web.Request) -> ConsoleSession | None:
    """The signed-in session, if the operator still is one: a password user still exists
    and holds the admin scope; a token signed in with is not revoked."""
    session = cookie_session(request)
    if session is None or not session.signed_in:
        return None
    services = request.app[SERVICES]
    if session.via == "password":
        user = await services.users.get(session.subject)
        scope = request.app[SETTINGS].tokens.admin_scope
        return session if user is not None and scope in user.scopes else None
    if session.via == "token":
        return None if await services.revocations.is_revoked(session.jti) else session
    return None


async def checked_form(request: web.Request) -> tuple[ConsoleSession | None, dict[str, str]]:
    """A POST's form, once its origin and CSRF token pass; and the cookie's session."""
    ctx = own_context(request)
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != f"{ctx.scheme}://{ctx.host}".lower():
        raise CSRFRefused("console: a form posted from another origin")
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise CSRFRefused("console: a form posted from another site")
    if request.content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("console: forms are application/x-www-form-urlencoded")
    if request.content_length is None or request.content_length > MAX_FORM_BYTES:
        raise BodyTooLarge(f"console: a form is at most {MAX_FORM_BYTES} bytes")
    form: dict[str, str] = {}
    for name, value in (await request.post()).items():
        if not isinstance(value, str) or name in form:
            raise InvalidRequest(f"console: form field {name[:64]!r} is repeated or not text")
        form[name] = value
    session = cookie_session(request)
    console(request).signer.check_csrf(session, form.get("csrf", ""))
    return session, form


def act_log(request: web.Request, session: ConsoleSession, act: str) -> None:
    """One log line per change made in the console (the audit entries are the service's)."""
    log.info(
        "console act",
        extra={
            "event": "console_act",
            "subject": session.subject,
            "request_id": request.get(REQUEST_ID, ""),
            "detail": act,
        },
    )


# The notices a redirect may ask for: fixed phrases, nothing from the query is echoed.
DONE = {
    "approved": "Pair approved.",
    "denied": "Pair denied (revoked).",
    "revoked": "Pair revoked.",
    "unlocked": "Pair unlocked.",
    "token-revoked": "Token revoked.",
    "apikey-revoked": "API key revoked.",
    "rotated": "Signing keys rotated.",
}


def actor(session: ConsoleSession) -> str:
    """The operator as the audit entry names them: as the admin API names a token's subject."""
    return f"admin:{session.subject}"


def operator_service(request: web.Request) -> Operator:
    """The one operator service (admin API, CLI and console alike)."""
    return request.app[SERVICES].operator


async def signed_in(request: web.Request) -> ConsoleSession | web.Response:
    """The operator's session for a page, or the redirect to the sign-in page."""
    session = await operator_session(request)
    if session is None:
        return redirect(f"{console(request).prefix}/signin")
    return session


async def acting(request: web.Request) -> tuple[ConsoleSession, dict[str, str]]:
    """A change's checked form and the operator's session (403 without one)."""
    session, form = await checked_form(request)
    current = await operator_session(request)
    if session is None or current is None or current.sid != session.sid:
        raise OperatorRequired("console: sign in as an operator first")
    return current, form


def done_notice(request: web.Request) -> str:
    """The notice a redirect after a change asked for (a fixed phrase)."""
    return render.notice(DONE.get(request.query.get("done", ""), ""))


def prefix(request: web.Request) -> str:
    """The console's path prefix."""
    return console(request).prefix


def page(handler: Handler) -> Handler:
    """``handler`` with refusals as HTML pages and the security headers on every answer."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except AuthGateError as exc:
            message = exc.message
            body = render.notice(f"{exc.reason}: {message}", error=True, code=exc.reason)
            if exc.status in (401, 403):
                body += f'<p><a href="{render.e(console(request).prefix)}/signin">Sign in</a></p>'
            response = html(request, "Refused", body, status=exc.status)
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    wrapped.__name__ = getattr(handler, "__name__", "handler")
    wrapped.__doc__ = handler.__doc__
    return wrapped
