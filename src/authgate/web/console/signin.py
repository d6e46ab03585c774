"""Console sign-in and sign-out.

An operator signs in with a password user that holds ``tokens.admin_scope`` (the password
attempt is charged to the address's ``tokens.password_attempts_per_minute`` budget, shared
with ``/token`` and pico ``/login``) or with a token carrying that scope, which the gate
decides under the admin API's own rule (so the decision is counted and logged like any
admin call). A sign-in starts a new session; a token session ends no later than the token.
"""

from __future__ import annotations

import logging

from aiohttp import web

from authgate.errors import AuthGateError, LoginRefused, ScopeDenied
from authgate.web.callers import own_context
from authgate.web.console import render
from authgate.web.console.common import (
    checked_form,
    clear_session,
    console,
    cookie_session,
    html,
    operator_session,
    redirect,
    set_session,
)
from authgate.web.oauth import charge_password_attempt
from authgate.web.problem import REQUEST_ID
from authgate.web.state import SERVICES, SETTINGS

log = logging.getLogger("authgate.console")


def _form(request: web.Request, csrf: str, username: str = "") -> str:
    action = f"{console(request).prefix}/signin"
    password = render.form(
        action,
        csrf,
        render.field("username", "Username", value=username, extra=' autocomplete="username"')
        + render.field(
            "password", "Password", kind="password", extra=' autocomplete="current-password"'
        ),
        "Sign in",
        test_id="signin-password",
    )
    token = render.form(
        action,
        csrf,
        render.field("token", "Operator token", kind="password", extra=' autocomplete="off"'),
        "Sign in with token",
        test_id="signin-token",
    )
    return (
        f'<section aria-labelledby="h-pw"><h2 id="h-pw">Password</h2>{password}</section>'
        f'<section aria-labelledby="h-tok"><h2 id="h-tok">Token</h2>{token}</section>'
    )


async def signin_page(request: web.Request) -> web.StreamResponse:
    """The sign-in form (an anonymous session carries its CSRF token)."""
    if await operator_session(request) is not None:
        return redirect(f"{console(request).prefix}/")
    session = cookie_session(request)
    cookie = None
    if session is None or session.signed_in:
        session, cookie = console(request).signer.issue()
    response = html(request, "Sign in", _form(request, console(request).signer.csrf(session)))
    if cookie is not None:
        set_session(request, response, cookie)
    return response


async def signin(request: web.Request) -> web.StreamResponse:
    """Check the credentials; start an operator session."""
    session, form = await checked_form(request)
    assert session is not None  # checked_form refuses a POST without a session
    services = request.app[SERVICES]
    signer = console(request).signer
    token = form.get("token", "").strip()
    try:
        if token:
            context = own_context(request)
            context = context._replace(headers={"authorization": f"Bearer {token}"})
            principal = (await services.gate.evaluate(context, services.admin_rule)).principal
            exp = principal.claims.get("exp")
            new, cookie = signer.issue(
                subject=principal.subject,
                via="token",
                jti=str(principal.claims.get("jti", "")),
                not_after=int(exp) if isinstance(exp, int | float) else None,
            )
        else:
            await charge_password_attempt(request)
            user = await services.users.authenticate(
                form.get("username", ""), form.get("password", "")
            )
            if user is None:
                raise LoginRefused("wrong username or password")
            if request.app[SETTINGS].tokens.admin_scope not in user.scopes:
                raise ScopeDenied("console: this user is not an operator (no admin scope)")
            new, cookie = signer.issue(subject=user.username, via="password")
    except AuthGateError as exc:  # a wrong password, a refused token, a non-operator, a 429
        body = render.notice(exc.message, error=True, code=exc.reason)
        body += _form(request, signer.csrf(session))
        return html(request, "Sign in", body, status=exc.status)
    log.info(
        "console sign-in",
        extra={
            "event": "console_signin",
            "subject": new.subject,
            "verifier": new.via,
            "request_id": request.get(REQUEST_ID, ""),
        },
    )
    response = redirect(f"{console(request).prefix}/")
    set_session(request, response, cookie)
    return response


async def signout(request: web.Request) -> web.StreamResponse:
    """End the session (the cookie is removed)."""
    await checked_form(request)
    response = redirect(f"{console(request).prefix}/signin")
    clear_session(request, response)
    return response
