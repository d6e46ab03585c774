"""Malformed traffic over raw sockets against a real ``authgate serve`` process with a real
upstream: the campaign of ``tests/hostile.py`` (``bench/hostile_traffic.py`` runs it in full),
bounded, against the sidecar and each forward-auth door.

Per case and door: never a 5xx, never a hang (every exchange answers or is closed within its
bound, and a healthy request answers 200 afterwards), every refusal authgate's JSON problem.
Over the module: the server's RSS stays bounded and every client connection is closed by
authgate's own timers (head deadline, body pause bound, keep-alive). Memory stores: no Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.hostile import (
    CASES,
    TARGETS,
    EchoUpstream,
    Exchange,
    Scale,
    Target,
    config,
    healthy,
    rss_bytes,
    run_case,
    settle_connections,
)
from tests.hostile import _exchange as exchange
from tests.support import AuthgateProcess

DEADLINE = 1.5  # server.header_read_timeout_seconds (and the body pause bound) here
SCALE = Scale(repeat=1, slow_connections=9, header_deadline=DEADLINE, concurrency=16)
MAX_RSS_GROWTH = 100 * 1024 * 1024
SIDECAR = TARGETS[0]


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    """The echo upstream in its own thread."""
    with EchoUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def authgate(
    upstream: EchoUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthgateProcess]:
    """One ``authgate serve``: the sidecar in front of the upstream, the doors on its port."""
    proc = AuthgateProcess(
        config(upstream.port, header_deadline=DEADLINE), tmp_path_factory.mktemp("hostile")
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def baseline(authgate: AuthgateProcess) -> int:
    """The server's RSS before any hostile byte."""
    for target in TARGETS:
        assert asyncio.run(healthy(authgate.port, target))
    return rss_bytes(authgate.pid)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_traffic_never_gets_a_5xx_a_hang_or_a_foreign_refusal(
    authgate: AuthgateProcess, baseline: int, upstream: EchoUpstream, case: str, target: Target
) -> None:
    outcome = asyncio.run(run_case(authgate.port, case, target, SCALE))
    assert outcome.fivexx == 0, outcome.statuses
    assert outcome.hangs == 0, outcome.statuses
    assert not outcome.violations, sorted(set(outcome.violations))
    assert outcome.healthy_after, "the healthy request did not answer 200 after the burst"
    assert authgate.proc is not None and authgate.proc.poll() is None
    assert "Traceback" not in authgate.logs()


def test_memory_stays_bounded_and_every_connection_is_closed(
    authgate: AuthgateProcess, baseline: int
) -> None:
    """After every case (this test runs after them), RSS grew by less than 100 MB and
    authgate's timers closed every client connection the campaign left open."""
    assert rss_bytes(authgate.pid) - baseline < MAX_RSS_GROWTH
    assert settle_connections(authgate.pid, authgate.port, timeout=DEADLINE * 2 + 10) == 0


# --- regressions of what the campaign found ---------------------------------------------


def test_a_head_trickled_past_the_deadline_is_a_json_408_and_closed(
    authgate: AuthgateProcess,
) -> None:
    """A slowloris head (a header line every 0.2 s, never finished) was held for aiohttp's
    keep-alive timeout, 3630 s: now 408 ``request_timeout`` at the head deadline."""
    steps = ((SIDECAR.head(), 0.0), *((b"X-Slow-%d: v\r\n" % i, 0.2) for i in range(40)))
    started = time.monotonic()
    outcomes, violations, hung = asyncio.run(
        exchange(authgate.port, Exchange(steps, "answer-or-close", read_bound=DEADLINE + 8))
    )
    assert not hung and not violations
    assert outcomes[0] in {"408", "reset"}, outcomes  # the 408, or a reset while still writing
    assert time.monotonic() - started < DEADLINE + 5


def test_an_unfinished_head_gets_the_408_problem(authgate: AuthgateProcess) -> None:
    outcomes, violations, hung = asyncio.run(
        exchange(
            authgate.port,
            Exchange.of(SIDECAR.head(), "answer", read_bound=DEADLINE + 8),
        )
    )
    assert outcomes == ["408"] and not violations and not hung


def test_a_connection_that_sends_nothing_is_closed_silently(authgate: AuthgateProcess) -> None:
    outcomes, _, hung = asyncio.run(
        exchange(authgate.port, Exchange.of(b"", "answer-or-close", read_bound=DEADLINE + 8))
    )
    assert outcomes == ["closed"] and not hung


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
@pytest.mark.parametrize(
    "request_target",
    [(b"CONNECT", b"app.test:443"), (b"CONNECT", b"/public/items"), (b"OPTIONS", b"*")],
    ids=["connect-authority", "connect-path", "options-asterisk"],
)
def test_a_target_that_is_not_a_path_is_a_json_invalid_target(
    authgate: AuthgateProcess, target: Target, request_target: tuple[bytes, bytes]
) -> None:
    """aiohttp answered these with a plain-text 404 (no route can match them)."""
    method, raw = request_target
    outcomes, violations, _ = asyncio.run(
        exchange(authgate.port, Exchange.of(target.request(method=method, target=raw)))
    )
    assert outcomes == ["400"] and not violations


def test_a_stalled_body_in_the_sidecar_is_a_408_not_held_forever(
    authgate: AuthgateProcess,
) -> None:
    """A body that stops short held the client connection and an upstream connection for as
    long as the client liked (the upstream pool drains, then healthy requests fail): now
    408 ``request_timeout`` after ``server.body_read_timeout_seconds`` without a byte."""
    head = SIDECAR.head(method=b"POST", extra=(b"Content-Length: 100000",))
    for body_start in (b"short", b""):
        outcomes, violations, hung = asyncio.run(
            exchange(
                authgate.port,
                Exchange.of(head + b"\r\n" + body_start, read_bound=DEADLINE + 8),
            )
        )
        assert outcomes == ["408"] and not violations and not hung
    chunked = SIDECAR.head(method=b"POST", extra=(b"Transfer-Encoding: chunked",))
    outcomes, violations, _ = asyncio.run(
        exchange(
            authgate.port,
            Exchange.of(chunked + b"\r\n5\r\nhello\r\n", read_bound=DEADLINE + 8),
        )
    )
    assert outcomes == ["408"] and not violations


def test_a_body_trickling_faster_than_the_bound_still_reaches_the_upstream(
    authgate: AuthgateProcess, upstream: EchoUpstream
) -> None:
    """The bound is on pauses, not on the whole body: a slow but steady upload passes."""
    head = SIDECAR.head(method=b"POST", extra=(b"Content-Length: 6", b"Connection: close"))
    steps = ((head + b"\r\n", 0.0), *((b"x", DEADLINE / 2) for _ in range(6)))
    outcomes, violations, _ = asyncio.run(
        exchange(authgate.port, Exchange(steps, "answer", read_bound=DEADLINE + 8))
    )
    assert outcomes == ["200"] and not violations
