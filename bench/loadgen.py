"""Fallback load generator, used when ``wrk`` is not installed (or ``--generator python``).

Closed loop like wrk: N keep-alive connections, each sends the next request as soon as the
previous response is complete. Raw asyncio protocol, no HTTP client library, so that one core
of it outruns one core of aiohttp. It prints one ``WRKJSON {...}`` line with the same keys as
``bench/auth.lua`` so ``bench/run.py`` treats both generators alike.

    python bench/loadgen.py --port P --path /auth --connections 64 --duration 10 \
        --header "X-Original-URI: /x" [--tokens-file F --start N]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from array import array


class Shared:
    """State shared by every connection of one run."""

    def __init__(
        self,
        head: bytes,
        tokens: list[bytes] | None,
        start: int,
        deadline: int,
        vary_uri: bool = False,
    ) -> None:
        self.head = head
        self.vary_uri = vary_uri
        self.tokens = tokens
        self.idx = start % len(tokens) if tokens else 0
        self.wraps = 0
        self.used = 0
        self.deadline = deadline
        self.latencies = array("q")
        self.bad_status = 0
        self.read_errors = 0
        self.bytes = 0
        self.static = head + b"\r\n"

    def next_request(self) -> bytes:
        if self.vary_uri:
            self.used += 1
            return self.head + b"X-Original-URI: /api/orders/%d?expand=items\r\n\r\n" % self.used
        if self.tokens is None:
            return self.static
        token = self.tokens[self.idx]
        self.idx += 1
        self.used += 1
        if self.idx >= len(self.tokens):
            self.idx = 0
            self.wraps += 1
        return self.head + b"Authorization: Bearer " + token + b"\r\n\r\n"


class Conn(asyncio.Protocol):
    """One keep-alive connection in a closed loop."""

    def __init__(self, shared: Shared, done: asyncio.Future[None]) -> None:
        self.s = shared
        self.done = done
        self.buf = b""
        self.t0 = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.s.next_request())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            pos = head.lower().find(b"\r\ncontent-length:")
            if pos >= 0:
                line_end = head.find(b"\r\n", pos + 2)
                length = int(head[pos + 17 : line_end if line_end >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            now = time.perf_counter_ns()
            self.s.bytes += total
            self.buf = self.buf[total:]
            if now > self.s.deadline:
                self.finish()
                return
            self.s.latencies.append(now - self.t0)
            if head[9:12] != b"200":
                self.s.bad_status += 1
            self.send()

    def finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter_ns() < self.s.deadline:
            self.s.read_errors += 1
        if not self.done.done():
            self.done.set_result(None)


def percentile(sorted_values: array[int], q: float) -> int:
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


async def run(args: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    lines = [f"GET {args.path} HTTP/1.1", f"Host: 127.0.0.1:{args.port}", *args.header]
    head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    tokens = None
    if args.tokens_file:
        with open(args.tokens_file, "rb") as f:
            tokens = [line.strip() for line in f if line.strip()]
    start = time.perf_counter_ns()
    shared = Shared(
        head, tokens, args.start, start + int(args.duration * 1e9), vary_uri=args.vary_uri
    )
    dones = []
    for _ in range(args.connections):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(functools.partial(Conn, shared, done), "127.0.0.1", args.port)
        dones.append(done)
    await asyncio.sleep(args.duration)
    await asyncio.wait(dones, timeout=5)
    elapsed = (time.perf_counter_ns() - start) / 1000
    lat = array("q", sorted(shared.latencies))
    n = len(lat)
    return {
        "requests": n,
        "duration_us": round(min(elapsed, args.duration * 1e6)),
        "bytes": shared.bytes,
        "errors_connect": 0,
        "errors_read": shared.read_errors,
        "errors_write": 0,
        "errors_status": shared.bad_status,
        "errors_timeout": 0,
        "p50_us": percentile(lat, 50) // 1000,
        "p90_us": percentile(lat, 90) // 1000,
        "p99_us": percentile(lat, 99) // 1000,
        "mean_us": (sum(lat) / n / 1000) if n else 0.0,
        "max_us": (lat[-1] // 1000) if n else 0,
        "tokens_used": shared.used,
        "token_wraps": shared.wraps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--tokens-file")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument(
        "--vary-uri", action="store_true", help="a new X-Original-URI on every request"
    )
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print("WRKJSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
