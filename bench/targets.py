"""The issue's table as data, and the arithmetic that turns one run's numbers into it.

Pure functions only (no processes, no I/O beyond parsing text handed in), so that
``tests/bench/test_targets.py`` can check them. ``bench/run.py`` measures; this module says
what the measurements mean: ratios against the baselines of the same run, "the limit",
whether each target is met, and how flat a series of RSS samples is.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIB = 1024 * 1024

# RSS counts as flat when its least-squares slope over the second half of the run (caches
# have filled by then) stays under this many MiB per minute. The issue says "flat"; this
# is the harness's reading of it, stated on the results page.
FLAT_MIB_PER_MINUTE = 2.0
# A streamed upload is flat when RSS never rises more than this above its start: a body
# held in memory would show as its own size (1 GiB), a streamed one as a few chunks.
UPLOAD_GROWTH_MIB = 32.0


@dataclass(frozen=True)
class Target:
    """One row of the issue's table."""

    scenario: str  # the measured scenario of bench/run.py
    label: str  # what the row measures, as the page shows it
    baseline: str  # "bare", "limit", "passthrough" or "workers-1"
    minimum: float  # the ratio to reach
    round_trips_max: float | None = None  # Redis round trips per request, when targeted


BASELINE_TEXT = {
    "bare": "x bare aiohttp",
    "limit": "x the limit",
    "passthrough": "x minimal pass-through proxy",
    "workers-1": "x 1 worker",
}

TARGETS: tuple[Target, ...] = (
    Target(
        "warm-uris-default",
        "JWT `/auth`, cached token, new URI every request, default settings (access log on)",
        "bare",
        0.70,
    ),
    Target("warm-uris", "the same with the access log off", "bare", 0.80),
    Target("cold", "JWT cold (a new ES256 token every request)", "limit", 0.80),
    Target("bpc", "BPC signed request, Redis stores, through `/auth`", "limit", 0.60, 1.0),
    Target(
        "hmac",
        "HMAC proof, Redis stores (challenges fetched from the same server during the run)",
        "bare",
        0.50,
        1.0,
    ),
    Target("sidecar", "sidecar proxy, JWT, 1 KB responses", "passthrough", 0.85),
    Target("workers-2", "2 workers vs 1, both cores", "workers-1", 1.70),
)

# Measured beside the targets, with no verdict: what the targets' bounds look like from
# outside authgate (bench/verify_only_server.py).
REFERENCES: tuple[Target, ...] = (
    Target(
        "verify-only",
        "aiohttp + one ES256 verify per request, nothing else (no gateway)",
        "limit",
        0.0,
    ),
)


def limit_rps(bare_rps: float, verifies_per_second: float) -> float:
    """What one core can do at best: ``1 / (t_bare + t_verify)``, in requests per second."""
    if bare_rps <= 0 or verifies_per_second <= 0:
        return math.nan
    return 1.0 / (1.0 / bare_rps + 1.0 / verifies_per_second)


def ratio(measured: float, baseline: float) -> float:
    """``measured / baseline``, NaN when either is missing."""
    if not (baseline > 0) or not (measured >= 0):
        return math.nan
    return measured / baseline


@dataclass(frozen=True)
class Row:
    """A target row filled in from one run."""

    target: Target
    measured_rps: float
    baseline_rps: float
    ratio: float  # best round of the scenario / best round of its baseline
    round_trips: float | None  # per accepted request; None when not measured
    met: bool | None  # None: not measured in this run
    paired: tuple[float, ...] = ()  # the ratio within each round (see paired_ratios)

    @property
    def verdict_ratio(self) -> float:
        """What the verdict reads: the median of the per-round ratios when there are
        any, else the ratio of the best rounds."""
        return statistics.median(self.paired) if self.paired else self.ratio


def paired_ratios(
    target: Target, rounds: Mapping[str, Sequence[float]], verifies: Sequence[float]
) -> list[float]:
    """The scenario's ratio to its baseline within each round: round ``i`` of the scenario
    against round ``i`` of the baseline (for "limit", that round's bare run and raw verify).

    Rounds interleave the scenarios, so a pair ran minutes apart at most; on a machine whose
    speed drifts, pairs compare like with like where the best rounds of each (taken
    separately) may come from different conditions.
    """
    measured = rounds.get(target.scenario, ())
    if target.baseline == "limit":
        bare = rounds.get("bare", ())
        base = [limit_rps(b, v) for b, v in zip(bare, verifies, strict=False)]
    else:
        base = list(rounds.get(target.baseline, ()))
    pairs = [ratio(m, b) for m, b in zip(measured, base, strict=False)]
    return [p for p in pairs if not math.isnan(p)]


