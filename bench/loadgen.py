"""Python load generator: the fallback when ``wrk`` is missing, and the HMAC proof client.

Closed loop like wrk: N keep-alive connections, each sends the next request as soon as the
previous response is complete. Raw asyncio protocol, no HTTP client library, so that one core
of it outruns one core of aiohttp. It prints one ``WRKJSON {...}`` line with the same keys as
``bench/auth.lua`` so ``bench/run.py`` treats both generators alike.

    python bench/loadgen.py --port P --path /auth --connections 64 --duration 10 \
        --header "X-Original-URI: /x" [--tokens-file F --start N | --requests-file F \
        | --vary-uri | --vary-path | --mem-tokens F --repeat R | --hmac-key KEY]

``--hmac-key`` is the HMAC proof flow of ``docs/`` (``authgate.client.hmac_proof``): each
connection fetches ``GET /challenge``, builds the ``AGProof`` header for a new target and
sends ``GET /auth`` with it, then starts over. Only the proofs count as requests (and their
latency is the proof request's own); the challenges are counted apart. wrk cannot compute an
HMAC per request, so this mode is Python only; ``bench/run.py`` reports this generator's CPU
so a saturated generator shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import signal
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path


class Shared:
    """State shared by every connection of one run."""

    def __init__(
        self,
        head: bytes,
        deadline: int,
        *,
        tokens: list[bytes] | None = None,
        start: int = 0,
        vary_uri: bool = False,
        vary_path: bytes | None = None,
        requests: list[bytes] | None = None,
        mem_repeat: int = 0,
        proof: Callable[[bytes, str], str] | None = None,
    ) -> None:
        self.head = head
        self.vary_uri = vary_uri
        self.vary_path = vary_path  # the rest of the request after "GET <path>"
        self.tokens = tokens
        self.requests = requests
        self.mem_repeat = mem_repeat
        self.proof = proof  # HMAC: (challenge body, target) -> Authorization value
        pool = requests if requests is not None else tokens
        self.idx = start % len(pool) if pool else 0
        self.wraps = 0
        self.used = 0
        self.deadline = deadline
        self.latencies = array("q")
        self.bad_status = 0
        self.read_errors = 0
        self.challenges = 0
        self.bytes = 0
        self.static = head + b"\r\n"

    def next_request(self) -> bytes:
        if self.vary_uri:
            self.used += 1
            return self.head + b"X-Original-URI: /api/orders/%d?expand=items\r\n\r\n" % self.used
        if self.vary_path is not None:
            self.used += 1
            return b"GET /api/orders/%d?expand=items" % self.used + self.vary_path
        if self.mem_repeat and self.tokens:
            token = self.tokens[(self.used // self.mem_repeat) % len(self.tokens)]
            self.used += 1
            return (
                self.head
                + b"Authorization: Bearer "
                + token
                + b"\r\nX-Original-URI: /api/mem/%d?page=%d\r\n\r\n" % (self.used, self.used)
            )
        pool = self.requests if self.requests is not None else self.tokens
        if pool is None:
            return self.static
        item = pool[self.idx]
        self.idx += 1
        self.used += 1
        if self.idx >= len(pool):
            self.idx = 0
            self.wraps += 1
        if self.requests is not None:
            return item
        return self.head + b"Authorization: Bearer " + item + b"\r\n\r\n"

    def proof_request(self, challenge: bytes) -> bytes:
        """The ``/auth`` request proving the API key against ``challenge``."""
        assert self.proof is not None
        self.used += 1
        target = f"/api/hmac/{self.used}?expand=items"
        return self.head + (
            f"X-Original-URI: {target}\r\nAuthorization: {self.proof(challenge, target)}\r\n\r\n"
        ).encode("latin-1")


class Conn(asyncio.Protocol):
    """One keep-alive connection in a closed loop."""

    def __init__(self, shared: Shared, done: asyncio.Future[None], challenge: bytes) -> None:
        self.s = shared
        self.done = done
        self.buf = b""
        self.t0 = 0
        self.challenge = challenge  # the GET /challenge request (HMAC mode)
        self.awaiting_challenge = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        if self.s.proof is not None:
            self.awaiting_challenge = True
            self.transport.write(self.challenge)
            return
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
            body = self.buf[end + 4 : total]
            self.s.bytes += total
            self.buf = self.buf[total:]
            if now > self.s.deadline:
                self.finish()
                return
            ok = head[9:12] == b"200"
            if self.awaiting_challenge:
                self.awaiting_challenge = False
                self.s.challenges += 1
                if not ok:
                    self.s.bad_status += 1
                    self.send()
                    continue
                assert self.transport is not None
                self.t0 = time.perf_counter_ns()
                self.transport.write(self.s.proof_request(body))
                continue
            self.s.latencies.append(now - self.t0)
            if not ok:
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


def hmac_prover(api_key: str) -> Callable[[bytes, str], str]:
    """``(challenge JSON, target) -> Authorization`` with the published client's function."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "src"))
    from authgate.client.hmac_proof import proof_header

    def prove(challenge: bytes, target: str) -> str:
        return proof_header(json.loads(challenge), api_key, "GET", target)

    return prove


