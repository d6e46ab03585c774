"""The composition root: every service of one authgate, built from its settings.

``authgate serve`` (through ``web/app.py``), the operator CLI and the tests build here and
nowhere else: only this module constructs stores, keys, verifiers and the gate
(``tests/test_layering.py`` keeps it so). Each service is built on first use, so a CLI
command that lists pairs never reads signing keys. ``start`` and ``close`` bracket a
serving process: they open and close what needs the event loop (the HTTP client, the event
bus, key maintenance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from functools import cached_property
from typing import TYPE_CHECKING

import aiohttp

from authgate.access_log import DecisionLog
from authgate.apikeys import ApiKeyService
from authgate.config.model import ExternalIssuer, Settings
from authgate.crypto.envelope import Envelope, parse_kek
from authgate.crypto.jwks_cache import Fetcher, JWKSCache
from authgate.crypto.keys import KeyRing
from authgate.crypto.pico_challenge import ChallengeCodec
from authgate.decisions import RecentDecisions
from authgate.errors import AuthGateError
from authgate.metrics import Metrics
from authgate.operator import Operator
from authgate.outbound import fetch_jwks, open_session
from authgate.pairs.directory import PairDirectory
from authgate.pairs.service import PairService
from authgate.pipeline import Gate, Verifier
from authgate.policy.resources import resource_identifiers
from authgate.policy.rules import CompiledRule, Policy, admin_rule
from authgate.stores import build_stores
from authgate.stores.base import AuditStore, Clock, Stores, SystemClock
from authgate.stores.instrumented import instrument
from authgate.tokens.fleet import FleetSessions
from authgate.tokens.issuer import TokenIssuer
from authgate.tokens.keys import KeyManager, KeysUnreadable, build_key_manager
from authgate.tokens.proofs import TokenProofs
from authgate.tokens.revocation import RevocationList
from authgate.tokens.users import UserService
from authgate.tokens.wallets import WalletSignIn
from authgate.verifiers.bpc import BPCVerifier
from authgate.verifiers.dpop_proof import ProofChecker, ServerNonces
from authgate.verifiers.hmac_proof import HMACProofVerifier
from authgate.verifiers.jwt_bearer import IssuerKeys, JWTBearerVerifier

if TYPE_CHECKING:  # the otel extra: imported at run time only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider

    from authgate.tracing import Tracing

log = logging.getLogger("authgate")


def own_token_lifetime(settings: Settings) -> int:
    """The longest lifetime accepted on authgate's own tokens: ``jwt.max_token_lifetime_seconds``,
    or else the longest lifetime authgate issues (access, BPC exchange, ``token mint``; fleet
    tokens are bounded by ``max_mint_ttl_seconds``; refresh tokens are refused anyway)."""
    if settings.jwt.max_token_lifetime_seconds is not None:
        return settings.jwt.max_token_lifetime_seconds
    t = settings.tokens
    return max(t.access_ttl_seconds, t.bpc_exchange_ttl_seconds, t.max_mint_ttl_seconds)


def _jwks_key(issuer: ExternalIssuer) -> tuple[object, ...]:
    """What a JWKS cache is built from: a reload keeps a cache whose key is unchanged."""
    return (
        issuer.jwks_url,
        issuer.algorithms,
        issuer.jwks_ttl_seconds,
        issuer.min_refresh_interval_seconds,
    )


class Services:
    """Every service of one process, over one set of stores.

    ``stores`` and ``key_ring`` may be injected (tests); otherwise they come from the
    settings. Stores are wrapped so that every call is measured.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        stores: Stores | None = None,
        key_ring: KeyRing | None = None,
        metrics: Metrics | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self._tracer_provider = tracer_provider
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self._injected_stores = stores
        self._injected_keys = KeyManager(ring=key_ring) if key_ring is not None else None
        self.http: aiohttp.ClientSession | None = None
        self._maintenance: asyncio.Task[None] | None = None

    # --- state -------------------------------------------------------------------------

    @cached_property
    def stores(self) -> Stores:
        """The configured stores, every call measured."""
        raw = self._injected_stores or build_stores(self.settings.stores, self.clock)
        stores = instrument(raw, self.metrics)
        if self.tracing is not None:
            from authgate.tracing import trace_stores

            stores = trace_stores(stores, self.tracing)
        return stores

    @cached_property
    def tracing(self) -> Tracing | None:
        """OpenTelemetry tracing when ``tracing.enabled`` (the otel extra), else ``None``:
        only then is ``opentelemetry`` imported."""
        if not self.settings.tracing.enabled:
            return None
        from authgate.tracing import Tracing

        return Tracing(self.settings.tracing, provider=self._tracer_provider)

    @cached_property
    def envelope(self) -> Envelope:
        """The configured key-encryption key, or a random one (secrets die with the process)."""
        kek = self.settings.secrets.key_encryption_key
        if kek is None:
            return Envelope.ephemeral()
        previous = tuple(
            parse_kek(k.get_secret_value())
            for k in self.settings.secrets.previous_key_encryption_keys
        )
        return Envelope(parse_kek(kek.get_secret_value()), previous=previous)

    @cached_property
    def challenge_secrets(self) -> tuple[bytes, ...]:
        """Challenge secrets (signing one first), or one random secret per process."""
        configured = self.settings.hmac.challenge_secret
        if configured is None:
            return (secrets.token_bytes(32),)
        return tuple(
            s.get_secret_value().encode()
            for s in (configured, *self.settings.hmac.previous_challenge_secrets)
        )

    # --- tokens ------------------------------------------------------------------------

    @cached_property
    def keys(self) -> KeyManager:
        """authgate's signing keys: files, store-managed, or one ephemeral key."""
        if self._injected_keys is not None:
            return self._injected_keys
        return build_key_manager(
            self.settings,
            store=self.stores.signing_keys,
            events=self.stores.events,
            envelope=self.envelope,
            clock=self.clock,
            kek_configured=self.settings.secrets.key_encryption_key is not None,
        )

    @cached_property
    def revocations(self) -> RevocationList:
        """Revoked token ids and refresh families."""
        return RevocationList(
            store=self.stores.revocations, events=self.stores.events, clock=self.clock
        )

    @cached_property
    def users(self) -> UserService:
        """Password users."""
        return UserService(store=self.stores.users, clock=self.clock)

    @cached_property
    def issuer(self) -> TokenIssuer:
        """Mints, refreshes and revokes authgate's own tokens."""
        return TokenIssuer(
            keys=self.keys,
            settings=self.settings,
            clock=self.clock,
            revocations=self.revocations,
            nonces=self.stores.nonces,
            audit=self.stores.audit,
        )

    @cached_property
    def jwks_caches(self) -> tuple[JWKSCache, ...]:
        """One key cache per external issuer, fetching over :attr:`http`."""
        return self._jwks_caches(self.settings, {})

    def _jwks_caches(
        self, settings: Settings, reusable: dict[tuple[object, ...], JWKSCache]
    ) -> tuple[JWKSCache, ...]:
        """A cache per external issuer: one of ``reusable`` (keyed by :func:`_jwks_key`)
        when its JWKS settings are the same, else a new one."""
        fetch: Fetcher = self._fetch_jwks
        if self.tracing is not None:
            fetch = self.tracing.traced_fetch(fetch)
        caches = []
        for i in settings.jwt.external_issuers:
            cache = reusable.pop(_jwks_key(i)) if _jwks_key(i) in reusable else None
            caches.append(
                cache
                or JWKSCache(
                    url=i.jwks_url,
                    fetch=fetch,
                    algorithms=i.algorithms,
                    ttl_seconds=i.jwks_ttl_seconds,
                    min_refresh_interval_seconds=i.min_refresh_interval_seconds,
                )
            )
        return tuple(caches)

    @property
    def audit(self) -> AuditStore:
        """The capped audit trails (the operator service writes its own stream here)."""
        return self.stores.audit

    @cached_property
    def operator(self) -> Operator:
        """Every operator act (admin API, CLI and console alike)."""
        return Operator(self)

    @cached_property
    def fleet(self) -> FleetSessions:
        """Pico fleet session tokens (the fleet secret, minted through the issuer)."""
        return FleetSessions(settings=self.settings, issuer=self.issuer)

    @cached_property
    def wallets(self) -> WalletSignIn:
        """Pico wallet sign-in (challenges keyed from the challenge secrets, their own label)."""
        return WalletSignIn(
            challenges=ChallengeCodec(
                self.challenge_secrets,
                clock=self.clock,
                skew_seconds=self.settings.hmac.clock_skew_seconds,
            ),
            nonces=self.stores.nonces,
            issuer=self.issuer,
        )

    # --- credentials -------------------------------------------------------------------

    @cached_property
    def api_keys(self) -> ApiKeyService:
        """API keys (the HMAC proofs' secrets and OAuth clients)."""
        return ApiKeyService(
            store=self.stores.api_keys,
            events=self.stores.events,
            envelope=self.envelope,
            clock=self.clock,
        )

    @cached_property
    def pair_directory(self) -> PairDirectory:
        """The BPC pair cache."""
        return PairDirectory(
            store=self.stores.pairs,
            events=self.stores.events,
            envelope=self.envelope,
            size=self.settings.bpc.pair_cache_size,
            ttl_seconds=self.settings.bpc.pair_cache_ttl_seconds,
        )

    @cached_property
    def pairs(self) -> PairService:
        """The BPC pair lifecycle."""
        return PairService(
            store=self.stores.pairs,
            audit=self.stores.audit,
            directory=self.pair_directory,
            envelope=self.envelope,
            clock=self.clock,
            settings=self.settings.bpc,
            development=self.settings.development,
        )

    @cached_property
    def jwt_verifier(self) -> JWTBearerVerifier:
        """Bearer JWTs of authgate itself and of the external issuers."""
        return self._jwt_verifier(self.settings, self.jwks_caches)

    def _jwt_verifier(self, settings: Settings, caches: tuple[JWKSCache, ...]) -> JWTBearerVerifier:
        jwt = settings.jwt
        issuers = [
            IssuerKeys(
                issuer=jwt.issuer,
                # Tokens issued for a protected resource (RFC 8707) carry its identifier.
                audiences=frozenset(jwt.audiences)
                | resource_identifiers(self.settings.policy.rules),
                algorithms=frozenset(jwt.algorithms),
                require_jti=True,
                key_ring=self.keys,
                max_lifetime_seconds=own_token_lifetime(settings),
            ),
            *(
                IssuerKeys(
                    issuer=i.issuer,
                    audiences=frozenset(i.audiences),
                    algorithms=frozenset(i.algorithms),
                    require_jti=i.require_jti,
                    jwks=cache,
                    max_lifetime_seconds=i.max_lifetime_seconds,
                )
                for i, cache in zip(jwt.external_issuers, caches, strict=True)
            ),
        ]
        return JWTBearerVerifier(
            issuers=issuers,
            revocations=self.revocations,
            clock=self.clock,
            leeway_seconds=jwt.leeway_seconds,
            max_token_bytes=jwt.max_token_bytes,
            cache_size=jwt.cache_size,
            metrics=self.metrics,
            dpop=self.dpop_proofs,
        )

    @cached_property
    def dpop_proofs(self) -> ProofChecker | None:
        """DPoP proof checks (RFC 9449), for the bearer verifier and ``/token``; ``None``
        when DPoP is off."""
        dpop = self.settings.jwt.dpop
        if not dpop.enabled:
            return None
        nonces = None
        if dpop.require_nonce:
            secret = dpop.nonce_secret
            nonces = ServerNonces(
                secret=(
                    secret.get_secret_value().encode()
                    if secret is not None
                    else secrets.token_bytes(32)
                ),
                ttl_seconds=dpop.nonce_ttl_seconds,
                skew_seconds=self.settings.jwt.leeway_seconds,
            )
        return ProofChecker(
            algorithms=dpop.algorithms,
            window_seconds=dpop.proof_window_seconds,
            max_proof_bytes=dpop.max_proof_bytes,
            nonces=nonces,
        )

    @cached_property
    def token_proofs(self) -> TokenProofs | None:
        """DPoP proofs sent to ``/token``; ``None`` when DPoP is off."""
        if self.dpop_proofs is None:
            return None
        return TokenProofs(checker=self.dpop_proofs, nonces=self.stores.nonces, clock=self.clock)

    @cached_property
    def bpc_verifier(self) -> BPCVerifier:
        """BPC signed requests."""
        return BPCVerifier(
            settings=self.settings.bpc,
            directory=self.pair_directory,
            pairs=self.pairs,
            nonces=self.stores.nonces,
            rate_limits=self.stores.rate_limits,
            clock=self.clock,
        )

    @cached_property
    def hmac_verifier(self) -> HMACProofVerifier:
        """HMAC challenge proofs."""
        return HMACProofVerifier(
            settings=self.settings.hmac,
            secrets=self.challenge_secrets,
            api_keys=self.api_keys,
            clock=self.clock,
        )

    # --- the decision ------------------------------------------------------------------

    @cached_property
    def gate(self) -> Gate:
        """The one decision path, over the enabled verifiers (BPC, HMAC, then JWT); with a
        span per decision when tracing is on (the plain gate carries no tracing branch)."""
        policy = Policy.from_settings(self.settings.policy)
        stores, metrics, access_log = self.stores, self.metrics, self.decision_log
        if self.tracing is not None:
            from authgate.tracing import TracedGate

            return TracedGate(
                tracing=self.tracing,
                policy=policy,
                verifiers=self._verifiers(),
                rate_limits=stores.rate_limits,
                nonces=stores.nonces,
                metrics=metrics,
                access_log=access_log,
            )
        return Gate(
            policy=policy,
            verifiers=self._verifiers(),
            rate_limits=stores.rate_limits,
            nonces=stores.nonces,
            metrics=metrics,
            access_log=access_log,
            recent=self.recent_decisions,
        )

    def _verifiers(self) -> list[Verifier]:
        verifiers: list[Verifier] = []
        if self.settings.bpc.enabled:
            verifiers.append(self.bpc_verifier)
        if self.settings.hmac.enabled:
            verifiers.append(self.hmac_verifier)
        verifiers.append(self.jwt_verifier)
        return verifiers

    def apply(self, settings: Settings) -> None:
        """Take the live keys of ``settings`` (``config/live.py``; the caller has refused
        any other change): the policy and the JWT verifier are rebuilt from them and
        swapped into the gate in one step, so a request decides under either the old
        settings or the new ones, never a mix. Nothing here awaits."""
        old, gate = self.settings, self.gate
        policy = gate.policy
        if settings.policy != old.policy:
            policy = Policy.from_settings(settings.policy)
        jwt_before = (old.jwt.external_issuers, old.jwt.leeway_seconds, old.jwt.cache_size)
        jwt_after = (
            settings.jwt.external_issuers,
            settings.jwt.leeway_seconds,
            settings.jwt.cache_size,
        )
        self.settings = settings  # read from here on by what is built later (and JWKS fetches)
        if jwt_before != jwt_after:
            reusable = {
                _jwks_key(i): c
                for i, c in zip(old.jwt.external_issuers, self.jwks_caches, strict=True)
            }
            self.jwks_caches = self._jwks_caches(settings, reusable)
            self.jwt_verifier = self._jwt_verifier(settings, self.jwks_caches)
        gate.reconfigure(policy=policy, verifiers=self._verifiers())

    @cached_property
    def recent_decisions(self) -> RecentDecisions | None:
        """The console's view of the last decisions (built only with the console)."""
        console = self.settings.console
        return RecentDecisions(console.recent_decisions) if console.enabled else None

    @cached_property
    def decision_log(self) -> DecisionLog:
        """The access log: one line per decision, written off the request path."""
        return DecisionLog(
            enabled=self.settings.logging.access_log,
            dropped=self.metrics.access_log_dropped.labels(),
        )

    @cached_property
    def admin_rule(self) -> CompiledRule:
        """The internal rule of the admin API."""
        return admin_rule(self.settings.tokens.admin_scope)

    # --- a serving process -------------------------------------------------------------

    async def start(self) -> None:
        """Open what a serving process needs: the HTTP client, the stores' epoch, the
        signing keys, the event bus, and key maintenance when the store manages keys."""
        self._warn_ephemeral()
        self.http = open_session(self.settings.proxy)
        try:
            await self.stores.nonces.prime()
        except AuthGateError:
            log.warning("store not reachable at start-up", extra={"event": "store_unavailable"})
        await self.keys.load()
        self.metrics.watch_keys(
            self._signing_key_age, self.settings.tokens.rotation_interval_days * 86_400
        )
        _ = self.gate  # everything the doors use is built before the first request
        await self.stores.events.start()
        if self.keys.managed:
            self._maintenance = asyncio.create_task(self._maintain_keys())

    async def close(self) -> None:
        """Stop key maintenance, close the HTTP client and the stores."""
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        if self.http is not None:
            await self.http.close()
            self.http = None
        await self.stores.close()
        self.decision_log.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # flushing may wait on the network

    def _warn_ephemeral(self) -> None:
        if self.settings.development:
            return
        if not (
            self.settings.jwt.signing_key_files or self.settings.secrets.key_encryption_key
        ) and (self.settings.tokens.enabled or self.settings.identity.identity_jwt.enabled):
            log.warning(
                "no signing key configured (jwt.signing_key_files or "
                "secrets.key_encryption_key): tokens are signed with an ephemeral key that "
                "dies with this process, and no other replica accepts them",
                extra={"event": "ephemeral_signing_key"},
            )
        if self.settings.secrets.key_encryption_key is None and self.settings.bpc.enabled:
            log.warning(
                "secrets.key_encryption_key is not set: BPC pair secrets are sealed under a "
                "random per-process key and cannot be opened after a restart or by another "
                "replica",
                extra={"event": "ephemeral_kek"},
            )
        pico = self.settings.tokens.enabled and self.settings.tokens.pico_enabled
        if self.settings.hmac.challenge_secret is None and (self.settings.hmac.enabled or pico):
            log.warning(
                "hmac.challenge_secret is not set: HMAC and pico wallet challenges are signed "
                "with a random per-process secret, so other replicas reject them",
                extra={"event": "ephemeral_challenge_secret"},
            )
        dpop = self.settings.jwt.dpop
        if dpop.enabled and dpop.require_nonce and dpop.nonce_secret is None:
            log.warning(
                "jwt.dpop.nonce_secret is not set: DPoP server nonces are signed with a random "
                "per-process secret, so other replicas refuse them (clients retry with theirs)",
                extra={"event": "ephemeral_dpop_nonce_secret"},
            )

    async def _maintain_keys(self) -> None:
        """Reload on change announcements, refresh every minute, rotate on schedule."""
        keys, settings = self.keys, self.settings
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
                        lock = await self.stores.rate_limits.hit(
                            "key-rotation-lock", limit=1, period_ms=60_000
                        )
                        if lock.allowed:
                            await keys.rotate()
            except (AuthGateError, KeysUnreadable) as exc:  # RotationRefused is a Conflict
                # One failed round never ends maintenance: the next tick tries again.
                log.warning(
                    "signing key maintenance skipped",
                    extra={"event": "key_maintenance_skipped", "error": type(exc).__name__},
                )

    def _signing_key_age(self) -> float | None:
        activated = self.keys.current_activated_ms
        if activated is None:
            return None
        return max(0.0, (self.clock.now_ms() - activated) / 1000)

    async def _fetch_jwks(self, url: str) -> bytes:
        if self.http is None:
            raise ValueError("the HTTP client is not open (Services.start)")
        return await fetch_jwks(self.http, url, settings=self.settings.jwt, metrics=self.metrics)
