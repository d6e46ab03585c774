"""Store latency and error metrics around any back end, without touching its code."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from authgate.errors import StoreUnavailable
from authgate.metrics import Metrics
from authgate.stores.base import EventBus, Stores

STORE_NAMES = (
    "nonces",
    "revocations",
    "pairs",
    "api_keys",
    "signing_keys",
    "users",
    "rate_limits",
    "audit",
)


class _Timed:
    """Wraps every coroutine method of one store with a latency histogram and error counter."""

    def __init__(self, inner: Any, name: str, metrics: Metrics) -> None:
        self._inner = inner
        self._name = name
        self._metrics = metrics

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._inner, attr)
        if not callable(target) or attr.startswith("_"):
            return target
        histogram = self._metrics.store_seconds.labels(self._name, attr)
        errors = self._metrics.store_errors.labels(self._name, attr)

        @functools.wraps(target)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await cast(Callable[..., Awaitable[Any]], target)(*args, **kwargs)
            except StoreUnavailable:
                errors.inc()
                raise
            finally:
                histogram.observe(time.perf_counter() - started)

        setattr(self, attr, timed)  # bind once: later calls skip __getattr__
        return timed


class WrappedStores:
    """A :class:`Stores` whose per-store objects are ``wrap(name, store)`` of the inner
    back end's; the event bus, the back end's name, ``ping`` and ``close`` pass through.
    The metrics here and the spans of ``tracing.py`` are both such wrappers."""

    def __init__(self, inner: Stores, wrap: Callable[[str, Any], Any]) -> None:
        self._inner = inner
        for name in STORE_NAMES:
            setattr(self, name, wrap(name, getattr(inner, name)))

    @property
    def events(self) -> EventBus:
        """Cross-replica messages (not wrapped: the listener runs in the background)."""
        return self._inner.events

    @property
    def backend(self) -> str:
        """The wrapped back end's name."""
        return self._inner.backend

    async def ping(self) -> None:
        """Ping the wrapped back end."""
        await self._inner.ping()

    async def close(self) -> None:
        """Close the wrapped back end."""
        await self._inner.close()


class InstrumentedStores(WrappedStores):
    """A :class:`Stores` whose every call is measured."""

    def __init__(self, inner: Stores, metrics: Metrics) -> None:
        super().__init__(inner, lambda name, store: _Timed(store, name, metrics))
        self._ping = _Timed(inner, "backend", metrics)

    async def ping(self) -> None:
        """Measured ping."""
        await self._ping.ping()


def instrument(stores: Stores, metrics: Metrics) -> Stores:
    """``stores`` with latency and error metrics, and the event bus's state."""
    metrics.watch_events(stores.events)
    return cast(Stores, InstrumentedStores(stores, metrics))
