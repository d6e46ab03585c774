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
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

MAX_BATCH = 512

# (the command, the script it runs (to load it on NOSCRIPT), its caller's future)
_Queued = tuple[tuple[Any, ...], "AsyncScript | None", "asyncio.Future[Any]"]


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
            async with (
                asyncio.timeout(self._deadline),
                self._client.pipeline(transaction=False) as pipe,
            ):
                for command, _, _ in batch:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
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
