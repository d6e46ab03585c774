"""JSON logging with a fixed field set; tokens, signatures and keys are never logged."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

# Fields copied from ``extra=`` into the JSON line; anything else passed is ignored, so a
# careless ``extra`` cannot leak a token into the logs.
FIELDS = (
    "event",
    "granted",
    "reason",
    "rule_id",
    "verifier",
    "subject",
    "request_id",
    "method",
    "client_ip",
    "status",
    "url",
    "error",
    "upstream_status",
    "duration_ms",
    "host",
    "port",
    "workers",
    "backend",
    "detail",
    "keys",
    "generation",
    "config_hash",
)


_stamp: tuple[int, str] = (-1, "")


def format_timestamp(created: float) -> str:
    """``created`` (seconds since the epoch) as the lines' UTC ``ts``, to the millisecond."""
    global _stamp  # noqa: PLW0603 - strftime once per second, not once per line
    second = int(created)
    if second != _stamp[0]:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_stamp[1]}.{int((created - second) * 1000):03d}Z"


class AccessStream:
    """Where ``authgate serve`` sends the access log: its log stream and format."""

    def __init__(self, stream: IO[str], fmt: str) -> None:
        self.stream = stream
        self.fmt = fmt


_access: AccessStream | None = None


def install_access_stream(stream: IO[str] | None, fmt: str = "json") -> None:
    """Have the access log write to ``stream`` in batches (``None``: through ``logging``)."""
    global _access  # noqa: PLW0603 - one log stream per process, like logging's root handler
    _access = None if stream is None else AccessStream(stream, fmt)


def access_stream() -> AccessStream | None:
    """The access log's stream, when ``configure_logging`` installed one."""
    return _access


class JSONFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": format_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in FIELDS:
            value = record.__dict__.get(field)
            if value is not None and value != "":
                entry[field] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    """Install the root handler (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    # Fields the lines never show: skip collecting them for every record. Without a source
    # file, records skip the stack walk that finds the caller's file and line (the logging
    # HOWTO's "Optimization" section); it was most of an access-log line's cost.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The access log (access_log.py) writes to the same stream, in batches.
    install_access_stream(handler.stream, fmt)
    root.setLevel(level)
    # aiohttp's access log would print full request lines (query strings may hold secrets).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
