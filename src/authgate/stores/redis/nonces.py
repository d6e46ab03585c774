"""The nonce store: one Lua script checks the store epoch and spends the nonce, and may
append the audit entry and charge the rate limits in the same step.

Each call stores a random token of its own as the nonce key's value, so that when redis-py
re-sends the script after a connection error (the first send ran, its reply was lost) the
script recognises the call's own write and answers fresh, not replayed (see
``_OWN_WRITE_LUA`` in :mod:`~authgate.stores.redis.scripts`).

The store epoch, and why a write may need a replica's acknowledgement, are described in the
package docstring.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from authgate.stores.base import Clock, NonceOutcome, RateLimitCheck, RateLimitResult
from authgate.stores.redis.connection import RedisConnection
from authgate.stores.redis.keys import audit_key, hash_tag
from authgate.stores.redis.rate_limits import limit_results

_NONCE_OUTCOMES = {
    0: NonceOutcome.FRESH,
    1: NonceOutcome.REPLAYED,
    3: NonceOutcome.RATE_LIMITED,
    2: NonceOutcome.BEFORE_EPOCH,
}


class _CallTokens:
    """Tokens naming one store call each: a random 128-bit prefix per process and a counter.

    Only uniqueness matters (a call recognises its own write by it; no caller chooses or
    sees one), so one draw from the OS per process is enough, not one per request. A forked
    child draws its own prefix: parent and child never share a counter.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = secrets.token_hex(16) + ":"
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


_call_token = _CallTokens()

# One encoder for every call: json.dumps() with separators builds a new one each time.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _compact_json(audit: Mapping[str, Any]) -> str:
    """The audit entry as compact JSON (what ``json.dumps(..., separators=(",", ":"))``
    writes)."""
    return _COMPACT.encode(audit if type(audit) is dict else dict(audit))


class RedisNonceStore:
    """Nonces consumed by one Lua script: epoch check and ``SET NX PX`` together.

    The epoch markers are primed before the first nonce is consumed: at start-up, or, if
    Redis could not be reached then, by the first consume (so a new credential's first
    request in Cluster still meets a marker that predates it).
    """

    def __init__(self, conn: RedisConnection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock
        self._primed = False
        self._priming = asyncio.Lock()

    async def _ensure_primed(self) -> None:
        async with self._priming:
            if not self._primed:
                await self.prime()

    async def consume(
        self,
        scope: str,
        nonce: str,
        *,
        ttl_ms: int,
        signed_at_ms: int,
        audit: Mapping[str, Any] | None = None,
        audit_cap: int = 0,
    ) -> NonceOutcome:
        if not self._primed:
            await self._ensure_primed()
        tag = hash_tag(scope)
        nonce_key = self._conn.key(f"nonce:{tag}:{nonce}")
        keys = [nonce_key, self._conn.epoch_key(tag)]
        args: list[Any] = [self._clock.now_ms(), max(1, ttl_ms), signed_at_ms, _call_token()]
        if audit is not None and audit_cap > 0:
            keys.append(audit_key(self._conn, scope))
            args += [_compact_json(audit), audit_cap]
        code = await self._conn.run_acked(self._conn.nonce_script, keys, args)
        return _NONCE_OUTCOMES[int(code)]

    async def prime(self) -> None:
        """Bring every epoch marker up to date: the one marker, or in Cluster each slot's."""
        script = self._conn.epoch_prime_script
        now = self._clock.now_ms()
        if not self._conn.cluster:
            key = self._conn.epoch_key("")
            await self._conn.run(lambda: script(keys=[key, key], args=[now]))
            self._primed = True
            return
        keys = [self._conn.slot_epoch_key(slot) for slot in range(REDIS_CLUSTER_HASH_SLOTS)]

        async def prime_all() -> None:
            # A cluster pipeline refuses EVALSHA: one plain pipeline per slot's master.
            by_node: dict[int, tuple[Redis, list[str]]] = {}
            for key in keys:
                node = await self._conn.acking_client(key)
                by_node.setdefault(id(node), (node, []))[1].append(key)
            for node, node_keys in by_node.values():
                await node.script_load(script.script)
                async with node.pipeline(transaction=False) as pipe:
                    for key in node_keys:
                        pipe.evalsha(script.sha, 2, key, key, now)
                    await pipe.execute()

        # Sixteen thousand small scripts take longer than one call's deadline.
        await self._conn.run(prime_all, deadline=30.0)
        self._primed = True

    async def consume_limited(
        self,
        scope: str,
        nonce: str,
        *,
        ttl_ms: int,
        signed_at_ms: int,
        limits: Sequence[RateLimitCheck],
        audit: Mapping[str, Any] | None = None,
        audit_cap: int = 0,
    ) -> tuple[NonceOutcome, list[RateLimitResult]]:
        if not self._primed:
            await self._ensure_primed()
        tag = hash_tag(scope)
        keys = [
            self._conn.key(f"nonce:{tag}:{nonce}"),
            self._conn.epoch_key(tag),
            audit_key(self._conn, scope),
            *(self._conn.key(f"rl:{tag}:{c.key}") for c in limits),
        ]
        cap = audit_cap if audit is not None else 0
        args: list[Any] = [
            self._clock.now_ms(),
            max(1, ttl_ms),
            signed_at_ms,
            _call_token(),
            _compact_json(audit) if audit is not None else "{}",
            cap,
        ]
        for check in limits:
            args += [check.limit, check.period_ms]
        reply = await self._conn.run_acked(self._conn.nonce_limit_script, keys, args)
        return _NONCE_OUTCOMES[int(reply[0])], limit_results(reply[1:], limits)
