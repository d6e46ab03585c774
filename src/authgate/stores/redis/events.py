"""The event bus: pub/sub between replicas, with a heartbeat that proves delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from authgate.stores.base import EventHandler, ResyncHandler
from authgate.stores.redis.connection import RedisConnection

# One logger for the whole Redis back end: its name is the "logger" field operators see.
log = logging.getLogger("authgate.stores.redis")


class RedisEventBus:
    """Pub/sub on ``<p>events:<channel>`` with a watchdog that proves delivery end to end.

    A listener task subscribes, runs the resync handlers, then marks the bus ``live``. Every
    ``heartbeat_seconds`` it publishes to a channel of its own through the ordinary client
    and expects that message back over the subscription: a frozen server (the publish
    times out), a dropped connection, or a node that no longer relays, all stop the
    heartbeats, and after three unanswered ones ``live`` turns ``False`` and the task
    resubscribes with back-off.
    Consumers check the store per request while not live.

    The heartbeat is an ordinary published message, not a ``PING`` on the subscription:
    redis-py parses a subscribed ``PING``'s reply differently by version and protocol (8.x
    with RESP3 and ``decode_responses`` turns ``PONG`` into ``{'type': 'P', ...}``), and a
    message that travels the same road as real ones is the better proof.

    In Cluster mode messages are published and subscribed on one node, the master of an
    agreed slot (see :meth:`_publisher`), found again in the slot map at each
    (re)subscription.
    """

    def __init__(self, conn: RedisConnection, *, heartbeat_seconds: float = 1.0) -> None:
        self._conn = conn
        self._heartbeat = heartbeat_seconds
        self._handlers: dict[str, list[EventHandler]] = {}
        self._resync: list[ResyncHandler] = []
        self._live = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_channel = self._channel(f"_heartbeat:{uuid.uuid4().hex}")
        self.subscriptions = 0
        """Subscriptions that became live; every one after the first followed a loss."""

    @property
    def live(self) -> bool:
        return self._live

    @property
    def resubscriptions(self) -> int:
        """Times the bus was lost and became live again."""
        return max(0, self.subscriptions - 1)

    def subscribe(self, channel: str, handler: EventHandler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def on_resync(self, handler: ResyncHandler) -> None:
        self._resync.append(handler)

    def _channel(self, name: str) -> str:
        return self._conn.key(f"events:{name}")

    async def publish(self, channel: str, message: str) -> None:
        target = self._channel(channel)

        async def send() -> None:
            await (await self._publisher()).publish(target, message)

        await self._conn.run(send)

    async def _publisher(self) -> Redis | RedisCluster:
        """Where messages are published and subscriptions are held: the client itself, or
        in Cluster the master of one slot every process agrees on (the slot of the key
        ``<p>events``). ``PUBLISH`` answers once the message is handed to the subscribers
        of the node it ran on, so a revocation reaches every replica before the revoking
        call returns; a message published on another node would cross the cluster bus
        after that."""
        client = self._conn.client
        if not isinstance(client, RedisCluster):
            return client
        return await self._conn.acking_client(self._conn.key("events"))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="authgate-events")

    async def close(self) -> None:
        """Stop listening.

        The listener also checks ``_closing``: a cancellation that lands as a deadline
        fires inside redis-py can come out as ``TimeoutError``, which alone would read as
        "resubscribe" and keep the task alive.
        """
        self._closing = True
        self._live = False
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()  # again if a cancellation was swallowed
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled():
            task.exception()  # retrieved: a listener that ended on an error is not an error now

    async def _listen_forever(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: resubscribe
                if self._closing:
                    return
                log.warning(
                    "event subscription lost",
                    extra={"event": "events_lost", "error": type(exc).__name__},
                )
                self._conn.slot_map_suspect()
            else:
                backoff = 0.05
            self._live = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _listen_once(self) -> None:
        names = {self._channel(c): c for c in self._handlers}
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._heartbeat * 3):
            pubsub = (await self._publisher()).pubsub()
        try:
            async with asyncio.timeout(self._heartbeat * 3):
                await pubsub.subscribe(self._heartbeat_channel, *names)
                for handler in self._resync:
                    await handler()
            self._live = True
            self.subscriptions += 1
            # Heartbeats sent and not yet seen back. Counted in heartbeats, not seconds: an
            # event loop held up by other work sends none meanwhile, so it is not a loss.
            unanswered = 0
            next_beat = loop.time()
            while not self._closing:
                now = loop.time()
                if now >= next_beat:
                    if unanswered >= 3:
                        raise TimeoutError("event subscription heartbeat missed")
                    async with asyncio.timeout(self._heartbeat * 3):
                        await (await self._publisher()).publish(self._heartbeat_channel, "1")
                    unanswered += 1
                    next_beat = now + self._heartbeat
                wait = min(0.2, max(0.001, next_beat - loop.time()))
                message = await pubsub.get_message(timeout=wait)
                if message is None or message.get("type") != "message":
                    continue
                unanswered = 0
                channel = names.get(str(message["channel"]))
                if channel is not None:
                    for deliver in self._handlers.get(channel, ()):
                        deliver(str(message["data"]))
        finally:
            self._live = False
            with contextlib.suppress(Exception):
                # Untyped in redis-py before 8.2: called untyped on every release.
                await cast(Any, pubsub).aclose()
