"""Route rate limits as store checks, and the refusal they produce."""

from __future__ import annotations

from collections.abc import Sequence

from authgate.errors import RateLimited
from authgate.policy.rules import CompiledRule
from authgate.stores.base import RateLimitCheck, RateLimitResult


def checks_for(rule: CompiledRule, by: str) -> list[RateLimitCheck]:
    """The rule's limits of one kind (``client`` or ``credential``), keyed by rule."""
    # At least 1 ms: the config allows any period > 0, and a sub-millisecond one rounded
    # to 0 would make the Redis store raise (a 500) and the memory store admit everything.
    return [
        RateLimitCheck(
            key=f"{rule.id}:{index}",
            limit=limit.limit,
            period_ms=max(1, int(limit.period_seconds * 1000)),
        )
        for index, limit in enumerate(rule.rate_limits)
        if limit.by == by
    ]


def rate_limited(result: RateLimitResult, message: str, *, period_ms: int) -> RateLimited:
    """The 429 for a refused check, with the IETF ``RateLimit-*`` fields (whole seconds,
    rounded up)."""
    return RateLimited(
        message,
        retry_after_seconds=-(-result.retry_after_ms // 1000),
        limit=result.limit,
        remaining=result.remaining,
        reset_seconds=-(-result.reset_after_ms // 1000),
        window_seconds=max(1, -(-period_ms // 1000)),
    )


def raise_if_limited(
    results: Sequence[RateLimitResult], checks: Sequence[RateLimitCheck], *, by: str
) -> None:
    """Raise :class:`RateLimited` (with the IETF fields) when any check refused."""
    for result, check in zip(results, checks, strict=False):
        if not result.allowed:
            raise rate_limited(result, f"rate limit exceeded ({by})", period_ms=check.period_ms)
