"""build_stores: the configured back end, and redis imported only when chosen."""

from __future__ import annotations

import subprocess
import sys

from pydantic import SecretStr

from authgate.config.model import RedisSettings, StoreSettings
from authgate.stores import build_stores
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.stores.redis import RedisStores


async def test_memory_backend_builds_memory_stores() -> None:
    """``backend: memory`` gives MemoryStores."""
    stores = build_stores(StoreSettings(backend="memory"), ManualClock())
    try:
        assert isinstance(stores, MemoryStores)
        assert stores.backend == "memory"
    finally:
        await stores.close()


async def test_redis_backend_builds_redis_stores(redis_url: str) -> None:
    """``backend: redis`` gives RedisStores connected to the configured server."""
    settings = StoreSettings(
        backend="redis",
        redis=RedisSettings(url=SecretStr(redis_url), key_prefix="authgate-test:build:"),
    )
    stores = build_stores(settings, ManualClock())
    try:
        assert isinstance(stores, RedisStores)
        assert stores.backend == "redis"
        await stores.ping()
    finally:
        await stores.close()


def test_memory_stores_never_import_redis() -> None:
    """Importing the stores package and building memory stores leaves ``redis`` unimported."""
    code = (
        "import sys\n"
        "from authgate.config.model import StoreSettings\n"
        "from authgate.stores import build_stores\n"
        "build_stores(StoreSettings())\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
