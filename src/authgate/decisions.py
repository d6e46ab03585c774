"""The last decisions of this process, in memory, for the operator console.

:class:`RecentDecisions` is fed by ``Gate`` next to the access log (``pipeline.py``) with the
same fields the access log writes (never a credential: the reason, rule, credential type,
subject, client address, method, request id and the refusal's fixed ``detail`` phrase). It
keeps the newest ``size`` decisions in a ring and counts decisions by outcome and reason in
one-minute buckets for the last :data:`WINDOW_MINUTES` minutes. Appending is O(1) and never
awaits; it is built only when the console is enabled.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_MINUTES = 15


@dataclass(frozen=True, slots=True)
class RecentDecision:
    """One decision as the console shows it."""

    ts: float
    granted: bool
    reason: str
    rule_id: str
    credential: str
    subject: str
    client_ip: str
    method: str
    request_id: str
    detail: str


class RecentDecisions:
    """A ring of the newest decisions and per-minute counts by (outcome, reason)."""

    def __init__(self, size: int, *, now: Callable[[], float] = time.time) -> None:
        self._ring: deque[RecentDecision] = deque(maxlen=size)
        self._minutes: dict[int, Counter[tuple[bool, str]]] = {}
        self._now = now

    def add(
        self,
        *,
        granted: bool,
        reason: str,
        rule_id: str,
        credential: str,
        subject: str,
        client_ip: str,
        method: str,
        request_id: str,
        detail: str,
    ) -> None:
        """Record one decision."""
        ts = self._now()
        self._ring.append(
            RecentDecision(
                ts,
                granted,
                reason,
                rule_id,
                credential,
                subject,
                client_ip,
                method,
                request_id,
                detail,
            )
        )
        minute = int(ts // 60)
        bucket = self._minutes.get(minute)
        if bucket is None:
            bucket = self._minutes[minute] = Counter()
            for old in [m for m in self._minutes if m <= minute - WINDOW_MINUTES]:
                del self._minutes[old]
        bucket[(granted, reason)] += 1

    def latest(self, limit: int) -> list[RecentDecision]:
        """The newest ``limit`` decisions, newest first."""
        out = list(self._ring)[-limit:] if limit > 0 else []
        out.reverse()
        return out

    def counts(self, minutes: int = WINDOW_MINUTES) -> list[tuple[bool, str, int]]:
        """Decisions by (granted, reason) over the last ``minutes`` minutes, most first."""
        since = int(self._now() // 60) - min(minutes, WINDOW_MINUTES) + 1
        total: Counter[tuple[bool, str]] = Counter()
        for minute, bucket in self._minutes.items():
            if minute >= since:
                total.update(bucket)
        return [(g, r, n) for (g, r), n in total.most_common()]
