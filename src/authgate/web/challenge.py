"""``GET /challenge``: a server-signed, stateless one-time challenge for HMAC proofs."""

from __future__ import annotations

import time

from aiohttp import web

from authgate.crypto.hmac_proof import new_challenge
from authgate.web.state import HMAC_VERIFIER, SETTINGS


async def challenge(request: web.Request) -> web.Response:
    """A fresh challenge; nothing is stored until a proof spends its nonce."""
    settings = request.app[SETTINGS].hmac
    body = new_challenge(
        request.app[HMAC_VERIFIER].signing_secret,
        int(time.time()),
        settings.ttl_seconds,
        prefix=settings.prefix,
    )
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    """Register the challenge endpoint."""
    app.router.add_get("/challenge", challenge)
