"""Shared state on real Redis: store calls per request, revocation propagation, replica acks.

    .venv/bin/python bench/shared_state.py                  # ~5 minutes, writes docs/benchmarks.md
    .venv/bin/python bench/shared_state.py --duration 10 --trials 10 --no-write

Three measurements, in one run, each on Redis processes this script starts (the shared Redis
on 127.0.0.1:6379 is never touched); everything listens on 127.0.0.1:

1. **Redis calls per accepted request.** A dedicated ``redis-server``, two authgate processes
   (Redis stores, forward-auth only: ``GET /auth`` as nginx ``auth_request`` sends it). Load
   phases of one credential type each (JWT, BPC, HMAC: ``--duration / 3`` seconds each), then
   the mix (``--duration`` seconds: 60 % JWT, 20 % BPC, 20 % HMAC), after an idle phase that
   measures background traffic. Counted on the server: ``INFO commandstats`` deltas, and a
   ``redis-cli monitor`` capture that tells a client's commands from those a Lua script ran,
   and the event bus's heartbeat ``PUBLISH`` from everything else. Round trips = top-level
   commands minus ``WAIT``\\ s (they ride the script's pipeline) minus commands queued inside
   ``MULTI``.
2. **Revocation propagation A -> B** on standalone, Sentinel and Cluster
   (``tests/redis_topology``): ``test_revocation_replicas.revocation_propagation`` per trial.
3. **Cost of replica acknowledgement** on nonce writes (Sentinel, master + one replica): HMAC
   proofs with ``stores.redis.replica_acks: 0`` vs ``1``, interleaved rounds, accepted/s and
   the nonce store call's latency from authgate's own metrics.

Helpers come from the integration tests (processes, configs, credentials, measurement);
nothing here asserts beyond what those helpers check. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for extra in (ROOT, ROOT / "src"):
    if str(extra) not in sys.path:
        sys.path.insert(1, str(extra))

import aiohttp
import redis
from run import machine_info  # bench/run.py: what the numbers were measured on
from tests.integration.conftest import Authgate, report_propagation
from tests.integration.test_bpc_replicas import Pair, register
from tests.integration.test_revocation_replicas import revocation_propagation
from tests.integration.test_topologies import (
    add_operator,
    gate_config,
    new_api_key,
    operator_token,
    two_gates,
)
from tests.redis_topology import ClusterSet, RedisNode, SentinelSet
from tests.support import AUDIENCE, ISSUER, TokenFactory

from authgate.client.hmac_proof import proof_header
from authgate.config.model import RedisSettings
from bpc import replace_section  # bench/bpc.py: the marked-section writer

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- shared-state-bench:start -->", "<!-- shared-state-bench:end -->"
MIX = ("jwt", "bpc", "jwt", "hmac", "jwt")  # 60 % JWT, 20 % BPC, 20 % HMAC
KINDS = ("jwt", "bpc", "hmac")
JWT_TOKENS = 5
IDLE_SECONDS = 5.0
HEARTBEAT = b"events:_heartbeat:"


# --------------------------------------------------------------------------- topologies


class Standalone:
    """One ``RedisNode`` with the ``settings``/``redis_settings`` of the topology classes."""

    kind = "standalone"

    def __init__(self, directory: Path) -> None:
        self.node = RedisNode(directory)

    def start(self) -> Standalone:
        self.node.start()
        return self

    def stop(self) -> None:
        self.node.terminate()

    def settings(self, key_prefix: str, **overrides: Any) -> dict[str, Any]:
        return {"url": self.node.url, "key_prefix": key_prefix, **overrides}

    def redis_settings(self, key_prefix: str, **overrides: Any) -> RedisSettings:
        return RedisSettings.model_validate(self.settings(key_prefix, **overrides))


Topology = Standalone | SentinelSet | ClusterSet


def subdir(directory: Path, name: str) -> Path:
    path = directory / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def forward_auth_config(topology: Topology, prefix: str, **redis: Any) -> dict[str, Any]:
    """``test_topologies.gate_config`` without the sidecar proxy: forward-auth only."""
    config = gate_config(topology, prefix, 1)
    config.pop("proxy")
    config["stores"]["redis"].update(redis)
    return config


# --------------------------------------------------------------------------- HTTP client


class Http:
    """One keep-alive HTTP/1.1 connection speaking raw bytes (no client library)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(
        self, target: str, headers: Sequence[tuple[str, str]] = (), path: str = "/auth"
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        lines = [f"GET {path} HTTP/1.1", "Host: bench"]
        if target:
            lines += ["X-Original-Method: GET", f"X-Original-URI: {target}"]
        lines += [f"{k}: {v}" for k, v in headers]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await self.reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        body = await self.reader.readexactly(int(match.group(1))) if match else b""
        return int(head[9:12]), body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


# --------------------------------------------------------------------------- credentials


@dataclass
class Credentials:
    """A handful of JWTs, one BPC pair with a pool of pre-signed requests, one API key."""

    tokens: list[str]
    pair: Pair
    api_key: str
    bpc_pool: deque[tuple[str, dict[str, str]]] = field(default_factory=deque)
    signed_on_demand: int = 0
    counter: Iterator[int] = field(default_factory=itertools.count)

    def presign(self, count: int) -> float:
        """Replace the pool with ``count`` fresh signed requests; returns seconds taken."""
        started = time.perf_counter()
        self.bpc_pool.clear()
        for _ in range(count):
            target = f"/api/bpc/{next(self.counter)}"
            self.bpc_pool.append((target, self.pair.headers("GET", target)))
        return time.perf_counter() - started

    async def request(self, kind: str, conn: Http, tally: Tally) -> None:
        """One request of ``kind`` on ``conn``; HMAC first fetches its challenge."""
        n = next(self.counter)
        if kind == "jwt":
            target = f"/api/jwt/{n}?expand=items"
            headers = {"Authorization": f"Bearer {self.tokens[n % len(self.tokens)]}"}
        elif kind == "bpc":
            if self.bpc_pool:
                target, headers = self.bpc_pool.popleft()
            else:
                self.signed_on_demand += 1
                target = f"/api/bpc/{n}"
                headers = self.pair.headers("GET", target)
        else:
            status, body = await conn.send("", path="/challenge")
            tally.challenges += 1
            if status != 200:
                tally.refused[kind][f"challenge {status}"] += 1
                return
            target = f"/api/hmac/{n}"
            headers = {"Authorization": proof_header(json.loads(body), self.api_key, "GET", target)}
        started = time.perf_counter()
        status, body = await conn.send(target, list(headers.items()))
        if status == 200:
            tally.latencies_ms[kind].append((time.perf_counter() - started) * 1000)
        else:
            tally.refused[kind][f"{status} {body[:80]!r}"] += 1


@dataclass
class Tally:
    """What one load phase did, as the client saw it."""

    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    refused: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    challenges: int = 0
    seconds: float = 0.0

    def accepted(self, kind: str | None = None) -> int:
        return sum(len(self.latencies_ms[k]) for k in ([kind] if kind else KINDS))

    def refusals(self) -> int:
        return sum(sum(c.values()) for c in self.refused.values())


async def load(
    ports: Sequence[int],
    sequence: Sequence[str],
    seconds: float,
    concurrency: int,
    creds: Credentials,
) -> Tally:
    """Closed loop: ``concurrency`` keep-alive connections, alternating over ``ports``, each
    sending the next request of ``sequence`` (a per-connection offset) until time is up."""
    tally = Tally()
    deadline = time.monotonic() + seconds

    async def worker(i: int) -> None:
        conn = Http(ports[i % len(ports)])
        try:
            for step in itertools.count(i):
                if time.monotonic() >= deadline:
                    return
                await creds.request(sequence[step % len(sequence)], conn, tally)
        finally:
            await conn.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    tally.seconds = time.monotonic() - started
    return tally


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (inclusive method), NaN when empty."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


# --------------------------------------------------------------------------- server side


def commandstats(client: redis.Redis) -> dict[str, int]:
    """``INFO commandstats`` as command -> calls."""
    info = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


@dataclass
class Capture:
    """Commands seen by ``redis-cli monitor`` during a phase."""

    top: Counter[str] = field(default_factory=Counter)  # sent by clients (not the bench's own)
    lua: Counter[str] = field(default_factory=Counter)  # run by scripts
    heartbeats: int = 0  # the event bus's own PUBLISH
    queued: int = 0  # top-level commands inside MULTI ... EXEC (same round trip as EXEC)
    seconds: float = 0.0

    @property
    def round_trips(self) -> int:
        return sum(self.top.values()) - self.top["wait"] - self.queued - self.top["multi"]


_LINE = re.compile(rb'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"(?: "([^"]*)")?')


class Monitor:
    """``redis-cli monitor`` into a file for the length of a ``with`` block, parsed after."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.path = directory / f"monitor-{uuid.uuid4().hex[:8]}.txt"
        self.capture = Capture()

    @contextlib.contextmanager
    def running(self) -> Iterator[Capture]:
        cli = shutil.which("redis-cli") or "redis-cli"
        with self.path.open("wb") as out:
            proc = subprocess.Popen(
                [cli, "-h", "127.0.0.1", "-p", str(self.port), "monitor"], stdout=out
            )
        deadline = time.monotonic() + 5
        while self.path.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # "OK": MONITOR is on
        started = time.monotonic()
        try:
            yield self.capture
        finally:
            time.sleep(0.1)
            self.capture.seconds = time.monotonic() - started
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
            self._parse()
            self.path.unlink(missing_ok=True)

    def _parse(self) -> None:
        cap = self.capture
        in_multi: set[bytes] = set()
        with self.path.open("rb") as lines:
            for line in lines:
                m = _LINE.match(line)
                if m is None:
                    continue
                client, command, first = m.group(1), m.group(2).lower().decode(), m.group(3)
                if client == b"lua":
                    cap.lua[command] += 1
                elif command == "info" and first == b"commandstats":
                    continue  # the bench's own snapshot
                elif command == "publish" and first is not None and HEARTBEAT in first:
                    cap.heartbeats += 1
                else:
                    cap.top[command] += 1
                    if command == "multi":
                        in_multi.add(client)
                    elif command == "exec":
                        in_multi.discard(client)
                    elif client in in_multi:
                        cap.queued += 1


_METRIC = re.compile(r"^(authgate_\w+?)(?:\{(.*)\})? (\S+)$")


async def metrics(port: int) -> dict[str, float]:
    """authgate's /metrics as ``name{labels}`` -> value."""
    conn = Http(port)
    try:
        _, body = await conn.send("", path="/metrics")
    finally:
        await conn.close()
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        m = _METRIC.match(line)
        if m:
            labels = ",".join(sorted((m.group(2) or "").split(",")))  # one order everywhere
            out[f"{m.group(1)}{{{labels}}}"] = float(m.group(3))
    return out


async def metrics_sum(ports: Sequence[int]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for port in ports:
        total.update(await metrics(port))
    return dict(total)


def store_calls(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """authgate's own store calls made in between, as ``store.operation`` -> count."""
    out = {}
    for key, value in after.items():
        if key.startswith("authgate_store_operation_duration_seconds_count{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', key))
            delta = value - before.get(key, 0.0)
            if delta:
                out[f"{labels['store']}.{labels['operation']}"] = delta
    return out


async def bus_state(gates: Sequence[Authgate]) -> list[tuple[float, float]]:
    """(authgate_events_live, authgate_events_resubscriptions_total) of each process."""
    states = []
    for gate in gates:
        m = await metrics(gate.port)
        states.append(
            (
                m.get("authgate_events_live{}", -1),
                m.get("authgate_events_resubscriptions_total{}", -1),
            )
        )
    return states


def log_warnings(gates: Sequence[Authgate]) -> list[dict[str, Any]]:
    """Per process: its WARNING and ERROR log lines, as ``event (error)`` -> count."""
    out = []
    for gate in gates:
        seen: Counter[str] = Counter()
        for line in gate.logs().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                level = str(entry.get("level", "")).upper() if isinstance(entry, dict) else ""
                if level in ("WARNING", "ERROR", "CRITICAL"):
                    name = str(entry.get("event") or entry.get("msg"))
                    if entry.get("error"):
                        name += f" ({entry['error']})"
                    seen[name] += 1
        out.append(dict(seen))
    return out


async def wait_live(gates: Sequence[Authgate], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while any(live != 1 for live, _ in await bus_state(gates)):
        if time.monotonic() > deadline:
            raise RuntimeError("event bus not live")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- 1. calls


@dataclass
class Phase:
    """One load phase of part 1."""

    name: str
    tally: Tally
    stats: dict[str, int]
    capture: Capture
    authgate: dict[str, float]


def phase_row(p: Phase, processes: int) -> dict[str, Any]:
    """Per accepted request numbers of one phase."""
    accepted = p.tally.accepted()
    per = (lambda n: n / accepted) if accepted else (lambda n: float("nan"))
    heartbeat_cmds = p.capture.heartbeats
    all_cmds = sum(p.stats.values()) - p.stats.get("publish", 0) + p.capture.top["publish"]
    lat = [x for k in KINDS for x in p.tally.latencies_ms[k]]
    return {
        "phase": p.name,
        "seconds": round(p.tally.seconds, 1),
        "accepted": accepted,
        "by_kind": {k: p.tally.accepted(k) for k in KINDS if p.tally.accepted(k)},
        "refused": p.tally.refusals(),
        "refusals": {k: dict(c) for k, c in p.tally.refused.items() if c},
        "challenges": p.tally.challenges,
        "accepted_per_s": round(accepted / p.tally.seconds, 1) if p.tally.seconds else 0,
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
        "commands_per_request": round(per(all_cmds), 3),
        "top_level_per_request": round(per(sum(p.capture.top.values())), 3),
        "round_trips_per_request": round(per(p.capture.round_trips), 3),
        "top_level": {c: round(per(n), 3) for c, n in p.capture.top.most_common()},
        "inside_lua": {c: round(per(n), 3) for c, n in p.capture.lua.most_common()},
        "commandstats": dict(sorted(p.stats.items(), key=lambda kv: -kv[1])),
        "heartbeat_publish_per_s_per_process": round(
            heartbeat_cmds / p.capture.seconds / processes, 2
        ),
        "background_top_level_per_s": round(sum(p.capture.top.values()) / p.capture.seconds, 2),
        "authgate_store_calls_per_request": {
            k: round(per(v), 3) for k, v in sorted(p.authgate.items())
        },
    }


async def measure_phase(
    name: str,
    node: RedisNode,
    gates: Sequence[Authgate],
    creds: Credentials,
    sequence: Sequence[str],
    seconds: float,
    concurrency: int,
    directory: Path,
) -> Phase:
    ports = [g.port for g in gates]
    admin = node.client()
    try:
        m0 = await metrics_sum(ports)
        s0 = commandstats(admin)
        with Monitor(node.port, directory).running() as capture:
            if sequence:
                tally = await load(ports, sequence, seconds, concurrency, creds)
            else:
                await asyncio.sleep(seconds)
                tally = Tally(seconds=seconds)
        s1 = commandstats(admin)
        m1 = await metrics_sum(ports)
    finally:
        admin.close()
    delta = {k: v - s0.get(k, 0) for k, v in s1.items()}
    delta["info"] = delta.get("info", 0) - 1  # the "before" snapshot itself
    delta["monitor"] = delta.get("monitor", 0) - 1
    delta = {k: v for k, v in delta.items() if v}
    # commandstats' PUBLISH count mixes heartbeats with real events: the capture splits them.
    return Phase(name, tally, delta, capture, store_calls(m0, m1))


async def calls_per_request(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """Part 1 on a dedicated redis-server."""
    standalone = Standalone(directory / "redis").start()
    try:
        prefix = f"bench-calls-{uuid.uuid4().hex[:8]}:"
        factory = TokenFactory()
        key_file = factory.write_key(directory)
        config = forward_auth_config(standalone, prefix)
        config["jwt"] = {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "signing_key_files": [str(key_file)],
        }
        # BPC requests are signed before their phase; the window must cover the longest one.
        config["bpc"]["window_ms"] = min(600_000, int(args.duration * 2 + 60) * 1000)
        api_key = await new_api_key(standalone.redis_settings(prefix))
        with two_gates(config, subdir(directory, "calls")) as gates:
            a, b = gates
            await wait_live(gates)
            async with aiohttp.ClientSession() as session:
                pair = await register(session, a)
            exp = int(time.time()) + 3600
            creds = Credentials(
                tokens=[factory.mint(exp=exp, sub=f"user-{i}") for i in range(JWT_TOKENS)],
                pair=pair,
                api_key=api_key,
            )
            # Warm-up: every credential on both processes (pair and key read once each).
            creds.presign(200)
            warm = await load([a.port, b.port], MIX, 1.0, 4, creds)
            if warm.accepted() == 0 or warm.refusals():
                raise RuntimeError(f"warm-up refused: {warm.refused}")
            creds.signed_on_demand = 0
            one = max(1.0, args.duration / 3)
            plan: list[tuple[str, Sequence[str], float]] = [
                ("idle (no requests)", (), IDLE_SECONDS),
                ("JWT only", ("jwt",), one),
                ("BPC only", ("bpc",), one),
                ("HMAC only", ("hmac",), one),
                ("mix 60/20/20", MIX, float(args.duration)),
            ]
            phases = []
            presign_seconds = 0.0
            jwt_rate = 0.0
            for name, sequence, seconds in plan:
                if "bpc" in sequence:
                    share = sequence.count("bpc") / len(sequence)
                    # The mix runs at most at the JWT-only rate; BPC alone at --presign-rate.
                    rate = (jwt_rate if len(sequence) > 1 else 0) or args.presign_rate
                    presign_seconds += creds.presign(int(rate * 1.3 * share * seconds) + 100)
                print(f"  {name}: {seconds:.0f} s ...", flush=True)
                phase = await measure_phase(
                    name,
                    standalone.node,
                    gates,
                    creds,
                    sequence,
                    seconds,
                    args.concurrency,
                    directory,
                )
                if sequence == ("jwt",):
                    jwt_rate = phase.tally.accepted() / phase.tally.seconds
                phases.append(phase)
                print(json.dumps(phase_row(phase, 2)), flush=True)
            bus = await bus_state(gates)
            warnings = log_warnings(gates)
        return {
            "redis": subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, check=False
            ).stdout.split()[2],
            "concurrency": args.concurrency,
            "phases": [phase_row(p, 2) for p in phases],
            "bus": bus,
            "warnings": warnings,
            "bpc_signed_on_demand": creds.signed_on_demand,
            "bpc_presign_seconds": round(presign_seconds, 1),
        }
    finally:
        standalone.stop()


# --------------------------------------------------------------------------- 2. propagation


async def propagation(topology: Topology, trials: int, directory: Path) -> dict[str, Any]:
    """Part 2 on one topology: ``trials`` of test_revocation_replicas' measurement."""
    prefix = f"bench-rev-{uuid.uuid4().hex[:8]}:"
    await add_operator(topology.redis_settings(prefix))
    config = forward_auth_config(topology, prefix)
    with two_gates(config, subdir(directory, topology.kind)) as gates:
        a, b = gates
        await wait_live(gates)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            operator = await operator_token(session, a)
            samples = [await revocation_propagation(session, a, b, operator) for _ in range(trials)]
        bus = await bus_state(gates)
        warnings = log_warnings(gates)
    path = directory / f"propagation-{topology.kind}.json"
    report_propagation(samples, label=f"{topology.kind} token revocation", path=path)
    report: dict[str, Any] = json.loads(path.read_text())
    report["bus"] = bus
    report["warnings"] = warnings
    return report


# --------------------------------------------------------------------------- 3. replica acks


def bucket_quantile(buckets: dict[float, float], q: float) -> float:
    """Upper bound (ms) of the histogram bucket holding quantile ``q`` (0..1)."""
    total = buckets.get(math.inf, 0.0)
    if not total:
        return float("nan")
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound * 1000
    return math.inf


async def replica_acks(
    sentinel: SentinelSet, seconds: float, rounds: int, concurrency: int, directory: Path
) -> dict[str, Any]:
    """Part 3: HMAC proofs through processes with replica_acks 0 and 1, interleaved."""
    prefix = f"bench-acks-{uuid.uuid4().hex[:8]}:"
    api_key = await new_api_key(sentinel.redis_settings(prefix))
    results: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    with contextlib.ExitStack() as stack:
        groups = {
            acks: stack.enter_context(
                two_gates(
                    forward_auth_config(sentinel, prefix, replica_acks=acks),
                    subdir(directory, f"acks-{acks}"),
                )
            )
            for acks in (0, 1)
        }
        for gates in groups.values():
            await wait_live(gates)
        async with aiohttp.ClientSession() as session:
            pair = await register(session, groups[0][0])  # unused by HMAC, needed by Credentials
        creds = Credentials(tokens=["-"], pair=pair, api_key=api_key)
        for gates in groups.values():
            await load([g.port for g in gates], ("hmac",), 1.0, 4, creds)  # warm the key cache
        master = sentinel.master()
        for r in range(rounds):
            for acks, gates in groups.items():
                ports = [g.port for g in gates]
                print(f"  replica_acks {acks}, round {r + 1}: {seconds:.0f} s ...", flush=True)
                admin = master.client()
                m0, s0 = await metrics_sum(ports), commandstats(admin)
                tally = await load(ports, ("hmac",), seconds, concurrency, creds)
                m1, s1 = await metrics_sum(ports), commandstats(admin)
                admin.close()
                accepted = tally.accepted()
                op = '{operation="consume_limited",store="nonces"}'
                hist = "authgate_store_operation_duration_seconds"
                count = m1.get(f"{hist}_count{op}", 0) - m0.get(f"{hist}_count{op}", 0)
                total = m1.get(f"{hist}_sum{op}", 0) - m0.get(f"{hist}_sum{op}", 0)
                buckets: dict[float, float] = {}
                for key, value in m1.items():
                    if key.startswith(f"{hist}_bucket{{") and op[1:-1] in key:
                        le = re.search(r'le="([^"]+)"', key)
                        assert le is not None
                        buckets[float(le.group(1))] = value - m0.get(key, 0.0)
                lat = tally.latencies_ms["hmac"]
                results[acks].append(
                    {
                        "accepted": accepted,
                        "refused": tally.refusals(),
                        "refusals": {k: dict(c) for k, c in tally.refused.items() if c},
                        "accepted_per_s": accepted / tally.seconds,
                        "auth_p50_ms": pct(lat, 50),
                        "auth_p99_ms": pct(lat, 99),
                        "store_mean_ms": total / count * 1000 if count else float("nan"),
                        "store_p50_le_ms": bucket_quantile(buckets, 0.5),
                        "store_p99_le_ms": bucket_quantile(buckets, 0.99),
                        "wait_per_request": (s1.get("wait", 0) - s0.get("wait", 0)) / accepted
                        if accepted
                        else float("nan"),
                        "evalsha_per_request": (s1.get("evalsha", 0) - s0.get("evalsha", 0))
                        / accepted
                        if accepted
                        else float("nan"),
                    }
                )
                print(json.dumps(results[acks][-1]), flush=True)
        bus = {acks: await bus_state(gates) for acks, gates in groups.items()}
        warnings = {acks: log_warnings(gates) for acks, gates in groups.items()}
    return {"rounds": results, "seconds": seconds, "bus": bus, "warnings": warnings}


# --------------------------------------------------------------------------- report


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"  # NaN check


def per_request_text(row: dict[str, Any]) -> str:
    top = ", ".join(f"{c.upper()} {v:.2f}" for c, v in row["top_level"].items()) or "none"
    lua = ", ".join(f"{c.upper()} {v:.2f}" for c, v in row["inside_lua"].items())
    return top + (f" (inside the script: {lua})" if lua else "")


def render(results: dict[str, Any], command: str) -> str:
    info = results["machine"]
    calls = results["calls"]
    lines = [
        "## Shared state on Redis (calls per request, revocation propagation, replica acks)",
        "",
        f"Measured {results['date']} with `{command}` (one run; Redis {calls['redis']}, "
        "every Redis process started by the script on 127.0.0.1; the shared Redis untouched).",
        "",
        f"- Machine: {info['cpus']} CPUs, {info['cpu']}, kernel {info['kernel']}, Python "
        f"{info['python']}, aiohttp {info['aiohttp']}; load average before the run "
        f"{info['loadavg']}. Nothing pinned: both authgate processes, Redis and the load "
        "generator (this script, one asyncio loop, raw HTTP/1.1 keep-alive) share the 2 cores, "
        "so req/s here are not throughput numbers of record (see the JWT section for those).",
        "- authgate: two processes (`python -m authgate serve`), Redis stores, forward-auth only "
        "(`GET /auth` with `X-Original-URI`, as nginx `auth_request`), access log off, the "
        "config of `tests/integration/test_topologies.py` (`gate_config`) without the proxy.",
        "",
        "### Redis calls per accepted request (standalone Redis)",
        "",
        f"Closed loop, {calls['concurrency']} keep-alive connections split over the two "
        "processes. JWT: 5 ES256 tokens, a new `X-Original-URI` per request (no repeat grant; "
        "token cache hits). BPC: requests signed before the phase, each sent once. HMAC: "
        "`GET /challenge` then the proof, both on the connection, during the run. Counted on "
        "the Redis server: **commands** = `INFO commandstats` delta (includes the commands a "
        "Lua script runs, excludes the event bus heartbeats and the script's own `INFO`/"
        "`MONITOR`); **top-level** and **round trips** from a `redis-cli monitor` capture "
        "(round trips = top-level commands minus `WAIT`s, which ride the script's pipeline, "
        "minus commands queued in `MULTI`). Heartbeats are reported apart: they are per "
        "process per interval, not per request.",
        "",
        "| phase | s | accepted | refused | accepted/s | p50 / p99 ms | round trips / req | "
        "top-level / req | commands / req | heartbeat PUBLISH /s /process |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in calls["phases"]:
        idle = not row["accepted"]
        lines.append(
            f"| {row['phase']} | {row['seconds']:.0f} | {row['accepted']:,} | {row['refused']} "
            f"| {fmt(row['accepted_per_s'], 0)} | "
            + ("-" if idle else f"{fmt(row['p50_ms'])} / {fmt(row['p99_ms'])}")
            + " | "
            + (
                f"{row['background_top_level_per_s']:.2f}/s top-level"
                if idle
                else f"**{row['round_trips_per_request']:.3f}**"
            )
            + f" | {'-' if idle else fmt(row['top_level_per_request'], 3)} | "
            f"{'-' if idle else fmt(row['commands_per_request'], 3)} | "
            f"{row['heartbeat_publish_per_s_per_process']:.2f} |"
        )
    lines += ["", "Which commands, per accepted request (server side, monitor capture):", ""]
    for row in calls["phases"]:
        if row["accepted"]:
            lines.append(f"- {row['phase']}: {per_request_text(row)}")
    mix = calls["phases"][-1]
    lines += [
        "",
        "authgate's own store-call metrics agree (calls per accepted request, both processes): "
        + "; ".join(
            f"{row['phase']}: "
            + (
                ", ".join(
                    f"{k} {v:.3f}" for k, v in row["authgate_store_calls_per_request"].items()
                )
                or "none"
            )
            for row in calls["phases"]
            if row["accepted"]
        )
        + ".",
        "",
        f"Mix: {', '.join(f'{k} {v:,}' for k, v in mix['by_kind'].items())} accepted, "
        f"{mix['challenges']:,} challenges fetched; expected round trips per request "
        f"{(mix['by_kind'].get('bpc', 0) + mix['by_kind'].get('hmac', 0)) / max(1, mix['accepted']):.3f} "
        "(the BPC + HMAC share).",
        f"Event bus after the run: (authgate_events_live, authgate_events_resubscriptions_total) "
        f"= {', '.join(f'A{i}: ({int(live)}, {int(r)})' for i, (live, r) in enumerate(calls['bus']))} "
        "(healthy: 1 and 0). BPC requests signed on demand because the pool ran out: "
        f"{calls['bpc_signed_on_demand']}.",
        "",
        "### Revocation propagation A -> B",
        "",
        "`tests/integration/test_revocation_replicas.py`'s measurement: a wallet signs in on A, "
        "B accepts the token twice (now from its token cache), an operator revokes its `jti` "
        "through A's `POST /pico/revoke`; the delay runs from A's response to B's first 401 "
        "`token_revoked`, polling B over one keep-alive connection (resolution: one request "
        "round trip).",
        "",
        "| topology | trials | p50 ms | p99 ms | max ms | one accepted request to B, p50 ms "
        "| accepted by B after A's response | bus (live, resubscriptions) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for kind, rep in results["propagation"].items():
        stale = rep["accepted_after_revoke_response"]
        lines.append(
            f"| {kind} | {rep['trials']} | {rep['p50_ms']:.2f} | {rep['p99_ms']:.2f} | "
            f"{rep['max_ms']:.2f} | {rep['accepted_request_round_trip_p50_ms']:.2f} | "
            f"{stale['total']} (max {stale['max_in_one_trial']} in a trial) | "
            f"{', '.join(f'({int(live)}, {int(r)})' for live, r in rep['bus'])} |"
        )
    acks = results["acks"]
    lines += [
        "",
        "### Cost of replica acknowledgement on nonce writes (Sentinel: master + 1 replica)",
        "",
        f"HMAC proofs (challenge + proof) through two processes with `stores.redis.replica_acks: "
        f"0` and two with `1` (`replica_ack_timeout_seconds` 0.1), {len(acks['rounds'][0])} "
        f"interleaved rounds of {acks['seconds']:.0f} s each, same Sentinel set, same load. "
        "Store latency: authgate's `authgate_store_operation_duration_seconds` for "
        "`nonces.consume_limited` (mean from sum/count; p50/p99 as the upper bound of their "
        "histogram bucket). `WAIT` and `EVALSHA` per request counted on the master.",
        "",
        "| replica_acks | round | accepted/s | refused | /auth p50 / p99 ms | nonce store call "
        "mean ms | p50 / p99 <= ms | EVALSHA / req | WAIT / req |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, rows in acks["rounds"].items():
        for i, r in enumerate(rows):
            lines.append(
                f"| {n} | {i + 1} | {fmt(r['accepted_per_s'], 0)} | {r['refused']} | "
                f"{fmt(r['auth_p50_ms'])} / {fmt(r['auth_p99_ms'])} | {fmt(r['store_mean_ms'], 3)} "
                f"| {fmt(r['store_p50_le_ms'], 1)} / {fmt(r['store_p99_le_ms'], 1)} | "
                f"{fmt(r['evalsha_per_request'])} | {fmt(r['wait_per_request'])} |"
            )
    if acks["rounds"][0] and acks["rounds"][1]:
        rate = [statistics.mean(r["accepted_per_s"] for r in acks["rounds"][n]) for n in (0, 1)]
        store = [statistics.mean(r["store_mean_ms"] for r in acks["rounds"][n]) for n in (0, 1)]
        lines += [
            "",
            f"Mean over rounds: {rate[0]:,.0f}/s with 0 acks, {rate[1]:,.0f}/s with 1 "
            f"({(rate[1] / rate[0] - 1) * 100:+.1f}%); nonce store call {store[0]:.3f} ms vs "
            f"{store[1]:.3f} ms ({store[1] - store[0]:+.3f} ms). With acks the nonce write is "
            "still one round trip (EVALSHA and WAIT in one pipeline) but two commands.",
        ]
    lines += ["", "### Notes", "", *notes(results)]
    return "\n".join(lines)


def notes(results: dict[str, Any]) -> list[str]:
    """What the run itself says beyond the tables: heartbeat rate, warnings logged."""
    out = []
    idle = results["calls"]["phases"][0]
    configured = RedisSettings.model_fields["event_heartbeat_seconds"].default
    out.append(
        f"- Event bus heartbeats: {idle['heartbeat_publish_per_s_per_process']:.2f} PUBLISH/s "
        f"per process when idle, with `event_heartbeat_seconds` at its default {configured} "
        f"({1 / configured:.0f}/s expected). Idle, nothing else reached Redis "
        f"({idle['background_top_level_per_s']:.2f} other top-level commands/s)."
    )
    scripted = [r for r in results["calls"]["phases"] if r["inside_lua"].get("info")]
    if scripted:
        out.append(
            "- Every nonce write runs `INFO replication` inside its Lua script (the store-epoch "
            "check compares the replication id): one `INFO` per BPC/HMAC request on the server "
            "("
            + ", ".join(f"{r['phase']}: {r['inside_lua']['info']:.2f}/req" for r in scripted)
            + "). Not a round trip, but the bulk of the gap between commands and round trips."
        )
    logged = [("calls (standalone)", results["calls"]["warnings"])]
    logged += [(f"propagation ({k})", r["warnings"]) for k, r in results["propagation"].items()]
    logged += [(f"replica_acks {k}", w) for k, w in results["acks"]["warnings"].items()]
    for part, per_process in logged:
        if any(per_process):
            text = "; ".join(
                f"process {i}: " + ", ".join(f"{name} x{n}" for name, n in w.items())
                for i, w in enumerate(per_process)
                if w
            )
            out.append(f"- Warnings logged during {part}: {text}.")
    if not any(w for _, per_process in logged for w in per_process):
        out.append("- No authgate process logged a warning.")
    return out


def write_section(body: str) -> None:
    """Replace (or append) this script's marked section of docs/benchmarks.md."""
    note = "<!-- Generated by bench/shared_state.py; rewritten on each run. -->"
    replace_section(DOC, START, END, f"{START}\n{note}\n{body}\n{END}")


async def main_async(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    info = machine_info()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": info,
        "args": vars(args),
    }
    print("1. Redis calls per accepted request (standalone) ...", flush=True)
    results["calls"] = await calls_per_request(args, directory)
    print("2. revocation propagation ...", flush=True)
    results["propagation"] = {}
    standalone = Standalone(directory / "redis-rev").start()
    try:
        results["propagation"]["standalone"] = await propagation(standalone, args.trials, directory)
    finally:
        standalone.stop()
    sentinel = SentinelSet().start()
    try:
        results["propagation"]["sentinel"] = await propagation(sentinel, args.trials, directory)
        print("3. replica acknowledgement cost (Sentinel) ...", flush=True)
        results["acks"] = await replica_acks(
            sentinel, max(2.0, args.duration / 6), args.ack_rounds, args.concurrency, directory
        )
    finally:
        sentinel.stop()
    cluster = ClusterSet().start()
    try:
        results["propagation"]["cluster"] = await propagation(cluster, args.trials, directory)
    finally:
        cluster.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=60, help="mixed-load seconds (single-type phases: 1/3)"
    )
    parser.add_argument("--trials", type=int, default=30, help="propagation trials per topology")
    parser.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--ack-rounds", type=int, default=2, help="rounds per replica_acks value")
    parser.add_argument(
        "--presign-rate", type=float, default=1500, help="BPC requests/s to pre-sign at least"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--json", type=Path, help="also write every number as JSON")
    args = parser.parse_args()
    command = ".venv/bin/python bench/shared_state.py" + "".join(
        f" {a}" for a in sys.argv[1:] if a not in ("--no-write", "--keep")
    )
    directory = Path(tempfile.mkdtemp(prefix="authgate-shared-state-"))
    try:
        results = asyncio.run(main_async(args, directory))
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    section = render(results, command)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not args.no_write:
        write_section(section)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    os.environ.pop("AUTHGATE_CONFIG", None)
    main()
