"""What ``authgate serve`` adds to the application it runs."""

from __future__ import annotations

import gc

from aiohttp.test_utils import TestClient, TestServer

from authgate.cli import worker_app
from authgate.web.state import SERVICES
from tests.support import make_settings


async def test_the_start_up_heap_is_frozen_once_the_app_has_started() -> None:
    """Full collections skip what start-up allocated (the long pauses a stream of distinct
    requests otherwise sees); the freeze runs after the app's own start-up."""
    gc.unfreeze()
    app = worker_app(make_settings())
    frozen_with_gate: list[bool] = []

    async def observe(app_: object) -> None:
        frozen_with_gate.append(gc.get_freeze_count() > 0 and app[SERVICES].http is not None)

    app.on_startup.append(observe)
    try:
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/healthz")).status == 200
        assert frozen_with_gate == [True]
    finally:
        gc.unfreeze()
