"""HMAC challenge proofs (docs/protocols.md §2): wire format, verifier, CLI.

:func:`hmac_gateway` is the whole application in process (aiohttp test server, memory
stores, optionally a clock the test moves by hand) in front of the echo upstream, with a
shared challenge secret; :class:`HMACGateway` creates API keys, fetches challenges, builds
proofs with the SDK and sends requests through the sidecar or the nginx ``/auth`` door.
The rate-limit suite (``tests/policy/test_rate_limits.py``) uses it too.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authgate.client.hmac_proof import proof_header
from authgate.stores.base import Clock
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import METRICS, SERVICES
from tests.support import echo_app, make_settings, serve_app

CHALLENGE_SECRET = "hmac-suite-challenge-secret-0123456789abcdef"
Client = TestClient[web.Request, web.Application]


@dataclass(frozen=True)
class Reply:
    """One response: status, body bytes exactly as sent, headers."""

    status: int
    body: bytes
    headers: Mapping[str, str]


@dataclass
class HMACGateway:
    """authgate in process proxying to the echo upstream, with API keys and proofs."""

    app: web.Application
    client: Client

    async def new_key(self, name: str = "key", scopes: Sequence[str] = ("read",)) -> str:
        """A fresh API key (the raw ``agk_<id>_<secret>`` form, shown once)."""
        _, raw = await self.app[SERVICES].api_keys.create(name=name, scopes=scopes)
        return raw

    async def challenge(self) -> dict[str, Any]:
        """A challenge from ``GET /challenge``."""
        async with self.client.get("/challenge") as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
            body: dict[str, Any] = await resp.json()
            return body

    async def proof(
        self,
        api_key: str,
        method: str,
        target: str,
        *,
        client_pubkey: str = "",
        body: bytes | None = None,
    ) -> str:
        """An ``Authorization`` value for one request, over a fresh challenge."""
        return proof_header(
            await self.challenge(),
            api_key,
            method,
            target,
            client_pubkey=client_pubkey,
            body=body,
        )

    async def send(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> Reply:
        """One request through the sidecar door."""
        async with self.client.request(method, target, headers=dict(headers), data=body) as resp:
            return Reply(resp.status, await resp.read(), dict(resp.headers))

    async def auth(self, method: str, target: str, headers: Mapping[str, str]) -> Reply:
        """One request through the nginx ``/auth`` door (no body is ever forwarded)."""
        forwarded = {"X-Original-Method": method, "X-Original-URI": target, **headers}
        async with self.client.get("/auth", headers=forwarded) as resp:
            return Reply(resp.status, await resp.read(), dict(resp.headers))

    def store_calls(self, store: str, operation: str) -> float:
        """How many times ``store.operation`` ran (the store-latency histogram's count)."""
        value = self.app[METRICS].registry.get_sample_value(
            "authgate_store_operation_duration_seconds_count",
            {"store": store, "operation": operation},
        )
        return 0.0 if value is None else value


def random_kek() -> str:
    """A fresh key-encryption key (base64 of 32 random bytes)."""
    return base64.b64encode(os.urandom(32)).decode()


@contextlib.asynccontextmanager
async def hmac_gateway(
    *, rules: list[dict[str, Any]], clock: Clock | None = None, **sections: Any
) -> AsyncIterator[HMACGateway]:
    """The application with ``rules`` and HMAC on; ``sections`` are merged into settings."""
    async with serve_app(echo_app()) as upstream_port:
        tree: dict[str, Any] = {
            "proxy": {"upstream": f"http://127.0.0.1:{upstream_port}"},
            "hmac": {"challenge_secret": CHALLENGE_SECRET},
            "secrets": {"key_encryption_key": random_kek()},
            "policy": {"rules": rules},
            "logging": {"access_log": False},
        }
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(tree.get(name), dict):
                tree[name] = {**tree[name], **value}
            else:
                tree[name] = value
        app = create_app(make_settings(**tree), clock=clock, stores=MemoryStores(clock))
        client: Client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield HMACGateway(app=app, client=client)
        finally:
            await client.close()
