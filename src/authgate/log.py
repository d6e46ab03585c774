"""JSON logging with a fixed field set; tokens, signatures and keys are never logged."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

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
)


class JSONFormatter(logging.Formatter):
    """One JSON object per line."""

    _second = -1
    _stamp = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once per second, not once per line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
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
    root.setLevel(level)
    # aiohttp's access log would print full request lines (query strings may hold secrets).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
