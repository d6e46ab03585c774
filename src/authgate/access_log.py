"""The access log: one line per decision, written off the request path.

A decision appends one tuple to a bounded in-memory queue and returns; the lines are
formatted and written in batches by a callback on the event loop (every
:data:`FLUSH_SECONDS`, or at once when :data:`BATCH_LINES` wait), in chunks of at most
:data:`CHUNK_BYTES` cut at line ends, so that lines of several worker processes sharing one
pipe never interleave mid-line. Nothing is lost on a clean shutdown: closing the services
flushes, and so does the interpreter's exit. When the queue is full (the writer cannot keep
up, or the stream refuses writes) a decision's line is dropped and counted in
``authgate_access_log_dropped_total``; the request is never held up by its log line.

The lines are exactly what :class:`authgate.log.JSONFormatter` (or the text format) would
print for the same decision through :mod:`logging`. Where ``configure_logging`` has not
installed the stream (a library user, the tests), each decision is logged at once through
``logging`` instead, so handlers such as pytest's ``caplog`` see it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
import weakref
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING

from authgate.log import access_stream, format_timestamp

if TYPE_CHECKING:
    from authgate.metrics import CounterChild

log = logging.getLogger("authgate.decision")

FLUSH_SECONDS = 0.05
BATCH_LINES = 2048
QUEUE_LINES = 65_536
CHUNK_BYTES = 4096  # PIPE_BUF on Linux: a write of at most this much to a pipe is atomic

# (created, granted, reason, rule_id, verifier, subject, request_id, method, client_ip, detail)
Entry = tuple[float, bool, str, str, str, str, str, str, str, str]
_NAMES = ("reason", "rule_id", "verifier", "subject", "request_id", "method", "client_ip")


_open: weakref.WeakSet[DecisionLog] = weakref.WeakSet()


def _flush_all() -> None:
    for decision_log in list(_open):
        decision_log.flush()


atexit.register(_flush_all)


def format_json(entry: Entry) -> str:
    """One line, field for field what :class:`~authgate.log.JSONFormatter` writes."""
    created, granted, *texts = entry
    parts = [
        '{"ts":"',
        format_timestamp(created),
        '","level":"info","logger":"authgate.decision","msg":"decision","event":"decision",',
        '"granted":true' if granted else '"granted":false',
    ]
    for name, value in zip(_NAMES, texts, strict=False):
        if value:
            parts.append(f',"{name}":{encode_basestring_ascii(value)}')
    detail = texts[-1]
    if detail:
        parts.append(f',"detail":{encode_basestring_ascii(detail)}')
    parts.append("}\n")
    return "".join(parts)


def format_text(entry: Entry) -> str:
    """One line as the text format writes it (the decision fields are JSON-only)."""
    created = entry[0]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
    return f"{stamp},{int((created % 1) * 1000):03d} INFO authgate.decision decision\n"


class DecisionLog:
    """Records decisions; formats and writes them later, in batches (module docstring)."""

    def __init__(self, *, enabled: bool, dropped: CounterChild, queue_lines: int = QUEUE_LINES):
        self.enabled = enabled
        self._dropped = dropped
        self._queue_lines = queue_lines
        self._queue: list[Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        _open.add(self)

    def record(
        self,
        granted: bool,
        reason: str,
        rule_id: str,
        verifier: str,
        subject: str,
        request_id: str,
        method: str,
        client_ip: str,
        detail: str,
    ) -> None:
        """One decision's line, queued (or logged at once without an installed stream)."""
        if not self.enabled or not log.isEnabledFor(logging.INFO):
            return
        entry: Entry = (
            time.time(),
            granted,
            reason,
            rule_id,
            verifier,
            subject,
            request_id,
            method,
            client_ip,
            detail,
        )
        if self._closed or access_stream() is None:
            log.info("decision", extra=_extra(entry))
            return
        queue = self._queue
        if len(queue) >= self._queue_lines:
            self._dropped.value += 1.0
            return
        queue.append(entry)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(FLUSH_SECONDS, self.flush)
        elif len(queue) == BATCH_LINES:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write every queued line (a failed write drops and counts what it held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue, self._queue = self._queue, []
        sink = access_stream()
        if not queue:
            return
        if sink is None:  # the stream was removed while lines waited: through logging
            for entry in queue:
                log.info("decision", extra=_extra(entry))
            return
        fmt = format_json if sink.fmt == "json" else format_text
        chunk: list[str] = []
        size = 0
        written = 0
        try:
            for line in map(fmt, queue):
                if size + len(line) > CHUNK_BYTES and chunk:
                    sink.stream.write("".join(chunk))
                    written += len(chunk)
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            if chunk:
                sink.stream.write("".join(chunk))
                written += len(chunk)
            sink.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: counted, never raised
            self._dropped.value += float(len(queue) - written)

    def close(self) -> None:
        """Flush, and log any later decision at once (a shutdown must not lose lines)."""
        self.flush()
        self._closed = True


def _extra(entry: Entry) -> dict[str, object]:
    _, granted, *texts = entry
    extra: dict[str, object] = {"event": "decision", "granted": granted}
    extra.update(zip((*_NAMES, "detail"), texts, strict=True))
    return extra
