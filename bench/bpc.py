"""BPC benchmark: decision throughput vs raw ECDSA verify, live-nonce scaling, Redis trips.

    .venv/bin/pip install bpc-server==1.0.0   # the reference, for the side-by-side rows
    .venv/bin/python bench/bpc.py [--requests 4000]

Everything runs in one process on this machine, in the same run, so the ratios compare
like with like:

* raw verify: ``cryptography``'s ECDSA P-256/SHA-256 DER verify of one signed payload.
* authgate: ``Gate.evaluate`` on a BPC-signed request context (policy, header checks,
  strict payload parsing, pair cache, body hash, signature, secret HMAC, nonce, metrics),
  with in-memory stores holding 1 000 and 200 000 live nonces.
* bpc-server 1.0.0: its ``BPCVerifier.verify`` with its in-memory nonce store holding
  1 000 and 30 000 live nonces (the issue's reference points).
* Redis round trips per accepted request: authgate on real Redis (127.0.0.1:6379), counted
  client-side from authgate's own store-call metrics (each store call is one round trip).

Writes its section of docs/benchmarks.md between the ``bpc-bench`` markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.client import BPCSigner
from authgate.models import RequestContext
from authgate.stores.memory import MemoryStores

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bpc-bench:start -->", "<!-- bpc-bench:end -->"
SECRET = "bench-secret-123"
TARGET = "/api/orders/42?expand=items"


def raw_verify_rate(seconds: float = 2.0) -> float:
    """ECDSA P-256 DER verifies per second (one key, one message)."""
    key = ec.generate_private_key(ec.SECP256R1())
    message = b'{"body_hash":"sha256:x","method":"GET"}' * 4
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        count += 200
    return count / (time.perf_counter() - started)


def context(headers: dict[str, str]) -> RequestContext:
    return RequestContext(
        method="GET",
        path="/api/orders/42",
        query="expand=items",
        host="bench",
        scheme="http",
        headers={k.lower(): v for k, v in headers.items()},
        client_ip="127.0.0.1",
        request_id="bench",
        read_body=_empty,
        raw_target=TARGET,
    )


async def _empty() -> bytes:
    return b""


async def authgate_rate(live_nonces: int, requests: int) -> tuple[float, int]:
    """Accepted BPC decisions per second with ``live_nonces`` already spent."""
    from tests.support import make_settings

    from authgate.web.app import create_app
    from authgate.web.state import SERVICES

    settings = make_settings(
        development=True,
        logging={"access_log": False, "level": "WARNING"},
        policy={"rules": [{"id": "api", "path_prefix": "/api"}]},
    )
    stores = MemoryStores()
    app = create_app(settings, stores=stores)
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    try:
        key, jwk, _ = BPCSigner.generate_key()
        result = await app[SERVICES].pairs.register(
            {
                "name": "bench",
                "scope": "read",
                "mode": "development",
                "secret": SECRET,
                "pubJwk": jwk,
            }
        )
        signer = BPCSigner(result.pair.pair_id, SECRET, key)
        now = int(time.time() * 1000)
        for _ in range(live_nonces):
            await stores.nonces.consume(
                "filler", str(uuid.uuid4()), ttl_ms=130_000, signed_at_ms=now
            )
        contexts = [context(signer.headers("GET", TARGET)) for _ in range(requests)]
        gate = app[SERVICES].gate
        await gate.evaluate(contexts[0])  # warm the pair cache
        started = time.perf_counter()
        for ctx in contexts[1:]:
            await gate.evaluate(ctx)
        elapsed = time.perf_counter() - started
        live = len(stores.nonces._spent)
        return (requests - 1) / elapsed, live
    finally:
        await runner.cleanup()


def reference_rate(live_nonces: int, requests: int) -> tuple[float, int] | None:
    """bpc-server 1.0.0's verifier, if installed."""
    try:
        from bpc_server import BPCVerifier, InMemoryNonceStore, InMemoryPairRegistry, PairRecord
    except ImportError:
        return None
    key, jwk, _ = BPCSigner.generate_key()
    registry = InMemoryPairRegistry()
    registry.register(
        PairRecord(
            pair_id="pair_bench",
            name="b",
            scope="read",
            mode="development",
            public_key_jwk=jwk,
            secret_hash="x",
        )
    )
    nonces = InMemoryNonceStore()
    for _ in range(live_nonces):
        nonces.consume(str(uuid.uuid4()), 130_000)
    verifier = BPCVerifier(registry=registry, nonce_store=nonces)
    signer = BPCSigner("pair_bench", SECRET, key)
    batch = [signer.headers("GET", "/api/orders/42") for _ in range(requests)]
    started = time.perf_counter()
    for headers in batch:
        result = verifier.verify(headers=headers, method="GET", path="/api/orders/42", body=b"")
        assert result.ok, result.error_code
    return requests / (time.perf_counter() - started), nonces.size()


