"""``bench/run.py``'s early stop of a load run (what the memory run uses to send its million
URIs and no more): the generator is interrupted once ``stop_when`` says so, and still
reports what it sent. Run against ``bench/bare_server.py`` with ``bench/loadgen.py``, the
generator a machine without wrk uses (wrk takes the same SIGINT)."""

from __future__ import annotations

import time
from pathlib import Path

from bench.procs import python_server
from bench.run import LoadSpec, Traffic, run_load

from tests.support import free_port


def test_a_load_run_ends_when_asked_and_reports_what_it_sent(tmp_path: Path) -> None:
    server = python_server("bare", "bare_server.py", free_port(), tmp_path, cpus=None)
    spec = LoadSpec(generator="python", connections=4, threads=1)
    traffic = Traffic("vary-uri", ["X-Original-Method: GET"])
    asked: list[float] = []

    def stop_when() -> bool:
        asked.append(time.monotonic())
        return len(asked) >= 3  # about 1.5 s in

    with server.running():
        started = time.monotonic()
        record, _, generator = run_load(spec, server.port, 60, traffic, None, stop_when=stop_when)
        took = time.monotonic() - started
    assert generator == "loadgen.py"
    assert len(asked) == 3  # never asked again once it said stop
    assert took < 30, took  # not the 60 s the run was allowed
    assert record["requests"] > 0
    assert record["duration_us"] < 30e6
    assert record["errors_status"] == 0
