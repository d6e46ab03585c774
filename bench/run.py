"""JWT forward-auth benchmark: bare aiohttp vs authgate ``/auth``, in one run.

    .venv/bin/python bench/run.py                 # all scenarios, writes docs/benchmarks.md
    .venv/bin/python bench/run.py --duration 5 --no-write
    .venv/bin/python bench/run.py --profile       # also cProfile authgate's warm /auth path

Scenarios (each server a fresh subprocess pinned to CPU 0, the load generator on CPU 1):

* ``bare``        aiohttp app answering 200 with an empty body, no access log: the ceiling.
* ``warm``        authgate ``/auth``, one valid ES256 token, the same request each time
                  (information only: real traffic varies), access log off, level WARNING.
* ``warm-uris``   as ``warm`` but every request has a new ``X-Original-URI``: the decision
                  path real traffic takes, with the verified-token cache hit.
* ``cold``        authgate ``/auth``, every request a new pre-minted token (cache miss: full
                  parse + ECDSA verify), access log off.
* ``warm-log``    as ``warm`` but with the defaults a user gets: access log on, level INFO,
                  JSON lines written to a file.

The ratio of each scenario is its requests/s divided by ``bare``'s requests/s in the same
run. The target (issue) is ``warm`` >= 0.8. Nothing here asserts: it measures and reports.
See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support: the token factory and test issuer

from tests.support import AUDIENCE, ISSUER, TokenFactory, free_port, raw_request

from authgate.crypto.keys import SigningKey

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- jwt-bench:start -->"
END_MARK = "<!-- jwt-bench:end -->"
TARGET_RATIO = 0.8
ORIGINAL_URI = "/api/orders/42?expand=items"
SERVER_CPU = 0
LOADGEN_CPU = 1
SCENARIOS = ("bare", "warm", "warm-uris", "cold", "warm-log")


# --------------------------------------------------------------------------- helpers


def can_pin() -> bool:
    """Whether server and load generator can each get a core of their own."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    return {SERVER_CPU, LOADGEN_CPU} <= os.sched_getaffinity(0)


def pinned(cpu: int, enabled: bool) -> Any:
    """A ``preexec_fn`` pinning the child to ``cpu`` (or ``None``)."""
    if not enabled:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a running process (all threads), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def core_times(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat (softirq for loopback included)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) for v in line.split()[1:9]]
                idle = values[3] + values[4]  # idle + iowait
                return sum(values) - idle, sum(values)
    return 0, 0


