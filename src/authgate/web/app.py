"""Build the aiohttp application: the services of the composition root (``compose.py``),
the doors, and the routes. Nothing here constructs a store, a verifier or the gate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from authgate.compose import Services
from authgate.config.model import Settings
from authgate.crypto.keys import KeyRing
from authgate.stores.base import Clock, Stores
from authgate.web import (
    admin,
    bpc,
    challenge,
    console,
    forward_auth,
    health,
    oauth,
    pico,
    protected_resource,
    protocol,
    proxy,
)
from authgate.web.context import Doors, TrustedProxies
from authgate.web.drain import DRAIN, Drain
from authgate.web.identity import IdentityHeaders
from authgate.web.problem import TAIL, Routes
from authgate.web.reload import ConfigReloader, ReloadSource
from authgate.web.state import (
    DOORS,
    DRAINING,
    IDENTITY,
    METRICS,
    OPS_APP,
    RELOADER,
    REVOCATIONS,
    SERVICES,
    SETTINGS,
    STORES,
)

if TYPE_CHECKING:  # the otel extra
    from opentelemetry.sdk.trace import TracerProvider


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    stores: Stores | None = None,
    key_ring: KeyRing | None = None,
    tracer_provider: TracerProvider | None = None,
    reload_source: ReloadSource | None = None,
) -> web.Application:
    """The authgate application. ``stores``, ``key_ring`` and the OpenTelemetry
    ``tracer_provider`` (used when ``tracing.enabled``) may be injected (tests);
    ``reload_source`` is where a reload reads the settings again (``web/reload.py``)."""
    protocol.install()
    services = Services(
        settings, clock=clock, stores=stores, key_ring=key_ring, tracer_provider=tracer_provider
    )
    handler_args = {
        "max_field_size": settings.server.max_header_bytes,
        "keepalive_timeout": settings.server.keepalive_timeout_seconds,
    }
    app = web.Application(handler_args=handler_args, client_max_size=1024**2)
    app[SERVICES] = services
    app[SETTINGS] = settings
    app[METRICS] = services.metrics
    app[STORES] = services.stores
    app[REVOCATIONS] = services.revocations
    app[DRAINING] = [False]
    app[DRAIN] = Drain(app[DRAINING])
    app.on_response_prepare.append(app[DRAIN].close_connections)
    identity = IdentityHeaders(
        settings.identity,
        key_ring=services.keys,
        issuer=settings.jwt.issuer,
        foreign=settings.proxy.foreign_identity_headers,
    )
    app[IDENTITY] = identity
    doors = Doors.build(
        trusted=TrustedProxies(settings.server.trusted_proxies),
        max_body_bytes=settings.bpc.max_body_bytes,
        identity_check=identity.names.check,
        max_token_bytes=settings.jwt.max_token_bytes,
        trace=settings.tracing.enabled,
    )
    app[DOORS] = doors

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.close()

    async def on_shutdown(app: web.Application) -> None:
        app[DRAINING][0] = True

    app.cleanup_ctx.append(lifecycle)
    app[RELOADER] = ConfigReloader(
        services=services, identity=identity, metrics=services.metrics, source=reload_source
    )
    app.cleanup_ctx.append(app[RELOADER].lifecycle)  # after the services started
    app.on_shutdown.append(on_shutdown)
    routes = Routes(app, request_id_header=settings.server.request_id_header)
    ops = routes
    if settings.server.ops_port is not None:
        app[OPS_APP] = _ops_app(app, handler_args)
        ops = Routes(app[OPS_APP], request_id_header=settings.server.request_id_header)
    health.add_routes(ops)
    health.add_jwks_routes(routes)
    forward_auth.add_routes(
        routes,
        doors,
        gate=services.gate,
        identity=identity,
        request_id_header=settings.server.request_id_header,
    )
    if settings.bpc.enabled:
        bpc.add_routes(routes)
    if settings.hmac.enabled:
        challenge.add_routes(routes)
    if settings.tokens.enabled:
        oauth.add_routes(routes)
    if settings.tokens.enabled and settings.tokens.pico_enabled:
        pico.add_routes(routes)
    if settings.tokens.admin_api:
        admin.add_routes(ops, settings.tokens.admin_prefix)
    if settings.console.enabled:
        console.add_routes(ops, settings)
    protected_resource.add_routes(routes, settings)
    if settings.proxy.upstream or any(r.upstream for r in settings.policy.rules):
        proxy.add_routes(routes, tracing=services.tracing)
    else:
        routes.add("*", "/" + TAIL, protocol.not_found)
    if ops is not routes:
        ops.add("*", "/" + TAIL, protocol.not_found)
    return app


def _ops_app(app: web.Application, handler_args: dict[str, Any]) -> web.Application:
    """The ops listener's application: its own routes, the traffic application's state (the
    traffic application starts and closes the services; ``web/drain.py`` serves both)."""
    ops = web.Application(handler_args=handler_args)
    ops[SERVICES] = app[SERVICES]
    ops[SETTINGS] = app[SETTINGS]
    ops[METRICS] = app[METRICS]
    ops[STORES] = app[STORES]
    ops[REVOCATIONS] = app[REVOCATIONS]
    ops[DRAINING] = app[DRAINING]
    ops[DRAIN] = app[DRAIN]
    ops[DOORS] = app[DOORS]
    ops[IDENTITY] = app[IDENTITY]
    ops[RELOADER] = app[RELOADER]
    return ops
