"""Build the framework-free services from settings: used by the web app and the CLI alike."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from authgate.apikeys import ApiKeyService
from authgate.config.model import Settings
from authgate.crypto.envelope import Envelope, parse_kek
from authgate.pairs.directory import PairDirectory
from authgate.pairs.service import PairService
from authgate.stores.base import Clock, Stores

log = logging.getLogger("authgate")


def load_envelope(settings: Settings) -> Envelope:
    """The configured key-encryption key, or a random one (secrets die with the process)."""
    kek = settings.secrets.key_encryption_key
    if kek is None:
        if not settings.development and settings.bpc.enabled:
            log.warning(
                "secrets.key_encryption_key is not set: BPC pair secrets are sealed under a "
                "random per-process key and cannot be opened after a restart or by another "
                "replica",
                extra={"event": "ephemeral_kek"},
            )
        return Envelope.ephemeral()
    previous = tuple(
        parse_kek(k.get_secret_value()) for k in settings.secrets.previous_key_encryption_keys
    )
    return Envelope(parse_kek(kek.get_secret_value()), previous=previous)


def challenge_secrets(settings: Settings) -> tuple[bytes, ...]:
    """Challenge secrets (signing one first), or one random secret per process."""
    configured = settings.hmac.challenge_secret
    if configured is None:
        if not settings.development and settings.hmac.enabled:
            log.warning(
                "hmac.challenge_secret is not set: challenges are signed with a random "
                "per-process secret, so other replicas reject them",
                extra={"event": "ephemeral_challenge_secret"},
            )
        return (secrets.token_bytes(32),)
    return tuple(
        s.get_secret_value().encode()
        for s in (configured, *settings.hmac.previous_challenge_secrets)
    )


def build_api_keys(
    settings: Settings, stores: Stores, envelope: Envelope, clock: Clock
) -> ApiKeyService:
    """The API key service over ``stores``."""
    return ApiKeyService(
        store=stores.api_keys, events=stores.events, envelope=envelope, clock=clock
    )


@dataclass(frozen=True, slots=True)
class PairServices:
    """The pair cache and lifecycle service over one set of stores."""

    directory: PairDirectory
    service: PairService


def build_pair_services(
    settings: Settings, stores: Stores, envelope: Envelope, clock: Clock
) -> PairServices:
    """The pair directory (cache) and service for ``stores``."""
    directory = PairDirectory(
        store=stores.pairs,
        events=stores.events,
        envelope=envelope,
        size=settings.bpc.pair_cache_size,
        ttl_seconds=settings.bpc.pair_cache_ttl_seconds,
    )
    service = PairService(
        store=stores.pairs,
        audit=stores.audit,
        directory=directory,
        envelope=envelope,
        clock=clock,
        settings=settings.bpc,
        development=settings.development,
    )
    return PairServices(directory=directory, service=service)
