"""The connection every Redis store shares: the client, the key prefix, the deadline.

Every call runs under :meth:`RedisConnection.run`: a deadline of ``deadline_seconds`` around
the whole operation, and any Redis error or timeout turned into
:class:`~authgate.errors.StoreUnavailable`, so callers fail closed. Nonce scripts run under
:meth:`RedisConnection.run_acked`, which waits for a replica's acknowledgement when the
server's history has had one. In Cluster it also keeps plain clients of single nodes
(``WAIT`` counts only the writes of its own connection) and reloads the slot map after a
failed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from authgate.errors import StoreUnavailable
from authgate.stores.redis.autopipeline import AutoPipeline
from authgate.stores.redis.keys import slot_tag
from authgate.stores.redis.scripts import (
    EPOCH_PRIME_SCRIPT,
    GCRA_MANY_SCRIPT,
    GCRA_SCRIPT,
    NONCE_CONSUME_SCRIPT,
    NONCE_LIMIT_SCRIPT,
)
from authgate.stores.redis.topology import (
    Client,
    build_client,
    client_options,
    node_client,
    node_options,
)

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from authgate.config.model import RedisSettings

# One logger for the whole Redis back end: its name is the "logger" field operators see.
log = logging.getLogger("authgate.stores.redis")

T = TypeVar("T")


class RedisConnection:
    """One client, the key prefix, and the deadline every store call runs under."""

    def __init__(self, settings: RedisSettings) -> None:
        self.prefix = settings.key_prefix
        self.cluster = settings.mode == "cluster"
        self.replica_acks = settings.required_replica_acks
        self._ack_timeout_ms = max(1, round(settings.replica_ack_timeout_seconds * 1000))
        self._deadline = settings.deadline_seconds
        self._options = client_options(settings)
        self._node_options = node_options(settings)
        self._node_clients: dict[tuple[str, int], Redis] = {}
        self._wait_expected: dict[int, bool] = {}
        self._initialized = not self.cluster
        self._initializing = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = -1.0
        client, self._sentinel = build_client(settings, self._options)
        self.client: Client = client
        self.nonce_script: AsyncScript = self.client.register_script(NONCE_CONSUME_SCRIPT)
        self.gcra_script: AsyncScript = self.client.register_script(GCRA_SCRIPT)
        self.gcra_many_script: AsyncScript = self.client.register_script(GCRA_MANY_SCRIPT)
        self.nonce_limit_script: AsyncScript = self.client.register_script(NONCE_LIMIT_SCRIPT)
        self.epoch_prime_script: AsyncScript = self.client.register_script(EPOCH_PRIME_SCRIPT)
        self.auto: AutoPipeline | None = (
            AutoPipeline(client, deadline=settings.deadline_seconds)
            if settings.auto_pipeline and isinstance(client, Redis)
            else None
        )

    async def run_script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """``script``'s reply, as :meth:`run` gives it. Auto-pipelined (when enabled) with
        the calls of concurrent requests: the pipeline carries the deadline."""
        auto = self.auto
        if auto is None:
            return await self.run(lambda: script(keys=keys, args=args))
        try:
            return await auto.script(script, keys, args)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailable() from exc

    def key(self, suffix: str) -> str:
        """``suffix`` under the configured prefix."""
        return self.prefix + suffix

    def epoch_key(self, tag: str) -> str:
        """The store-epoch marker guarding keys hash-tagged ``tag``.

        One server or Sentinel: one marker. Cluster: one marker per hash slot, in that slot
        (a script may only touch keys of one slot), so every scope of a slot shares it and it
        exists, primed at start-up, before a credential's first request.
        """
        if not self.cluster:
            return self.key("epoch")
        return self.slot_epoch_key(key_slot(tag.encode()))

    def slot_epoch_key(self, slot: int) -> str:
        """Cluster: the store-epoch marker of hash slot ``slot`` (a key in that slot)."""
        return self.key(f"epoch:{{{slot_tag(slot)}}}")

    async def run(
        self, operation: Callable[[], Awaitable[T]], *, deadline: float | None = None
    ) -> T:
        """Await ``operation()`` within the deadline; any Redis failure is ``StoreUnavailable``.

        ``deadline`` overrides ``deadline_seconds`` (start-up work, not a request's).
        """
        try:
            async with asyncio.timeout(deadline or self._deadline):
                if not self._initialized:
                    await self._initialize()
                return await operation()
        except (RedisError, RedisClusterException, OSError) as exc:
            # OSError covers TimeoutError (the deadline) and raw socket errors. The message
            # stays generic: the cause may name the server, never the URL or its password.
            raise StoreUnavailable() from exc

    async def _initialize(self) -> None:
        """Load the Cluster slot map once, before any command: a burst of first commands on a
        fresh cluster client races redis-py's own initialisation and fails."""
        async with self._initializing:
            if not self._initialized and isinstance(self.client, RedisCluster):
                await self.client.initialize()
            self._initialized = True

    async def run_acked(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a nonce script; its outcome code, with a replica's acknowledgement if needed.

        A nonce counts as spent only once a replica holds it, as soon as the server's
        current history has had one (the script says so: code + 4): a write that only the
        master took is lost when a replica is promoted, and during a manual failover the
        old master goes on accepting writes for a moment, so another authgate could accept
        the same nonce on the new master. The script and a ``WAIT`` go in one pipeline on
        one connection (one round trip, plus the replication delay). Too few
        acknowledgements in time raise ``StoreUnavailable`` (the write stays, so a retry of
        the same bytes is a replay). A promoted replica that has no replica of its own
        (its history never had one) accepts without: after a master is lost, service comes
        back without waiting for a new replica. redis-py re-sends the whole pipeline once
        after a connection error: a script whose first run's reply was lost recognises its
        own write (the call's token) and writes it again, so the re-sent ``WAIT`` covers it.
        Returns the reply, its code without the +4.
        """
        if not self.replica_acks:
            return _split(await self.run_script(script, keys, args))[0]

        async def acked() -> Any:
            client = await self.acking_client(keys[0])
            try:
                return await self._script_then_wait(client, script, keys, args)
            except (RedisError, OSError):
                self.slot_map_suspect()
                raise

        return await self.run(acked)

    async def _script_then_wait(
        self, client: Redis, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> Any:
        # WAIT is sent with the script unless this server said last time that no replica
        # is needed (a lone promoted master: a WAIT there would always run to its timeout).
        wait = self._wait_expected.get(id(client), True)
        for attempt in range(2):
            async with client.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                if wait:
                    pipe.execute_command("WAIT", self.replica_acks, self._ack_timeout_ms)
                replies = await pipe.execute(raise_on_error=False)
            reply = replies[0]
            if isinstance(reply, NoScriptError) and attempt == 0:
                await client.script_load(script.script)
                continue
            if isinstance(reply, BaseException):
                raise reply
            plain, needs_ack = _split(reply)
            self._wait_expected[id(client)] = needs_ack
            fresh = (plain if isinstance(plain, int) else plain[0]) == 0
            if not fresh or not needs_ack:
                return plain
            if not wait:
                # The server gained a replica since the last call: this write was not
                # waited for. Refuse it (503); the next call waits.
                raise RedisConnectionError("replica acknowledgement was not requested")
            acks = replies[1]
            if isinstance(acks, BaseException):
                raise acks
            if int(acks) < self.replica_acks:
                log.warning(
                    "nonce write not acknowledged by enough replicas",
                    extra={"event": "replica_acks_missing", "acks": int(acks)},
                )
                raise RedisConnectionError("too few replica acknowledgements")
            return plain
        raise RedisConnectionError("script could not be loaded")  # pragma: no cover

    def slot_map_suspect(self) -> None:
        """After a failed call to a Cluster node: reload the slot map (at most every 0.5 s).

        The plain node clients bypass the cluster client, which would otherwise only learn
        of a failover from its own failed calls.
        """
        if not isinstance(self.client, RedisCluster):
            return
        loop = asyncio.get_running_loop()
        if self._refresh is not None and not self._refresh.done():
            return
        if loop.time() - self._refreshed_at < 0.5:
            return
        self._refreshed_at = loop.time()
        self._refresh = loop.create_task(self._reload_slots(self.client))

    @staticmethod
    async def _reload_slots(client: RedisCluster) -> None:
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await client.nodes_manager.initialize()

    async def acking_client(self, key: str) -> Redis:
        """A client whose pipelines reach the master holding ``key`` on one connection.

        In Cluster, redis-py routes a key-less ``WAIT`` to an arbitrary node, and ``WAIT``
        counts only the writes of its own connection: so the pipeline goes to a plain client
        of the slot's master, found in the cluster client's slot map.
        """
        if not isinstance(self.client, RedisCluster):
            return self.client
        if not self._initialized:  # the event bus gets here outside run()
            await self._initialize()
        node = self.client.get_node_from_key(key)
        if node is None:
            raise RedisClusterException(f"no node serves the slot of {key!r}")
        return self.node_client(node.host, int(node.port))

    def node_client(self, host: str, port: int) -> Redis:
        """A plain client of one Cluster node, with the credentials and TLS of the settings
        (cached)."""
        client = self._node_clients.get((host, port))
        if client is None:
            if not isinstance(self.client, RedisCluster):
                raise RedisClusterException("node clients exist in cluster mode only")
            client = node_client(self._node_options, host, port)
            self._node_clients[host, port] = client
        return client

    async def close(self) -> None:
        """Close the client, its pool, and any Sentinel connections."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        try:
            if self.auto is not None:
                await self.auto.close()
            await self.client.aclose()
            for client in self._node_clients.values():
                await client.aclose()
        finally:
            if self._sentinel is not None:
                # Each sentinel client in turn: Sentinel.aclose() is newer than redis-py 5.1.
                for sentinel in self._sentinel.sentinels:
                    await sentinel.aclose()


def _split(reply: Any) -> tuple[Any, bool]:
    """A nonce script's reply with its plain outcome code, and whether a replica must
    acknowledge the write (the script added 4 to the code)."""
    if isinstance(reply, list):
        raw = int(reply[0])
        return [raw % 4, *reply[1:]], raw >= 4
    raw = int(reply)
    return raw % 4, raw >= 4
