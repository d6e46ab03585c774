"""``web/drain.py`` in process: responses while draining, and the drain deadline's cut.

The whole SIGTERM sequence runs against real processes in
``tests/integration/test_shutdown.py``; these pin the pieces it is built from.
"""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.drain import DRAIN, Drain
from authgate.web.state import DRAINING
from tests.support import make_settings


async def test_responses_keep_the_connection_until_draining_then_close_it() -> None:
    """Before shutdown a response is keep-alive; once draining it says Connection: close."""
    app = create_app(make_settings(), stores=MemoryStores())
    async with TestClient(TestServer(app)) as client:
        before = await client.get("/healthz")
        assert before.headers.get("Connection", "").lower() != "close"
        app[DRAIN].begin()
        during = await client.get("/healthz")
        assert during.status == 200
        assert during.headers["Connection"].lower() == "close"
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["checks"]["server"] == "draining"
        assert app[DRAINING][0]


async def test_bounded_block_runs_freely_until_cut_then_stops_at_the_deadline() -> None:
    """A block started before the cut is cancelled at the deadline: TimeoutError, no hang."""
    drain = Drain([False])
    loop = asyncio.get_running_loop()
    finished: list[str] = []  # stays empty: the exchange never completes

    async def exchange() -> None:
        async with drain.bounded():
            await asyncio.sleep(3600)  # an upstream that never answers
            finished.append("answered")

    task = asyncio.create_task(exchange())
    await asyncio.sleep(0)
    drain.cut_at(loop.time() + 0.05)
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done == {task}
    assert isinstance(task.exception(), TimeoutError)
    assert finished == []


async def test_bounded_block_started_after_the_deadline_is_cut_at_once() -> None:
    """Once the deadline has passed, a new exchange does not even start waiting."""
    drain = Drain([False])
    drain.cut_at(asyncio.get_running_loop().time() - 1)
    outcome = "answered"
    try:
        async with drain.bounded():
            await asyncio.sleep(3600)
    except TimeoutError:
        outcome = "cut"
    assert outcome == "cut"


async def test_websocket_handshake_is_not_told_to_close() -> None:
    """A 101 answer keeps ``Connection: Upgrade`` while draining (it is not a keep-alive)."""
    drain = Drain([True])

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.close()
        return socket

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.on_response_prepare.append(drain.close_connections)
    async with TestClient(TestServer(app)) as client, client.ws_connect("/ws") as conn:
        # The client refuses a handshake without Connection: upgrade; this one succeeded.
        assert (await conn.receive()).type == WSMsgType.CLOSE
