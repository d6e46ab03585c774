"""Prometheus metrics. Labels stay low-cardinality: never paths, subjects or token ids.

Counters and histograms on the request path are kept in plain Python numbers and handed to
prometheus_client as metric families when ``/metrics`` is scraped. prometheus_client's own
value types take a ``threading.Lock`` on every increment, which authgate does not need (one
event loop per process, no threads touch these) and which was a measured share of a
forward-auth decision. Exposition, naming and the text format stay prometheus_client's.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from authgate.stores.base import EventBus

_INF = float("inf")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class CounterChild:
    """One label combination of a :class:`LocalCounter`.

    The hottest paths add to ``value`` directly rather than call :meth:`inc` (a Python call
    is a measurable share of a forward-auth decision); nothing else may.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (non-negative)."""
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class HistogramChild:
    """One label combination of a :class:`LocalHistogram` (``Gate.record`` inlines
    :meth:`observe` for the same reason as :class:`CounterChild`)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose upper bound is >= it (``le``)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


Child = TypeVar("Child", "CounterChild", "HistogramChild")


class _Labelled(Generic[Child]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}

    def _new(self) -> Child:
        raise NotImplementedError

    def labels(self, *values: str) -> Child:
        """The child for these label values (created on first use)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}")
            child = self._children[values] = self._new()
        return child


class LocalCounter(_Labelled[CounterChild]):
    """A labelled counter (exported as ``<name>_total``)."""

    def _new(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterator[Metric]:
        """The metric family with every child seen so far."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without samples (name clash checks at registration)."""
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class LocalHistogram(_Labelled[HistogramChild]):
    """A labelled histogram with fixed buckets."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets))

    def _new(self) -> HistogramChild:
        return HistogramChild(self.buckets)

    def collect(self) -> Iterator[Metric]:
        """The metric family: cumulative buckets, ``+Inf``, count and sum per child."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*self.buckets, _INF), child.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == _INF else repr(bound), cumulative))
            family.add_metric(list(values), buckets, sum_value=child.sum)
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without samples (name clash checks at registration)."""
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class EventBusCollector:
    """``authgate_events_live`` and ``authgate_events_resubscriptions_total``, read from the
    bus at scrape time."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def collect(self) -> Iterator[Metric]:
        """The two families, with the bus's current values."""
        live, resubscriptions = self.describe()
        live.add_metric([], 1.0 if self._bus.live else 0.0)
        resubscriptions.add_metric([], float(self._bus.resubscriptions))
        yield live
        yield resubscriptions

    @staticmethod
    def describe() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        """The families without samples."""
        return (
            GaugeMetricFamily(
                "authgate_events_live",
                "1 while the event subscription is live (caches trusted, no per-request "
                "store look-ups); 0 while it is being re-established.",
            ),
            CounterMetricFamily(
                "authgate_events_resubscriptions",
                "Times the event subscription was lost and re-established.",
            ),
        )


class SigningKeyCollector:
    """``authgate_signing_key_age_seconds`` (how long the current store-managed key has
    signed; absent for key files and ephemeral keys, whose age authgate cannot know) and
    ``authgate_signing_key_rotation_interval_seconds`` (0: rotation off), read at scrape
    time. Their difference is what the KeyRotationOverdue alert watches."""

    def __init__(self, age_seconds: Callable[[], float | None], interval_seconds: float) -> None:
        self._age = age_seconds
        self._interval = interval_seconds

    def collect(self) -> Iterator[Metric]:
        """The two families, the age only when known."""
        age, interval = self.describe()
        seconds = self._age()
        if seconds is not None:
            age.add_metric([], seconds)
        interval.add_metric([], self._interval)
        yield age
        yield interval

    @staticmethod
    def describe() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        """The families without samples."""
        return (
            GaugeMetricFamily(
                "authgate_signing_key_age_seconds",
                "Seconds since the current store-managed signing key began to sign.",
            ),
            GaugeMetricFamily(
                "authgate_signing_key_rotation_interval_seconds",
                "tokens.rotation_interval_days in seconds (0: automatic rotation off).",
            ),
        )


class Metrics:
    """Every metric authgate exports, on one registry (one per app, so tests stay apart)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = LocalCounter(
            "authgate_decisions",
            "Access decisions by outcome, reason and credential type.",
            ["outcome", "reason", "credential"],
        )
        self.decision_seconds = LocalHistogram(
            "authgate_decision_duration_seconds",
            "Time to reach an access decision.",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
        )
        self.store_seconds = LocalHistogram(
            "authgate_store_operation_duration_seconds",
            "Store call latency.",
            ["store", "operation"],
            buckets=_LATENCY_BUCKETS,
        )
        self.store_errors = LocalCounter(
            "authgate_store_errors",
            "Store calls that failed or missed their deadline.",
            ["store", "operation"],
        )
        self.cache_lookups = LocalCounter(
            "authgate_cache_lookups",
            "Cache lookups by cache and result (hit or miss).",
            ["cache", "result"],
        )
        self.upstream_responses = LocalCounter(
            "authgate_upstream_responses",
            "Proxied upstream responses by status class, or error reason.",
            ["status"],
        )
        self.jwks_fetches = LocalCounter(
            "authgate_jwks_fetches",
            "JWKS fetches from external issuers.",
            ["outcome"],
        )
        self.token_exchanges = LocalCounter(
            "authgate_token_exchanges",
            "Token exchanges (RFC 8693) at /token by outcome and reason.",
            ["outcome", "reason"],
        )
        self.access_log_dropped = LocalCounter(
            "authgate_access_log_dropped",
            "Access-log lines dropped: the queue was full or the log stream refused the write.",
            [],
        )
        for metric in (
            self.access_log_dropped,
            self.decisions,
            self.decision_seconds,
            self.store_seconds,
            self.store_errors,
            self.cache_lookups,
            self.upstream_responses,
            self.jwks_fetches,
            self.token_exchanges,
        ):
            r.register(metric)
        self.ready = Gauge("authgate_ready", "1 when the last readiness check passed.", registry=r)
        # Config reloads (web/reload.py): the generation counts applied reloads (1: the
        # config the process started with); the info gauge carries the current hash only.
        self.config_generation = Gauge(
            "authgate_config_generation",
            "Configuration generation: 1 at start, plus one per applied reload.",
            registry=r,
        )
        self.config_info = Gauge(
            "authgate_config_info",
            "1, labelled with the hash of the configuration in force.",
            ["hash"],
            registry=r,
        )
        self.config_reloads = LocalCounter(
            "authgate_config_reloads",
            "Configuration reloads by outcome: applied, unchanged or refused.",
            ["outcome"],
        )
        r.register(self.config_reloads)
        self._events: EventBusCollector | None = None
        self._keys: SigningKeyCollector | None = None

    def watch_events(self, bus: EventBus) -> None:
        """Export ``bus``'s liveness and resubscriptions (the latest bus, if called again)."""
        if self._events is not None:
            self.registry.unregister(self._events)
        self._events = EventBusCollector(bus)
        self.registry.register(self._events)

    def watch_keys(self, age_seconds: Callable[[], float | None], interval_seconds: float) -> None:
        """Export the signing key's age (``age_seconds`` at scrape time) and the rotation
        interval (the latest, if called again)."""
        if self._keys is not None:
            self.registry.unregister(self._keys)
        self._keys = SigningKeyCollector(age_seconds, interval_seconds)
        self.registry.register(self._keys)
