"""``bench/run.py --profile SCENARIO``: where authgate's time goes while it serves a scenario.

py-spy (sampling, attaches to the running server, little distortion) when it is on ``PATH``
(``pip install py-spy``), else cProfile inside the server process (deterministic, inflates
call-heavy code: read the shares, not the rate).
"""

from __future__ import annotations

import io
import pstats
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.procs import LOADGEN_CPU, Server, can_pin, placed

if TYPE_CHECKING:
    from bench.run import LoadSpec, Scenario, TrafficFor


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
    scn: Scenario,
    server: Server,
    spec: LoadSpec,
    traffic_for: TrafficFor,
    check: Callable[[int], None],
    *,
    seconds: float,
    top: int,
    profiler: str,
    run_load: Callable[..., tuple[dict[str, Any], float, str]],
) -> str:
    """Profile authgate (``server``, not yet started) serving ``scn``; the hot spots as text."""
    if profiler == "auto":
        profiler = "py-spy" if shutil.which("py-spy") else "cprofile"
    tmp = server.log_path.parent
    stats_path = tmp / "profile.pstats"
    if profiler == "cprofile":
        config = server.argv[-1]
        code = (
            "import cProfile\n"
            "from authgate.cli import main\n"
            "p = cProfile.Profile()\n"
            "p.enable()\n"
            f"try:\n    main(['serve', '--config', {config!r}])\n"
            f"finally:\n    p.disable()\n    p.dump_stats({str(stats_path)!r})\n"
        )
        server.argv = [sys.executable, "-c", code]
    collapsed = tmp / "profile.collapsed"
    gen_cpus = {LOADGEN_CPU} if can_pin() else None
    with server.running():
        assert server.proc is not None
        check(server.port)
        warm, _, _ = run_load(spec, server.port, 1, traffic_for("warmup", None), gen_cpus)
        traffic = traffic_for("measure", warm)
        spy = None
        if profiler == "py-spy":
            argv = [shutil.which("py-spy") or "py-spy", "record", "--pid", str(server.proc.pid)]
            argv += [
                "--format",
                "raw",
                "--rate",
                "250",
                "--duration",
                str(max(1, int(seconds) - 1)),
            ]
            spy = subprocess.Popen(
                [*argv, "-o", str(collapsed)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=placed(gen_cpus),  # noqa: PLW1509 - only sets the CPU affinity
            )
        rec, _, _ = run_load(spec, server.port, seconds, traffic, gen_cpus)
        if spy is not None:
            _, err = spy.communicate(timeout=60)
            if spy.returncode != 0:
                return f"py-spy failed: {err.decode(errors='replace')}"
    head = (
        f"{profiler} of authgate, scenario {scn.name}, {rec['requests'] / seconds:,.0f} req/s "
        "while profiled"
    )
    if profiler == "py-spy":
        return "\n".join([head, *_aggregate_collapsed(collapsed, top)])
    out = [head + " (cProfile slows Python calls down: read the shares, not the rate)"]
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(str(stats_path), stream=buf).strip_dirs().sort_stats(key).print_stats(top)
        out.append(f"--- sorted by {key} ---")
        out.append("\n".join(buf.getvalue().splitlines()[6:]))
    return "\n".join(out)
