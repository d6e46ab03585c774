"""Two authgate processes on a real Redis Sentinel set and a real Redis Cluster.

The standalone replica suites (``test_bpc_replicas.py``, ``test_hmac_replicas.py``,
``test_rate_limit_replicas.py``, ``test_revocation_replicas.py``) run against the shared
Redis; this module runs their core claims on the topologies of :mod:`tests.redis_topology`,
and adds what only a topology can show: a failover under load (0 replays admitted, nothing
but 2xx or 503 meanwhile, recovery without restarting authgate), a manual Sentinel failover
with the old master alive, and the Cluster event bus wherever its subscription lands.

The non-destructive tests share the session's topologies (fresh key prefix per module and
topology); the failover tests start topologies of their own. Propagation delays are printed,
never asserted beyond the usual 5 s bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from authgate.client.hmac_proof import proof_header
from authgate.config.model import RedisSettings
from authgate.stores.base import SystemClock
from authgate.stores.redis import RedisStores
from authgate.tokens.users import UserService
from tests.integration.conftest import Authgate, Upstream, report_propagation
from tests.integration.test_bpc_replicas import Pair, register
from tests.integration.test_bpc_replicas import admitted as bpc_admitted
from tests.integration.test_bpc_replicas import call as bpc_call
from tests.integration.test_hmac_replicas import (
    KEK,
    TARGET,
    UNIFORM,
    api_key_reads,
    challenge,
    new_key_in,
)
from tests.integration.test_hmac_replicas import admitted as hmac_admitted
from tests.integration.test_hmac_replicas import call as hmac_call
from tests.integration.test_rate_limit_replicas import ask, assert_limited, proof_for, rule
from tests.integration.test_revocation_replicas import (
    OPERATOR,
    decision,
    jti_of,
    operator_token,
    post,
    revocation_propagation,
    sign_in,
)
from tests.pico import PICO
from tests.redis_topology import (
    ClusterSet,
    Failover,
    SentinelSet,
    Topology,
    cluster_factory,
    key_slot,
    redis_cluster,
    sentinel_factory,
    sentinel_set,
    shared_topology,
)

__all__ = ["cluster_factory", "redis_cluster", "sentinel_factory", "sentinel_set"]

pytestmark = [pytest.mark.redis_topology, pytest.mark.slow]

KINDS = ["sentinel", "cluster"]
CHALLENGE_SECRET = "topology-replicas-challenge-secret-012345"
COPIES = 50
KEYED_LIMIT = 3
TRIALS = 10
LIVE_BOUND_SECONDS = 3.0
PROPAGATION_BOUND_SECONDS = 5.0
RECOVERY_BOUND_SECONDS = 15.0
LOAD_WORKERS = 4
# Events channels an authgate process subscribes to (apikeys, pairs, revocations, keys)
# and the bus's own heartbeat channel.
CHANNELS = ("apikeys", "pairs", "revocations", "keys", "_heartbeat")


def gate_config(topology: Topology, key_prefix: str, upstream_port: int) -> dict[str, Any]:
    """One authgate config for both processes: one prefix, KEK and challenge secret."""
    return {
        "stores": {"backend": "redis", "redis": topology.settings(key_prefix)},
        "secrets": {"key_encryption_key": KEK},
        "hmac": {"challenge_secret": CHALLENGE_SECRET},
        "proxy": {"upstream": f"http://127.0.0.1:{upstream_port}"},
        # Replay refusals are failures too: keep the per-address budget out of the way.
        "bpc": {"auto_approve_development_pairs": True, "failures_per_minute": 100_000},
        "tokens": {"password_grant": True},
        "policy": {
            "rules": [
                rule("keyed", "/keyed", "credential", KEYED_LIMIT, 60, credentials=["hmac"]),
                {"id": "api", "path_prefix": "/"},
            ]
        },
        "logging": {"level": "WARNING", "access_log": False},
        # No load balancer to tell: stop at once on SIGTERM.
        "server": {"shutdown_delay_seconds": 0, "drain_timeout_seconds": 2},
    }


@contextlib.contextmanager
def two_gates(config: dict[str, Any], directory: Path) -> Iterator[tuple[Authgate, Authgate]]:
    """Processes A and B, started together (each waits for its own /healthz)."""
    gates = (Authgate(config, directory), Authgate(config, directory))
    try:
        for gate in gates:
            gate.start()
        yield gates
    finally:
        for gate in gates:
            gate.stop()


@contextlib.asynccontextmanager
async def in_process(settings: RedisSettings) -> AsyncIterator[RedisStores]:
    """Stores of the deployment in this process, as the CLI would open them (with a set-up
    deadline, not a request's)."""
    stores = RedisStores(settings.model_copy(update={"deadline_seconds": 5.0}))
    try:
        await stores.ping()  # loads the Cluster slot map before anything else
        yield stores
    finally:
        await stores.close()


# An API key written to the topology under the processes' KEK.
new_api_key = new_key_in


async def add_operator(settings: RedisSettings) -> None:
    """The operator user of ``test_revocation_replicas``, in the topology."""
    async with in_process(settings) as stores:
        await UserService(store=stores.users, clock=SystemClock()).add(
            *OPERATOR, scopes=[], role="operator"
        )


async def store_calls(
    session: aiohttp.ClientSession, gate: Authgate, store: str, operation: str
) -> float:
    """How many ``store.operation`` calls ``gate`` has made (its store metrics)."""
    async with session.get(gate.url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"authgate_store_operation_duration_seconds_count\{(.*)\} (\S+)", line)
        if match and {f'store="{store}"', f'operation="{operation}"'} <= set(
            match.group(1).split(",")
        ):
            total += float(match.group(2))
    return total


@dataclass
class Deployment:
    """Two authgate processes on one topology and key prefix."""

    topology: Topology
    key_prefix: str
    a: Authgate
    b: Authgate

    @property
    def kind(self) -> str:
        """``sentinel`` or ``cluster``."""
        return self.topology.kind

    def settings(self) -> RedisSettings:
        """In-process client settings for the deployment's data."""
        return self.topology.redis_settings(self.key_prefix)


@pytest.fixture(scope="module", params=KINDS)
def deployment(
    request: pytest.FixtureRequest,
    upstream_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """A and B on the session's shared Sentinel set or Cluster, under a fresh prefix."""
    topology = shared_topology(request, request.param)
    prefix = f"authgate-topo-{uuid.uuid4().hex[:12]}:"
    config = gate_config(topology, prefix, upstream_server.port)
    asyncio.run(add_operator(topology.redis_settings(prefix)))
    with two_gates(config, tmp_path_factory.mktemp(f"topology-{request.param}")) as (a, b):
        yield Deployment(topology, prefix, a, b)


async def race(copies: int, send: Callable[[Authgate], Any], a: Authgate, b: Authgate) -> list[Any]:
    """``copies`` sends released at once, alternating between A and B."""
    start = asyncio.Event()

    async def one(gate: Authgate) -> Any:
        await start.wait()
        return await send(gate)

    tasks = [asyncio.create_task(one(a if i % 2 else b)) for i in range(copies)]
    await asyncio.sleep(0.05)
    start.set()
    return await asyncio.gather(*tasks)


# --- (a) one signed request, fifty copies -------------------------------------------------


async def test_fifty_copies_of_a_bpc_request_admit_exactly_one(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """One signed BPC request, 50 copies over A and B: one 2xx, 49 replay_detected, no 5xx."""
    a, b = deployment.a, deployment.b
    pair = await register(session, a)
    await bpc_admitted(session, b, pair)
    headers = pair.headers("GET", "/api/items")
    results = await race(
        COPIES, lambda gate: bpc_call(session, gate.url, "GET", "/api/items", headers), a, b
    )
    accepted = [r for r in results if 200 <= r[0] < 300]
    assert len(accepted) == 1, results
    assert sorted(r for r in results if r not in accepted) == [(401, "replay_detected")] * (
        COPIES - 1
    )


async def test_fifty_copies_of_an_hmac_proof_admit_exactly_one(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """One HMAC proof, 50 copies over A and B: one 2xx, 49 uniform 401s, no 5xx."""
    a, b = deployment.a, deployment.b
    key = await new_api_key(deployment.settings())
    await hmac_admitted(session, a, b, key)
    header = proof_header(await challenge(session, a), key, "GET", TARGET)
    results = await race(COPIES, lambda gate: hmac_call(session, gate, TARGET, header), a, b)
    accepted = [r for r in results if 200 <= r[0] < 300]
    assert len(accepted) == 1, [r[0] for r in results]
    assert {(status, body) for status, body, _ in results if (status, body, _) not in accepted} == {
        (401, UNIFORM)
    }


# --- (b) a brand-new credential's first request -------------------------------------------


async def test_first_request_of_new_pairs_is_accepted(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """Each of five new pairs (five scopes, other slots): the first signed request passes.

    Regression: in Cluster the per-scope epoch marker was written at first use, so a
    request signed a moment before was refused with timestamp_expired.
    """
    a, b = deployment.a, deployment.b
    outcomes = []
    for i in range(5):
        pair = await register(session, a)
        gate = (a, b)[i % 2]
        outcomes.append(
            await bpc_call(
                session, gate.url, "GET", "/api/items", pair.headers("GET", "/api/items")
            )
        )
    assert outcomes == [(200, "")] * 5


async def test_first_proof_of_new_api_keys_is_accepted(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """Each of five new API keys: the first proof (challenge from A, sent to B) passes."""
    a, b = deployment.a, deployment.b
    outcomes = []
    for _ in range(5):
        key = await new_api_key(deployment.settings())
        header = proof_header(await challenge(session, a), key, "GET", TARGET)
        status, body, _ = await hmac_call(session, b, TARGET, header)
        outcomes.append((status, body if status != 200 else b""))
    assert outcomes == [(200, b"")] * 5


# --- (c) a credential rate limit over two processes ---------------------------------------


async def test_a_credential_limit_admits_exactly_the_limit_over_both(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """3 per 60 s per API key, 12 distinct proofs racing over A and B: exactly 3 admitted,
    the rest 429 with the RateLimit fields."""
    a, b = deployment.a, deployment.b
    key = await new_api_key(deployment.settings())
    headers = [await proof_for(session, (a, b)[i % 2], key, "/keyed") for i in range(12)]
    start = asyncio.Event()

    async def one(i: int) -> tuple[int, dict[str, str]]:
        await start.wait()
        return await ask(session, (b, a)[i % 2], "/keyed", headers[i])

    tasks = [asyncio.create_task(one(i)) for i in range(12)]
    await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks)
    assert sorted(status for status, _ in results) == [200] * KEYED_LIMIT + [429] * (
        12 - KEYED_LIMIT
    )
    for status, response_headers in results:
        if status == 429:
            assert_limited(status, response_headers, limit=KEYED_LIMIT, window=60)


# --- (d) a revocation through A, refused by B ---------------------------------------------


async def test_a_token_revoked_on_a_is_refused_by_b(
    deployment: Deployment, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Revoked through A's /revoke, the token is refused by B; the delay is reported."""
    a, b = deployment.a, deployment.b
    operator = await operator_token(session, a)
    samples = [await revocation_propagation(session, a, b, operator) for _ in range(TRIALS)]
    report_propagation(
        samples,
        label=f"Token revocation ({deployment.kind})",
        path=tmp_path / f"token_revocation_{deployment.kind}.json",
    )


# --- (e), (f) failovers under load ---------------------------------------------------------


@dataclass
class Load:
    """Fresh signed requests and immediate replays on the other process, in a loop, with
    every response recorded per signed request."""

    session: aiohttp.ClientSession
    gates: tuple[Authgate, Authgate]
    pair: Pair
    accepted: dict[str, list[str]] = field(default_factory=dict)  # nonce -> who admitted it
    captured: dict[str, dict[str, str]] = field(default_factory=dict)  # nonce -> headers
    fresh: list[tuple[int, str]] = field(default_factory=list)
    replays: list[tuple[int, str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, gate: Authgate, headers: dict[str, str]) -> tuple[int, str]:
        """One GET through ``gate``; a transport failure counts as status 0."""
        try:
            return await bpc_call(self.session, gate.url, "GET", "/api/items", headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, type(exc).__name__

    async def fresh_request(self, gate: Authgate) -> tuple[int, str]:
        """A newly signed request to ``gate``; if admitted, replayed at once to the other."""
        headers = self.pair.headers("GET", "/api/items")
        nonce = nonce_of(headers)
        result = await self.send(gate, headers)
        self.fresh.append(result)
        if 200 <= result[0] < 300:
            self.accepted.setdefault(nonce, []).append(f"fresh@{gate.port}")
            self.captured[nonce] = headers
            other = self.gates[1] if gate is self.gates[0] else self.gates[0]
            await self.replay(other, nonce)
        return result

    async def replay(self, gate: Authgate, nonce: str) -> None:
        """Send an admitted request again; record it."""
        result = await self.send(gate, self.captured[nonce])
        self.replays.append(result)
        if 200 <= result[0] < 300:
            self.accepted[nonce].append(f"replay@{gate.port}")

    async def worker(self, index: int) -> None:
        """Alternate processes until told to stop; replay an older request now and then."""
        turn = index
        while not self.stop.is_set():
            await self.fresh_request(self.gates[turn % 2])
            if self.captured and turn % 3 == 0:
                oldest = next(iter(self.captured))
                await self.replay(self.gates[(turn + 1) % 2], oldest)
            turn += 1
            await asyncio.sleep(0.01)

    async def replay_everything(self) -> None:
        """Every admitted request, once more to each process."""
        for nonce in list(self.captured):
            for gate in self.gates:
                await self.replay(gate, nonce)

    def twice_admitted(self) -> dict[str, list[str]]:
        """Nonces admitted more than once."""
        return {n: who for n, who in self.accepted.items() if len(who) > 1}

    def summary(self, label: str) -> str:
        """Counts of every outcome."""

        def count(results: list[tuple[int, str]]) -> dict[str, int]:
            out: dict[str, int] = {}
            for status, code in results:
                out[f"{status} {code}".strip()] = out.get(f"{status} {code}".strip(), 0) + 1
            return dict(sorted(out.items()))

        return (
            f"\n{label}: {len(self.accepted)} admitted; fresh {count(self.fresh)}; "
            f"replays {count(self.replays)}"
        )


def nonce_of(headers: dict[str, str]) -> str:
    """The nonce inside a signed request's ``X-BPC-Signed-Data`` (base64url JSON)."""
    data = headers["X-BPC-Signed-Data"]
    payload = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    return str(payload["nonce"])


# Fresh requests may meet a store that cannot answer (503) or, once authgate notices the
# data set changed and moves its epoch forward, a refusal of requests signed before that
# moment (401 timestamp_expired, the documented code of a request before the epoch).
FRESH_ALLOWED = {(503, "store_unavailable"), (401, "timestamp_expired")}
REPLAY_ALLOWED = {(401, "replay_detected"), (503, "store_unavailable"), (401, "timestamp_expired")}


def check_outcomes(load: Load) -> None:
    """No replay admitted; fresh requests 2xx or an allowed refusal; never another 5xx."""
    assert load.twice_admitted() == {}, "a nonce was admitted twice"
    unexpected_fresh = [r for r in load.fresh if not 200 <= r[0] < 300 and r not in FRESH_ALLOWED]
    assert unexpected_fresh == [], unexpected_fresh[:10]
    unexpected_replays = [r for r in load.replays if r not in REPLAY_ALLOWED]
    assert unexpected_replays == [], unexpected_replays[:10]


async def recovered(load: Load) -> None:
    """Bounded: a fresh request is admitted by A and by B again (no restart)."""
    deadline = time.monotonic() + RECOVERY_BOUND_SECONDS
    for gate in load.gates:
        while True:
            status, code = await load.fresh_request(gate)
            if status == 200:
                break
            assert time.monotonic() < deadline, f"{gate.url} never recovered: {status} {code}"
            await asyncio.sleep(0.1)


async def fault_under_load(
    session: aiohttp.ClientSession,
    gates: tuple[Authgate, Authgate],
    fault: Callable[[Pair], Awaitable[Failover]],
    label: str,
    *,
    settle: float,
) -> None:
    """Fresh signed requests and replays through both gates, ``fault`` in the middle; then
    recovery, every request replayed once more, and the outcome rules of ``check_outcomes``."""
    pair = await register(session, gates[0])
    await bpc_admitted(session, gates[1], pair)
    load = Load(session, gates, pair)
    workers = [asyncio.create_task(load.worker(i)) for i in range(LOAD_WORKERS)]
    try:
        await asyncio.sleep(settle)
        failover = await fault(pair)
        await asyncio.sleep(settle)
    finally:
        load.stop.set()
        await asyncio.gather(*workers)
    await recovered(load)
    await load.replay_everything()
    print(load.summary(f"{label} in {failover.seconds:.2f} s"))
    check_outcomes(load)


def fresh_topology(
    kind: str,
    sentinel_factory: Callable[..., SentinelSet],
    cluster_factory: Callable[..., ClusterSet],
) -> Topology:
    """A topology of the test's own, in the issue's layout: one replica per master. After
    the master is lost, the promoted replica has none left; it must serve at once anyway
    (its history never had a replica, so no acknowledgement is required there)."""
    if kind == "sentinel":
        return sentinel_factory()
    return cluster_factory()


@pytest.mark.parametrize("kind", KINDS)
async def test_failover_under_load_admits_no_replay_and_recovers(
    kind: str,
    sentinel_factory: Callable[..., SentinelSet],
    cluster_factory: Callable[..., ClusterSet],
    upstream_server: Upstream,
    tmp_path: Path,
    session: aiohttp.ClientSession,
) -> None:
    """SIGKILL of the master (Sentinel) or of the master holding the pair's nonces (Cluster)
    while fresh requests and replays flow through A and B: no replay admitted, nothing but
    2xx or 503 (or a before-epoch 401) meanwhile, and both admit fresh requests afterwards."""
    topology = fresh_topology(kind, sentinel_factory, cluster_factory)
    config = gate_config(topology, f"authgate-fo-{uuid.uuid4().hex[:8]}:", upstream_server.port)

    async def kill_master(pair: Pair) -> Failover:
        if isinstance(topology, SentinelSet):
            victim = await asyncio.to_thread(topology.kill_master)
            return await asyncio.to_thread(topology.wait_for_failover, victim.port)
        node = await asyncio.to_thread(topology.master_for_slot, key_slot("{" + pair.pair_id + "}"))
        await asyncio.to_thread(topology.kill, node)
        return await asyncio.to_thread(topology.wait_for_failover, node)

    with two_gates(config, tmp_path) as gates:
        await fault_under_load(session, gates, kill_master, f"{kind} failover", settle=1.0)


async def test_manual_sentinel_failover_never_admits_a_nonce_twice(
    sentinel_factory: Callable[..., SentinelSet],
    upstream_server: Upstream,
    tmp_path: Path,
    session: aiohttp.ClientSession,
) -> None:
    """``SENTINEL FAILOVER`` with the old master alive, requests and their replays
    interleaved over A and B until the old master is demoted and linked: every nonce is
    admitted at most once, then both processes admit fresh requests."""
    topology = sentinel_factory()
    config = gate_config(topology, f"authgate-mf-{uuid.uuid4().hex[:8]}:", upstream_server.port)

    async def manual_failover(_pair: Pair) -> Failover:
        old = await asyncio.to_thread(topology.manual_failover)
        return await asyncio.to_thread(topology.wait_for_failover, old, rejoined=True)

    with two_gates(config, tmp_path) as gates:
        await fault_under_load(
            session, gates, manual_failover, "manual Sentinel failover", settle=0.5
        )


# --- (g) the Cluster event bus -------------------------------------------------------------


def prefix_on(cluster: ClusterSet, port: int) -> str:
    """A key prefix whose every events channel hashes to a slot served by ``port``, so a
    subscription lands there whichever channel the client subscribes first."""
    views = {v.port: v for v in cluster.views()}
    slots = views[port].slots
    for _ in range(200_000):
        prefix = f"authgate-bus-{uuid.uuid4().hex[:8]}:"
        if all(
            any(low <= key_slot(f"{prefix}events:{c}") <= high for low, high in slots)
            for c in CHANNELS
        ):
            return prefix
    raise AssertionError(f"no prefix found for node {port}")


def subscribed_on(cluster: ClusterSet, prefix: str) -> list[int]:
    """Ports of the nodes holding a subscription to one of ``prefix``'s channels."""
    return [
        node.port
        for node in cluster.nodes
        if node.alive and node.command("PUBSUB", "CHANNELS", f"{prefix}*")
    ]


async def live_after_start(
    session: aiohttp.ClientSession, a: Authgate, b: Authgate, key: str
) -> float:
    """Seconds from B's start until it serves a key from its cache (it caches only while its
    bus is live): two requests in a row without a read of the key."""
    started = time.monotonic()
    previous = await api_key_reads(session, b)
    quiet = 0
    while quiet < 2:
        assert time.monotonic() - started < LIVE_BOUND_SECONDS, "B's event bus never went live"
        await hmac_admitted(session, a, b, key)
        reads = await api_key_reads(session, b)
        quiet = quiet + 1 if reads == previous else 0
        previous = reads
    return time.monotonic() - started


async def test_cluster_bus_is_live_at_start_and_carries_revocations_from_every_node(
    redis_cluster: ClusterSet,
    upstream_server: Upstream,
    tmp_path: Path,
    session: aiohttp.ClientSession,
) -> None:
    """For a prefix whose channels hash to each master in turn: B's bus is live right after
    start, and a token revoked on A is refused by B from its pushed revocation list (B reads
    no revocation from Redis)."""
    report = []
    for master in redis_cluster.masters():
        prefix = prefix_on(redis_cluster, master.port)
        await add_operator(redis_cluster.redis_settings(prefix))
        key = await new_api_key(redis_cluster.redis_settings(prefix))
        config = gate_config(redis_cluster, prefix, upstream_server.port)
        with two_gates(config, tmp_path) as (a, b):
            live_seconds = await live_after_start(session, a, b, key)
            landed = await asyncio.to_thread(subscribed_on, redis_cluster, prefix)
            assert landed, "no node holds the processes' subscriptions"
            operator = await operator_token(session, a)
            token = (await sign_in(session, a))["access_token"]
            assert await decision(session, b, token) == (200, "")
            reads_before = await store_calls(session, b, "revocations", "is_revoked")
            jti = jti_of(token)
            status, body = await post(session, f"{a.url}{PICO}/revoke", {"jti": jti}, operator)
            assert (status, body) == (200, {"revoked": jti})
            revoked_at = time.monotonic()
            while (answer := await decision(session, b, token)) != (401, "token_revoked"):
                assert answer == (200, ""), answer
                assert time.monotonic() - revoked_at < PROPAGATION_BOUND_SECONDS
            assert await store_calls(session, b, "revocations", "is_revoked") == reads_before
            report.append(
                f"channels on {master.port} (subscriptions found on {landed}): live "
                f"{live_seconds:.2f} s after start, revocation reached B in "
                f"{(time.monotonic() - revoked_at) * 1000:.1f} ms"
            )
    print("\nCluster event bus:\n  " + "\n  ".join(report))
