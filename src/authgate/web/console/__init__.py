"""The operator console: web pages under ``<tokens.admin_prefix>/console/`` (``console.enabled``).

A third front on the operator service (``operator.py``), beside the admin API and the CLI:
pending BPC pairs (approve, deny), pairs (search, show with audit trail, revoke, unlock),
tokens (mint, revoke, the mint audit), API keys, signing keys, the last decisions of this
process with counts by reason, the operator audit, and readiness (with the event bus and the
configuration's generation). Served where the admin API is (the ops port
when ``server.ops_port`` is set). Sessions and CSRF: ``session.py``; the response headers
and the POST checks: ``common.py``; sign-in: ``signin.py``; the pages: ``pages.py``.
Everything the browser loads ships in this package (``static/``): no CDN, no inline script.
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from authgate.config.model import Settings
from authgate.errors import NotFound
from authgate.web.console import pages, pairs, signin
from authgate.web.console.common import CONSOLE, Console, page, redirect
from authgate.web.console.session import SessionSigner, session_key
from authgate.web.problem import Routes

STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}


def _static_files() -> dict[str, bytes]:
    folder = files("authgate.web.console") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_TYPES}


def add_routes(routes: Routes, settings: Settings) -> None:
    """Register the console on ``routes`` (the ops application when there is one)."""
    prefix = f"{settings.tokens.admin_prefix}/console"
    routes.app[CONSOLE] = Console(
        prefix=prefix,
        signer=SessionSigner(
            session_key(settings), ttl_seconds=settings.console.session_ttl_seconds
        ),
    )
    assets = _static_files()

    async def static(request: web.Request) -> web.StreamResponse:
        """A file of ``static/`` (a fixed list)."""
        name = request.match_info["name"]
        if name not in assets:
            raise NotFound(f"no console file {name[:64]!r}")
        return web.Response(
            body=assets[name],
            content_type=STATIC_TYPES[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def root(request: web.Request) -> web.StreamResponse:
        """The console lives at the prefix with a trailing slash."""
        return redirect(f"{prefix}/")

    routes.get(prefix, page(root))
    routes.get(f"{prefix}/static/{{name}}", page(static))
    routes.get(f"{prefix}/signin", page(signin.signin_page))
    routes.post(f"{prefix}/signin", page(signin.signin))
    routes.post(f"{prefix}/signout", page(signin.signout))
    routes.get(f"{prefix}/", page(pairs.pending))
    routes.get(f"{prefix}/pairs", page(pairs.pairs))
    routes.get(f"{prefix}/pairs/{{pair_id}}", page(pairs.pair))
    routes.post(f"{prefix}/pairs/{{pair_id}}/{{act}}", page(pairs.pair_act))
    routes.get(f"{prefix}/tokens", page(pages.tokens))
    routes.post(f"{prefix}/tokens/mint", page(pages.mint))
    routes.post(f"{prefix}/tokens/revoke", page(pages.revoke_token))
    routes.get(f"{prefix}/apikeys", page(pages.apikeys))
    routes.post(f"{prefix}/apikeys", page(pages.create_apikey))
    routes.post(f"{prefix}/apikeys/{{key_id}}/revoke", page(pages.revoke_apikey))
    routes.get(f"{prefix}/keys", page(pages.keys))
    routes.post(f"{prefix}/keys/rotate", page(pages.rotate))
    routes.get(f"{prefix}/decisions", page(pages.decisions))
    routes.get(f"{prefix}/audit", page(pages.audit))
    routes.get(f"{prefix}/ready", page(pages.ready))
