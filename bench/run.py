"""Speed on the request path: every row of the targets table, with its baselines, in one run.

    .venv/bin/python bench/run.py                  # ~13 minutes; writes docs/benchmarks.md
    .venv/bin/python bench/run.py --quick --no-write
    .venv/bin/python bench/run.py --only bpc,hmac --duration 5

Each scenario is a fresh server subprocess. With 2+ CPUs the server is pinned to CPU 0 and
the load generator (and this script, Redis and the proxies' upstream) to CPU 1; the
``workers-*`` scenarios are not pinned (authgate may use both cores, and shares them with
the generator). Baselines are measured in the same run: bare aiohttp, one raw ECDSA P-256
verify (``cryptography``, in a process pinned to CPU 0), "the limit" = 1 / (t_bare +
t_verify), and a minimal aiohttp pass-through proxy. After the rounds, the memory runs
(item 3 of the issue): RSS over a run of distinct URIs and tokens, and over a streamed
upload through the sidecar. Nothing here asserts: it measures and reports (targets in
``bench/targets.py``). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _extra in (ROOT, ROOT / "src"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))  # tests.support, bench.*, this checkout's authgate

from bench.memory import RssSampler, stream_upload
from bench.procs import (
    ALL_CPUS,
    LOADGEN_CPU,
    SERVER_CPU,
    Server,
    can_pin,
    children_cpu_seconds,
    core_times,
    cpu_seconds,
    machine_info,
    mint_tokens,
    placed,
    process_tree,
    python_server,
    tree_cpu_seconds,
)
from bench.report import Run, as_json, memory_line, render, result_line, write_doc
from bench.stateful import BenchRedis, check_bpc, check_hmac, command_deltas, presign_bpc
from bench.targets import MIB, summarize_rss
from tests.support import AUDIENCE, ISSUER, TokenFactory, free_port, raw_request

__all__ = ["ORIGINAL_URI", "authgate_config", "machine_info"]  # used by inproc, shared_state

DOC = ROOT / "docs" / "benchmarks.md"
ORIGINAL_URI = "/api/orders/42?expand=items"
UPLOAD_PATH = "/api/upload"


@dataclass(frozen=True)
class Scenario:
    """One measured scenario: which server, which config, which traffic."""

    name: str
    what: str  # one line for the page
    server: str  # "bare", "passthrough", "verify-only" or "authgate"
    traffic: str  # "static", "vary-uri", "vary-path", "tokens", "bpc" or "hmac"
    config: str = ""  # authgate: "jwt", "jwt-default", "redis" or "sidecar"
    workers: int = 1
    pinned: bool = True
    baselines: tuple[str, ...] = ()  # scenarios its ratio needs ("limit" needs bare + verify)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "bare",
            "`bench/bare_server.py`: aiohttp answering 200 with an empty body, no access log, "
            "the same requests as `warm-uris` (baseline)",
            "bare",
            "vary-uri",
        ),
        Scenario(
            "warm-uris-default",
            "authgate `/auth`, one ES256 token (cached), a new `X-Original-URI` every request, "
            "default settings: access log on, level INFO, JSON lines (to a file)",
            "authgate",
            "vary-uri",
            "jwt-default",
            baselines=("bare",),
        ),
        Scenario(
            "warm-uris",
            "as `warm-uris-default` with `logging.access_log: false`, level WARNING",
            "authgate",
            "vary-uri",
            "jwt",
            baselines=("bare",),
        ),
        Scenario(
            "cold",
            "authgate `/auth`, every request a new pre-minted ES256 token (parse + verify), "
            "access log off",
            "authgate",
            "tokens",
            "jwt",
            baselines=("bare", "limit"),
        ),
        Scenario(
            "verify-only",
            "reference, not a target: `bench/verify_only_server.py`, aiohttp whose handler "
            "checks the bearer token's ES256 signature and nothing else, the same fresh "
            "tokens as `cold`",
            "verify-only",
            "tokens",
            baselines=("bare", "limit"),
        ),
        Scenario(
            "bpc",
            "authgate `/auth`, BPC requests signed before the phase (each sent once, a new "
            "target each), Redis stores, access log off",
            "authgate",
            "bpc",
            "redis",
            baselines=("bare", "limit"),
        ),
        Scenario(
            "hmac",
            "authgate: `GET /challenge`, then `/auth` with the `AGProof` for a new target, per "
            "connection in turn (Python generator: wrk cannot compute the HMAC), Redis stores, "
            "access log off; req/s counts proofs",
            "authgate",
            "hmac",
            "redis",
            baselines=("bare",),
        ),
        Scenario(
            "passthrough",
            "`bench/passthrough_proxy.py`: minimal aiohttp pass-through proxy (pooled "
            "ClientSession, streaming both ways) to `bench/upstream.py` (1 KB answers), a new "
            "path every request (baseline)",
            "passthrough",
            "vary-path",
        ),
        Scenario(
            "sidecar",
            "authgate sidecar proxy, JWT (cached token), same upstream and requests as "
            "`passthrough`, access log off",
            "authgate",
            "vary-path",
            "sidecar",
            baselines=("passthrough",),
        ),
        Scenario(
            "workers-1",
            "as `warm-uris` with Redis stores and `server.workers: 1`; nothing pinned",
            "authgate",
            "vary-uri",
            "redis",
            pinned=False,
        ),
        Scenario(
            "workers-2",
            "as `workers-1` with `server.workers: 2` (SO_REUSEPORT); nothing pinned",
            "authgate",
            "vary-uri",
            "redis",
            workers=2,
            pinned=False,
            baselines=("workers-1",),
        ),
        Scenario(
            "warm",
            "information only, not a target (real traffic varies): one request repeated "
            "byte for byte, access log off",
            "authgate",
            "static",
            "jwt",
            baselines=("bare",),
        ),
    )
}
MEMORY_RUNS = ("memory-uris", "memory-upload")
MEMORY_URIS = 1_000_000  # distinct URIs the memory-uris run sends (the issue's million)


# --------------------------------------------------------------------------- configs


def authgate_config(pem: Path, port: int, *, access_log: bool) -> dict[str, Any]:
    """The JWT config of the forward-auth scenarios (``bench/inproc.py`` uses it too)."""
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "jwt": {"issuer": ISSUER, "audiences": [AUDIENCE], "signing_key_files": [str(pem)]},
        "logging": {
            "access_log": access_log,
            "level": "INFO" if access_log else "WARNING",
            "format": "json",
        },
    }


def scenario_config(
    kind: str, pem: Path, port: int, *, workers: int, redis: BenchRedis | None, upstream: str
) -> dict[str, Any]:
    """authgate's config for a scenario; every one stops at once on SIGINT (no drain
    delay: nothing balances load here), which does not touch the request path."""
    if kind == "jwt-default":
        config: dict[str, Any] = authgate_config(pem, port, access_log=True)
        del config["logging"]  # what a user gets
    else:
        config = authgate_config(pem, port, access_log=False)
    config["server"].update(shutdown_delay_seconds=0, drain_timeout_seconds=2, workers=workers)
    if kind == "redis":
        assert redis is not None
        config.update(redis.config())
    if kind == "sidecar":
        config["proxy"] = {"upstream": upstream}
    return config


# --------------------------------------------------------------------------- load


@dataclass
class LoadSpec:
    """How the load generator is driven."""

    generator: str  # "wrk" or "python"
    connections: int
    threads: int


@dataclass
class Traffic:
    """What the generator sends in one phase."""

    mode: str  # static, vary-uri, vary-path, tokens, requests, hmac, mem
    headers: list[str]
    path: str = "/auth"
    file: Path | None = None
    start: int = 0
    repeat: int = 1
    hmac_key: str = ""


def generator_argv(spec: LoadSpec, port: int, seconds: float, t: Traffic) -> list[str]:
    """wrk (``bench/auth.lua``) or ``bench/loadgen.py`` arguments for one phase."""
    python = spec.generator == "python" or t.mode == "hmac"
    if not python:
        argv = ["wrk", "-t", str(spec.threads), "-c", str(spec.connections)]
        argv += ["-d", f"{max(1, round(seconds))}s", "--timeout", "10s"]
        argv += ["-s", str(BENCH / "auth.lua")]
        for h in t.headers:
            argv += ["-H", h]
        argv.append(f"http://127.0.0.1:{port}{t.path}")
        modes = {
            "static": [],
            "vary-uri": ["--", "--vary-uri"],
            "vary-path": ["--", "--vary-path"],
            "tokens": ["--", "tokens", str(t.file), str(t.start), str(spec.threads)],
            "requests": ["--", "requests", str(t.file), str(t.start)],
            "mem": ["--", "mem", str(t.file), str(t.repeat)],
        }
        return argv + modes[t.mode]
    argv = [sys.executable, str(BENCH / "loadgen.py"), "--port", str(port), "--path", t.path]
    argv += ["--connections", str(spec.connections), "--duration", str(seconds)]
    varied = {"vary-uri": "x-original-uri:", "tokens": "authorization:", "mem": "authorization:"}
    for h in t.headers:
        if t.mode in varied and h.lower().startswith(varied[t.mode]):
            continue
        argv += ["--header", h]
    argv += {
        "static": [],
        "vary-uri": ["--vary-uri"],
        "vary-path": ["--vary-path"],
        "tokens": ["--tokens-file", str(t.file), "--start", str(t.start)],
        "requests": ["--requests-file", str(t.file), "--start", str(t.start)],
        "mem": ["--mem-tokens", str(t.file), "--repeat", str(t.repeat)],
        "hmac": ["--hmac-key", t.hmac_key],
    }[t.mode]
    return argv


def run_load(
    spec: LoadSpec,
    port: int,
    seconds: float,
    traffic: Traffic,
    cpus: set[int] | None,
    *,
    stop_when: Callable[[], bool] | None = None,
) -> tuple[dict[str, Any], float, str]:
    """Run the generator once; returns its WRKJSON record, its CPU seconds and its name.

    With ``stop_when``, it is asked every half second and the generator is stopped (SIGINT:
    wrk and ``bench/loadgen.py`` then end the run and report it) once it answers true;
    ``seconds`` is then the longest the run may last.
    """
    argv = generator_argv(spec, port, seconds, traffic)
    before = children_cpu_seconds()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=placed(cpus),  # noqa: PLW1509 - only sets the CPU affinity
    ) as proc:
        if stop_when is not None:
            while proc.poll() is None:
                time.sleep(0.5)
                if stop_when():
                    proc.send_signal(signal.SIGINT)
                    break
        try:
            stdout, stderr = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
    cpu = children_cpu_seconds() - before
    name = "wrk" if argv[0] == "wrk" else "loadgen.py"
    for line in stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON ") :]), cpu, name
    raise RuntimeError(f"{name} gave no result:\n{stdout}\n{stderr}")


_METRIC = re.compile(r"^(authgate_[a-z_]+?)(?:\{(.*)\})? (\S+)$")


def metrics_snapshot(port: int) -> dict[str, float]:
    """The authgate counters that tell whether a run measured what it claims."""
    req = b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    _, _, body = raw_request(port, req)
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        m = _METRIC.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        key = ""
        if name == "authgate_cache_lookups_total" and 'cache="jwt"' in labels:
            key = "jwt-hit" if 'result="hit"' in labels else "jwt-miss"
        elif name == "authgate_decisions_total":
            key = "granted" if 'outcome="granted"' in labels else "denied"
        elif name == "authgate_store_operation_duration_seconds_count":
            key = "store-calls"
        if key:
            out[key] = out.get(key, 0.0) + value
    return out


def settled(port: int, timeout: float = 5.0) -> dict[str, float]:
    """authgate's counters once two snapshots 50 ms apart agree (in-flight work done)."""
    deadline = time.monotonic() + timeout
    last = metrics_snapshot(port)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = metrics_snapshot(port)
        if now == last:
            break
        last = now
    return last


