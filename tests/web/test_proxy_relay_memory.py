"""The sidecar remembers, per client header name, whether it reaches the upstream
(``IdentityHeaders.never_relayed``): the answers must be the uncached ones, follow a
reload of the identity settings at once, and stay bounded whatever names clients send.

authgate runs in-process in front of the recording echo upstream (``tests.support``),
whose JSON answer lists the headers it received.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from authgate.config.model import FOREIGN_IDENTITY_HEADERS
from authgate.crypto.keys import KeyRing
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.identity import IdentityHeaders
from authgate.web.proxy import _never_relayed
from authgate.web.state import IDENTITY
from tests.support import TokenFactory, echo_app, make_settings, serve_app

RULES = [{"id": "api", "path_prefix": "/api"}]
# Relayed, stripped as an identity header, stripped as another gateway's, dropped as a
# forwarding header from an untrusted peer, and a BPC header (none of them ever relayed).
SENT = {
    "X-Corp-Role": "admin",
    "X-Authgate-Subject": "mallory",
    "Remote-User": "mallory",
    "X-Forwarded-Host": "evil.test",
    "X-BPC-Note": "e30",
    "X-Trace-Note": "kept",
}


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
async def sidecar(tokens: TokenFactory) -> AsyncIterator[tuple[int, IdentityHeaders]]:
    async with serve_app(echo_app()) as upstream:
        app = create_app(
            make_settings(
                policy={"rules": RULES},
                proxy={"upstream": f"http://127.0.0.1:{upstream}"},
                server={"trusted_proxies": ["192.0.2.0/24"]},  # the test client is untrusted
            ),
            stores=MemoryStores(),
            key_ring=KeyRing([tokens.key]),
        )
        server = TestServer(app)
        await server.start_server()
        try:
            assert server.port is not None
            yield server.port, app[IDENTITY]
        finally:
            await server.close()


async def _relayed(port: int, token: str) -> set[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/api/x",
            headers={"Authorization": f"Bearer {token}", **SENT},
        ) as response,
    ):
        assert response.status == 200
        body = json.loads(await response.read())
    # authgate's own identity headers carry the token's subject, never a client's "mallory"
    assert all(value != "mallory" for _, value in body["headers"])
    return {name.lower() for name, _ in body["headers"]}


async def test_remembered_answers_are_the_uncached_ones(
    sidecar: tuple[int, IdentityHeaders], tokens: TokenFactory
) -> None:
    port, identity = sidecar
    token = tokens.mint()
    first = await _relayed(port, token)
    assert identity.never_relayed  # the answers were remembered...
    for (name, trusted), never in identity.never_relayed.items():
        assert never == _never_relayed(name, identity, trusted=trusted), name
    assert await _relayed(port, token) == first  # ...and give the same answer again
    assert {"x-corp-role", "x-trace-note"} <= first
    assert not first & {"remote-user", "x-bpc-note"}
    assert "evil.test" not in json.dumps(sorted(first))


async def test_a_reload_of_the_identity_settings_applies_to_the_next_request(
    sidecar: tuple[int, IdentityHeaders], tokens: TokenFactory
) -> None:
    port, identity = sidecar
    token = tokens.mint()
    assert "x-corp-role" in await _relayed(port, token)  # relayed, and remembered so
    settings = make_settings(identity={"strip_prefixes": ["X-Authgate-", "X-Corp-"]}).identity
    # What a config reload does (web/reload.py), other gateways' names included.
    identity.reconfigure(settings, foreign=FOREIGN_IDENTITY_HEADERS)
    after = await _relayed(port, token)
    assert "x-corp-role" not in after
    assert "x-trace-note" in after


async def test_the_memory_stays_bounded_whatever_names_clients_send(
    sidecar: tuple[int, IdentityHeaders], tokens: TokenFactory
) -> None:
    port, identity = sidecar
    token = tokens.mint()
    async with aiohttp.ClientSession() as session:
        for batch in range(50):
            headers = {f"X-Junk-{batch}-{i}": "1" for i in range(90)}
            async with session.get(
                f"http://127.0.0.1:{port}/api/x",
                headers={"Authorization": f"Bearer {token}", **headers},
            ) as response:
                assert response.status == 200
            assert len(identity.never_relayed) <= identity.never_relayed.max_entries


async def test_long_names_are_answered_but_not_remembered(
    sidecar: tuple[int, IdentityHeaders], tokens: TokenFactory
) -> None:
    port, identity = sidecar
    long_name = "X-" + "a" * 200
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/api/x",
            headers={
                "Authorization": f"Bearer {tokens.mint()}",
                long_name: "kept",
                "X-Authgate-" + "b" * 200: "mallory",
            },
        ) as response,
    ):
        assert response.status == 200
        relayed = {
            name.lower(): value for name, value in json.loads(await response.read())["headers"]
        }
    assert relayed[long_name.lower()] == "kept"
    assert "mallory" not in relayed.values()
    assert all(len(name) <= 64 for name, _ in identity.never_relayed)
