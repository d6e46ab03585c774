"""Production Redis: the stores over TLS, with mutual TLS, behind a password-protected TLS
Sentinel, and on a TLS Cluster reached through several seeds while the first is down.

Every server is a ``redis-server`` of this module's own, listening with TLS only on a free
loopback port, with certificates made by the test (:mod:`tests.redis_tls`), stopped by PID.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from pydantic import SecretStr

from authgate.config.model import RedisSettings
from authgate.errors import StoreUnavailable
from authgate.stores.base import ManualClock, NonceOutcome
from authgate.stores.redis import RedisStores
from tests.redis_tls import PKI, TLSClusterSet, TLSNode, make_pki, wait_for_sentinel
from tests.support import free_port, wait_for

pytestmark = [pytest.mark.redis_topology, pytest.mark.timeout(60)]

TTL_MS = 60_000
# Functional calls get a generous deadline and connect timeout (a slow shared runner: a
# burst of new connections is a burst of TLS handshakes); refusals use the defaults.
DEADLINE = 10.0


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A directory for the certificates and the servers' files, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="authgate-tls-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(workdir: Path) -> PKI:
    """The test CA and its certificates."""
    return make_pki(workdir / "pki")


def _started(node: TLSNode) -> Iterator[TLSNode]:
    node.start()
    try:
        yield node
    finally:
        node.terminate(timeout=5.0)


@pytest.fixture(scope="module")
def tls_redis(workdir: Path, pki: PKI) -> Iterator[TLSNode]:
    """TLS only, client certificates not required."""
    yield from _started(TLSNode(workdir / "tls", pki, auth_clients=False))


@pytest.fixture(scope="module")
def mtls_redis(workdir: Path, pki: PKI) -> Iterator[TLSNode]:
    """TLS only, a client certificate signed by the test CA required."""
    yield from _started(TLSNode(workdir / "mtls", pki, auth_clients=True))


def settings(url: str, **section: Any) -> RedisSettings:
    """``stores.redis`` for a test client, under a fresh key prefix."""
    section.setdefault("key_prefix", f"authgate-tls:{uuid4().hex}:")
    if section.get("deadline_seconds") == DEADLINE:
        section.setdefault("connect_timeout_seconds", DEADLINE)
    return RedisSettings.model_validate({**section, "url": SecretStr(url)})


def tls(pki: PKI, *, client_cert: bool = False, **extra: Any) -> dict[str, Any]:
    """A ``stores.redis.tls`` section trusting the test CA."""
    section: dict[str, Any] = {"ca_file": str(pki.ca), **extra}
    if client_cert:
        section.update(cert_file=str(pki.client.cert), key_file=str(pki.client.key))
    return section


async def assert_spends_once(
    stores: RedisStores, clock: ManualClock, scope: str = "pair-1"
) -> None:
    """A nonce is FRESH once, then REPLAYED; twenty copies of another admit exactly one."""
    now = clock.now_ms()
    consume = stores.nonces.consume
    assert await consume(scope, "n1", ttl_ms=TTL_MS, signed_at_ms=now) is NonceOutcome.FRESH
    assert await consume(scope, "n1", ttl_ms=TTL_MS, signed_at_ms=now) is NonceOutcome.REPLAYED
    outcomes = await asyncio.gather(
        *(consume(scope, "race", ttl_ms=TTL_MS, signed_at_ms=now) for _ in range(20))
    )
    assert outcomes.count(NonceOutcome.FRESH) == 1


async def assert_bus_live(stores: RedisStores, other: RedisStores) -> None:
    """The event bus comes up and carries a message from another replica."""
    received: list[str] = []
    stores.events.subscribe("revocations", received.append)
    await stores.events.start()
    await wait_for(lambda: stores.events.live, timeout=10)
    await other.events.publish("revocations", "jti-1")
    await wait_for(lambda: received == ["jti-1"], timeout=10)


# A refused connection can leave redis-py's half-open socket for the garbage collector, whose
# ResourceWarning would then surface in whichever test runs next (warnings are errors here).
# The refusal tests collect it themselves, inside their own scope, where it is expected.
LEAKS_A_REFUSED_SOCKET = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)


async def assert_refused_quickly(stores: RedisStores) -> None:
    """The first store call fails closed with StoreUnavailable, well within a second."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await stores.nonces.consume("pair-1", "n", ttl_ms=TTL_MS, signed_at_ms=1)
    assert time.monotonic() - started < 2.0


