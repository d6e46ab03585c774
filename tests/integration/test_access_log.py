"""The access log of a real ``authgate serve``: written off the request path, yet every
decision has its line after a clean shutdown, whole, with one or several workers."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import Signing, authgate_config, redis_stores_config, running

CONNECTIONS = 8
PER_CONNECTION = 250


def _send(port: int, connection: int) -> list[int]:
    """``PER_CONNECTION`` forward-auth requests on one keep-alive connection: statuses."""
    statuses = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for i in range(PER_CONNECTION):
            # Alternate a granted (public) and a refused (no credential) decision.
            uri = "/public/x" if i % 2 == 0 else f"/orders/{i}"
            sock.sendall(
                (
                    f"GET /auth HTTP/1.1\r\nHost: t\r\nX-Original-Method: GET\r\n"
                    f"X-Original-URI: {uri}\r\nX-Request-Id: c{connection}-r{i}\r\n\r\n"
                ).encode()
            )
            status = int(reader.readline().split()[1])
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            reader.read(length)
            statuses.append(status)
    return statuses


@pytest.mark.redis
@pytest.mark.parametrize("workers", [1, 2])
def test_every_decision_has_one_whole_line_after_a_clean_shutdown(
    signing: Signing, redis_url: str, key_prefix: str, tmp_path: Path, workers: int
) -> None:
    config = authgate_config(
        signing,
        server={"workers": workers},
        stores=redis_stores_config(redis_url, key_prefix),
        logging={"level": "INFO", "access_log": True},
    )
    with running(config, tmp_path) as gate:
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            statuses = [
                s
                for batch in pool.map(_send, [gate.port] * CONNECTIONS, range(CONNECTIONS))
                for s in batch
            ]
        assert statuses.count(200) == statuses.count(401) == CONNECTIONS * PER_CONNECTION // 2
    # Stopped (SIGTERM): whatever was still queued has been written.
    decisions = []
    for line in gate.logs().splitlines():
        if '"event":"decision"' in line:
            decisions.append(json.loads(line))  # a torn or interleaved line fails here
    sent = {f"c{c}-r{i}" for c in range(CONNECTIONS) for i in range(PER_CONNECTION)}
    assert sorted(d["request_id"] for d in decisions) == sorted(sent)
    granted = [d for d in decisions if d["granted"]]
    assert len(granted) == len(sent) // 2
    assert {d["reason"] for d in decisions} == {"ok", "credential_missing"}
    assert all(d["logger"] == "authgate.decision" and d["level"] == "info" for d in decisions)
