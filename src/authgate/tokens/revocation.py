"""The revocation list: Redis keeps the truth, every replica keeps a local copy.

``revoke`` writes the ``jti`` to the store (kept until the token's ``exp``) and publishes it
on the ``revocations`` channel; every replica adds it to its local denylist on receipt. The
hot path (``is_revoked``) then needs no store round trip. While the event bus is not live
(starting, or its subscription lost) a replica may have missed messages, so it asks the
store on every request until the bus has resubscribed and reloaded the full list (resync).
"""

from __future__ import annotations

import logging
import time

from authgate.stores.base import EventBus, RevocationStore

CHANNEL = "revocations"
log = logging.getLogger(__name__)


class RevocationList:
    """Local denylist kept in step with the shared revocation store."""

    def __init__(
        self, *, store: RevocationStore, events: EventBus, store_is_local: bool = False
    ) -> None:
        self._store = store
        self._events = events
        # An in-process store costs nothing to ask, and asking it means nothing written
        # to it directly can be missed.
        self._store_is_local = store_is_local
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
        if self._store_is_local or not self._events.live:
            return await self._store.is_revoked(jti)
        expires = self._local.get(jti)
        if expires is None:
            return False
        if expires <= time.time() * 1000:
            self._local.pop(jti, None)
            return False
        return True

    async def list_revoked(self) -> dict[str, int]:
        """Every live revoked ``jti`` (from the store: the authoritative list)."""
        return await self._store.list_revoked()
