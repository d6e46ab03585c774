"""``bench/targets.py``: the limit, ratios, verdicts and RSS summaries the results page shows."""

from __future__ import annotations

import math

import pytest
from bench.targets import (
    FLAT_MIB_PER_MINUTE,
    MIB,
    REFERENCES,
    TARGETS,
    Target,
    evaluate,
    limit_rps,
    paired_ratios,
    parse_vmrss,
    render_references,
    render_rows,
    slope,
    summarize_rss,
)

BPC = next(t for t in TARGETS if t.scenario == "bpc")
WARM = next(t for t in TARGETS if t.scenario == "warm-uris")


def test_limit_is_one_over_the_sum_of_the_two_times() -> None:
    """40,000 bare req/s (25 us) and 10,000 verifies/s (100 us) give 8,000 req/s."""
    assert limit_rps(40_000, 10_000) == pytest.approx(8_000)


@pytest.mark.parametrize(("bare", "verify"), [(0, 10_000), (40_000, 0), (math.nan, 1.0)])
def test_limit_without_a_baseline_is_nan(bare: float, verify: float) -> None:
    """A missing or zero baseline gives no limit rather than a made-up one."""
    assert math.isnan(limit_rps(bare, verify))


def test_every_row_of_the_issue_is_a_target() -> None:
    """Seven rows, each with its own scenario and a known baseline."""
    assert len(TARGETS) == 7
    assert len({t.scenario for t in TARGETS}) == 7
    assert {t.baseline for t in TARGETS} <= {"bare", "limit", "passthrough", "workers-1"}


@pytest.mark.parametrize(
    ("target", "rps", "limit", "trips", "met"),
    [
        (WARM, {"warm-uris": 8_000, "bare": 10_000}, math.nan, {}, True),
        (WARM, {"warm-uris": 7_999, "bare": 10_000}, math.nan, {}, False),
        (WARM, {"warm-uris": 8_000}, math.nan, {}, None),
        (BPC, {"bpc": 6_000}, 10_000.0, {"bpc": 1.0}, True),
        (BPC, {"bpc": 6_000}, 10_000.0, {"bpc": 1.5}, False),
        (BPC, {"bpc": 6_000}, 10_000.0, {}, False),
        (BPC, {"bpc": 5_000}, 10_000.0, {"bpc": 1.0}, False),
    ],
    ids=[
        "at-target",
        "just-below",
        "no-baseline",
        "limit-and-trips-met",
        "too-many-trips",
        "trips-not-counted",
        "ratio-below",
    ],
)
def test_evaluate(
    target: Target,
    rps: dict[str, float],
    limit: float,
    trips: dict[str, float],
    met: bool | None,
) -> None:
    """A row is met only with its ratio reached and, where targeted, its round trips."""
    assert evaluate(target, rps, limit=limit, round_trips=trips).met is met


def test_rendered_rows_say_met_or_not() -> None:
    """The markdown table has a header, a rule and one line per row with the verdict."""
    rows = [
        evaluate(WARM, {"warm-uris": 9_000, "bare": 10_000}, limit=math.nan, round_trips={}),
        evaluate(BPC, {}, limit=math.nan, round_trips={}),
    ]
    lines = render_rows(rows)
    assert len(lines) == 4
    assert "0.90 x bare aiohttp" in lines[2]
    assert "**met**" in lines[2]
    assert lines[3].endswith("| not counted | not measured |")


def test_parse_vmrss() -> None:
    """VmRSS in kB becomes bytes."""
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmRSS:\t   65536 kB\nThreads:\t1\n"
    assert parse_vmrss(status) == 64 * MIB


@pytest.mark.parametrize(
    "status", ["Name:\tkthreadd\n", "VmRSS:\t 1 MB\n"], ids=["no-line", "other-unit"]
)
def test_parse_vmrss_refuses_what_it_cannot_read(status: str) -> None:
    """No VmRSS line, or an unknown unit, is an error rather than a zero."""
    with pytest.raises(ValueError, match="VmRSS"):
        parse_vmrss(status)


def test_slope_of_a_line_and_of_too_little() -> None:
    """Least squares recovers a line's slope; one point has none."""
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2)
    assert math.isnan(slope([(0, 1)]))
    assert math.isnan(slope([(1, 1), (1, 2)]))


