"""Replica-local pair cache, invalidated over the event bus.

A cached entry holds the loaded public key and the opened secret, so the hot path does no
store round trip and no decryption. Every change to a pair publishes its id on the
``pairs`` channel; each replica drops its copy on receipt. While the bus is not live
(starting, or its subscription lost) the cache is bypassed and every lookup reads the
store, so a revocation is never missed; after a resubscription the cache is emptied.
Entries also expire after ``ttl_seconds`` as a safety net.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from authgate.cache import ExpiringCache
from authgate.crypto.envelope import Envelope, EnvelopeError
from authgate.pairs.records import PairRecord, PairRecordError, public_key_from_jwk
from authgate.stores.base import EventBus, PairStore

CHANNEL = "pairs"


@dataclass(frozen=True, slots=True)
class LoadedPair:
    """A pair ready for verification."""

    record: PairRecord
    public_key: ec.EllipticCurvePublicKey
    secret: str | None  # None: device-key-only (imported) pair


class PairDirectory:
    """Looks pairs up, through a bounded local cache kept honest by invalidations."""

    def __init__(
        self,
        *,
        store: PairStore,
        events: EventBus,
        envelope: Envelope,
        size: int,
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._events = events
        self._envelope = envelope
        self._cache: ExpiringCache[str, LoadedPair] = ExpiringCache(
            size, ttl_seconds=ttl_seconds, monotonic=monotonic
        )
        # Bumped by every invalidation: a read that raced one is not cached.
        self._generation = 0
        events.subscribe(CHANNEL, self.invalidate)
        events.on_resync(self._resync)

    def invalidate(self, pair_id: str) -> None:
        """Forget one pair (an event from any replica)."""
        self._generation += 1
        self._cache.discard(pair_id)

    async def _resync(self) -> None:
        self._generation += 1
        self._cache.clear()

    async def get(self, pair_id: str) -> LoadedPair | None:
        """The pair, or ``None`` when unknown. Raises ``StoreUnavailable``."""
        use_cache = self._cache.max_entries > 0 and self._events.live
        if use_cache:
            hit = self._cache.fresh(pair_id)
            if hit is not None:
                return hit[1]
        generation = self._generation
        data = await self._store.get(pair_id)
        if data is None:
            self._cache.discard(pair_id)
            return None
        loaded = self.load(PairRecord.from_json(data))
        if use_cache and self._events.live and generation == self._generation:
            self._cache.put(pair_id, loaded)
        return loaded

    def load(self, record: PairRecord) -> LoadedPair:
        """Parse the key and open the secret of ``record``."""
        public_key = public_key_from_jwk(record.public_key_jwk)
        secret: str | None = None
        if record.secret_sealed is not None:
            try:
                secret = self._envelope.open(
                    record.secret_sealed, context=f"pair:{record.pair_id}"
                ).decode()
            except (EnvelopeError, UnicodeDecodeError) as exc:
                raise PairRecordError(f"pair secret cannot be opened: {exc}") from None
        return LoadedPair(record=record, public_key=public_key, secret=secret)

    async def changed(self, pair_id: str) -> None:
        """Tell every replica (this one included) that ``pair_id`` changed."""
        self.invalidate(pair_id)
        await self._events.publish(CHANNEL, pair_id)
