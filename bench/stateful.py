"""The Redis-backed scenarios of ``bench/run.py``: their Redis, credentials and requests.

* :class:`BenchRedis`: a ``redis-server`` of the run's own on a free 127.0.0.1 port (the
  shared Redis on 6379 is never touched), pinned next to the load generator, stopped by PID.
* :func:`create_api_key`: an API key written under the run's key-encryption key, as the
  CLI would (``tests/integration/test_hmac_replicas.new_key_in`` does the same).
* :func:`register_pair`: a development BPC pair registered over HTTP (auto-approved).
* :func:`presign_bpc`: requests signed ahead of a phase, one a line, each sent once.
* :func:`check_bpc` / :func:`check_hmac`: the one request that must answer 200 before a
  scenario is loaded.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import secrets
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.redis_topology import RedisNode
from tests.support import raw_request

from authgate.client import BPCSigner
from authgate.client.hmac_proof import proof_header
from authgate.config.model import RedisSettings

BPC_SECRET = "bench-pair-secret-0123"
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
# Not per-request work: the event bus's heartbeats and this harness's own INFO calls.
BACKGROUND_COMMANDS = ("publish", "info", "ping", "client|setname", "client|setinfo")


@dataclass
class BenchRedis:
    """A redis-server for one run, plus what its scenarios share (prefix, KEK, secrets)."""

    directory: Path
    node: RedisNode | None = None
    key_prefix: str = field(default_factory=lambda: f"authgate-bench:{uuid.uuid4().hex[:8]}:")
    kek: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())
    challenge_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    api_key: str = ""
    pair_id: str = ""
    pair_pem: bytes = b""

    def start(self, cpus: set[int] | None) -> BenchRedis:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.node = RedisNode(self.directory).start()
        if cpus and self.node.proc is not None:
            os.sched_setaffinity(self.node.proc.pid, cpus)
        self.api_key = asyncio.run(create_api_key(self.redis_settings(), self.kek))
        return self

    def stop(self) -> None:
        if self.node is not None:
            self.node.terminate()

    @property
    def pid(self) -> int:
        assert self.node is not None
        assert self.node.proc is not None
        return self.node.proc.pid

    def redis_settings(self) -> RedisSettings:
        assert self.node is not None
        return RedisSettings.model_validate({"url": self.node.url, "key_prefix": self.key_prefix})

    def config(self) -> dict[str, Any]:
        """The config sections every Redis scenario shares (merged into authgate's)."""
        assert self.node is not None
        return {
            "stores": {
                "backend": "redis",
                "redis": {"url": self.node.url, "key_prefix": self.key_prefix},
            },
            "secrets": {"key_encryption_key": self.kek},
            "hmac": {"challenge_secret": self.challenge_secret},
            # Pre-signed requests wait for their turn: the widest window the config allows.
            # Replays would be failures too: keep the per-address budget out of the way.
            "bpc": {
                "auto_approve_development_pairs": True,
                "failures_per_minute": 100_000,
                "window_ms": 600_000,
            },
            "policy": {"rules": [{"id": "api", "path_prefix": "/"}]},
        }

    def commandstats(self) -> dict[str, int]:
        """``INFO commandstats`` as command -> calls."""
        assert self.node is not None
        client = self.node.client()
        try:
            info = client.info("commandstats")
        finally:
            client.close()
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def command_deltas(before: dict[str, int], after: dict[str, int]) -> tuple[int, int]:
    """(scripts, commands) run in between: scripts are EVALSHA-like calls (one round trip
    each), commands every command Redis executed (a script's own commands included), both
    without the background (heartbeat PUBLISH, INFO)."""
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    scripts = sum(delta.get(c, 0) for c in SCRIPT_COMMANDS)
    commands = sum(v for k, v in delta.items() if k not in BACKGROUND_COMMANDS)
    return scripts, commands


async def create_api_key(settings: RedisSettings, kek: str) -> str:
    """A new API key in the run's Redis, sealed with ``kek``; returns the raw key."""
    from authgate.apikeys import ApiKeyService
    from authgate.crypto.envelope import Envelope, parse_kek
    from authgate.stores.base import SystemClock
    from authgate.stores.redis import RedisStores

    stores = RedisStores(settings.model_copy(update={"deadline_seconds": 5.0}))
    try:
        service = ApiKeyService(
            store=stores.api_keys,
            events=stores.events,
            envelope=Envelope(parse_kek(kek)),
            clock=SystemClock(),
        )
        _, raw = await service.create(name="bench", scopes=["read"])
        return raw
    finally:
        await stores.close()


def register_pair(redis: BenchRedis, port: int) -> None:
    """Register a development pair on the authgate at ``port`` (once per run)."""
    if redis.pair_id:
        return
    key, jwk, _ = BPCSigner.generate_key()
    document = {
        "name": "bench",
        "scope": "read",
        "mode": "development",
        "secret": BPC_SECRET,
        "pubJwk": jwk,
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/bpc/register",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
    from cryptography.hazmat.primitives import serialization

    redis.pair_id = body["pairId"]
    redis.pair_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _request_line(method: str, path: str, headers: Iterable[tuple[str, str]]) -> str:
    """One line of a requests file: ``METHOD TARGET<TAB>Name: value<TAB>...``."""
    return "\t".join([f"{method} {path}", *(f"{k}: {v}" for k, v in headers)])


def bpc_target(n: int) -> str:
    return f"/api/bpc/{n}?expand=items"


def bpc_request(signer: BPCSigner, n: int) -> str:
    """A forward-auth request for a new target, signed now."""
    target = bpc_target(n)
    headers = [("X-Original-Method", "GET"), ("X-Original-URI", target)]
    headers += list(signer.headers("GET", target).items())
    return _request_line("GET", "/auth", headers)


_SIGNER: dict[str, BPCSigner] = {}  # per worker process


def _sign_init(pair_id: str, pem: bytes, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)  # the orchestrator's pin would leave one core
    _SIGNER["signer"] = BPCSigner.from_pem(pair_id, BPC_SECRET, pem)


def _sign_chunk(bounds: tuple[int, int]) -> str:
    signer = _SIGNER["signer"]
    return "\n".join(bpc_request(signer, n) for n in range(*bounds)) + "\n"


def presign_bpc(
    redis: BenchRedis, count: int, path: Path, first: int, cpus: set[int] | None
) -> float:
    """Write ``count`` signed requests (targets ``first``, ``first + 1``, ...) to ``path``,
    on one process per CPU; returns seconds taken."""
    started = time.perf_counter()
    chunk = 2000
    bounds = [(n, min(n + chunk, first + count)) for n in range(first, first + count, chunk)]
    workers = len(cpus) if cpus else (os.cpu_count() or 1)
    with (
        concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            initializer=_sign_init,
            initargs=(redis.pair_id, redis.pair_pem, cpus),
        ) as pool,
        path.open("w") as out,
    ):
        for text in pool.map(_sign_chunk, bounds):
            out.write(text)
    return time.perf_counter() - started


def _send_line(port: int, line: str) -> tuple[int, bytes]:
    first, *headers = line.split("\t")
    lines = [f"{first} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    status, _, body = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return status, body


def check_bpc(redis: BenchRedis, port: int) -> None:
    """One freshly signed request answers 200 (on a fresh key prefix the store epoch is
    written by the first nonce spent, and a request signed before it is refused: retry)."""
    register_pair(redis, port)
    signer = BPCSigner.from_pem(redis.pair_id, BPC_SECRET, redis.pair_pem)
    for n in range(3):
        status, body = _send_line(port, bpc_request(signer, -1 - n))
        if status == 200:
            return
    raise RuntimeError(f"BPC check answered {status}: {body[:300]!r}")


def check_hmac(redis: BenchRedis, port: int) -> None:
    """A challenge, then a proof with it, answers 200."""
    status, _, body = raw_request(
        port, b"GET /challenge HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    if status != 200:
        raise RuntimeError(f"/challenge answered {status}: {body[:300]!r}")
    target = "/api/hmac/check"
    header = proof_header(json.loads(body), redis.api_key, "GET", target)
    line = _request_line(
        "GET",
        "/auth",
        [("X-Original-Method", "GET"), ("X-Original-URI", target), ("Authorization", header)],
    )
    status, body = _send_line(port, line)
    if status != 200:
        raise RuntimeError(f"HMAC check answered {status}: {body[:300]!r}")
