"""Per-request CPU cost in one process: aiohttp's own HTTP protocol over a fake transport.

    taskset -c 0 .venv/bin/python bench/inproc.py            # warm and warm-uris
    taskset -c 0 .venv/bin/python bench/inproc.py --rounds 20 --requests 20000

No sockets, no load generator, no kernel: each request's bytes are fed to the server's
``RequestHandler`` and the response is awaited, for a bare aiohttp app and for authgate
(behind the protocol handler ``authgate serve`` uses, ``web/protocol.py``), alternating
rounds; the best round of each is reported, in microseconds per request. What it shows is
the Python work per request (what ``bench/run.py`` measures, without the kernel's share),
steady enough to tell a 0.5 us change from noise when pinned to one core. It is a tool for
working on the hot path; ``bench/run.py`` is the benchmark of record.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.bare_server import bare_app
from bench.run import ORIGINAL_URI, authgate_config
from bench.verify_only_server import verify_only_app
from tests.support import TokenFactory

from authgate.config.loader import load_settings
from authgate.crypto.jws import parse_compact_jws
from authgate.log import configure_logging
from authgate.verifiers import jwt_bearer
from authgate.web.app import create_app
from authgate.web.protocol import Runner
from authgate.web.state import SETTINGS


class Transport(asyncio.Transport):
    """Collects what the server writes; wakes the driver when a response has been written."""

    def __init__(self) -> None:
        super().__init__()
        self.written: asyncio.Future[None] | None = None
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out.append(bytes(data))
        if self.written is not None and not self.written.done():
            self.written.set_result(None)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Server:
    """One application behind aiohttp's protocol, fed request bytes directly."""

    def __init__(self, app: web.Application, runner: web.AppRunner | None = None) -> None:
        self.app = app
        self.runner = runner or web.AppRunner(app, access_log=None)

    async def __aenter__(self) -> Server:
        await self.runner.setup()
        assert self.runner.server is not None
        self.protocol = self.runner.server()
        self.transport = Transport()
        self.protocol.connection_made(self.transport)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    async def run(self, requests: Callable[[int], bytes], n: int) -> float:
        """Microseconds per request over ``n`` requests."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for i in range(n):
            self.transport.written = loop.create_future()
            self.protocol.data_received(requests(i))
            await self.transport.written
        elapsed = time.perf_counter() - started
        last = b"".join(self.transport.out[-2:])
        self.transport.out.clear()
        if not last.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"not a 200: {last[:200]!r}")
        return elapsed / n * 1e6


def authgate_runner(app: web.Application) -> web.AppRunner:
    """The runner ``authgate serve`` uses (``web/drain.py``): its protocol handler adds the
    head and body deadlines and the target check to every request."""
    server = app[SETTINGS].server
    return Runner(
        app,
        access_log=None,
        header_read_timeout=server.header_read_timeout_seconds,
        body_read_timeout=server.body_read_timeout_seconds,
    )


def request_bytes(token: str, uri: str) -> bytes:
    return (
        f"GET /auth HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer {token}\r\n"
        f"X-Original-Method: GET\r\nX-Original-URI: {uri}\r\n\r\n"
    ).encode()


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--requests", type=int, default=10_000, help="per round")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="authgate's defaults: access log on, level INFO, JSON lines (to a temporary file)",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile authgate's rounds into FILE")
    parser.add_argument(
        "--scenarios",
        default="warm,warm-uris",
        help="comma-separated: warm, warm-uris, cold (a new token every request: parse + "
        "verify), cold-unsigned (as cold with the signature check removed: measurement only)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        factory = TokenFactory()
        config = Path(tmp) / "authgate.yaml"
        config.write_text(
            yaml.safe_dump(
                authgate_config(factory.write_key(Path(tmp)), 1, access_log=args.access_log)
            )
        )
        if args.access_log:  # what `authgate serve` installs, writing to a file
            sys.stderr = open(Path(tmp) / "access.log", "w")  # noqa: SIM115 - the run's lifetime
            configure_logging(level="INFO", fmt="json")
        config.chmod(0o600)
        token = factory.mint(exp=int(time.time()) + 3600)
        same = request_bytes(token, ORIGINAL_URI)
        total = args.rounds * args.requests + args.requests
        distinct = [request_bytes(token, f"/api/orders/{i}?expand=items") for i in range(total)]
        wanted = args.scenarios.split(",")
        exp = int(time.time()) + 3600
        fresh: dict[str, list[str]] = {  # every request a token the server has not seen
            name: [factory.mint(exp=exp, jti=f"{name}-{i}") for i in range(total)]
            for name in ("cold", "cold-unsigned")
            if name in wanted
        }
        cold = [request_bytes(t, ORIGINAL_URI) for t in fresh.get("cold", [])]
        unsigned = [request_bytes(t, ORIGINAL_URI) for t in fresh.get("cold-unsigned", [])]
        scenarios: dict[str, Callable[[int], bytes]] = {
            "warm": lambda i: same,
            "warm-uris": lambda i: distinct[i % total],
            "cold": lambda i: cold[i % total],
            "cold-unsigned": lambda i: unsigned[i % total],
        }
        scenarios = {name: scenarios[name] for name in wanted}
        authgate_app = create_app(load_settings(config))
        async with (
            Server(bare_app()) as bare,
            Server(authgate_app, authgate_runner(authgate_app)) as authgate,
        ):
            for name, requests in scenarios.items():
                await bare.run(requests, args.requests)
                with signature_check_removed(name == "cold-unsigned"):
                    await authgate.run(requests, args.requests)  # warm-up (and cache fill)
                bare_us, authgate_us = [], []
                profiler = cProfile.Profile() if args.profile else None
                for r in range(args.rounds):
                    gc.collect()
                    bare_us.append(await bare.run(requests, args.requests))
                    gc.collect()
                    offset = (r + 1) * args.requests
                    if profiler is not None:
                        profiler.enable()
                    with signature_check_removed(name == "cold-unsigned"):
                        authgate_us.append(
                            await authgate.run(
                                lambda i, o=offset, f=requests: f(i + o), args.requests
                            )
                        )
                    if profiler is not None:
                        profiler.disable()
                if profiler is not None:
                    profiler.dump_stats(f"{args.profile}.{name}")
                b, a = min(bare_us), min(authgate_us)
                print(
                    f"{name:10s} bare {b:6.2f} us/request   authgate {a:6.2f}   "
                    f"authgate adds {a - b:5.2f} us   CPU-only ratio {b / a:.2f}",
                    flush=True,
                )
        if "cold" in fresh:
            # What no gateway can beat: aiohttp with a handler that only splits the bearer
            # token and checks its ES256 signature, on the same fresh tokens.
            public_key = factory.key.private_key.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            async with Server(verify_only_app(public_key)) as verify_only:
                await verify_only.run(scenarios["cold"], args.requests)
                only_us = min(
                    [await verify_only.run(scenarios["cold"], args.requests) for _ in range(3)]
                )
            tight = tight_verify_us(factory, fresh["cold"][: args.requests])
            print(
                f"raw ES256 verify of the same tokens in a tight loop (cryptography): {tight:.2f}"
                f" us; aiohttp with a handler that only verifies them: {only_us:.2f} us/request",
                flush=True,
            )


@contextmanager
def signature_check_removed(removed: bool) -> Iterator[None]:
    """MEASUREMENT ONLY (``cold-unsigned``): authgate with its JWT signature check replaced
    by nothing, to tell what a fresh token costs besides the ECDSA verify. Restored after."""
    if not removed:
        yield
        return
    original = jwt_bearer.verify_signature
    jwt_bearer.verify_signature = lambda alg, key, signing_input, signature: None
    try:
        yield
    finally:
        jwt_bearer.verify_signature = original


def tight_verify_us(factory: TokenFactory, tokens: list[str]) -> float:
    """One ES256 verify (``cryptography``, DER signature) per token, back to back, best of
    five passes: what bench/run.py's raw verify baseline measures, on these tokens."""
    public_key = factory.key.private_key.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    parsed = [parse_compact_jws(token) for token in tokens]
    signed = [
        (
            encode_dss_signature(
                int.from_bytes(jws.signature[:32], "big"), int.from_bytes(jws.signature[32:], "big")
            ),
            jws.signing_input,
        )
        for jws in parsed
    ]
    ecdsa = ec.ECDSA(hashes.SHA256())
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        for der, signing_input in signed:
            public_key.verify(der, signing_input, ecdsa)
        best = min(best, (time.perf_counter() - started) / len(signed) * 1e6)
    return best


if __name__ == "__main__":
    asyncio.run(main())