def read_requests(path: str, host: str) -> list[bytes]:
    """Pre-built requests, one a line: ``METHOD TARGET<TAB>Name: value<TAB>...``."""
    out = []
    with open(path, "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\n")
            if not line:
                continue
            first, _, rest = line.partition(b"\t")
            headers = rest.replace(b"\t", b"\r\n")
            out.append(
                first + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + headers + b"\r\n\r\n"
            )
    return out


def percentile(sorted_values: array[int], q: float) -> int:
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


async def run(args: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    host = f"127.0.0.1:{args.port}"
    lines = [f"GET {args.path} HTTP/1.1", f"Host: {host}", *args.header]
    head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    tokens = None
    token_path = args.tokens_file or args.mem_tokens
    if token_path:
        with open(token_path, "rb") as f:
            tokens = [line.strip() for line in f if line.strip()]
    requests = read_requests(args.requests_file, host) if args.requests_file else None
    vary_path = None
    if args.vary_path:
        vary_path = (" HTTP/1.1\r\n" + "\r\n".join([f"Host: {host}", *args.header])).encode(
            "latin-1"
        ) + b"\r\n\r\n"
    challenge = f"GET /challenge HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    start = time.perf_counter_ns()
    shared = Shared(
        head,
        start + int(args.duration * 1e9),
        tokens=tokens,
        start=args.start,
        vary_uri=args.vary_uri,
        vary_path=vary_path,
        requests=requests,
        mem_repeat=args.repeat if args.mem_tokens else 0,
        proof=hmac_prover(args.hmac_key) if args.hmac_key else None,
    )
    dones = []
    for _ in range(args.connections):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            functools.partial(Conn, shared, done, challenge), "127.0.0.1", args.port
        )
        dones.append(done)
    # SIGINT ends the run early, as it does wrk's (bench/run.py's memory run stops it so);
    # one that came while this was starting (main's handler noted it) counts too.
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    if _interrupted:
        interrupted.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(interrupted.wait(), timeout=args.duration)
    shared.deadline = min(shared.deadline, time.perf_counter_ns())
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
        "challenges": shared.challenges,
    }


_interrupted: list[int] = []  # SIGINTs that came before the event loop's handler


def main() -> None:
    signal.signal(signal.SIGINT, lambda signum, _frame: _interrupted.append(signum))
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
    parser.add_argument("--vary-path", action="store_true", help="a new path on every request")
    parser.add_argument("--requests-file", help="pre-built requests, one a line, each sent once")
    parser.add_argument("--mem-tokens", help="memory run: tokens, each --repeat times in turn")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--hmac-key", help="HMAC proof flow with this API key")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print("WRKJSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