def children_cpu_seconds() -> float:
    """user + system CPU of reaped children so far (delta around a generator run)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    import aiohttp

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mhz = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = f" @ {float(line.split(':', 1)[1]):.0f} MHz"
                break
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout or out.stderr).splitlines()[0].split(" [")[0] if out else ""
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model + mhz,
        "kernel": platform.release(),
        "python": platform.python_version() + f" ({platform.python_implementation()})",
        "aiohttp": aiohttp.__version__,
        "wrk": wrk_version or "not installed",
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --------------------------------------------------------------------------- tokens


_MINTER: dict[str, TokenFactory] = {}  # per worker process


def _mint_init(pem: str) -> None:
    _MINTER["factory"] = TokenFactory(key=SigningKey.from_file(pem))


def _mint_chunk(n: int) -> list[str]:
    factory = _MINTER["factory"]
    exp = int(time.time()) + 3600
    return [factory.mint(exp=exp) for _ in range(n)]


def mint_tokens(pem: Path, count: int, path: Path, workers: int) -> float:
    """Write ``count`` distinct valid tokens (one per line); returns seconds taken."""
    started = time.perf_counter()
    chunk = 5000
    sizes = [chunk] * (count // chunk) + ([count % chunk] if count % chunk else [])
    with (
        concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, initializer=_mint_init, initargs=(str(pem),)
        ) as pool,
        path.open("w") as out,
    ):
        for tokens in pool.map(_mint_chunk, sizes):
            out.write("\n".join(tokens))
            out.write("\n")
    return time.perf_counter() - started


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """A server subprocess."""

    name: str
    argv: list[str]
    port: int
    ready_path: str
    log_path: Path
    pin: bool
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
        env["PYTHONUNBUFFERED"] = "0"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                preexec_fn=pinned(SERVER_CPU, self.pin),  # noqa: PLW1509 - only pins the CPU
            )
        deadline = time.monotonic() + timeout
        request = f"GET {self.ready_path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_path.read_text()}")
            with contextlib.suppress(OSError):
                if raw_request(self.port, request.encode())[0] == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @contextlib.contextmanager
    def running(self) -> Iterator[Server]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def authgate_config(pem: Path, port: int, *, access_log: bool) -> dict[str, Any]:
    """The authgate config of a scenario."""
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "jwt": {"issuer": ISSUER, "audiences": [AUDIENCE], "signing_key_files": [str(pem)]},
        "logging": {
            "access_log": access_log,
            "level": "INFO" if access_log else "WARNING",
            "format": "json",
        },
    }


def metrics_snapshot(port: int) -> dict[str, float]:
    """authgate's counters that tell whether a run measured what it claims."""
    req = b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    _, _, body = raw_request(port, req)
    out: dict[str, float] = {}
    pattern = re.compile(
        r'^(authgate_cache_lookups_total\{cache="(jwt)",result="(hit|miss)"\}'
        r'|authgate_decisions_total\{outcome="(granted|denied)"[^}]*\})\s+(\S+)$'
    )
    for line in body.decode().splitlines():
        m = pattern.match(line)
        if m:
            key = f"{m.group(2)}-{m.group(3)}" if m.group(2) else m.group(4)
            out[key] = out.get(key, 0.0) + float(m.group(5))
    return out


# --------------------------------------------------------------------------- load


@dataclass
class LoadSpec:
    """How the load generator is driven."""

    generator: str  # "wrk" or "python"
    connections: int
    threads: int
    pin: bool


@dataclass
class Result:
    """One scenario's measurement."""

    scenario: str
    generator: str
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    server_cpu: float
    server_core_busy: float
    loadgen_cpu: float
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_load(
    spec: LoadSpec,
    port: int,
    seconds: int,
    headers: Sequence[str],
    tokens_file: Path | None = None,
    start: int = 0,
    vary_uri: bool = False,
) -> tuple[dict[str, Any], float]:
    """Run the generator once; returns its WRKJSON record and its CPU seconds."""
    if spec.generator == "wrk":
        argv = [
            "wrk",
            "-t",
            str(spec.threads),
            "-c",
            str(spec.connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "auth.lua"),
        ]
        for h in headers:
            argv += ["-H", h]
        argv.append(f"http://127.0.0.1:{port}/auth")
        if tokens_file is not None:
            argv += ["--", str(tokens_file), str(start), str(spec.threads)]
        elif vary_uri:
            argv += ["--", "--vary-uri"]
    else:
        argv = [
            sys.executable,
            str(BENCH / "loadgen.py"),
            "--port",
            str(port),
            "--path",
            "/auth",
            "--connections",
            str(spec.connections),
            "--duration",
            str(seconds),
        ]
        for h in headers:
            if tokens_file is not None and h.lower().startswith("authorization:"):
                continue
            if vary_uri and h.lower().startswith("x-original-uri:"):
                continue
            argv += ["--header", h]
        if tokens_file is not None:
            argv += ["--tokens-file", str(tokens_file), "--start", str(start)]
        if vary_uri:
            argv.append("--vary-uri")
    before = children_cpu_seconds()
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        preexec_fn=pinned(LOADGEN_CPU, spec.pin),
    )
    cpu = children_cpu_seconds() - before
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON ") :]), cpu
    raise RuntimeError(f"{spec.generator} gave no result:\n{out.stdout}\n{out.stderr}")


