"""Fixtures for the BPC suites.

* :class:`Device` signs requests the way ``bpc-client`` 1.0.0 does (its own hash and HMAC
  functions, the same canonical JSON), but lets a test override any field, sign arbitrary
  bytes, or swap the signature: the tool for every malformed or hostile request.
* :class:`Verifying` is the verifier in process, on memory stores, with a clock the test
  moves by hand.
* :class:`Gateway` is the whole application in process (aiohttp test server) in front of
  the echo upstream, for HTTP-level tests and for the published client.

``bpc-client`` keeps pairs in ``~/.bpc/pairs.json``; every test here points ``HOME`` and
``BPCClient.PAIRS_FILE`` at its own temporary directory (autouse), and the clients a test
creates are closed at teardown (warnings are errors). In process, pair secrets are hashed
with cheap argon2id parameters (autouse); the subprocess suites keep the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from bpc_client import BPCClient  # type: ignore[import-untyped]
from bpc_client.crypto import (  # type: ignore[import-untyped]
    compute_body_hash,
    derive_secret_hmac,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.compose import Services
from authgate.config.model import BPCSettings, Rule
from authgate.errors import AuthGateError
from authgate.models import CredentialType, Principal, RequestContext
from authgate.pairs import service as pair_service
from authgate.pairs.directory import PairDirectory
from authgate.pairs.service import PairService
from authgate.pipeline import Gate
from authgate.policy.rules import CompiledRule, compile_rule, internal_rule
from authgate.stores.base import Clock, ManualClock
from authgate.stores.memory import MemoryStores
from authgate.verifiers.bpc import BPCVerifier
from authgate.web.app import create_app
from authgate.web.state import SERVICES
from tests.support import echo_app, make_settings, serve_app

SECRET = "correct-horse-battery"
ATTACKER_IP = "203.0.113.66"
CLIENT_IP = "198.51.100.7"
Client = TestClient[web.Request, web.Application]


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def wall_ms() -> int:
    """The real clock in milliseconds (what the published client signs with)."""
    return time.time_ns() // 1_000_000


def json_object(members: list[tuple[str, Any]]) -> bytes:
    """A compact JSON object written member by member (so a test can repeat a key)."""
    body = ",".join(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in members)
    return ("{" + body + "}").encode()


@dataclass
class Device:
    """A device key plus a pair id and secret; signs like ``bpc-client``, field by field."""

    secret: str
    now_ms: Callable[[], int]
    pair_id: str = ""
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as the client registers it."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }

    @property
    def private_pem(self) -> str:
        """PKCS#8 PEM, the form ``BPCPair`` takes."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def payload(
        self, method: str, path: str, body: bytes = b"", *, secret: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """The canonical payload; ``fields`` override members (the HMAC follows nonce/ts)."""
        nonce = fields.get("nonce", str(uuid.uuid4()))
        timestamp = fields.get("timestamp", self.now_ms())
        payload: dict[str, Any] = {
            "body_hash": compute_body_hash(body),
            "method": method,
            "nonce": nonce,
            "pair_id": self.pair_id,
            "path": path,
            "secret_hmac": derive_secret_hmac(
                self.secret if secret is None else secret, str(nonce), timestamp
            ),
            "timestamp": timestamp,
            "version": "1.0",
        }
        payload.update(fields)
        return payload

    def sign(self, raw: bytes) -> str:
        """base64url of the DER ECDSA-P256-SHA256 signature over ``raw``."""
        return b64url(self.private_key.sign(raw, ec.ECDSA(hashes.SHA256())))

    def headers_for(
        self,
        raw: bytes,
        *,
        signed_data: str | None = None,
        signature: str | None = None,
        pair_id: str | None = None,
        version: str = "1.0",
    ) -> dict[str, str]:
        """The four headers for signed bytes ``raw`` (any of them replaceable)."""
        return {
            "X-BPC-Pair-ID": self.pair_id if pair_id is None else pair_id,
            "X-BPC-Signed-Data": b64url(raw) if signed_data is None else signed_data,
            "X-BPC-Signature": self.sign(raw) if signature is None else signature,
            "X-BPC-Version": version,
        }

    def headers(
        self, method: str, path: str, body: bytes = b"", *, secret: str | None = None, **fields: Any
    ) -> dict[str, str]:
        """Headers for a request, signed like the published client signs it."""
        payload = self.payload(method, path, body, secret=secret, **fields)
        raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return self.headers_for(raw)


