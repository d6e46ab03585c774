"""Malformed traffic over raw sockets against a real ``authgate serve`` process.

Starts an echo upstream (a thread of this process) and ``python -m authgate serve`` in front
of it (the sidecar, with the forward-auth doors on the same port, memory stores), then runs
every case of ``tests/hostile.py`` against the sidecar and each door (``/auth``,
``/auth/forward``, ``/auth/envoy/...``), all on 127.0.0.1 with bounded counts and
durations. Prints one row per case and target (requests, outcomes, 5xx, hangs, whether a
healthy request answered 200 afterwards) and the server's RSS and open fds before and after.
Exit status 1 when any invariant broke.

    PYTHONPATH=src .venv/bin/python bench/hostile_traffic.py            # ~1 to 2 minutes
    PYTHONPATH=src .venv/bin/python bench/hostile_traffic.py --quick    # a few seconds
    ... --rounds 5 --repeat 4 --slow-connections 400   # harder
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.hostile import (
    CASES,
    TARGETS,
    EchoUpstream,
    Outcome,
    Scale,
    client_connections,
    config,
    open_fds,
    rss_bytes,
    run_case,
    settle_connections,
    table,
)
from tests.support import AuthgateProcess

MiB = 1024 * 1024


async def campaign(port: int, scale: Scale, rounds: int, cases: list[str]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for _ in range(rounds):
        for case in cases:
            for target in TARGETS:
                outcomes.append(await run_case(port, case, target, scale))
    return outcomes


def merge(outcomes: list[Outcome]) -> list[Outcome]:
    """One row per case and target over every round."""
    rows: dict[tuple[str, str], Outcome] = {}
    for o in outcomes:
        row = rows.setdefault((o.case, o.target), Outcome(o.case, o.target, healthy_after=True))
        row.sent += o.sent
        row.statuses.update(o.statuses)
        row.violations += o.violations
        row.hangs += o.hangs
        row.healthy_after = row.healthy_after and o.healthy_after
        row.seconds += o.seconds
    return list(rows.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small round (seconds)")
    parser.add_argument("--rounds", type=int, default=3, help="times the whole campaign runs")
    parser.add_argument("--repeat", type=int, default=2, help="copies of each variant per round")
    parser.add_argument("--slow-connections", type=int, default=200, help="slowloris per case")
    parser.add_argument("--header-deadline", type=float, default=2.0, help="seconds")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument(
        "--max-rss-growth-mib", type=float, default=100.0, help="fail above this growth"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.repeat, args.slow_connections = 1, 1, 12
    rounds, cases = max(1, min(args.rounds, 20)), args.cases.split(",")
    scale = Scale(
        repeat=max(1, min(args.repeat, 20)),
        slow_connections=max(3, min(args.slow_connections, 900)),
        header_deadline=args.header_deadline,
    )
    with EchoUpstream() as upstream, tempfile.TemporaryDirectory() as tmp:
        proc = AuthgateProcess(
            config(
                upstream.port,
                header_deadline=None if args.header_deadline <= 0 else args.header_deadline,
            ),
            Path(tmp),
        ).start()
        try:
            pid = proc.pid
            time.sleep(0.5)
            rss_before, fds_before = rss_bytes(pid), open_fds(pid)
            started = time.monotonic()
            outcomes = merge(asyncio.run(campaign(proc.port, scale, rounds, cases)))
            elapsed = time.monotonic() - started
            rss_after = rss_bytes(pid)
            fds_busy, conns_busy = open_fds(pid), client_connections(pid, proc.port)
            # Every hostile connection is closed by authgate's own timers (head deadline,
            # body pause bound, keep-alive: at most twice the deadline in this campaign).
            conns_after = settle_connections(pid, proc.port, timeout=args.header_deadline * 2 + 15)
            fds_after = open_fds(pid)
            alive = proc.proc is not None and proc.proc.poll() is None
        finally:
            proc.stop()
        crashes = [line for line in proc.logs().splitlines() if "Traceback" in line]
    for line in table(outcomes):
        print(line)
    total = sum(o.sent for o in outcomes)
    growth = (rss_after - rss_before) / MiB
    print()
    print(
        f"requests: {total} in {elapsed:.1f} s ({rounds} round(s), repeat {scale.repeat}, "
        f"{scale.slow_connections} slow connections per slowloris case)"
    )
    print(
        f"RSS: {rss_before / MiB:.1f} MiB before, {rss_after / MiB:.1f} MiB after "
        f"({growth:+.1f} MiB)"
    )
    print(
        f"fds: {fds_before} before, {fds_busy} right after ({conns_busy} client connections), "
        f"{fds_after} once idle connections timed out ({conns_after} client connections; "
        "the rest is the upstream pool)"
    )
    print(f"server still running: {alive}; tracebacks in its log: {len(crashes)}")
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(
            f"FAILED {o.case} @ {o.target}: {sorted(set(o.violations))[:5]} "
            f"hangs={o.hangs} healthy_after={o.healthy_after}"
        )
    bad = failed or growth > args.max_rss_growth_mib or conns_after or not alive
    return 1 if bad or crashes else 0


if __name__ == "__main__":
    sys.exit(main())