# --- one server ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
async def test_stores_over_tls_verify_the_server(
    tls_redis: TLSNode, pki: PKI, protocol: int
) -> None:
    """rediss:// with the CA file: the server's certificate and name are checked, nonces are
    spent exactly once and the event bus is live."""
    section = settings(
        f"rediss://localhost:{tls_redis.port}/0",
        tls=tls(pki),
        protocol=protocol,
        deadline_seconds=DEADLINE,
    )
    clock = ManualClock()
    stores, other = RedisStores(section, clock), RedisStores(section, clock)
    try:
        await assert_spends_once(stores, clock)
        await assert_bus_live(stores, other)
    finally:
        await stores.close()
        await other.close()


async def test_mutual_tls_with_the_client_certificate(mtls_redis: TLSNode, pki: PKI) -> None:
    """A server that requires client certificates accepts authgate's."""
    section = settings(
        f"rediss://127.0.0.1:{mtls_redis.port}/0",
        tls=tls(pki, client_cert=True),
        deadline_seconds=DEADLINE,
    )
    clock = ManualClock()
    stores = RedisStores(section, clock)
    try:
        await assert_spends_once(stores, clock)
        await stores.ping()
    finally:
        await stores.close()


@LEAKS_A_REFUSED_SOCKET
async def test_mutual_tls_without_a_client_certificate_is_refused(
    mtls_redis: TLSNode, pki: PKI
) -> None:
    """Without the client certificate the server refuses the handshake: StoreUnavailable at
    once, not a hang."""
    stores = RedisStores(settings(f"rediss://127.0.0.1:{mtls_redis.port}/0", tls=tls(pki)))
    try:
        await assert_refused_quickly(stores)
    finally:
        await stores.close()
        gc.collect()


@LEAKS_A_REFUSED_SOCKET
async def test_a_server_signed_by_another_ca_is_refused(tls_redis: TLSNode, pki: PKI) -> None:
    """A CA file that did not sign the server's certificate: refused, StoreUnavailable."""
    section = settings(f"rediss://127.0.0.1:{tls_redis.port}/0", tls={"ca_file": str(pki.wrong_ca)})
    stores = RedisStores(section)
    try:
        await assert_refused_quickly(stores)
    finally:
        await stores.close()
        gc.collect()


@LEAKS_A_REFUSED_SOCKET
async def test_plain_redis_to_a_tls_port_fails_closed(tls_redis: TLSNode) -> None:
    """A redis:// URL pointed at a TLS port: StoreUnavailable, not a hang."""
    stores = RedisStores(settings(f"redis://127.0.0.1:{tls_redis.port}/0"))
    try:
        await assert_refused_quickly(stores)
    finally:
        await stores.close()
        gc.collect()


async def test_hostname_is_checked_unless_ca_only(workdir: Path, pki: PKI) -> None:
    """A certificate for another host name, from the right CA: refused by default (verify
    full); accepted with verify ca-only, which still checks the chain."""
    node = TLSNode(workdir / "other-host", pki, server=pki.other_host)
    for _ in _started(node):
        url = f"rediss://127.0.0.1:{node.port}/0"
        full = RedisStores(settings(url, tls=tls(pki)))
        ca_only = RedisStores(settings(url, tls=tls(pki, verify="ca-only"), deadline_seconds=2))
        wrong_ca = RedisStores(
            settings(url, tls={"ca_file": str(pki.wrong_ca), "verify": "ca-only"})
        )
        try:
            await assert_refused_quickly(full)
            await assert_refused_quickly(wrong_ca)
            await ca_only.ping()
        finally:
            for stores in (full, ca_only, wrong_ca):
                await stores.close()


# --- Sentinel ------------------------------------------------------------------------------

SERVICE = "tlsmaster"
MASTER_PASSWORD = "master-secret-" + uuid4().hex[:8]
SENTINEL_PASSWORD = "sentinel-secret-" + uuid4().hex[:8]