def check_once(port: int, headers: Sequence[str]) -> None:
    """One request before loading: the scenario must answer 200, or it measures errors."""
    lines = ["GET /auth HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    status, _, body = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if status != 200:
        raise RuntimeError(f"/auth answered {status}: {body[:300]!r}")


def measure(
    scenario: str,
    server: Server,
    spec: LoadSpec,
    *,
    duration: int,
    warmup: int,
    headers: Sequence[str],
    tokens_file: Path | None = None,
    token_count: int = 0,
    authgate: bool,
    vary_uri: bool = False,
) -> Result:
    """Start the server, warm it up, measure, stop it."""
    with server.running():
        assert server.proc is not None
        check_once(server.port, headers)
        warm, _ = run_load(spec, server.port, warmup, headers, tokens_file, 0, vary_uri)
        # cold: the measured run starts after every token the warm-up used.
        start = warm.get("tokens_used", 0) + spec.connections * 2 if tokens_file else 0
        before = metrics_snapshot(server.port) if authgate else {}
        cpu0 = cpu_seconds(server.proc.pid)
        core0 = core_times(SERVER_CPU)
        gen_core0 = core_times(LOADGEN_CPU)
        rec, gen_cpu = run_load(spec, server.port, duration, headers, tokens_file, start, vary_uri)
        gen_core1 = core_times(LOADGEN_CPU)
        core1 = core_times(SERVER_CPU)
        cpu1 = cpu_seconds(server.proc.pid)
        after = metrics_snapshot(server.port) if authgate else {}
    seconds = rec["duration_us"] / 1e6
    kinds = ("connect", "read", "write", "status", "timeout")
    errors = sum(rec[f"errors_{k}"] for k in kinds)
    result = Result(
        scenario=scenario,
        generator=spec.generator,
        requests=rec["requests"],
        seconds=seconds,
        p50_ms=rec["p50_us"] / 1000,
        p90_ms=rec["p90_us"] / 1000,
        p99_ms=rec["p99_us"] / 1000,
        errors=errors,
        server_cpu=(cpu1 - cpu0) / seconds if seconds else 0.0,
        server_core_busy=(
            (core1[0] - core0[0]) / (core1[1] - core0[1])
            if spec.pin and core1[1] > core0[1]
            else float("nan")
        ),
        loadgen_cpu=gen_cpu / seconds if seconds else 0.0,
        raw=rec,
    )
    if authgate:
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        hits, misses = int(delta.get("jwt-hit", 0)), int(delta.get("jwt-miss", 0))
        looked = hits + misses
        result.notes.append(
            f"token cache hits {hits}, misses {misses}"
            + (f" ({100 * misses / looked:.1f}% miss)" if looked else "")
        )
        if delta.get("denied"):
            result.notes.append(f"{int(delta['denied'])} denied")
    if tokens_file is not None:
        result.notes.append(f"{rec.get('tokens_used', 0)} of {token_count} tokens used")
        if rec.get("token_wraps"):
            result.notes.append("token list wrapped (still > cache size, so still misses)")
    if errors:
        result.notes.append(f"{errors} errors (non-200/socket)")
    if result.server_core_busy - result.server_cpu > 0.15:
        result.notes.append("other processes ran on the server core (interference)")
    if spec.pin and gen_core1[1] > gen_core0[1]:
        gen_core_busy = (gen_core1[0] - gen_core0[0]) / (gen_core1[1] - gen_core0[1])
        if gen_core_busy - result.loadgen_cpu > 0.4:
            result.notes.append(
                f"load generator core {100 * gen_core_busy:.0f}% busy, generator "
                f"{100 * result.loadgen_cpu:.0f}%: other processes ran there (interference)"
            )
    if spec.pin and result.server_core_busy < 0.95:
        result.notes.append("server core not saturated")
    return result


# --------------------------------------------------------------------------- report


def best_of(results: Sequence[Result]) -> Result:
    """The round with the most requests/s (interference only ever slows a run down)."""
    best = max(results, key=lambda r: r.rps)
    if len(results) > 1:
        others = ", ".join(f"{r.rps:,.0f}" for r in results)
        best.notes.insert(0, f"best of {len(results)} rounds ({others} req/s)")
    return best


def pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.0f}%"  # NaN: not pinned