async def redis_round_trips(requests: int) -> tuple[float, int]:
    """Store calls (= round trips) per accepted request on real Redis, pair cache warm."""
    from aiohttp import web
    from pydantic import SecretStr
    from tests.support import make_settings, wait_for

    from authgate.config.model import RedisSettings
    from authgate.stores.redis import RedisStores
    from authgate.web.app import create_app
    from authgate.web.state import METRICS, SERVICES, STORES

    prefix = f"authgate-bench:{uuid.uuid4().hex}:"
    url = os.environ.get("AUTHGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    settings = make_settings(
        development=True,
        logging={"access_log": False, "level": "WARNING"},
        policy={"rules": [{"id": "api", "path_prefix": "/api"}]},
        stores={"backend": "redis", "redis": {"url": url, "key_prefix": prefix}},
    )
    stores = RedisStores(RedisSettings(url=SecretStr(url), key_prefix=prefix))
    app = create_app(settings, stores=stores)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await wait_for(lambda: app[STORES].events.live, timeout=10)
        key, jwk, _ = BPCSigner.generate_key()
        result = await app[SERVICES].pairs.register(
            {
                "name": "bench",
                "scope": "read",
                "mode": "development",
                "secret": SECRET,
                "pubJwk": jwk,
            }
        )
        signer = BPCSigner(result.pair.pair_id, SECRET, key)
        gate = app[SERVICES].gate
        await gate.evaluate(context(signer.headers("GET", TARGET)))  # pair now cached

        def calls() -> float:
            total = 0.0
            for metric in app[METRICS].registry.collect():
                if metric.name == "authgate_store_operation_duration_seconds":
                    total += sum(s.value for s in metric.samples if s.name.endswith("_count"))
            return total

        before = calls()
        for _ in range(requests):
            await gate.evaluate(context(signer.headers("GET", TARGET)))
        return (calls() - before) / requests, requests
    finally:
        await runner.cleanup()
        from redis import Redis

        admin = Redis.from_url(url)
        keys = list(admin.scan_iter(match=f"{prefix}*"))
        if keys:
            admin.delete(*keys)
        admin.close()


def _scaling(rows: list[tuple[str, str, float, Any]]) -> str:
    """A sentence per verifier on how throughput moved as live nonces grew (measured)."""
    parts = []
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]
        if len(mine) == 2:
            (_, low, r1, _), (_, high, r2, _) = mine
            parts.append(
                f"{name}: {r1:,.0f}/s at {low} live nonces, {r2:,.0f}/s at {high} ({(r2 / r1 - 1) * 100:+.0f}%)"
            )
    return (
        "Scaling with live nonces: "
        + "; ".join(parts)
        + ". authgate's in-memory store expires nonces in one-second buckets, so the work per "
        "request does not depend on how many are live (what remains of a difference is the "
        "allocator and cache effect of a large dict); bpc-server 1.0.0 scans every live nonce "
        "on every request. Per request authgate also checks what bpc-server does not: the "
        "secret HMAC, strict canonical parsing, strict DER, and it records metrics."
    )


def write_section(body: str) -> None:
    replace_section(DOC, START, END, f"{START}\n{body}\n{END}")


def replace_section(doc: Path, start: str, end: str, block: str) -> None:
    """Put ``block`` (which begins with ``start`` and ends with ``end``) in place of the
    marked section of ``doc``, or append it; everything else in the file stays."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    n = args.requests
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})

    print("raw ECDSA verify ...", flush=True)
    raw = raw_verify_rate()
    rows: list[tuple[str, str, float, Any]] = []
    for live in (1_000, 200_000):
        print(f"authgate, {live} live nonces ...", flush=True)
        rate, size = asyncio.run(authgate_rate(live, n))
        rows.append(("authgate", f"{live:,}", rate, size))
    for live in (1_000, 30_000):
        print(f"bpc-server 1.0.0, {live} live nonces ...", flush=True)
        ref = reference_rate(live, max(500, n // 4))
        if ref is not None:
            rows.append(("bpc-server 1.0.0", f"{live:,}", ref[0], ref[1]))
    print("Redis round trips ...", flush=True)
    trips, counted = asyncio.run(redis_round_trips(500))

    lines = [
        "## BPC signed requests (decision throughput)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `.venv/bin/python bench/bpc.py"
        f" --requests {n}` (after `.venv/bin/pip install bpc-server==1.0.0`).",
        "",
        f"- Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; one process pinned to CPU 0, single-threaded",
        "- In-process: no HTTP (the JWT section measures the HTTP layer); every request is "
        "freshly signed before timing starts; in-memory stores unless noted",
        f"- Raw ECDSA P-256/SHA-256 verify (cryptography, DER): **{raw:,.0f}/s**",
        "",
        "| verifier | live nonces at start | decisions/s | ratio vs raw verify | live nonces at end |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, live, rate, size in rows:
        lines.append(f"| {name} | {live} | {rate:,.0f} | {rate / raw:.2f} | {size:,} |")
    lines += [
        "",
        f"Redis round trips per accepted BPC request (real Redis, pair cache warm, {counted} "
        f"requests, counted from authgate's store-call metrics): **{trips:.2f}** (target: 1; "
        "the nonce, the audit entry and any credential rate limits share one Lua script).",
        "",
        _scaling(rows),
    ]
    section = "\n".join(lines)
    print(section)
    write_section(section)


if __name__ == "__main__":
    main()