def check_once(port: int, path: str, headers: Sequence[str]) -> None:
    """One request before loading: the scenario must answer 200, or it measures errors."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    status, _, body = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if status != 200:
        raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")


@dataclass
class Result:
    """One scenario's measurement."""

    scenario: str
    generator: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float
    core_busy: float  # the server's core when pinned, else both cores
    loadgen_cpu: float
    others_cpu: dict[str, float] = field(default_factory=dict)  # redis, upstream: CPU/s
    granted: int = 0
    store_calls: float = math.nan  # authgate's store calls per granted decision
    scripts: float = math.nan  # Redis scripts (EVALSHA...) per granted decision
    commands: float = math.nan  # Redis commands (scripts' own included) per granted decision
    challenges: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


TrafficFor = Callable[[str, dict[str, Any] | None], Traffic]


def measure(
    scn: Scenario,
    server: Server,
    spec: LoadSpec,
    *,
    duration: float,
    warmup: float,
    traffic_for: TrafficFor,
    check: Callable[[int], None],
    others: dict[str, int],
    redis: BenchRedis | None,
) -> Result:
    """Start the server, check one request, warm up, measure, stop it."""
    gen_cpus = {LOADGEN_CPU} if scn.pinned and can_pin() else set(ALL_CPUS) or None
    with server.running():
        assert server.proc is not None
        check(server.port)
        warm, _, _ = run_load(spec, server.port, warmup, traffic_for("warmup", None), gen_cpus)
        traffic = traffic_for("measure", warm)
        authgate = scn.server == "authgate"
        before = metrics_snapshot(server.port) if authgate and scn.workers == 1 else {}
        stats0 = redis.commandstats() if redis is not None else {}
        pids = process_tree(server.proc.pid)
        cpu0 = tree_cpu_seconds(pids)
        other0 = {k: cpu_seconds(p) for k, p in others.items()}
        watched = {SERVER_CPU} if scn.pinned and can_pin() else set(ALL_CPUS)
        core0 = core_times(watched)
        rec, gen_cpu, gen_name = run_load(spec, server.port, duration, traffic, gen_cpus)
        core1 = core_times(watched)
        cpu1 = tree_cpu_seconds(pids)
        other1 = {k: cpu_seconds(p) for k, p in others.items()}
        # Requests still in flight when the generator stopped finish now: count them on
        # both sides (decisions and Redis commands) once the counters stand still.
        after = settled(server.port) if before else {}
        stats1 = redis.commandstats() if redis is not None else {}
    seconds = rec["duration_us"] / 1e6
    errors = sum(rec[f"errors_{k}"] for k in ("connect", "read", "write", "status", "timeout"))
    per_s = (lambda x: x / seconds) if seconds else (lambda x: 0.0)
    result = Result(
        scenario=scn.name,
        generator=gen_name,
        requests=rec["requests"],
        seconds=seconds,
        p50_ms=rec["p50_us"] / 1000,
        p99_ms=rec["p99_us"] / 1000,
        errors=errors,
        server_cpu=per_s(cpu1 - cpu0),
        core_busy=(core1[0] - core0[0]) / (core1[1] - core0[1]) if core1[1] > core0[1] else 0,
        loadgen_cpu=per_s(gen_cpu),
        others_cpu={k: per_s(other1[k] - other0[k]) for k in others},
        challenges=int(rec.get("challenges", 0)),
    )
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    if delta:
        result.granted = int(delta.get("granted", 0))
        hits, misses = int(delta.get("jwt-hit", 0)), int(delta.get("jwt-miss", 0))
        if hits + misses:
            result.notes.append(f"token cache hits {hits:,}, misses {misses:,}")
        if delta.get("denied"):
            result.notes.append(f"{int(delta['denied']):,} denied")
        if scn.config == "redis" and result.granted:
            result.store_calls = delta.get("store-calls", 0.0) / result.granted
    if stats1 and result.granted:
        scripts, commands = command_deltas(stats0, stats1)
        result.scripts = scripts / result.granted
        result.commands = commands / result.granted
    if traffic.mode in ("tokens", "requests"):
        result.notes.append(f"{rec.get('tokens_used', 0):,} pre-built used")
        if rec.get("token_wraps"):
            result.notes.append("pre-built list ran out and wrapped (replays)")
    if result.challenges:
        result.notes.append(f"{result.challenges:,} challenges fetched")
    if errors:
        result.notes.append(f"{errors:,} errors (non-2xx/socket)")
    if scn.pinned and can_pin():
        if result.core_busy - result.server_cpu > 0.15:
            result.notes.append("other processes ran on the server core (interference)")
        if result.core_busy < 0.95:
            result.notes.append("server core not saturated")
    if result.loadgen_cpu > 0.9:
        result.notes.append(f"generator at {100 * result.loadgen_cpu:.0f}% CPU: it may limit")
    for name, cpu in result.others_cpu.items():
        if cpu > 0.8:
            result.notes.append(f"{name} at {100 * cpu:.0f}% CPU: it may limit")
    return result


