"""The first five minutes: in development mode (no configuration at all) authgate prints,
once, an operator token for this process and commands to paste, so a newcomer gets from
``authgate serve`` to a first allowed request without reading further.

Printed to stderr, never to the log: the token is a credential, and development mode is a
single process on the developer's own machine (in-memory stores, ephemeral key).
"""

from __future__ import annotations

import shlex
import sys
from typing import TextIO

from aiohttp import web

from authgate.web.state import SERVICES, SETTINGS

OPERATOR_SUBJECT = "dev-operator"
OPERATOR_TTL_SECONDS = 12 * 3600


def welcome_text(url: str, token: str, *, admin_prefix: str) -> str:
    """The text printed at start-up."""
    prefix_flag = "" if admin_prefix == "/admin" else f" --admin-prefix {admin_prefix}"
    return f"""
authgate is running in DEVELOPMENT MODE: in-memory stores and an ephemeral signing key,
both gone when it stops. An operator token for this process (valid 12 hours):

  export AUTHGATE_URL={url}
  export AUTHGATE_TOKEN={token}

Mint a token and ask /auth about a request, as nginx auth_request would:

  TOKEN=$(authgate token mint{prefix_flag} --sub alice --scope read --ttl 3600 \\
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -i {url}/auth -H "Authorization: Bearer $TOKEN" \\
       -H "X-Original-Method: GET" -H "X-Original-URI: /api/items"

Register a BPC device pair (auto-approved in development mode) and sign a request, with
the published BPC client:

  pip install bpc-client==1.0.0
  bpc pair register --url {url} --name laptop --secret {shlex.quote("Dev-secret-1!")} \\
      --mode development
  bpc request --name laptop GET "/bpc/audit?limit=5" --json

Every operator command (authgate token|users|apikeys|keys|pairs) acts through the admin API
while AUTHGATE_URL and AUTHGATE_TOKEN are set. The README walks through the rest.
"""


def add_welcome(app: web.Application, *, stream: TextIO | None = None) -> None:
    """In development mode, print the welcome once the application has started."""
    settings = app[SETTINGS]
    if not settings.development:
        return

    async def welcome(app: web.Application) -> None:
        operator = app[SERVICES].operator
        issued = await operator.mint(
            sub=OPERATOR_SUBJECT,
            scopes=[settings.tokens.admin_scope],
            ttl_seconds=OPERATOR_TTL_SECONDS,
            by="development-mode",
        )
        host = settings.server.host
        shown = f"[{host}]" if ":" in host else host
        if shown in {"0.0.0.0", "[::]"}:  # noqa: S104 - naming a bind, not binding
            shown = "127.0.0.1"
        url = f"http://{shown}:{settings.server.port}"
        text = welcome_text(url, issued["access_token"], admin_prefix=settings.tokens.admin_prefix)
        out = stream or sys.stderr
        out.write(text)
        out.flush()

    app.on_startup.append(welcome)