def test_rss_that_fills_then_stays_is_flat() -> None:
    """A cache that fills in the first half and then holds: flat, start/middle/end right."""
    samples = [(float(t), (100 + min(t, 20)) * MIB) for t in range(61)]
    s = summarize_rss(samples)
    assert (s.start, s.middle, s.end, s.peak) == (100, 120, 120, 120)
    assert s.slope_second_half == pytest.approx(0)
    assert s.flat
    assert s.peak_growth == 20


def test_rss_that_keeps_growing_is_not_flat() -> None:
    """Growth of 1 MiB every 10 s (6 MiB/min) is not flat, in either half."""
    samples = [(float(t), 100 * MIB + t * MIB // 10) for t in range(61)]
    s = summarize_rss(samples)
    assert s.slope_whole == pytest.approx(6, rel=0.02)
    assert s.slope_second_half > FLAT_MIB_PER_MINUTE
    assert not s.flat


def test_a_streamed_upload_is_bounded_and_a_buffered_one_is_not() -> None:
    """Peak growth decides the upload: a few MiB is bounded, a held gigabyte is not."""
    streamed = summarize_rss([(0.0, 64 * MIB), (1.0, 70 * MIB), (2.0, 65 * MIB)])
    buffered = summarize_rss([(0.0, 64 * MIB), (1.0, 1088 * MIB), (2.0, 70 * MIB)])
    assert streamed.bounded
    assert not buffered.bounded


def test_summarize_needs_samples() -> None:
    """No samples is an error, never an all-zero summary."""
    with pytest.raises(ValueError, match="no RSS samples"):
        summarize_rss([])


def test_paired_ratios_compare_each_round_with_its_own_baseline() -> None:
    """Round i of the scenario against round i of the baseline; "limit" pairs each round's
    bare run with that round's raw verify."""
    rounds = {"warm-uris": [8_000.0, 6_000.0, 9_000.0], "bare": [10_000.0, 6_000.0, 12_000.0]}
    assert paired_ratios(WARM, rounds, []) == pytest.approx([0.8, 1.0, 0.75])
    limit_rounds = {"bpc": [4_000.0, 3_000.0], "bare": [40_000.0, 20_000.0]}
    expected = [4_000 / limit_rps(40_000, 10_000), 3_000 / limit_rps(20_000, 5_000)]
    assert paired_ratios(BPC, limit_rounds, [10_000.0, 5_000.0]) == pytest.approx(expected)
    assert paired_ratios(BPC, limit_rounds, []) == []  # no verify measured: no limit


def test_the_verdict_reads_the_median_of_the_pairs_not_the_best_rounds() -> None:
    """Best rounds from different conditions can meet a target no round met."""
    rps = {"warm-uris": 9_000.0, "bare": 10_000.0}  # the best of each: 0.90
    row = evaluate(WARM, rps, limit=math.nan, round_trips={}, paired=[0.70, 0.78, 0.95])
    assert row.ratio == pytest.approx(0.90)
    assert row.verdict_ratio == pytest.approx(0.78)
    assert row.met is False
    line = render_rows([row])[2]
    assert "| 0.78 (0.70-0.95) |" in line
    assert line.endswith("| **not met** |")
    assert evaluate(WARM, rps, limit=math.nan, round_trips={}, paired=[0.8, 0.85]).met is True


def test_references_are_measured_against_the_limit_without_a_verdict() -> None:
    """The verify-only reference shows its ratio to the limit (10,000 req/s here) and no
    met/not met; a reference this run did not measure is left out of the page."""
    (verify_only,) = REFERENCES
    assert verify_only.baseline == "limit"
    rps = {"verify-only": 7_500.0}
    row = evaluate(verify_only, rps, limit=10_000, round_trips={}, paired=[0.74, 0.75, 0.77])
    table = render_references([row])
    assert len(table) == 3
    assert "| 7,500 | 10,000 | 0.75 x the limit | 0.75 (0.74-0.77) |" in table[2]
    assert "met" not in "\n".join(table)
    unmeasured = evaluate(verify_only, {}, limit=10_000, round_trips={})
    assert render_references([unmeasured]) == []
