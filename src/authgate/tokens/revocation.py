"""The revocation list: Redis keeps the truth, every replica keeps a local copy.

``revoke`` writes the ``jti`` to the store (kept until the token's ``exp``) and publishes it
on the ``revocations`` channel; every replica adds it to its local denylist on receipt. The
hot path (``is_revoked``) then needs no store round trip. While the event bus is not live
(starting, or its subscription lost) a replica may have missed messages, so it asks the
store on every request until the bus has resubscribed and reloaded the full list (resync).
"""

from __future__ import annotations

import logging

from authgate.stores.base import Clock, EventBus, RevocationStore, SystemClock

CHANNEL = "revocations"
log = logging.getLogger(__name__)


class RevocationList:
    """Local denylist kept in step with the shared revocation store."""

    def __init__(
        self, *, store: RevocationStore, events: EventBus, clock: Clock | None = None
    ) -> None:
        self._store = store
        self._events = events
        self._clock = clock or SystemClock()
        self._local: dict[str, int] = {}
        events.subscribe(CHANNEL, self._on_message)
        events.on_resync(self._resync)

    @property
    def local_size(self) -> int:
        """Entries in the local copy (for metrics and tests)."""
        return len(self._local)

    def _on_message(self, message: str) -> None:
        jti, _, expires = message.rpartition(" ")
        if jti and expires.isdigit():
            self._local[jti] = int(expires)

    async def _resync(self) -> None:
        self._local = dict(await self._store.list_revoked())
        log.info("revocation list resynchronised", extra={"event": "revocations_resync"})

    async def revoke(self, jti: str, *, expires_at_ms: int) -> None:
        """Revoke ``jti`` until ``expires_at_ms`` on every replica."""
        await self._store.revoke(jti, expires_at_ms=expires_at_ms)
        self._local[jti] = expires_at_ms
        await self._events.publish(CHANNEL, f"{jti} {expires_at_ms}")

    async def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` is revoked: local when the bus is live, else the store."""
        known = self.revoked_locally(jti)
        if known is None:
            return await self._store.is_revoked(jti)
        return known

    def revoked_locally(self, jti: str) -> bool | None:
        """Whether ``jti`` is revoked, when this replica knows without a store round trip;
        ``None`` when only the store can tell (the bus is not live)."""
        if not self._events.live:
            return None
        expires = self._local.get(jti)
        if expires is None:
            return False
        if expires <= self._clock.now_ms():
            self._local.pop(jti, None)
            return False
        return True

    async def list_revoked(self) -> dict[str, int]:
        """Every live revoked ``jti`` (from the store: the authoritative list)."""
        return await self._store.list_revoked()
