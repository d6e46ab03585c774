"""The access log written off the request path: the same lines, none lost, drops counted."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from authgate import access_log
from authgate.access_log import CHUNK_BYTES, DecisionLog, format_json
from authgate.log import JSONFormatter, install_access_stream
from authgate.metrics import Metrics

DECISION = (True, "ok", "orders-read", "jwt", "alice", "rid-1", "GET", "203.0.113.9", "")


class Recording(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


class Broken(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("EPIPE")


@pytest.fixture
def stream(caplog: pytest.LogCaptureFixture) -> Iterator[Recording]:
    """An installed access stream, the decision logger at INFO (as `serve` leaves it)."""
    caplog.set_level(logging.INFO, logger="authgate.decision")
    out = Recording()
    install_access_stream(out, "json")
    try:
        yield out
    finally:
        install_access_stream(None)


def new_log(queue_lines: int = access_log.QUEUE_LINES) -> tuple[DecisionLog, Metrics]:
    metrics = Metrics()
    return (
        DecisionLog(
            enabled=True, dropped=metrics.access_log_dropped.labels(), queue_lines=queue_lines
        ),
        metrics,
    )


def via_logging(decision: tuple[object, ...], created: float) -> str:
    """What logging's JSONFormatter writes for the same decision."""
    granted, reason, rule_id, verifier, subject, rid, method, client, detail = decision
    record = logging.LogRecord("authgate.decision", logging.INFO, "", 0, "decision", None, None)
    record.created = created
    extra = {
        "event": "decision",
        "granted": granted,
        "reason": reason,
        "rule_id": rule_id,
        "verifier": verifier,
        "subject": subject,
        "request_id": rid,
        "method": method,
        "client_ip": client,
        "detail": detail,
    }
    record.__dict__.update(extra)
    return JSONFormatter().format(record) + "\n"


@pytest.mark.parametrize(
    "decision",
    [
        DECISION,
        (False, "token_expired", "orders", "jwt", "", "r2", "POST", "::1", "exp in the past"),
        (False, "missing_credential", "", "none", "", "r3", "GET", "10.0.0.1", ""),
        (True, "ok", "r", "bpc", 'quo"te\\ \u00e9\u2603 \x01', "r4", "GET", "1.2.3.4", ""),
    ],
)
def test_a_line_is_what_the_json_formatter_writes(decision: tuple[object, ...]) -> None:
    created = 1_790_000_000.123456
    entry = (created, *decision)
    assert format_json(entry) == via_logging(decision, created)  # type: ignore[arg-type]
    json.loads(format_json(entry))  # type: ignore[arg-type]


async def test_lines_are_written_after_the_request_not_during(stream: Recording) -> None:
    decisions, _ = new_log()
    for i in range(100):
        decisions.record(*DECISION[:5], f"rid-{i}", *DECISION[6:])
    assert stream.getvalue() == ""  # the decisions returned before any write
    await asyncio.sleep(access_log.FLUSH_SECONDS * 4)
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"rid-{i}" for i in range(100)]


async def test_a_full_batch_is_written_without_waiting_for_the_timer(stream: Recording) -> None:
    decisions, _ = new_log()
    for _ in range(access_log.BATCH_LINES):
        decisions.record(*DECISION)
    await asyncio.sleep(0)  # one turn of the loop, far less than FLUSH_SECONDS
    assert len(stream.getvalue().splitlines()) == access_log.BATCH_LINES


async def test_close_loses_nothing_and_later_decisions_still_log(
    stream: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    decisions, metrics = new_log()
    for i in range(5000):
        decisions.record(*DECISION[:5], f"rid-{i}", *DECISION[6:])
    decisions.close()
    ids = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert ids == [f"rid-{i}" for i in range(5000)]
    assert metrics.access_log_dropped.labels().value == 0
    with caplog.at_level(logging.INFO, logger="authgate.decision"):
        decisions.record(*DECISION)  # after close: at once, through logging
    assert [r.request_id for r in caplog.records] == ["rid-1"]  # type: ignore[attr-defined]


async def test_writes_are_whole_lines_of_at_most_pipe_buf(stream: Recording) -> None:
    decisions, _ = new_log()
    for i in range(3000):
        decisions.record(*DECISION[:4], "s" * (i % 700), f"rid-{i}", *DECISION[6:])
    decisions.flush()
    assert len(stream.writes) > 1
    for chunk in stream.writes:
        assert len(chunk.encode()) <= CHUNK_BYTES
        assert chunk.endswith("\n")
    assert len(stream.getvalue().splitlines()) == 3000


async def test_a_full_queue_drops_and_counts(stream: Recording) -> None:
    decisions, metrics = new_log(queue_lines=10)
    for _ in range(25):
        decisions.record(*DECISION)
    decisions.flush()
    assert len(stream.getvalue().splitlines()) == 10
    assert metrics.access_log_dropped.labels().value == 15


async def test_a_broken_stream_counts_its_lines_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="authgate.decision")
    install_access_stream(Broken(), "json")
    try:
        decisions, metrics = new_log()
        for _ in range(7):
            decisions.record(*DECISION)
        decisions.flush()
        assert metrics.access_log_dropped.labels().value == 7
    finally:
        install_access_stream(None)


async def test_without_an_installed_stream_each_decision_logs_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    decisions, _ = new_log()
    with caplog.at_level(logging.INFO, logger="authgate.decision"):
        decisions.record(*DECISION)
        assert len(caplog.records) == 1


async def test_nothing_is_queued_when_the_access_log_is_off_or_below_level(
    stream: Recording,
) -> None:
    metrics = Metrics()
    off = DecisionLog(enabled=False, dropped=metrics.access_log_dropped.labels())
    off.record(*DECISION)
    logger = logging.getLogger("authgate.decision")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        on, _ = new_log()
        on.record(*DECISION)
        on.flush()
    finally:
        logger.setLevel(level)
    off.flush()
    assert stream.getvalue() == ""
