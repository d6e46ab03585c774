"""Fail closed: when Redis cannot answer, every store call raises StoreUnavailable quickly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from authgate.errors import StoreUnavailable
from authgate.stores.base import Stores
from authgate.stores.redis import RedisStores

from .conftest import redis_settings

PASSWORD = "hunter2-not-in-errors"

StoreCall = Callable[[Stores], Awaitable[object]]

CALLS = [
    pytest.param(
        lambda s: s.nonces.consume("p", "n", ttl_ms=1000, signed_at_ms=0), id="nonce-consume"
    ),
    pytest.param(lambda s: s.revocations.revoke("j", expires_at_ms=2**50), id="revoke"),
    pytest.param(lambda s: s.revocations.is_revoked("j"), id="is-revoked"),
    pytest.param(lambda s: s.revocations.list_revoked(), id="list-revoked"),
    pytest.param(lambda s: s.api_keys.get("k"), id="record-get"),
    pytest.param(lambda s: s.api_keys.put("k", {"a": 1}), id="record-put"),
    pytest.param(lambda s: s.api_keys.delete("k"), id="record-delete"),
    pytest.param(lambda s: s.signing_keys.list_ids(), id="record-list-ids"),
    pytest.param(lambda s: s.pairs.get("p"), id="pair-get"),
    pytest.param(lambda s: s.pairs.delete("p"), id="pair-delete"),
    pytest.param(lambda s: s.pairs.record_failure("p", window_ms=60_000), id="pair-record-failure"),
    pytest.param(lambda s: s.pairs.reset_failures("p"), id="pair-reset-failures"),
    pytest.param(lambda s: s.rate_limits.hit("k", limit=5, period_ms=1000), id="rate-limit-hit"),
    pytest.param(lambda s: s.audit.append("a", {"n": 1}, cap=5), id="audit-append"),
    pytest.param(lambda s: s.audit.recent("a", 5), id="audit-recent"),
    pytest.param(lambda s: s.ping(), id="ping"),
]


def exception_texts(exc: BaseException) -> str:
    """Every message and repr along the exception's cause / context chain."""
    texts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


@pytest.fixture
async def unreachable() -> AsyncIterator[Stores]:
    """Stores pointed at a port where nothing listens, with the shipped default timeouts."""
    stores = RedisStores(redis_settings(f"redis://:{PASSWORD}@127.0.0.1:1/0", "authgate-test:"))
    try:
        yield stores
    finally:
        await stores.close()


@pytest.fixture
async def frozen_server() -> AsyncIterator[str]:
    """The URL of a TCP server that accepts connections and never answers."""
    handlers: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.mark.parametrize("call", CALLS)
async def test_unreachable_redis_fails_closed(unreachable: Stores, call: StoreCall) -> None:
    """Nothing listening: the call raises StoreUnavailable within two seconds."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        await call(unreachable)
    assert time.monotonic() - started < 2.0
    assert raised.value.reason == "store_unavailable"
    assert raised.value.status == 503
    assert PASSWORD not in exception_texts(raised.value)


@pytest.mark.parametrize("call", CALLS)
async def test_frozen_redis_fails_closed_within_the_deadline(
    frozen_server: str, call: StoreCall
) -> None:
    """A server that accepts but never answers: the deadline, not the socket timeout, ends it."""
    settings = redis_settings(
        frozen_server,
        "authgate-test:",
        socket_timeout_seconds=10,
        connect_timeout_seconds=10,
        deadline_seconds=0.25,
    )
    stores = RedisStores(settings)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            await call(stores)
        assert time.monotonic() - started < 5.0  # sanity bound: far below the 10 s timeouts
        assert PASSWORD not in exception_texts(raised.value)
    finally:
        await stores.close()
