"""Prometheus metrics. Labels stay low-cardinality: never paths, subjects or token ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric authgate exports, on one registry (one per app, so tests stay apart)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "authgate_decisions_total",
            "Access decisions by outcome, reason and credential type.",
            ["outcome", "reason", "credential"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "authgate_decision_duration_seconds",
            "Time to reach an access decision.",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_seconds = Histogram(
            "authgate_store_operation_duration_seconds",
            "Store call latency.",
            ["store", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "authgate_store_errors_total",
            "Store calls that failed or missed their deadline.",
            ["store", "operation"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "authgate_cache_lookups_total",
            "Cache lookups by cache and result (hit or miss).",
            ["cache", "result"],
            registry=r,
        )
        self.upstream_responses = Counter(
            "authgate_upstream_responses_total",
            "Proxied upstream responses by status class, or error reason.",
            ["status"],
            registry=r,
        )
        self.jwks_fetches = Counter(
            "authgate_jwks_fetches_total",
            "JWKS fetches from external issuers.",
            ["outcome"],
            registry=r,
        )
        self.ready = Gauge("authgate_ready", "1 when the last readiness check passed.", registry=r)