def fmt_table(results: Sequence[Result], bare_rps: float) -> list[str]:
    rows = [
        "| scenario | req/s | p50 ms | p99 ms | ratio vs bare | server process CPU "
        "| server core busy | loadgen CPU | checks |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if r.scenario == "bare":
            ratio = "1.00 (baseline)"
        else:
            ratio = f"{r.rps / bare_rps:.2f}" if bare_rps else "n/a (no bare run)"
        rows.append(
            f"| {r.scenario} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {ratio} "
            f"| {100 * r.server_cpu:.0f}% | {pct(r.server_core_busy)} "
            f"| {100 * r.loadgen_cpu:.0f}% "
            f"| {'; '.join(r.notes) or '-'} |"
        )
    return rows


def verdict(results: Sequence[Result], bare_rps: float) -> str:
    warm = next((r for r in results if r.scenario == "warm"), None)
    if warm is None or not bare_rps:
        return "Target (warm ratio >= 0.8): not measured in this run."
    ratio = warm.rps / bare_rps
    met = "MET" if ratio >= TARGET_RATIO else "NOT MET"
    return f"Target: warm-cache ratio >= {TARGET_RATIO}: **{met}** (measured {ratio:.2f})."


def render_section(
    results: Sequence[Result],
    info: dict[str, str],
    args: argparse.Namespace,
    spec: LoadSpec,
    command: str,
    mint_note: str,
) -> str:
    bare = next((r for r in results if r.scenario == "bare"), None)
    bare_rps = bare.rps if bare else 0.0
    gen = (
        f"`{info['wrk']}`, {spec.threads} thread, {spec.connections} keep-alive connections, "
        "closed loop, `--timeout 10s`, script `bench/auth.lua`"
        if spec.generator == "wrk"
        else f"`bench/loadgen.py` (raw asyncio, closed loop), {spec.connections} keep-alive "
        "connections, one process"
    )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        START_MARK,
        "<!-- Generated by bench/run.py; everything between these markers is rewritten. -->",
        "",
        "## JWT forward-auth (`/auth`, ES256 bearer token)",
        "",
        f"Measured {now} with:",
        "",
        "```",
        command,
        "```",
        "",
        f"- Machine: {info['cpus']} CPUs, {info['cpu']}, Linux {info['kernel']}; load average "
        f"before the run {info['loadavg']} (the machine is shared: other work slows runs down)",
        f"- Python {info['python']}, aiohttp {info['aiohttp']}",
        f"- Load generator: {gen}",
        (
            f"- Placement: server pinned to CPU {SERVER_CPU}, load generator to CPU "
            f"{LOADGEN_CPU} (`sched_setaffinity`)"
            if spec.pin
            else "- Placement: not pinned (fewer than 2 usable CPUs or no sched_setaffinity)"
        ),
        f"- Each scenario: fresh server process, {args.warmup} s warm-up, then {args.duration} s "
        f"measured; {args.rounds} round(s), scenarios interleaved, best round reported",
        "- Request: `GET /auth` with `Authorization: Bearer <ES256 JWT>`, `X-Original-Method: GET`,"
        f" `X-Original-URI: {ORIGINAL_URI}`, from 127.0.0.1 (a trusted proxy); the bare server "
        "gets the very same request",
        f"- Cold-cache tokens: {mint_note}",
        "",
        *fmt_table(results, bare_rps),
        "",
        verdict(results, bare_rps),
        "",
        "Scenarios: **bare** = aiohttp answering 200 with an empty body, no access log (the "
        "ceiling); **warm** = authgate, one token, the same request each time (information "
        "only: real traffic varies), access log off, level WARNING; **warm-uris** = "
        "warm with a new X-Original-URI on every request (the full path, token cache hit); "
        "**cold** = "
        "every request a new token (parse + ECDSA P-256 verify), access log off; **warm-log** = warm with the defaults a user gets (access log on, "
        "level INFO, JSON lines to a file). *ratio* = req/s of the scenario / req/s of bare in "
        "the same run. *server process CPU* is the server's own user+system time per second; "
        "*server core busy* is the whole CPU the server was pinned to, from /proc/stat "
        "(includes the kernel's loopback softirq work). Near 100% means the server core was "
        "saturated and the generator was not the bottleneck. *checks* come from authgate's "
        "own `/metrics` over the measured interval. Latencies are closed-loop latencies at this "
        "concurrency, not service times.",
        END_MARK,
    ]
    return "\n".join(lines)


