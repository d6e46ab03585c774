"""The lock-free metric types export what prometheus_client's own types would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from authgate.metrics import LocalCounter, LocalHistogram, Metrics
from authgate.stores.memory import MemoryEventBus

BUCKETS = (0.001, 0.01, 0.1)


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "values", [[], [0.001], [0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.2, 7.0], [0.0] * 3]
)
def test_histogram_exports_what_prometheus_client_does(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    local = LocalHistogram("h_seconds", "doc", ["op"], buckets=BUCKETS)
    reference = Histogram("h_seconds", "doc", ["op"], buckets=BUCKETS, registry=theirs)
    ours.register(local)
    for v in values:
        local.labels("read").observe(v)
        reference.labels("read").observe(v)
    if not values:  # both export a child only once it was asked for
        local.labels("read")
        reference.labels("read")
    assert samples(ours) == samples(theirs)


def test_counter_exports_what_prometheus_client_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    local = LocalCounter("c", "doc", ["a", "b"])
    reference = Counter("c", "doc", ["a", "b"], registry=theirs)
    ours.register(local)
    for labels, amount in [(("x", "y"), 1.0), (("x", "y"), 2.5), (("z", "y"), 1.0)]:
        local.labels(*labels).inc(amount)
        reference.labels(*labels).inc(amount)
    assert samples(ours) == samples(theirs)
    assert b'c_total{a="x",b="y"} 3.5' in generate_latest(ours)


def test_counter_refuses_to_go_down_and_wrong_label_counts() -> None:
    counter = LocalCounter("c", "doc", ["a"])
    with pytest.raises(ValueError, match="only go up"):
        counter.labels("x").inc(-1)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("x", "y")


def test_registry_refuses_a_second_metric_of_the_same_name() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.registry.register(LocalCounter("authgate_decisions", "again", ["x"]))


async def test_event_bus_state_is_exported_at_scrape_time() -> None:
    """``authgate_events_live`` follows the bus; resubscriptions are a counter."""
    metrics = Metrics()
    bus = MemoryEventBus()
    metrics.watch_events(bus)
    text = generate_latest(metrics.registry).decode()
    assert "authgate_events_live 0.0" in text
    assert "authgate_events_resubscriptions_total 0.0" in text
    await bus.start()
    bus.resubscriptions = 3
    text = generate_latest(metrics.registry).decode()
    assert "authgate_events_live 1.0" in text
    assert "authgate_events_resubscriptions_total 3.0" in text
    metrics.watch_events(MemoryEventBus())  # a rebuilt app: the newest bus wins, no clash
    assert "authgate_events_live 0.0" in generate_latest(metrics.registry).decode()


async def test_signing_key_age_and_rotation_interval_are_exported() -> None:
    """Store-managed keys: the current key's age follows the clock; the interval is the
    configured one (what the KeyRotationOverdue alert compares)."""
    import base64

    from aiohttp.test_utils import TestClient, TestServer
    from prometheus_client.parser import text_string_to_metric_families

    from authgate.stores.base import ManualClock
    from authgate.stores.memory import MemoryStores
    from authgate.web.app import create_app
    from tests.support import make_settings

    clock = ManualClock()
    settings = make_settings(
        secrets={"key_encryption_key": base64.b64encode(b"k" * 32).decode()},
        tokens={"rotation_interval_days": 1},
    )
    app = create_app(settings, clock=clock, stores=MemoryStores(clock=clock))

    async def scrape() -> dict[str, float]:
        text = await (await client.get("/metrics")).text()
        return {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("authgate_signing_key")
        }

    async with TestClient(TestServer(app)) as client:
        assert await scrape() == {
            "authgate_signing_key_age_seconds": 0.0,
            "authgate_signing_key_rotation_interval_seconds": 86_400.0,
        }
        clock.advance(2 * 86_400_000)
        assert (await scrape())["authgate_signing_key_age_seconds"] == 2 * 86_400.0


async def test_key_files_export_no_age() -> None:
    """An ephemeral (or file) key has no known age: only the interval (0: off) is exported."""
    from aiohttp.test_utils import TestClient, TestServer

    from authgate.web.app import create_app
    from tests.support import make_settings

    async with TestClient(TestServer(create_app(make_settings()))) as client:
        text = await (await client.get("/metrics")).text()
    assert "authgate_signing_key_rotation_interval_seconds 0.0" in text
    assert not [ln for ln in text.splitlines() if ln.startswith("authgate_signing_key_age")]
