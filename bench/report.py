"""What ``bench/run.py`` prints and writes: the targets table, every scenario, memory.

The results page is ``docs/benchmarks.md``; this module rewrites only its own section
(between ``<!-- speed-bench:start -->`` and ``<!-- speed-bench:end -->``), replacing the
older ``jwt-bench`` section in place the first time.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.targets import (
    FLAT_MIB_PER_MINUTE,
    REFERENCES,
    TARGETS,
    UPLOAD_GROWTH_MIB,
    Row,
    RssSummary,
    Target,
    evaluate,
    limit_rps,
    paired_ratios,
    render_references,
    render_rows,
)

if TYPE_CHECKING:
    from bench.run import Result, Scenario

START_MARK = "<!-- speed-bench:start -->"
END_MARK = "<!-- speed-bench:end -->"
LEGACY = ("<!-- jwt-bench:start -->", "<!-- jwt-bench:end -->")


@dataclass
class Run:
    """Everything one run measured."""

    results: list[Result]
    verifies: list[float]
    memory: list[dict[str, Any]]
    info: dict[str, str]
    command: str
    args: dict[str, Any]
    generator: str
    pinned: bool
    prep: list[str]
    elapsed: float
    scenarios: Mapping[str, Scenario]
    round_rps: Mapping[str, Sequence[float]] = field(default_factory=dict)  # req/s per round

    def rps(self) -> dict[str, float]:
        return {r.scenario: r.rps for r in self.results}

    def verify(self) -> float:
        """Best raw verifies/s of the run (interference only slows a round down)."""
        return max(self.verifies) if self.verifies else math.nan

    def limit(self) -> float:
        return limit_rps(self.rps().get("bare", math.nan), self.verify())

    def rows(self, targets: Sequence[Target] = TARGETS) -> list[Row]:
        trips = {r.scenario: r.store_calls for r in self.results if not math.isnan(r.store_calls)}
        return [
            evaluate(
                t,
                self.rps(),
                limit=self.limit(),
                round_trips=trips,
                paired=paired_ratios(t, self.round_rps, self.verifies),
            )
            for t in targets
        ]


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"


def result_line(r: Result) -> str:
    """One line of progress for a round."""
    redis = ""
    if not math.isnan(r.store_calls):
        redis = (
            f"  store calls/req {r.store_calls:.2f} scripts/req {_f(r.scripts)} "
            f"commands/req {_f(r.commands)}"
        )
    others = "".join(f"  {k} CPU {_pct(v)}" for k, v in r.others_cpu.items())
    return (
        f"{r.rps:,.0f} req/s  p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms  server CPU "
        f"{_pct(r.server_cpu)} (cores {_pct(r.core_busy)})  {r.generator} CPU "
        f"{_pct(r.loadgen_cpu)}{others}{redis}  {'; '.join(r.notes)}"
    )


def memory_line(m: dict[str, Any]) -> str:
    s: RssSummary = m["rss"]
    return (
        f"RSS MiB start {s.start:.1f} middle {s.middle:.1f} end {s.end:.1f} peak {s.peak:.1f}; "
        f"slope {_f(s.slope_whole)} MiB/min (second half {_f(s.slope_second_half)}); "
        f"{'flat' if m['flat'] else 'NOT flat'}; {'; '.join(m['notes'])}"
    )


def scenario_table(run: Run) -> list[str]:
    rows = [
        "| scenario | req/s | p50 ms | p99 ms | server CPU | cores busy | generator CPU "
        "| Redis / upstream CPU | store calls / req | scripts / req | commands / req | checks |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in run.results:
        others = ", ".join(f"{k} {_pct(v)}" for k, v in r.others_cpu.items()) or "-"
        rows.append(
            f"| {r.scenario} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {_pct(r.server_cpu)} | {_pct(r.core_busy)} | {r.generator} {_pct(r.loadgen_cpu)} "
            f"| {others} | {_f(r.store_calls)} | {_f(r.scripts)} | {_f(r.commands)} "
            f"| {'; '.join(r.notes) or '-'} |"
        )
    return rows


def memory_table(run: Run) -> list[str]:
    rows = [
        "| run | samples over s | RSS start MiB | middle | end | peak | peak - start | "
        "slope MiB/min | second half MiB/min | flat | what was sent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for m in run.memory:
        s: RssSummary = m["rss"]
        rows.append(
            f"| {m['run']} | {s.samples} over {s.seconds:.0f} | {s.start:.1f} | {s.middle:.1f} "
            f"| {s.end:.1f} | {s.peak:.1f} | {s.peak_growth:.1f} | {_f(s.slope_whole)} "
            f"| {_f(s.slope_second_half)} | {'**yes**' if m['flat'] else '**no**'} "
            f"| {'; '.join(m['notes'])} |"
        )
    return rows


def baselines_text(run: Run) -> str:
    rps = run.rps()
    parts = []
    if "bare" in rps:
        parts.append(
            f"bare aiohttp **{rps['bare']:,.0f}** req/s (t_bare {1e6 / rps['bare']:.1f} us)"
        )
    if run.verifies:
        v = run.verify()
        rounds = ", ".join(f"{x:,.0f}" for x in run.verifies)
        parts.append(
            f"raw ECDSA P-256 verify **{v:,.0f}**/s (t_verify {1e6 / v:.1f} us; `cryptography`, "
            f"in a process on the server's core; best of {rounds})"
        )
    if not math.isnan(run.limit()):
        parts.append(f"the limit 1 / (t_bare + t_verify) = **{run.limit():,.0f}** req/s")
    if "passthrough" in rps:
        parts.append(f"minimal pass-through proxy **{rps['passthrough']:,.0f}** req/s")
    if "workers-1" in rps:
        parts.append(f"1 worker (unpinned) **{rps['workers-1']:,.0f}** req/s")
    return "; ".join(parts) or "none measured in this run"


def _references(run: Run) -> list[str]:
    table = render_references(run.rows(REFERENCES))
    if not table:
        return []
    return [
        "### Reference (no target)",
        "",
        *table,
        "",
        "`verify-only` shows how much of the limit an aiohttp handler that does nothing but "
        "check an ES256 signature reaches in this run: the JWT cold target (0.80 x the limit) "
        "is measured against the same limit.",
        "",
    ]


def render(run: Run) -> str:
    info, a = run.info, run.args
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    gen = (
        f"`{info['wrk']}`, {a['wrk_threads']} thread, script `bench/auth.lua`"
        if run.generator == "wrk"
        else "`bench/loadgen.py` (raw asyncio, one process)"
    )
    placement = (
        "authgate and the baselines pinned to CPU 0; the load generator, Redis, the "
        "proxies' upstream and this script on CPU 1 (`sched_setaffinity`). `workers-1`/"
        "`workers-2`: authgate, its workers and the generator on both cores (not pinned; the "
        "generator's CPU is taken from the same 2 cores), Redis on CPU 1"
        if run.pinned
        else "not pinned (fewer than 2 usable CPUs)"
    )
    lines = [
        START_MARK,
        "<!-- Generated by bench/run.py; everything between these markers is rewritten. -->",
        "",
        "## Speed on the request path (the targets of issue 14)",
        "",
        f"Measured {now} with:",
        "",
        "```",
        run.command,
        "```",
        "",
        f"- Machine: {info['cpus']} CPUs, {info['cpu']}, Linux {info['kernel']}; load average "
        f"before the run {info['loadavg']} (the machine may be shared: other work slows a "
        f"run down, compare ratios of one run); the run took {run.elapsed / 60:.1f} min",
        f"- Python {info['python']}, aiohttp {info['aiohttp']}, Redis {info['redis']}, "
        f"redis-py {info['redis_py']}",
        f"- Load generator: {gen}; {a['connections']} keep-alive connections, closed loop; "
        "`hmac` always uses `bench/loadgen.py`",
        f"- Placement: {placement}",
        f"- Each scenario: a fresh server process, one checked request, {a['warmup']:g} s "
        f"warm-up, {a['duration']:g} s measured; {a['rounds']} round(s), scenarios "
        "interleaved, the best round of each reported (its CPU figures with it); the "
        "verdict reads the median of the per-round ratios (each round's scenario against "
        "that round's baseline), which a drifting machine moves less than the best rounds",
        f"- Baselines of this run: {baselines_text(run)}",
        *(
            [
                "- **A `--quick` run**: short phases, one round, small memory runs: it checks "
                "that the harness works; its figures are not figures of record"
            ]
            if a.get("quick")
            else []
        ),
        *(f"- {p}" for p in run.prep),
        "",
        "### Targets",
        "",
        *render_rows(run.rows()),
        "",
        "*ratio* = req/s of the scenario / req/s of its baseline, the best round of each, "
        "both from this run. *per-round ratios*: the same within each round (the scenario "
        "against that round's baseline; for the limit, that round's bare run and raw "
        "verify), their median and range; the *result* reads the median. *Redis "
        "round trips / req* = authgate's own store calls (`authgate_store_operation_duration_"
        "seconds_count`) per granted decision: each call is one exchange with Redis the "
        "decision waits for (one command, one script or one pipeline). The server's view is "
        "in the next table: *scripts / req* (EVALSHA and the like) and *commands / req* (every "
        "command Redis ran, a script's own included) from `INFO commandstats` deltas, without "
        "the event bus's heartbeat PUBLISH and INFO.",
        "",
        *_references(run),
        "### Every scenario",
        "",
        *scenario_table(run),
        "",
        *(f"- **{n}**: {s.what}" for n, s in run.scenarios.items() if n in run.rps()),
        "",
        "*server CPU*: the server's processes' user+system CPU per second; *cores busy*: the "
        "whole server core from /proc/stat (both cores for the unpinned scenarios), loopback "
        "softirq included; near 100 % means the server, not the generator, was the limit. "
        "*generator CPU*: near 100 % means the generator may have limited the run (flagged). "
        "*checks*: authgate's own `/metrics` over the measured interval (absent for 2 "
        "workers: each answers for itself). Latencies are closed-loop latencies at this "
        "concurrency (about connections / req/s), not service times.",
    ]
    if run.memory:
        lines += [
            "",
            "### Memory (RSS of the authgate process)",
            "",
            *memory_table(run),
            "",
            "- **memory-uris**: authgate with default settings (access log on, as "
            "`warm-uris-default`), `/auth` with a new `X-Original-URI` on every request and "
            f"{a['memory_tokens']:,} pre-minted tokens, each sent {a['memory_repeat']} times in "
            "a row and all in turn (verified-token cache: 10,000, the default), "
            f"at least {a['memory_seconds']:g} s, then until authgate has decided 1,000,000 "
            f"requests, at most {3 * a['memory_seconds']:g} s (the run's length is in its "
            "notes); RSS sampled every second from the first request.",
            "- **memory-upload**: one `POST` with a chunked body through the sidecar "
            "(JWT, access log off) to `bench/upstream.py`, which reads and discards it and "
            "answers the byte count; RSS sampled every 0.05 s.",
            f"- *flat*: for memory-uris, the least-squares slope over the second half of the "
            f"run (bounded caches have filled by then) is under {FLAT_MIB_PER_MINUTE:g} MiB per "
            f"minute; for memory-upload, RSS never rose {UPLOAD_GROWTH_MIB:g} MiB above its "
            "start (a body held in memory would add its own size). Slopes are per minute of "
            "run time; *samples over s* is the sampled span.",
        ]
    lines.append(END_MARK)
    return "\n".join(lines)


def write_doc(section: str, path: Path) -> None:
    """Replace this section (or the legacy JWT section) and keep everything else."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    for start, end in ((START_MARK, END_MARK), LEGACY):
        if start in text and end in text:
            head, _, rest = text.partition(start)
            _, _, tail = rest.partition(end)
            path.write_text(head + section + tail)
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n\n" + section + "\n")


def as_json(run: Run, rounds: Mapping[str, Sequence[Result]]) -> dict[str, Any]:
    """Every number of the run, for ``--json``."""

    def one(r: Result) -> dict[str, Any]:
        return {**r.__dict__, "rps": r.rps}

    return {
        "machine": run.info,
        "args": run.args,
        "generator": run.generator,
        "verifies_per_second": run.verifies,
        "limit_rps": run.limit(),
        "targets": [
            {
                "scenario": row.target.scenario,
                "ratio": row.ratio,
                "minimum": row.target.minimum,
                "round_trips": row.round_trips,
                "met": row.met,
            }
            for row in run.rows()
        ],
        "references": [
            {"scenario": row.target.scenario, "ratio": row.ratio, "paired": list(row.paired)}
            for row in run.rows(REFERENCES)
        ],
        "results": [one(r) for r in run.results],
        "rounds": {name: [one(r) for r in rs] for name, rs in rounds.items()},
        "memory": [{**m, "rss": m["rss"].__dict__} for m in run.memory],
        "verify_mean": statistics.mean(run.verifies) if run.verifies else None,
    }
