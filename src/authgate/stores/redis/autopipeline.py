"""Auto-pipelining: the commands that concurrent requests issue in one turn of the event
loop reach Redis as one pipeline, on one connection, in one round trip.

Each command keeps its own reply: a script stays one atomic step, and each caller awaits its
own result (or error) exactly as with a call of its own. What is shared is the connection
checkout, the socket write and the read: per command, that is most of redis-py's work and a
round trip each. A pipeline is sent at the end of the loop turn in which its first command
was queued (``call_soon``: no timer, no added wait), or at once when it holds
:data:`MAX_BATCH` commands. The deadline (``stores.redis.deadline_seconds``) bounds each
pipeline as a whole, so a caller waits at most one loop turn plus the deadline, with no
timer of its own. A caller that stops waiting (its deadline) leaves its reply
unread by anyone; a pipeline that fails (the connection is lost) fails every caller in it,
who then answer 503 as they would have alone. redis-py re-sends a pipeline once after a
connection error, every command in it: a nonce script whose first run's reply was lost
recognises its own write (see ``scripts.py``); a rate-limit script may then be charged
twice, which refuses early, never admits more. Used for a plain server and Sentinel; a
Cluster routes by slot, and nonce writes that wait for a replica's acknowledgement keep
their own pipeline (``RedisConnection.run_acked``).

The pipeline is written and read here, on a connection of the client's own pool, rather
than through redis-py's ``Pipeline``: the commands are packed by :func:`pack_command` (a
few byte joins for the strings and integers the scripts take, where redis-py encodes each
argument through several calls), and the replies are read with the connection's own
``read_response``, so parsing, error classes (``NOSCRIPT``, ``READONLY`` after a Sentinel
failover) and RESP2/RESP3 stay redis-py's. The connection's own ``Retry`` re-sends the
whole pipeline after a connection error, exactly as ``Pipeline.execute`` does.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.connection import AbstractConnection
    from redis.commands.core import AsyncScript

MAX_BATCH = 512

# (the command, the script it runs (to load it on NOSCRIPT), its caller's future)
_Queued = tuple[tuple[Any, ...], "AsyncScript | None", "asyncio.Future[Any]"]

# redis-py 5 requires a command name to check out a connection; 5.3 and later deprecate
# passing one (a warning, which the tests turn into an error).
_NAME_REQUIRED = (
    inspect.signature(ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
)


def pack_command(args: tuple[Any, ...]) -> bytes:
    """One command in RESP, as redis-py's encoder writes it (UTF-8 strings, ``repr`` of
    numbers, bytes as they are; a ``bool`` is refused, as redis-py refuses it)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        kind = type(arg)
        if kind is str:
            data = arg.encode()
        elif kind is int:
            data = b"%d" % arg
        else:
            data = _encode_other(arg)
        append(b"$%d\r\n" % len(data))
        append(data)
        append(b"\r\n")
    return b"".join(parts)


def _encode_other(arg: Any) -> bytes:
    if isinstance(arg, bytes | memoryview):
        return bytes(arg)
    if isinstance(arg, bool):
        raise DataError("cannot send a bool to Redis: convert it to bytes, a string or a number")
    if isinstance(arg, int | float):
        return repr(arg).encode()
    if isinstance(arg, str):
        return str(arg).encode()
    raise DataError(f"cannot send {type(arg).__name__} to Redis: not bytes, str or a number")


class AutoPipeline:
    """Queues commands and sends each loop turn's as one non-transactional pipeline."""

    def __init__(self, client: Redis, *, deadline: float, max_batch: int = MAX_BATCH) -> None:
        self._client = client
        self._deadline = deadline
        self._max_batch = max_batch
        self._queued: list[_Queued] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.pipelines = 0  # sent so far (what the tests and the bench count)
        self.commands = 0

    def script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Run ``script`` (``EVALSHA``, loaded on ``NOSCRIPT``); its reply, as a future."""
        return self._queue(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Any single command; its reply, as a future."""
        return self._queue(args, None)

    def _queue(self, command: tuple[Any, ...], script: AsyncScript | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((command, script, future))
        if len(self._queued) >= self._max_batch:
            self._flush()
        return future

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        if batch:
            self._spawn(self._send(batch))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task that :meth:`close` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Queued]) -> None:
        self.pipelines += 1
        self.commands += len(batch)
        try:
            # One deadline for the whole pipeline, so its callers need no timer each.
            async with asyncio.timeout(self._deadline):
                replies = await self._exchange(
                    b"".join([pack_command(command) for command, _, _ in batch]), len(batch)
                )
        except Exception as exc:  # noqa: BLE001 - every caller gets the failure, never a hang
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:  # shutting down: the callers fail closed, then stop
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(RedisConnectionError("pipeline cancelled"))
            raise
        for (command, script, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller's deadline passed
                continue
            if isinstance(reply, NoScriptError) and script is not None:
                self._retry_loaded(script, command, future)
            elif isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _exchange(self, packed: bytes, count: int) -> list[Any]:
        """Write ``packed`` (``count`` commands) on one pooled connection and read a reply
        for each: a command's error reply is its reply, a lost connection fails them all
        (after the connection's ``Retry`` has re-sent the whole pipeline)."""
        # Untyped before redis-py 8.2 (and typed differently since): called through Any.
        pool: Any = self._client.connection_pool
        conn: AbstractConnection = await (
            pool.get_connection("EVALSHA") if _NAME_REQUIRED else pool.get_connection()
        )
        try:
            replies: list[Any] = await conn.retry.call_with_retry(
                lambda: _round_trip(conn, packed, count), lambda _error: conn.disconnect()
            )
            return replies
        finally:
            await pool.release(conn)

    def _retry_loaded(
        self, script: AsyncScript, command: tuple[Any, ...], future: asyncio.Future[Any]
    ) -> None:
        """The server lost its scripts (a restart, ``SCRIPT FLUSH``): load, then run alone."""

        async def retry() -> None:
            try:
                async with asyncio.timeout(self._deadline):
                    await self._client.script_load(script.script)
                    reply = await self._client.execute_command(*command)  # type: ignore[no-untyped-call]
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(reply)

        self._spawn(retry())

    async def close(self) -> None:
        """Send what is queued and wait for every pipeline in flight."""
        self._flush()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


async def _round_trip(conn: AbstractConnection, packed: bytes, count: int) -> list[Any]:
    # A failed or cancelled write or read drops the connection inside redis-py (its
    # ``disconnect_on_error``), so replies left unread never reach the connection's next
    # user (tests/stores/test_autopipeline.py cuts reads short with a frozen server).
    await conn.send_packed_command(packed)
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:  # this command's error reply: the next is intact
            replies.append(exc)
    return replies
