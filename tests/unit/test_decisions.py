"""``RecentDecisions``: the console's ring of the last decisions and per-minute counts."""

from __future__ import annotations

from authgate.decisions import WINDOW_MINUTES, RecentDecisions


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def add(recent: RecentDecisions, reason: str, *, granted: bool = False) -> None:
    """One decision with ``reason``."""
    recent.add(
        granted=granted,
        reason=reason,
        rule_id="r",
        credential="jwt",
        subject="s",
        client_ip="192.0.2.1",
        method="GET",
        request_id="id",
        detail="",
    )


def test_the_ring_keeps_the_newest_decisions_newest_first() -> None:
    """Past its size the oldest decisions leave; ``latest`` is newest first."""
    recent = RecentDecisions(3)
    for reason in ("a", "b", "c", "d"):
        add(recent, reason)
    assert [d.reason for d in recent.latest(10)] == ["d", "c", "b"]
    assert [d.reason for d in recent.latest(1)] == ["d"]
    assert recent.latest(0) == []


def test_counts_cover_the_window_and_forget_older_minutes() -> None:
    """Counts by (outcome, reason) over the last minutes; a minute past the window leaves
    even when the ring still holds its decisions."""
    clock = Clock()
    recent = RecentDecisions(1000, now=clock)
    add(recent, "token_expired")
    add(recent, "token_expired")
    add(recent, "ok", granted=True)
    assert recent.counts() == [(False, "token_expired", 2), (True, "ok", 1)]
    clock.now += 60 * WINDOW_MINUTES
    add(recent, "pair_pending")
    assert recent.counts() == [(False, "pair_pending", 1)]
    assert recent.counts(minutes=1) == [(False, "pair_pending", 1)]
    assert len(recent.latest(100)) == 4
