"""Operations endpoints: ``/healthz``, ``/readyz``, ``/metrics``, and the JWKS documents."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from authgate.errors import AuthGateError
from authgate.web.problem import Routes
from authgate.web.state import DRAINING, METRICS, RELOADER, SERVICES, SETTINGS, STORES


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.json_response({"status": "ok"})


async def readiness(app: web.Application) -> dict[str, str]:
    """Each readiness check and its state (``ok`` when it passes); the console shows them."""
    checks: dict[str, str] = {}
    if app[DRAINING][0]:
        checks["server"] = "draining"
    try:
        async with asyncio.timeout(app[SETTINGS].stores.redis.deadline_seconds * 4):
            await app[STORES].ping()
        checks["stores"] = "ok"
    except (AuthGateError, TimeoutError) as exc:
        checks["stores"] = getattr(exc, "reason", "store_unavailable")
    checks["signing_keys"] = "ok" if app[SERVICES].keys.loaded else "missing"
    for cache in app[SERVICES].jwks_caches:
        if not cache.loaded:
            with contextlib.suppress(AuthGateError):
                await cache.get("")  # loads the issuer's keys (rate-limited by the cache)
        checks[f"jwks:{cache.url}"] = "ok" if cache.loaded else "unavailable"
    return checks


async def readyz(request: web.Request) -> web.Response:
    """Readiness: stores answer, keys are loaded, not draining; and the configuration in
    force (its generation and hash, ``web/reload.py``)."""
    app = request.app
    checks = await readiness(app)
    ready = all(v == "ok" for v in checks.values())
    app[METRICS].ready.set(1 if ready else 0)
    reloader = app[RELOADER]
    config = {"generation": reloader.generation, "hash": reloader.hash}
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks, "config": config},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition."""
    body = generate_latest(request.app[METRICS].registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def jwks(request: web.Request) -> web.Response:
    """authgate's public signing keys."""
    return web.json_response(
        request.app[SERVICES].keys.jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


def add_routes(routes: Routes) -> None:
    """Register the operations endpoints (on the ops port when there is one)."""
    routes.get("/healthz", healthz)
    routes.get("/readyz", readyz)
    routes.get("/metrics", metrics)


def add_jwks_routes(routes: Routes) -> None:
    """Register the public JWKS documents (always on the traffic port)."""
    routes.get("/.well-known/jwks.json", jwks)
    routes.get("/api/v1/auth/jwks", jwks)