def evaluate(
    target: Target,
    rps: Mapping[str, float],
    *,
    limit: float,
    round_trips: Mapping[str, float],
    paired: Sequence[float] = (),
) -> Row:
    """One row: the scenario's req/s against its baseline (``limit`` for "limit").

    The verdict reads the median of ``paired`` (:func:`paired_ratios`) when given, else the
    ratio of the best rounds.
    """
    measured = rps.get(target.scenario, math.nan)
    base = limit if target.baseline == "limit" else rps.get(target.baseline, math.nan)
    value = ratio(measured, base)
    trips = round_trips.get(target.scenario)
    decisive = statistics.median(paired) if paired else value
    if math.isnan(decisive):
        met: bool | None = None
    else:
        met = decisive >= target.minimum
        if target.round_trips_max is not None:
            met = met and trips is not None and trips <= target.round_trips_max + 1e-9
    return Row(target, measured, base, value, trips, met, tuple(paired))


def _num(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def render_rows(rows: Sequence[Row]) -> list[str]:
    """The results page's target table (markdown)."""
    out = [
        "| scenario | measured req/s | baseline req/s | ratio | per-round ratios: median "
        "(range) | target | Redis round trips / req | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        t = row.target
        trips = "-" if row.round_trips is None else f"{row.round_trips:.2f}"
        target = f">= {t.minimum:.2f} {BASELINE_TEXT[t.baseline]}"
        if t.round_trips_max is not None:
            target += f"; <= {t.round_trips_max:.1f} round trips"
            if row.round_trips is None:
                trips = "not counted"
        result = {None: "not measured", True: "**met**", False: "**not met**"}[row.met]
        paired = (
            f"{statistics.median(row.paired):.2f} ({min(row.paired):.2f}-{max(row.paired):.2f})"
            if row.paired
            else "-"
        )
        out.append(
            f"| {t.label} | {_num(row.measured_rps)} | {_num(row.baseline_rps)} "
            f"| {_num(row.ratio, 2)} {BASELINE_TEXT[t.baseline]} | {paired} | {target} "
            f"| {trips} | {result} |"
        )
    return out


def render_references(rows: Sequence[Row]) -> list[str]:
    """The page's reference table: the rows of :data:`REFERENCES`, ratios without a verdict
    (those not measured in this run are left out)."""
    out = [
        "| reference | measured req/s | baseline req/s | ratio | per-round ratios: median "
        "(range) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if math.isnan(row.measured_rps):
            continue
        paired = (
            f"{statistics.median(row.paired):.2f} ({min(row.paired):.2f}-{max(row.paired):.2f})"
            if row.paired
            else "-"
        )
        out.append(
            f"| {row.target.label} | {_num(row.measured_rps)} | {_num(row.baseline_rps)} "
            f"| {_num(row.ratio, 2)} {BASELINE_TEXT[row.target.baseline]} | {paired} |"
        )
    return out if len(out) > 2 else []


def per_request(count: float, accepted: int) -> float:
    """``count / accepted``, NaN with nothing accepted."""
    return count / accepted if accepted > 0 else math.nan


# --------------------------------------------------------------------------- memory


def parse_vmrss(status: str) -> int:
    """Resident set size in bytes from the text of ``/proc/<pid>/status``."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError("no VmRSS line (process gone or a kernel thread)")


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points; NaN with fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return math.nan
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return math.nan
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


@dataclass(frozen=True)
class RssSummary:
    """RSS over a run, in MiB; slopes in MiB per minute."""

    samples: int
    seconds: float
    start: float
    middle: float
    end: float
    peak: float
    slope_whole: float
    slope_second_half: float

    @property
    def flat(self) -> bool:
        """Whether the second half's slope is under :data:`FLAT_MIB_PER_MINUTE`."""
        return not math.isnan(self.slope_second_half) and (
            self.slope_second_half < FLAT_MIB_PER_MINUTE
        )

    @property
    def peak_growth(self) -> float:
        """How far RSS rose above its start at its highest."""
        return self.peak - self.start

    @property
    def bounded(self) -> bool:
        """Whether the peak stayed within :data:`UPLOAD_GROWTH_MIB` of the start."""
        return self.peak_growth < UPLOAD_GROWTH_MIB


def summarize_rss(samples: Sequence[tuple[float, int]]) -> RssSummary:
    """Start, middle, end, peak and slopes of ``(seconds, rss_bytes)`` samples in time order."""
    if not samples:
        raise ValueError("no RSS samples")
    t0 = samples[0][0]
    points = [(t - t0, rss / MIB) for t, rss in samples]
    duration = points[-1][0]
    middle = min(points, key=lambda p: abs(p[0] - duration / 2))
    second_half = [p for p in points if p[0] >= duration / 2]
    return RssSummary(
        samples=len(points),
        seconds=duration,
        start=points[0][1],
        middle=middle[1],
        end=points[-1][1],
        peak=max(y for _, y in points),
        slope_whole=slope(points) * 60,
        slope_second_half=slope(second_half) * 60,
    )
