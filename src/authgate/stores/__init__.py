"""State stores: narrow Protocols (``base``), in-memory and Redis back ends.

:func:`build_stores` picks the back end from configuration. The Redis package is imported
only when it is chosen, so nothing else ever imports ``redis``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from authgate.stores.base import Clock, Stores
from authgate.stores.memory import MemoryStores

if TYPE_CHECKING:
    from authgate.config.model import StoreSettings


def build_stores(settings: StoreSettings, clock: Clock | None = None) -> Stores:
    """The configured back end's stores; the caller must ``await stores.close()``."""
    if settings.backend == "redis":
        from authgate.stores.redis import RedisStores

        return RedisStores(settings.redis, clock)
    return MemoryStores(clock)


__all__ = ["build_stores"]