@pytest.fixture(scope="module")
def tls_sentinel(workdir: Path, pki: PKI) -> Iterator[tuple[TLSNode, TLSNode]]:
    """A TLS master with a password, and one TLS sentinel with a password of its own
    (quorum 1) that reaches the master over TLS."""
    directory = workdir / "sentinel"
    master = TLSNode(
        directory, pki, password=MASTER_PASSWORD, args=["--requirepass", MASTER_PASSWORD]
    )
    master.start()
    try:
        config = "\n".join(
            [
                f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1",
                f"sentinel auth-pass {SERVICE} {MASTER_PASSWORD}",
                f"requirepass {SENTINEL_PASSWORD}",
                "tls-replication yes",
                "",
            ]
        )
        sentinel = TLSNode(directory, pki, password=SENTINEL_PASSWORD, sentinel_config=config)
        for running in _started(sentinel):
            wait_for_sentinel(running, SERVICE, master.port)
            yield master, running
    finally:
        master.terminate(timeout=5.0)


def sentinel_settings(
    sentinel: TLSNode, pki: PKI, *, sentinel_password: str, **extra: Any
) -> RedisSettings:
    return settings(
        f"rediss://:{MASTER_PASSWORD}@127.0.0.1:1/0",
        mode="sentinel",
        sentinels=[sentinel.address],
        sentinel_service=SERVICE,
        sentinel_password=SecretStr(sentinel_password),
        sentinel_tls=True,
        tls=tls(pki),
        **extra,
    )


async def test_sentinel_with_password_and_tls(
    tls_sentinel: tuple[TLSNode, TLSNode], pki: PKI
) -> None:
    """Sentinels over TLS with their own password, the master over TLS with its own: the
    master is found and nonces are spent exactly once."""
    _, sentinel = tls_sentinel
    section = sentinel_settings(
        sentinel, pki, sentinel_password=SENTINEL_PASSWORD, deadline_seconds=DEADLINE
    )
    clock = ManualClock()
    stores, other = RedisStores(section, clock), RedisStores(section, clock)
    try:
        await assert_spends_once(stores, clock)
        await assert_bus_live(stores, other)
    finally:
        await stores.close()
        await other.close()


@LEAKS_A_REFUSED_SOCKET
async def test_sentinel_with_a_wrong_password_is_refused(
    tls_sentinel: tuple[TLSNode, TLSNode], pki: PKI
) -> None:
    """A wrong sentinel password: no master found, StoreUnavailable."""
    _, sentinel = tls_sentinel
    stores = RedisStores(sentinel_settings(sentinel, pki, sentinel_password="wrong"))
    try:
        await assert_refused_quickly(stores)
    finally:
        await stores.close()
        gc.collect()


# --- Cluster -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(pki: PKI) -> Iterator[TLSClusterSet]:
    """Three TLS masters requiring client certificates, no replicas."""
    cluster = TLSClusterSet(pki).start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_cluster_over_tls_from_several_seeds_first_down(
    tls_cluster: TLSClusterSet, pki: PKI
) -> None:
    """url names a node that is down; cluster_nodes lists two live ones (host:port and a
    rediss:// URL): the client starts from the next seed, and every node client (the
    nonce scripts' WAIT pipelines, the event bus) speaks mutual TLS."""
    down = free_port()
    nodes = tls_cluster.nodes
    section = settings(
        f"rediss://127.0.0.1:{down}/0",
        mode="cluster",
        cluster_nodes=[nodes[1].address, f"rediss://127.0.0.1:{nodes[2].port}"],
        tls=tls(pki, client_cert=True),
        deadline_seconds=DEADLINE,
    )
    clock = ManualClock()
    stores, other = RedisStores(section, clock), RedisStores(section, clock)
    try:
        # Scopes in slots of every master: each goes through a node client of its master.
        for index in range(6):
            await assert_spends_once(stores, clock, scope=f"pair-{index}")
        holding = [n for n in nodes if n.command("KEYS", f"{section.key_prefix}nonce:*")]
        assert len(holding) > 1
        await assert_bus_live(stores, other)
    finally:
        await stores.close()
        await other.close()