def verify_rate(seconds: float, cpus: set[int] | None) -> float:
    """Raw ECDSA P-256/SHA-256 verifies per second (``cryptography``), pinned like the server."""
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/src']\n"
        "from bench.bpc import raw_verify_rate\n"
        "print(raw_verify_rate(float(sys.argv[2])))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=placed(cpus),
    )
    return float(out.stdout.strip().splitlines()[-1])


def best_of(results: Sequence[Result]) -> Result:
    """The round with the most requests/s (interference only ever slows a run down)."""
    best = max(results, key=lambda r: r.rps)
    if len(results) > 1:
        others = ", ".join(f"{r.rps:,.0f}" for r in results)
        best.notes.insert(0, f"best of {len(results)} rounds ({others} req/s)")
    return best


# --------------------------------------------------------------------------- memory


def memory_uris(
    server: Server,
    spec: LoadSpec,
    tokens_file: Path,
    *,
    seconds: float,
    longest: float,
    tokens: int,
    repeat: int,
    uris: int,
) -> dict[str, Any]:
    """RSS while every request has a new URI and the tokens come round in turn: at least
    ``seconds``, until authgate has decided ``uris`` requests, at most ``longest`` seconds."""
    pin = {LOADGEN_CPU} if can_pin() else None
    traffic = Traffic("mem", [], file=tokens_file, repeat=repeat)
    traffic.headers = ["X-Original-Method: GET"]
    with server.running():
        assert server.proc is not None
        sampler = RssSampler(server.proc.pid, 1.0)
        before = metrics_snapshot(server.port)
        started = time.monotonic()

        def enough() -> bool:
            if time.monotonic() - started < seconds:
                return False
            now = metrics_snapshot(server.port)
            decided = sum(now.get(k, 0.0) - before.get(k, 0.0) for k in ("granted", "denied"))
            return decided >= uris

        with sampler.running():
            rec, _, gen = run_load(spec, server.port, longest, traffic, pin, stop_when=enough)
        after = metrics_snapshot(server.port)
    sent = int(rec["requests"])
    took = rec["duration_us"] / 1e6  # the run's length: at least ``seconds``
    summary = summarize_rss(sampler.samples)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    notes = [
        f"{sent:,} requests in {took:.0f} s, each a distinct URI (issue: {uris:,})",
        f"{min(tokens, -(-sent // repeat)):,} distinct tokens used of {tokens:,} "
        f"(each {repeat} times in a row, all in turn)",
        f"token cache hits {int(delta.get('jwt-hit', 0)):,}, misses "
        f"{int(delta.get('jwt-miss', 0)):,}",
    ]
    if sent < uris:
        notes.append(f"fewer distinct URIs than {uris:,}: the server's rate x {longest:.0f} s")
    errors = sum(rec[f"errors_{k}"] for k in ("connect", "read", "write", "status", "timeout"))
    if errors:
        notes.append(f"{errors:,} errors (non-2xx/socket)")
    return {
        "run": "memory-uris",
        "generator": gen,
        "rss": summary,
        "flat": summary.flat,
        "notes": notes,
    }


