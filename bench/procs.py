"""Processes of a benchmark run: CPU placement, CPU and core accounting, servers, tokens.

Shared by ``bench/run.py`` (and, through it, ``bench/shared_state.py``'s ``machine_info``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import TokenFactory, raw_request

from authgate.crypto.keys import SigningKey

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVER_CPU = 0
LOADGEN_CPU = 1
# Every CPU this process may use, taken before run.py pins itself next to the generator.
ALL_CPUS: frozenset[int] = frozenset(
    os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
)


def can_pin() -> bool:
    """Whether server and load generator can each get a core of their own."""
    return {SERVER_CPU, LOADGEN_CPU} <= ALL_CPUS


def placed(cpus: set[int] | frozenset[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` putting the child on ``cpus`` (``None``: leave it be)."""
    if not cpus:
        return None
    chosen = set(cpus)

    def pin() -> None:
        os.sched_setaffinity(0, chosen)

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


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (authgate's workers are children of ``serve``)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def tree_cpu_seconds(pids: list[int]) -> float:
    """user + system CPU of ``pids`` together (the list taken once, before and after)."""
    return sum(cpu_seconds(p) for p in pids)


def core_times(cpus: set[int] | frozenset[int]) -> tuple[int, int]:
    """(busy, total) jiffies of some CPUs from /proc/stat (loopback softirq included)."""
    busy = total = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name = line.split(" ", 1)[0]
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                values = [int(v) for v in line.split()[1:9]]
                idle = values[3] + values[4]  # idle + iowait
                busy += sum(values) - idle
                total += sum(values)
    return busy, total


def children_cpu_seconds() -> float:
    """user + system CPU of reaped children so far (delta around a generator run)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    import aiohttp

    model, mhz = "unknown", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("cpu MHz") and not mhz:
                mhz = f" @ {float(line.split(':', 1)[1]):.0f} MHz"
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout or out.stderr).splitlines()[0].split(" [")[0] if out else ""
    redis = shutil.which("redis-server")
    redis_version = ""
    if redis:
        out = subprocess.run([redis, "--version"], capture_output=True, text=True, check=False)
        redis_version = next((w for w in out.stdout.split() if w.startswith("v=")), "")[2:]
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model + mhz,
        "kernel": platform.release(),
        "python": platform.python_version() + f" ({platform.python_implementation()})",
        "aiohttp": aiohttp.__version__,
        "wrk": wrk_version or "not installed",
        "redis": redis_version or "not installed",
        "redis_py": _redis_py(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _redis_py() -> str:
    """redis-py's version and its parser: hiredis (the `fast` extra) or pure Python."""
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    parser = "hiredis" if HIREDIS_AVAILABLE else "pure-Python parser"
    return f"{redis.__version__} ({parser})"


# --------------------------------------------------------------------------- tokens


_MINTER: dict[str, TokenFactory] = {}  # per worker process


def _mint_init(pem: str) -> None:
    if ALL_CPUS:
        os.sched_setaffinity(0, ALL_CPUS)  # the orchestrator's pin would leave one core
    _MINTER["factory"] = TokenFactory(key=SigningKey.from_file(pem))


def _mint_chunk(n: int) -> list[str]:
    factory = _MINTER["factory"]
    exp = int(time.time()) + 3600
    return [factory.mint(exp=exp) for _ in range(n)]


def mint_tokens(pem: Path, count: int, path: Path) -> float:
    """Write ``count`` distinct valid tokens (one per line); returns seconds taken."""
    started = time.perf_counter()
    chunk = 5000
    sizes = [chunk] * (count // chunk) + ([count % chunk] if count % chunk else [])
    with (
        concurrent.futures.ProcessPoolExecutor(
            max_workers=max(1, len(ALL_CPUS)), initializer=_mint_init, initargs=(str(pem),)
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
    """A server subprocess (this checkout's ``src`` first on its path)."""

    name: str
    argv: list[str]
    port: int
    ready_path: str
    log_path: Path
    cpus: set[int] | frozenset[int] | None
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 20.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
        )
        env.update(self.extra_env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                preexec_fn=placed(self.cpus),  # noqa: PLW1509 - only sets the CPU affinity
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


def python_server(
    name: str,
    script: str,
    port: int,
    tmp: Path,
    *args: str,
    cpus: set[int] | frozenset[int] | None,
) -> Server:
    """One of bench/'s own servers (bare, upstream, pass-through proxy)."""
    return Server(
        name,
        [sys.executable, str(BENCH / script), str(port), *args],
        port,
        "/",
        tmp / f"{name}-{port}.log",
        cpus,
    )
