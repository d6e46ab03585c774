"""The SDK signs what authgate verifies, through aiohttp and httpx, query included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestServer

from authgate.client import BPCSigner, httpx_auth, signed_request
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from tests.support import echo_app, make_settings, serve_app


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, BPCSigner]]:
    async with serve_app(echo_app()) as upstream:
        settings = make_settings(
            development=True, proxy={"upstream": f"http://127.0.0.1:{upstream}"}
        )
        server = TestServer(create_app(settings, stores=MemoryStores()))
        await server.start_server()
        base = f"http://127.0.0.1:{server.port}"
        key, jwk, _ = BPCSigner.generate_key()
        async with aiohttp.ClientSession() as session:
            resp = await session.post(
                f"{base}/bpc/register",
                json={
                    "name": "sdk",
                    "scope": "admin",
                    "mode": "development",
                    "secret": "sdk-secret-1",
                    "pubJwk": jwk,
                },
            )
            pair_id = (await resp.json())["pairId"]
        try:
            yield base, BPCSigner(pair_id, "sdk-secret-1", key)
        finally:
            await server.close()


async def test_aiohttp_helper_signs_path_query_and_body(gateway: tuple[str, BPCSigner]) -> None:
    """signed_request signs the target as sent, so a query is authenticated by default."""
    base, signer = gateway
    async with (
        aiohttp.ClientSession() as session,
        await signed_request(
            session, signer, "POST", f"{base}/api/items?page=2", json={"a": 1}
        ) as resp,
    ):
        assert resp.status == 200
        seen = await resp.json()
    assert seen["target"] == "/api/items?page=2"
    assert seen["body_size"] == len(b'{"a":1}')


async def test_httpx_auth_signs_each_request(gateway: tuple[str, BPCSigner]) -> None:
    """httpx_auth works with httpx's synchronous client, including DELETE for admin pairs."""
    base, signer = gateway

    def call() -> list[int]:
        with httpx.Client(base_url=base, auth=httpx_auth(signer)) as client:
            return [
                client.get("/api/items", params={"q": "x y"}).status_code,
                client.delete("/api/items/1").status_code,
            ]

    assert await asyncio.to_thread(call) == [200, 200]


def test_signer_refuses_non_p256_keys() -> None:
    """Only P-256 device keys can sign BPC requests."""
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(TypeError):
        BPCSigner("p", "s", ec.generate_private_key(ec.SECP384R1()))
