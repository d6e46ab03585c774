"""``GET /challenge``: a server-signed, stateless one-time challenge for HMAC proofs."""

from __future__ import annotations

from aiohttp import web

from authgate.web.problem import Routes
from authgate.web.state import SERVICES


async def challenge(request: web.Request) -> web.Response:
    """A fresh challenge; nothing is stored until a proof spends its nonce."""
    body = request.app[SERVICES].hmac_verifier.issue_challenge()
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def add_routes(routes: Routes) -> None:
    """Register the challenge endpoint."""
    routes.get("/challenge", challenge)