def memory_upload(server: Server, token: str, total: int) -> dict[str, Any]:
    """RSS while one chunked upload of ``total`` bytes streams through the sidecar."""
    with server.running():
        assert server.proc is not None
        sampler = RssSampler(server.proc.pid, 0.05)
        with sampler.running():
            status, body, seconds = stream_upload(
                server.port, UPLOAD_PATH, [f"Authorization: Bearer {token}"], total
            )
    summary = summarize_rss(sampler.samples)
    received = json.loads(body).get("bytes") if status == 200 else None
    notes = [
        f"{total / MIB:,.0f} MiB sent chunked in 64 KiB chunks in {seconds:.1f} s "
        f"({total / MIB / seconds:,.0f} MiB/s); answer {status}, upstream received "
        + (f"{received:,} bytes" if received is not None else f"nothing ({body[:100]!r})")
    ]
    if received is not None and received != total:
        notes.append("upstream byte count differs from the bytes sent")
    return {
        "run": "memory-upload",
        "generator": "bench/memory.py",
        "rss": summary,
        "flat": summary.bounded,
        "notes": notes,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short check of everything (~3 min)")
    p.add_argument("--duration", type=float, help="measured seconds per scenario (10)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per scenario (3)")
    p.add_argument("--rounds", type=int, help="interleaved rounds, best reported (3)")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (one core: 1)")
    p.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk when installed, else bench/loadgen.py (hmac is always loadgen.py)",
    )
    names = ",".join([*SCENARIOS, *MEMORY_RUNS])
    p.add_argument(
        "--only",
        "--scenarios",
        dest="only",
        help=f"comma-separated subset of {names}; the baselines their ratios need are added",
    )
    p.add_argument("--skip-memory", action="store_true", help="no memory runs")
    p.add_argument(
        "--memory-seconds",
        type=float,
        help="memory-uris: at least this long (60), then until 1,000,000 URIs are decided, "
        "at most three times this long",
    )
    p.add_argument("--memory-tokens", type=int, help="distinct tokens of memory-uris (100000)")
    p.add_argument("--memory-repeat", type=int, default=10, help="requests per token in a row")
    p.add_argument("--upload-mib", type=int, help="memory-upload size in MiB (1024)")
    p.add_argument("--verify-seconds", type=float, help="raw verify timing per round (2)")
    p.add_argument("--output", type=Path, default=DOC, help="the results page")
    p.add_argument("--no-write", action="store_true", help="print only, leave the page alone")
    p.add_argument("--json", type=Path, help="also write every round's numbers as JSON")
    p.add_argument(
        "--profile",
        choices=[n for n, s in SCENARIOS.items() if s.config],
        help="afterwards, profile authgate serving this scenario (py-spy or cProfile)",
    )
    p.add_argument("--profiler", choices=("auto", "py-spy", "cprofile"), default="auto")
    p.add_argument("--profile-top", type=int, default=25)
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "duration": (2.0, 10.0),
        "warmup": (1.0, 3.0),
        "rounds": (1, 3),
        "memory_seconds": (10.0, 60.0),
        "memory_tokens": (20_000, 100_000),
        "upload_mib": (64, 1024),
        "verify_seconds": (0.5, 2.0),
    }
    for name, (short, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    return args


def selected(only: str | None, skip_memory: bool) -> tuple[list[str], list[str]]:
    """(scenarios in run order, memory runs) for ``--only``, with the baselines needed."""
    if not only:
        return list(SCENARIOS), [] if skip_memory else list(MEMORY_RUNS)
    wanted = {s.strip() for s in only.split(",") if s.strip()}
    unknown = wanted - set(SCENARIOS) - set(MEMORY_RUNS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}")
    for name in list(wanted):
        if name in SCENARIOS:
            wanted |= {b if b != "limit" else "bare" for b in SCENARIOS[name].baselines}
    runs = [m for m in MEMORY_RUNS if m in wanted and not skip_memory]
    return [n for n in SCENARIOS if n in wanted], runs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios, memory_runs = selected(args.only, args.skip_memory)
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    if generator == "wrk" and not shutil.which("wrk"):
        print("wrk not found (apt-get install wrk), or use --generator python", file=sys.stderr)
        return 2
    pin = can_pin()
    spec = LoadSpec(generator, args.connections, args.wrk_threads)
    info = machine_info()  # the load average before this run adds its own
    if pin:
        os.sched_setaffinity(0, {LOADGEN_CPU})  # keep this orchestrator off the server's core
    side = {LOADGEN_CPU} if pin else None  # Redis, upstream, signing helpers' home
    command = ".venv/bin/python bench/run.py" + (
        " " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""
    )
    print(
        f"generator={generator} pinned={pin} connections={args.connections} "
        f"duration={args.duration}s warmup={args.warmup}s rounds={args.rounds} "
        f"scenarios={','.join(scenarios)} memory={','.join(memory_runs) or '-'}",
        flush=True,
    )
    started = time.monotonic()
    results: list[Result] = []
    rounds: dict[str, list[Result]] = {name: [] for name in scenarios}
    verifies: list[float] = []
    memory: list[dict[str, Any]] = []
    prep: list[str] = []
    with tempfile.TemporaryDirectory(prefix="authgate-bench-") as tmpdir:
        tmp = Path(tmpdir)
        factory = TokenFactory()
        pem = factory.write_key(tmp)
        token = factory.mint(exp=int(time.time()) + 3600)
        bearer = f"Authorization: Bearer {token}"
        forward = [bearer, "X-Original-Method: GET", f"X-Original-URI: {ORIGINAL_URI}"]

        tokens_file = tmp / "tokens.txt"
        need = 0
        if "cold" in scenarios or args.profile == "cold":
            need = int(6_000 * (args.duration + args.warmup)) + 10_000
        if "verify-only" in scenarios:  # faster than cold: more tokens per phase
            need = max(need, int(12_000 * (args.duration + args.warmup)) + 10_000)
        if "memory-uris" in memory_runs:
            need = max(need, args.memory_tokens)
        if need:
            took = mint_tokens(pem, need, tokens_file)
            prep.append(f"{need:,} distinct tokens pre-minted ({took:.1f} s)")
            print(f"minted {need:,} tokens in {took:.1f}s", flush=True)

        redis: BenchRedis | None = None
        profile_text = ""
        upstream: Server | None = None
        try:
            if any(SCENARIOS[n].config == "redis" for n in scenarios):
                redis = BenchRedis(tmp / "redis").start(side)
            if {"passthrough", "sidecar"} & set(scenarios) or "memory-upload" in memory_runs:
                upstream = python_server("upstream", "upstream.py", free_port(), tmp, cpus=side)
                upstream.start()
            upstream_url = f"http://127.0.0.1:{upstream.port}" if upstream else ""
            others: dict[str, int] = {}
            if redis is not None:
                others["redis-server"] = redis.pid
            if upstream is not None and upstream.proc is not None:
                others["upstream"] = upstream.proc.pid
            bpc_counter = [0]

            def others_for(scn: Scenario) -> dict[str, int]:
                """The helper processes a scenario leans on, whose CPU is reported."""
                wanted = "redis-server" if scn.config == "redis" else "upstream"
                if scn.traffic != "vary-path" and scn.config != "redis":
                    return {}
                return {k: v for k, v in others.items() if k == wanted}

            presign_notes: list[str] = []

            def make_server(scn: Scenario) -> Server:
                port = free_port()
                cpus = {SERVER_CPU} if scn.pinned and pin else set(ALL_CPUS) or None
                if scn.server == "bare":
                    return python_server("bare", "bare_server.py", port, tmp, cpus=cpus)
                if scn.server == "verify-only":
                    argv = [
                        sys.executable,
                        str(BENCH / "verify_only_server.py"),
                        str(port),
                        str(pem),
                    ]
                    log = tmp / f"verify-only-{port}.log"
                    return Server("verify-only", argv, port, "/healthz", log, cpus)
                if scn.server == "passthrough":
                    return python_server(
                        "passthrough", "passthrough_proxy.py", port, tmp, upstream_url, cpus=cpus
                    )
                config = scenario_config(
                    scn.config, pem, port, workers=scn.workers, redis=redis, upstream=upstream_url
                )
                path = tmp / f"{scn.name}-{port}.yaml"
                path.write_text(yaml.safe_dump(config))
                path.chmod(0o600)
                argv = [sys.executable, "-m", "authgate", "serve", "--config", str(path)]
                log = tmp / f"{scn.name}-{port}.log"
                return Server(scn.name, argv, port, "/healthz", log, cpus)

            def traffic_for(scn: Scenario) -> TrafficFor:
                def build(phase: str, warm: dict[str, Any] | None) -> Traffic:
                    if scn.traffic == "vary-path":
                        return Traffic("vary-path", [bearer], path="/api/orders/0")
                    if scn.traffic == "tokens":
                        start = 0 if warm is None else warm["tokens_used"] + 2 * spec.connections
                        return Traffic("tokens", forward, file=tokens_file, start=start)
                    if scn.traffic == "hmac":
                        assert redis is not None
                        headers = ["X-Original-Method: GET"]
                        return Traffic("hmac", headers, hmac_key=redis.api_key)
                    if scn.traffic == "bpc":
                        assert redis is not None
                        seconds = args.warmup if warm is None else args.duration
                        rate = 12_000 if warm is None else warm["requests"] / args.warmup
                        count = int(max(1.5 * rate, 1_000) * seconds) + 2_000
                        file = tmp / f"bpc-{phase}.txt"
                        took = presign_bpc(redis, count, file, bpc_counter[0], set(ALL_CPUS))
                        bpc_counter[0] += count
                        if phase == "measure":
                            presign_notes.append(f"{count:,} in {took:.1f} s")
                        return Traffic("requests", [], file=file)
                    return Traffic(scn.traffic, forward)

                return build

            def check_for(scn: Scenario) -> Callable[[int], None]:
                if scn.traffic == "bpc":
                    assert redis is not None
                    return lambda port: check_bpc(redis, port)
                if scn.traffic == "hmac":
                    assert redis is not None
                    return lambda port: check_hmac(redis, port)
                if scn.traffic == "vary-path":
                    return lambda port: check_once(port, "/api/orders/check", [bearer])
                return lambda port: check_once(port, "/auth", forward)

            need_limit = any("limit" in SCENARIOS[n].baselines for n in scenarios)
            for round_no in range(1, args.rounds + 1):
                if need_limit:
                    verifies.append(verify_rate(args.verify_seconds, {SERVER_CPU} if pin else None))
                    print(f"round {round_no}: raw verify {verifies[-1]:,.0f}/s", flush=True)
                for name in scenarios:
                    scn = SCENARIOS[name]
                    print(f"round {round_no}/{args.rounds}: {name} ...", flush=True)
                    server = make_server(scn)
                    result = measure(
                        scn,
                        server,
                        spec,
                        duration=args.duration,
                        warmup=args.warmup,
                        traffic_for=traffic_for(scn),
                        check=check_for(scn),
                        others=others_for(scn),
                        redis=redis if scn.config == "redis" else None,
                    )
                    if scn.config == "jwt-default":
                        lines = sum(1 for _ in server.log_path.open("rb"))
                        result.notes.append(f"{lines:,} log lines written in all")
                    rounds[name].append(result)
                    print("  " + result_line(result), flush=True)
            results = [best_of(rs) for rs in rounds.values() if rs]
            if presign_notes:
                prep.append(
                    "BPC requests pre-signed per measured phase: " + ", ".join(presign_notes)
                )

            if "memory-uris" in memory_runs:
                longest = 3 * args.memory_seconds
                print(
                    f"memory-uris: {args.memory_seconds:.0f}-{longest:.0f} s, until "
                    f"{MEMORY_URIS:,} URIs ...",
                    flush=True,
                )
                server = make_server(SCENARIOS["warm-uris-default"])
                memory.append(
                    memory_uris(
                        server,
                        spec,
                        tokens_file,
                        seconds=args.memory_seconds,
                        longest=longest,
                        tokens=args.memory_tokens,
                        repeat=args.memory_repeat,
                        uris=MEMORY_URIS,
                    )
                )
                print("  " + memory_line(memory[-1]), flush=True)
            if "memory-upload" in memory_runs:
                print(f"memory-upload: {args.upload_mib} MiB ...", flush=True)
                server = make_server(SCENARIOS["sidecar"])
                memory.append(memory_upload(server, token, args.upload_mib * MIB))
                print("  " + memory_line(memory[-1]), flush=True)
            if args.profile:  # while the run's Redis and upstream still serve
                from bench.profiling import profile_scenario

                scn = SCENARIOS[args.profile]
                profile_text = profile_scenario(
                    scn,
                    make_server(scn),
                    spec,
                    traffic_for(scn),
                    check_for(scn),
                    seconds=args.duration,
                    top=args.profile_top,
                    profiler=args.profiler,
                    run_load=run_load,
                )
        finally:
            if upstream is not None:
                upstream.stop()
            if redis is not None:
                redis.stop()

        elapsed = time.monotonic() - started
        run = Run(
            results=results,
            verifies=verifies,
            memory=memory,
            info=info,
            command=command,
            args=vars(args),
            generator=generator,
            pinned=pin,
            prep=prep,
            elapsed=elapsed,
            scenarios=SCENARIOS,
            round_rps={name: [r.rps for r in rs] for name, rs in rounds.items() if rs},
        )
        print()
        print(render(run))
        if (results or memory) and not args.no_write:
            write_doc(render(run), args.output)
            print(f"wrote {args.output}")
        if args.json:
            args.json.write_text(json.dumps(as_json(run, rounds), indent=2, default=str))
        if profile_text:
            print()
            print(profile_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