def write_doc(section: str, path: Path) -> None:
    """Replace the marked section, keep everything else (other benchmarks)."""
    if path.exists():
        text = path.read_text()
        if START_MARK in text and END_MARK in text:
            head, _, rest = text.partition(START_MARK)
            _, _, tail = rest.partition(END_MARK)
            path.write_text(head + section + tail)
            return
        path.write_text(text.rstrip("\n") + "\n\n" + section + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Benchmarks\n\n"
        "Performance is measured, never asserted by tests. Each section below is written by a "
        "script; rerun it on the machine in question rather than comparing numbers across "
        "machines. How to run and how to read them: `bench/README.md`.\n\n"
        + section
        + "\n\n## Other benchmarks\n\n"
        "BPC signed requests and HMAC proofs will get their own sections here (each between "
        "its own markers, so each script rewrites only its part).\n"
    )


# --------------------------------------------------------------------------- profile


def _aggregate_collapsed(path: Path, top: int) -> list[str]:
    """Self and inclusive shares from py-spy's collapsed-stack output."""
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + n
        for frame in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            incl_counts[frame] = incl_counts.get(frame, 0) + n
    if not total:
        return ["(no samples)"]
    out = [f"{total} samples", "--- self time (leaf frame, with line) ---"]
    for frame, n in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"{100 * n / total:5.1f}%  {frame}")
    out.append("--- inclusive time (function) ---")
    for frame, n in sorted(incl_counts.items(), key=lambda kv: -kv[1])[: top * 2]:
        out.append(f"{100 * n / total:5.1f}%  {frame}")
    return out