# A rule for requests decided without a route: a BPC credential, the pair's own scope.
ANY_PAIR = internal_rule("test-any-pair", CredentialType.BPC, missing_message="no BPC headers")


def route(**options: Any) -> CompiledRule:
    """A compiled catch-all rule with route options (``allow_unsigned_query``, ...)."""
    return compile_rule(Rule(id="test", path_prefix="/", **options))


@dataclass
class Verifying:
    """The BPC verifier in process: memory stores, a manual clock, a pair service."""

    settings: BPCSettings
    clock: ManualClock
    stores: MemoryStores
    directory: PairDirectory
    pairs: PairService
    verifier: BPCVerifier
    gate: Gate

    def device(self, *, secret: str = SECRET, pair_id: str = "") -> Device:
        """A device signing with this harness's clock."""
        return Device(secret=secret, now_ms=self.clock.now_ms, pair_id=pair_id)

    async def register(
        self, *, scope: str = "read-write", mode: str = "development", secret: str = SECRET
    ) -> Device:
        """Register a new device; its ``pair_id`` is set (pending when not auto-approved)."""
        device = self.device(secret=secret)
        result = await self.pairs.register(
            {
                "name": "device",
                "scope": scope,
                "mode": mode,
                "secret": secret,
                "pubJwk": device.public_jwk,
            }
        )
        device.pair_id = result.pair.pair_id
        return device

    def context(
        self,
        headers: dict[str, str],
        *,
        method: str = "GET",
        target: str = "/api/items",
        body: bytes | None = None,
        client_ip: str = CLIENT_IP,
    ) -> RequestContext:
        """A request context as a front door builds it; ``body=None``: no body available."""

        async def read() -> bytes:
            assert body is not None
            return body

        path, _, query = target.partition("?")
        return RequestContext(
            method=method,
            path=path,
            query=query,
            host="app.test",
            scheme="https",
            headers={k.lower(): v for k, v in headers.items()},
            client_ip=client_ip,
            request_id=uuid.uuid4().hex,
            read_body=None if body is None else read,
            raw_target=target,
        )

    async def verify(
        self,
        headers: dict[str, str],
        *,
        rule: CompiledRule | None = None,
        **request: Any,
    ) -> Principal:
        """Decide one request through a gate over this verifier (which spends the nonce);
        returns the principal or raises."""
        context = self.context(headers, **request)
        return (await self.gate.evaluate(context, rule or ANY_PAIR)).principal

    async def refuse(
        self, headers: dict[str, str], *, rule: CompiledRule | None = None, **request: Any
    ) -> AuthGateError:
        """Verify one request that must be refused; returns the error."""
        with pytest.raises(AuthGateError) as info:
            await self.verify(headers, rule=rule, **request)
        return info.value

    def failure_count(self, pair_id: str) -> int:
        """The pair's lock-out counter, read without touching it."""
        return self.stores.pairs.failure_count(pair_id)


async def make_verifying(**bpc: Any) -> Verifying:
    """A harness with ``bpc`` settings, built by the composition root over memory stores;
    the clock starts well past the stores' epoch."""
    settings = make_settings(
        bpc={"auto_approve_development_pairs": True, "failures_per_minute": 10_000, **bpc}
    )
    clock = ManualClock()
    stores = MemoryStores(clock)
    clock.advance(10 * 60_000)
    services = Services(settings, clock=clock, stores=stores)
    await stores.events.start()  # the pair cache is in use, as in production
    return Verifying(
        settings.bpc,
        clock,
        stores,
        services.pair_directory,
        services.pairs,
        services.bpc_verifier,
        services.gate,
    )


@pytest.fixture
async def verifying() -> Verifying:
    """The default in-process harness."""
    return await make_verifying()


