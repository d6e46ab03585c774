"""Helpers for the pico-compatible surface: wallets of every algorithm and an in-memory gate."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from authgate.crypto.keys import KeyRing, SigningKey
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.state import SERVICES
from tests.support import TokenFactory, make_settings

Client = TestClient[web.Request, web.Application]
PICO = "/api/v1/auth"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
OPERATOR_PASSWORD = "correct horse battery"
ALGORITHMS = ("Ed25519", "secp256k1", "ML-DSA-65")


@dataclass
class Wallet:
    """A wallet key of one algorithm that signs the way real wallets do (low-S ECDSA)."""

    algorithm: str
    key: Any
    uncompressed: bool = False

    @classmethod
    def generate(cls, algorithm: str, *, uncompressed: bool = False) -> Wallet:
        """A fresh key."""
        if algorithm == "Ed25519":
            return cls(algorithm, ed25519.Ed25519PrivateKey.generate())
        if algorithm == "secp256k1":
            return cls(algorithm, ec.generate_private_key(ec.SECP256K1()), uncompressed)
        return cls(algorithm, mldsa.MLDSA65PrivateKey.generate())

    def public_bytes(self, *, compressed: bool | None = None) -> bytes:
        """The public key as sent (secp256k1: SEC1, compressed unless asked otherwise)."""
        public = self.key.public_key()
        if self.algorithm == "secp256k1":
            squeeze = not self.uncompressed if compressed is None else compressed
            form = (
                serialization.PublicFormat.CompressedPoint
                if squeeze
                else serialization.PublicFormat.UncompressedPoint
            )
            return bytes(public.public_bytes(serialization.Encoding.X962, form))
        return bytes(
            public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    @property
    def identity(self) -> str:
        """The identity authgate must derive: canonical key hex (secp256k1 compressed)."""
        return self.public_bytes(compressed=True).hex()

    def sign(self, message: bytes) -> bytes:
        """A signature over ``message``; secp256k1 as low-S DER."""
        if self.algorithm != "secp256k1":
            return bytes(self.key.sign(message))
        r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(hashes.SHA256())))
        return encode_dss_signature(r, min(s, SECP256K1_N - s))

    def body(
        self, challenge: str, /, *, address: str = "0xwallet", **overrides: str
    ) -> dict[str, str]:
        """A complete sign-in body; overrides replace members."""
        body = {
            "address": address,
            "public_key": self.public_bytes().hex(),
            "signature": self.sign(challenge.encode()).hex(),
            "challenge": challenge,
            "algorithm": self.algorithm,
        }
        return {**body, **overrides}


@dataclass
class Gate:
    """An in-memory authgate under test, its clock and a token factory its key ring trusts."""

    client: Client
    app: web.Application
    clock: ManualClock | None
    tokens: TokenFactory

    def bearer(self, **claims: Any) -> dict[str, str]:
        """An ``Authorization`` header with a token minted by the trusted key (on its clock)."""
        if self.clock is not None:
            now = self.clock.now_ms() // 1000
            claims = {"iat": now, "exp": now + 300, **claims}
        return {"Authorization": f"Bearer {self.tokens.mint(**claims)}"}

    async def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST JSON under the pico prefix; returns the status and the JSON answer."""
        async with self.client.post(PICO + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """GET under the pico prefix."""
        async with self.client.get(PICO + path, headers=headers) as resp:
            return resp.status, await resp.json()

    async def challenge(self, address: str = "0xwallet") -> str:
        """A fresh challenge for ``address``."""
        status, body = await self.post("/challenge", {"address": address})
        assert status == 200, body
        assert body["ttl"] == 60
        return str(body["challenge"])

    async def sign_in(self, wallet: Wallet, address: str = "0xwallet") -> dict[str, Any]:
        """A successful wallet sign-in."""
        challenge = await self.challenge(address)
        status, body = await self.post("/sign-in", wallet.body(challenge, address=address))
        assert status == 200, body
        return body

    async def access(self, token: str) -> int:
        """The status nginx's ``auth_request`` would get for a request carrying ``token``."""
        headers = {
            "X-Original-URI": "/api/items",
            "X-Original-Method": "GET",
            "Authorization": f"Bearer {token}",
        }
        async with self.client.get("/auth", headers=headers) as resp:
            return resp.status


@contextlib.asynccontextmanager
async def gate(
    *, manual_clock: bool = False, key_algorithm: str = "ES256", **sections: Any
) -> AsyncIterator[Gate]:
    """authgate on in-memory stores with the pico surface and an operator user ``ops``."""
    clock: ManualClock | None = ManualClock() if manual_clock else None
    tree: dict[str, Any] = {
        "tokens": {"password_grant": True},
        "policy": {"rules": [{"id": "api", "path_prefix": "/api"}]},
    }
    for name, value in sections.items():
        tree[name] = {**tree.get(name, {}), **value}
    tokens = TokenFactory(key=SigningKey.generate(key_algorithm))
    app = create_app(
        make_settings(**tree),
        clock=clock,
        stores=MemoryStores(clock),
        key_ring=KeyRing([tokens.key]),
    )
    async with TestClient(TestServer(app)) as client:
        await app[SERVICES].users.add("ops", OPERATOR_PASSWORD, scopes=["read"], role="operator")
        yield Gate(client, app, clock, tokens)