def profile_scenario(
    name: str,
    tmp: Path,
    pem: Path,
    spec: LoadSpec,
    headers: Sequence[str],
    *,
    seconds: int,
    top: int,
    profiler: str,
    tokens_file: Path | None,
) -> str:
    """Profile authgate serving one scenario; returns the hot spots as text.

    py-spy (sampling, attaches to the running server, little distortion) when available,
    else cProfile inside the server process (deterministic, inflates call-heavy code).
    """
    port = free_port()
    cfg = tmp / f"profile-{name}.yaml"
    cfg.write_text(yaml.safe_dump(authgate_config(pem, port, access_log=name == "warm-log")))
    cfg.chmod(0o600)
    stats_path = tmp / "profile.pstats"
    argv = [sys.executable, "-m", "authgate", "serve", "--config", str(cfg)]
    if profiler == "cprofile":
        code = (
            "import cProfile\n"
            "from authgate.cli import main\n"
            "p = cProfile.Profile()\n"
            "p.enable()\n"
            f"try:\n    main(['serve', '--config', {str(cfg)!r}])\n"
            f"finally:\n    p.disable()\n    p.dump_stats({str(stats_path)!r})\n"
        )
        argv = [sys.executable, "-c", code]
    log_path = tmp / f"profile-{name}.log"
    server = Server(f"profile-{name}", argv, port, "/healthz", log_path, spec.pin)
    collapsed = tmp / "profile.collapsed"
    with server.running():
        assert server.proc is not None
        check_once(port, headers)
        warm, _ = run_load(spec, port, 1, headers, tokens_file, 0)
        start = warm.get("tokens_used", 0) + spec.connections * 2 if tokens_file else 0
        spy = None
        if profiler == "py-spy":
            spy = subprocess.Popen(
                [
                    shutil.which("py-spy") or "py-spy",
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    "--duration",
                    str(max(1, seconds - 1)),
                    "-o",
                    str(collapsed),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=pinned(LOADGEN_CPU, spec.pin),  # noqa: PLW1509
            )
        rec, _ = run_load(spec, port, seconds, headers, tokens_file, start)
        if spy is not None:
            _, err = spy.communicate(timeout=60)
            if spy.returncode != 0:
                return f"py-spy failed: {err.decode(errors='replace')}"
    head = (
        f"{profiler} of authgate, scenario {name}, {rec['requests'] / seconds:,.0f} req/s "
        "while profiled"
    )
    if profiler == "py-spy":
        return "\n".join([head, *_aggregate_collapsed(collapsed, top)])
    import io
    import pstats

    out = [head + " (cProfile slows Python calls down: read the shares, not the rate)"]
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(str(stats_path), stream=buf).strip_dirs().sort_stats(key).print_stats(top)
        out.append(f"--- sorted by {key} ---")
        out.append("\n".join(buf.getvalue().splitlines()[6:]))
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="measured seconds per scenario")
    p.add_argument("--warmup", type=int, default=3, help="warm-up seconds per scenario")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="repeat every scenario, interleaved; the best round of each is reported",
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (one core: 1)")
    p.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk when installed, else bench/loadgen.py",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (ratios need bare; "
        "empty with --profile: profile only)",
    )
    p.add_argument(
        "--cold-tokens",
        type=int,
        default=0,
        help="tokens to pre-mint for cold (default: 5000/s of warm-up + duration, + 10000)",
    )
    p.add_argument("--output", type=Path, default=DOC, help="the results page")
    p.add_argument("--no-write", action="store_true", help="print only, leave the page alone")
    p.add_argument("--json", type=Path, help="also write raw results as JSON here")
    p.add_argument(
        "--profile",
        choices=SCENARIOS[1:],
        help="after the measurements, profile authgate serving this scenario",
    )
    p.add_argument(
        "--profiler",
        choices=("auto", "py-spy", "cprofile"),
        default="auto",
        help="auto: py-spy when on PATH (pip install py-spy), else cProfile",
    )
    p.add_argument("--profile-top", type=int, default=25)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        print(f"unknown scenarios: {sorted(unknown)}", file=sys.stderr)
        return 2
    if not scenarios and not args.profile:
        print("nothing to do: no scenarios and no --profile", file=sys.stderr)
        return 2
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    if generator == "wrk" and not shutil.which("wrk"):
        print("wrk not found (apt-get install wrk), or use --generator python", file=sys.stderr)
        return 2
    pin = can_pin()
    spec = LoadSpec(generator, args.connections, args.wrk_threads, pin)
    if pin:
        os.sched_setaffinity(0, {LOADGEN_CPU})  # keep this orchestrator off the server's core
    info = machine_info()
    command = ".venv/bin/python bench/run.py" + (
        " " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""
    )
    print(
        f"generator={generator} pinned={pin} connections={args.connections} "
        f"duration={args.duration}s warmup={args.warmup}s rounds={args.rounds}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="authgate-bench-") as tmpdir:
        tmp = Path(tmpdir)
        factory = TokenFactory()
        pem = factory.write_key(tmp)
        token = factory.mint(exp=int(time.time()) + 3600)
        headers = [
            f"Authorization: Bearer {token}",
            "X-Original-Method: GET",
            f"X-Original-URI: {ORIGINAL_URI}",
        ]
        tokens_file = tmp / "tokens.txt"
        mint_note = "not measured in this run"
        token_count = 0
        if "cold" in scenarios:
            token_count = args.cold_tokens or 5_000 * (args.duration + args.warmup) + 10_000
            workers = min(2, os.cpu_count() or 1)
            took = mint_tokens(pem, token_count, tokens_file, workers)
            mint_note = (
                f"{token_count:,} distinct tokens pre-minted before the run "
                f"({took:.1f} s on {workers} processes); verified-token cache size 10,000 "
                "(default)"
            )
            print(f"minted {token_count} tokens in {took:.1f}s", flush=True)

        def authgate(name: str, access_log: bool) -> Server:
            port = free_port()
            cfg = tmp / f"{name}-{port}.yaml"
            cfg.write_text(yaml.safe_dump(authgate_config(pem, port, access_log=access_log)))
            cfg.chmod(0o600)
            return Server(
                name,
                [sys.executable, "-m", "authgate", "serve", "--config", str(cfg)],
                port,
                "/healthz",
                tmp / f"{name}-{port}.log",
                pin,
            )

        def make_server(name: str) -> Server:
            if name == "bare":
                port = free_port()
                return Server(
                    "bare",
                    [sys.executable, str(BENCH / "bare_server.py"), str(port)],
                    port,
                    "/",
                    tmp / f"bare-{port}.log",
                    pin,
                )
            return authgate(name, access_log=name == "warm-log")

        rounds: dict[str, list[Result]] = {name: [] for name in scenarios}
        for round_no in range(1, args.rounds + 1):
            for name in scenarios:
                server = make_server(name)
                print(f"round {round_no}/{args.rounds}: {name} ...", flush=True)
                result = measure(
                    name,
                    server,
                    spec,
                    duration=args.duration,
                    warmup=args.warmup,
                    headers=headers,
                    tokens_file=tokens_file if name == "cold" else None,
                    token_count=token_count,
                    authgate=name != "bare",
                    vary_uri=name == "warm-uris",
                )
                if name == "warm-log":
                    lines = sum(1 for _ in server.log_path.open("rb"))
                    result.notes.append(f"{lines:,} log lines written")
                rounds[name].append(result)
                print(
                    f"  {result.rps:,.0f} req/s  p50 {result.p50_ms:.2f} ms  p99 "
                    f"{result.p99_ms:.2f} ms  server CPU {100 * result.server_cpu:.0f}% (core "
                    f"{pct(result.server_core_busy)})  "
                    f"loadgen CPU {100 * result.loadgen_cpu:.0f}%  {'; '.join(result.notes)}",
                    flush=True,
                )
        results = [best_of(rs) for rs in rounds.values()]

        bare = next((r for r in results if r.scenario == "bare"), None)
        bare_rps = bare.rps if bare else 0.0
        if results:
            print()
            print("\n".join(fmt_table(results, bare_rps)))
            print()
            print(verdict(results, bare_rps))
        if results and not args.no_write:
            write_doc(render_section(results, info, args, spec, command, mint_note), args.output)
            print(f"wrote {args.output}")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "machine": info,
                        "generator": generator,
                        "connections": args.connections,
                        "results": [{**r.__dict__, "rps": r.rps} for r in results],
                        "rounds": {
                            name: [{**r.__dict__, "rps": r.rps} for r in rs]
                            for name, rs in rounds.items()
                        },
                    },
                    indent=2,
                )
            )
        if args.profile:
            profiler = args.profiler
            if profiler == "auto":
                profiler = "py-spy" if shutil.which("py-spy") else "cprofile"
            if args.profile == "cold" and not token_count:
                token_count = 5_000 * (args.duration + 1) + 10_000
                mint_tokens(pem, token_count, tokens_file, min(2, os.cpu_count() or 1))
            print()
            print(
                profile_scenario(
                    args.profile,
                    tmp,
                    pem,
                    spec,
                    headers,
                    seconds=args.duration,
                    top=args.profile_top,
                    profiler=profiler,
                    tokens_file=tokens_file if args.profile == "cold" else None,
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