@dataclass
class Gateway:
    """authgate in process (aiohttp test server) proxying to the echo upstream."""

    app: web.Application
    client: Client
    upstream_port: int
    stores: MemoryStores

    @property
    def port(self) -> int:
        """The port authgate listens on."""
        port = self.client.port
        assert port is not None
        return port

    @property
    def base_url(self) -> str:
        """What the published client is given."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pairs(self) -> PairService:
        """The running app's pair service (operator-side view)."""
        return self.app[SERVICES].pairs

    async def register(
        self,
        device: Device,
        *,
        scope: str = "read-write",
        mode: str = "development",
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Register ``device`` over HTTP (as the client does) and set its pair id.

        A pending registration answers only an approval token and the key fingerprint:
        the pair id is found the way an operator finds it, by that fingerprint.
        """
        resp = await self.client.post(
            "/bpc/register",
            json={
                "name": "device",
                "scope": scope,
                "mode": mode,
                "secret": device.secret,
                "pubJwk": device.public_jwk,
            },
            headers=headers,
        )
        body: dict[str, Any] = await resp.json()
        assert resp.status == 201, body
        if "pairId" in body:
            device.pair_id = body["pairId"]
        else:
            found = [
                p for p in await self.pairs.all_pairs() if p.fingerprint == body["fingerprint"]
            ]
            assert len(found) == 1
            device.pair_id = found[0].pair_id
        return body

    def device(self, *, secret: str = SECRET) -> Device:
        """A device on the real clock."""
        return Device(secret=secret, now_ms=wall_ms)

    async def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One request: status, JSON body (``{}`` when none) and response headers."""
        async with self.client.request(method, target, headers=headers, data=body) as resp:
            text = await resp.text()
            data: dict[str, Any] = json.loads(text) if text else {}
            return resp.status, data, dict(resp.headers)


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    """Build gateways from settings sections; everything is closed at teardown."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(*, clock: Clock | None = None, **sections: Any) -> Gateway:
            upstream_port = await stack.enter_async_context(serve_app(echo_app()))
            tree: dict[str, Any] = {
                "development": True,
                "proxy": {"upstream": f"http://127.0.0.1:{upstream_port}"},
                "logging": {"access_log": False},
            }
            for name, value in sections.items():
                if isinstance(value, dict) and isinstance(tree.get(name), dict):
                    tree[name] = {**tree[name], **value}
                else:
                    tree[name] = value
            settings = make_settings(**tree)
            stores = MemoryStores(clock)
            app = create_app(settings, clock=clock, stores=stores)
            client: Client = TestClient(TestServer(app))
            await client.start_server()
            stack.push_async_callback(client.close)
            return Gateway(app=app, client=client, upstream_port=upstream_port, stores=stores)

        yield make


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    """A development-mode gateway with the default policy."""
    return await gateway_factory()


@pytest.fixture(autouse=True)
def bpc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME and the published client's pairs file inside the test's tmp dir."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(BPCClient, "PAIRS_FILE", home / ".bpc" / "pairs.json")
    return home


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2id parameters in process: hashing cost is not what these suites test."""
    monkeypatch.setattr(
        pair_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    """Published clients to close at teardown (``BPCClient`` has no ``close``)."""
    made: list[Any] = []
    yield made
    for client in made:
        client._http.close()


async def raw_exchange(
    port: int, data: bytes, *, then: bytes = b"", pause: float = 0.0
) -> tuple[int, dict[str, Any]]:
    """Send bytes exactly as given (``then`` after ``pause`` seconds): status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if then:
            await asyncio.sleep(pause)
            writer.write(then)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body else {}


def request_bytes(
    method: str, target: str, headers: dict[str, str] | list[tuple[str, str]], body: bytes = b""
) -> bytes:
    """An HTTP/1.1 request; header values are written as UTF-8, repeated names allowed."""
    items = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {target} HTTP/1.1", "Host: app.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in items]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def upstream_header(echoed: dict[str, Any], name: str) -> list[str]:
    """Every value of header ``name`` the echo upstream received."""
    return [v for k, v in echoed["headers"] if k.lower() == name.lower()]
