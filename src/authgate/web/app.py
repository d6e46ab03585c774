"""Build the aiohttp application from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from authgate.config.model import Settings
from authgate.crypto.jwks_cache import Fetcher, JWKSCache
from authgate.crypto.keys import KeyRing
from authgate.errors import AuthGateError
from authgate.metrics import Metrics
from authgate.pipeline import Gate, Verifier
from authgate.policy.rules import Policy
from authgate.services import (
    build_api_keys,
    build_pair_services,
    challenge_secrets,
    load_envelope,
)
from authgate.stores import build_stores
from authgate.stores.base import Clock, Stores, SystemClock
from authgate.stores.instrumented import instrument
from authgate.tokens.issuer import TokenIssuer
from authgate.tokens.keys import KeyManager, RotationRefused, build_key_manager
from authgate.tokens.revocation import RevocationList
from authgate.tokens.users import UserService
from authgate.verifiers.bpc import BPCVerifier
from authgate.verifiers.hmac_proof import HMACProofVerifier
from authgate.verifiers.jwt_bearer import IssuerKeys, JWTBearerVerifier
from authgate.web import admin, bpc, challenge, forward_auth, health, oauth, pico, proxy
from authgate.web.body import read_bounded
from authgate.web.context import ContextBuilder, TrustedProxies
from authgate.web.drain import DRAIN, Drain
from authgate.web.identity import IdentityHeaders
from authgate.web.problem import Routes
from authgate.web.repeat import RepeatGrants
from authgate.web.state import (
    API_KEYS,
    BPC_VERIFIER,
    DRAINING,
    GATE,
    HMAC_VERIFIER,
    IDENTITY,
    ISSUER,
    JWKS_CACHES,
    JWT_VERIFIER,
    KEY_RING,
    METRICS,
    PAIRS,
    REPEATS,
    REQUEST_CONTEXTS,
    REVOCATIONS,
    SETTINGS,
    STORES,
    UPSTREAM_SESSION,
    USERS,
)

log = logging.getLogger("authgate")


async def _maintain_keys(keys: KeyManager, settings: Settings, stores: Stores) -> None:
    """Reload on change announcements, refresh every minute, rotate on schedule."""
    interval_ms = int(settings.tokens.rotation_interval_days * 86_400_000)
    ticks = 0
    while True:
        await asyncio.sleep(1)
        ticks += 1
        try:
            await keys.reload_if_changed()
            if ticks % 60 == 0:
                await keys.load()
                if await keys.due_for_rotation(interval_ms):
                    # One replica a minute may rotate: the rate limiter doubles as a lock.
                    lock = await stores.rate_limits.hit(
                        "key-rotation-lock", limit=1, period_ms=60_000
                    )
                    if lock.allowed:
                        await keys.rotate()
        except (AuthGateError, RotationRefused) as exc:
            log.warning(
                "signing key maintenance skipped",
                extra={"event": "key_maintenance_skipped", "error": type(exc).__name__},
            )


def _jwks_fetcher(
    session: aiohttp.ClientSession, *, max_bytes: int, timeout: float, metrics: Metrics
) -> Fetcher:
    async def get(url: str) -> bytes:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as resp:
            if resp.status != 200:
                raise ValueError(f"JWKS answered {resp.status}")
            body = await read_bounded(resp.content, max_bytes)
        if len(body) > max_bytes:
            raise ValueError("JWKS document too large")
        return body

    async def fetch(url: str) -> bytes:
        try:
            body = await get(url)
        except Exception:
            metrics.jwks_fetches.labels("error").inc()
            raise
        metrics.jwks_fetches.labels("ok").inc()
        return body

    return fetch


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    stores: Stores | None = None,
    key_ring: KeyRing | None = None,
) -> web.Application:
    """The authgate application. ``stores`` and ``key_ring`` may be injected (tests)."""
    clock = clock or SystemClock()
    metrics = Metrics()
    app = web.Application(
        handler_args={"max_field_size": settings.server.max_header_bytes},
        client_max_size=1024**2,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[DRAINING] = [False]
    app[DRAIN] = Drain(app[DRAINING])
    app.on_response_prepare.append(app[DRAIN].close_connections)
    app[REQUEST_CONTEXTS] = ContextBuilder(
        trusted=TrustedProxies(settings.server.trusted_proxies),
        request_id_header=settings.server.request_id_header,
        max_body_bytes=settings.bpc.max_body_bytes,
    )
    doors = forward_auth.DoorState(
        app[REQUEST_CONTEXTS], request_id_header=settings.server.request_id_header
    )
    envelope = load_envelope(settings)
    challenge_keys = challenge_secrets(settings)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        raw_stores = stores or build_stores(settings.stores, clock)
        app[STORES] = instrument(raw_stores, metrics)
        try:
            await app[STORES].nonces.prime()
        except AuthGateError:
            log.warning("store not reachable at start-up", extra={"event": "store_unavailable"})
        if key_ring is not None:
            keys = KeyManager(ring=key_ring)
        else:
            keys = build_key_manager(
                settings,
                store=app[STORES].signing_keys,
                events=app[STORES].events,
                envelope=envelope,
                clock=clock,
                kek_configured=settings.secrets.key_encryption_key is not None,
            )
        await keys.load()
        app[KEY_RING] = keys
        app[IDENTITY] = IdentityHeaders(
            settings.identity, key_ring=keys, issuer=settings.jwt.issuer
        )
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.proxy.pool_size),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=settings.proxy.connect_timeout_seconds,
                sock_read=settings.proxy.read_timeout_seconds,
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        app[UPSTREAM_SESSION] = session
        fetch = _jwks_fetcher(
            session,
            max_bytes=settings.jwt.jwks_max_bytes,
            timeout=settings.jwt.jwks_fetch_timeout_seconds,
            metrics=metrics,
        )
        caches = tuple(
            JWKSCache(
                url=i.jwks_url,
                fetch=fetch,
                algorithms=i.algorithms,
                ttl_seconds=i.jwks_ttl_seconds,
                min_refresh_interval_seconds=i.min_refresh_interval_seconds,
            )
            for i in settings.jwt.external_issuers
        )
        app[JWKS_CACHES] = caches
        issuers = [
            IssuerKeys(
                issuer=settings.jwt.issuer,
                audiences=frozenset(settings.jwt.audiences),
                algorithms=frozenset(settings.jwt.algorithms),
                require_jti=True,
                key_ring=keys,
            ),
            *(
                IssuerKeys(
                    issuer=i.issuer,
                    audiences=frozenset(i.audiences),
                    algorithms=frozenset(i.algorithms),
                    require_jti=i.require_jti,
                    jwks=cache,
                )
                for i, cache in zip(settings.jwt.external_issuers, caches, strict=True)
            ),
        ]
        app[REVOCATIONS] = RevocationList(
            store=app[STORES].revocations, events=app[STORES].events, clock=clock
        )
        jwt_verifier = JWTBearerVerifier(
            issuers=issuers,
            revocations=app[REVOCATIONS],
            clock=clock,
            leeway_seconds=settings.jwt.leeway_seconds,
            max_token_bytes=settings.jwt.max_token_bytes,
            cache_size=settings.jwt.cache_size,
            metrics=metrics,
        )
        app[JWT_VERIFIER] = jwt_verifier
        stores_ = app[STORES]
        app[USERS] = UserService(store=stores_.users, clock=clock)
        app[ISSUER] = TokenIssuer(
            keys=keys,
            settings=settings,
            clock=clock,
            revocations=app[REVOCATIONS],
            nonces=stores_.nonces,
            audit=stores_.audit,
        )
        pair_services = build_pair_services(settings, stores_, envelope, clock)
        app[PAIRS] = pair_services.service
        bpc_verifier = BPCVerifier(
            settings=settings.bpc,
            directory=pair_services.directory,
            pairs=app[PAIRS],
            nonces=stores_.nonces,
            rate_limits=stores_.rate_limits,
            clock=clock,
        )
        app[BPC_VERIFIER] = bpc_verifier
        app[API_KEYS] = build_api_keys(settings, stores_, envelope, clock)
        hmac_verifier = HMACProofVerifier(
            settings=settings.hmac,
            secrets=challenge_keys,
            api_keys=app[API_KEYS],
            nonces=stores_.nonces,
            clock=clock,
        )
        app[HMAC_VERIFIER] = hmac_verifier
        verifiers: list[Verifier] = [bpc_verifier] if settings.bpc.enabled else []
        if settings.hmac.enabled:
            verifiers.append(hmac_verifier)
        verifiers.append(jwt_verifier)
        app[GATE] = Gate(
            policy=Policy.from_settings(settings.policy),
            verifiers=verifiers,
            rate_limits=stores_.rate_limits,
            metrics=metrics,
            access_log=settings.logging.access_log,
        )
        app[REPEATS] = RepeatGrants(
            gate=app[GATE],
            verifier=jwt_verifier,
            trusted=app[REQUEST_CONTEXTS].trusted,
            max_entries=settings.jwt.cache_size,
            metrics=metrics,
        )
        doors.start(gate=app[GATE], identity=app[IDENTITY], repeats=app[REPEATS])
        await app[STORES].events.start()
        maintenance = (
            asyncio.create_task(_maintain_keys(keys, settings, app[STORES]))
            if keys.managed
            else None
        )
        try:
            yield
        finally:
            if maintenance is not None:
                maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await maintenance
            await session.close()
            await app[STORES].close()

    async def on_shutdown(app: web.Application) -> None:
        app[DRAINING][0] = True

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    routes = Routes(app, request_id_header=settings.server.request_id_header)
    health.add_routes(routes)
    forward_auth.add_routes(routes, doors)
    if settings.bpc.enabled:
        bpc.add_routes(routes)
    if settings.hmac.enabled:
        challenge.add_routes(routes)
    if settings.tokens.enabled:
        oauth.add_routes(routes)
    if settings.tokens.enabled and settings.tokens.pico_enabled:
        pico.add_routes(routes, clock=clock)
    if settings.tokens.admin_api:
        admin.add_routes(routes, settings.tokens.admin_prefix)
    if settings.proxy.upstream or any(r.upstream for r in settings.policy.rules):
        proxy.add_routes(routes)
    return app
