"""Redis stores: state shared by every replica, on one server, Sentinel or Cluster.

Every call runs under :meth:`RedisConnection.run`: a deadline of ``deadline_seconds`` around
the whole operation, and any Redis error or timeout turned into
:class:`~authgate.errors.StoreUnavailable`, so callers fail closed. Clients are built with
explicit connect and socket timeouts, at most one retry (on connection errors only) and a
bounded pool: redis-py's defaults would wait five seconds per socket operation and retry
ten times with back-off.

Key layout (``<p>`` is ``stores.redis.key_prefix``; ``{...}`` is a Cluster hash tag, and
``%``, ``{`` and ``}`` inside a tagged value are percent-encoded so the tag ends where we
mean it to and distinct values stay distinct keys)::

    <p>nonce:{<scope>}:<nonce>   spent nonce, PX ttl_ms            (NONCE_CONSUME_SCRIPT);
                                 the value is the spending call's token
    <p>epoch                     store epoch marker (standalone, Sentinel)
    <p>epoch:{<slot tag>}        store epoch marker of one hash slot (Cluster)
    <p>revoked:<jti>             revoked token id, PX until the token expires
    <p>revoked-index             sorted set jti -> expiry ms, pruned on each revoke / list
    <p>apikey:{<id>}             JSON record; ids in the set <p>apikey:index
    <p>signingkey:{<id>}         JSON record; ids in the set <p>signingkey:index
    <p>user:{<name>}             JSON record (argon2id hash); ids in the set <p>user:index
    <p>pair:{<id>}               JSON record; ids in the set <p>pair:index
    <p>pairfail:{<id>}           lock-out failures: a sorted set of times within the window
    <p>rl:{<key>}                GCRA theoretical arrival time, PX just past it (GCRA_SCRIPT)
    <p>audit:{<stream>}          capped list of JSON entries, newest first (the nonce script
                                 appends to the stream named by its scope); a refresh
                                 family's index token-family:<id> also has PEXPIREAT
    <p>events:<channel>          pub/sub channels; <p>events:_heartbeat:<id> is one
                                 process's own heartbeat

Store epoch. Redis may lose data: a restart without persistence, a flush, a restart from an
RDB snapshot or AOF older than the last accepted nonce, a failover to a replica that had not
received it. The epoch marker (``<epoch_ms>:<replication id>``) records when the current data
set began and which server history wrote it. Every nonce script reads the server's
``master_replid`` (``INFO replication``, inside the script) and moves the epoch forward to
now when the marker is missing or names another replication id; a request signed before
the epoch is refused with ``BEFORE_EPOCH``, since its nonce may have been forgotten. A
restart of any kind and a replica's promotion both change the replication id, and a marker
that comes back from a snapshot carries the old one. In Cluster a Lua script may only touch
keys of one slot, so there is one marker per hash slot (16,384, written by :meth:`prime` at
start-up), shared by every scope in that slot: a credential's first request meets a marker
that already exists. A write the master took but no replica acknowledged (``WAIT``, see
``stores.redis.replica_acks``) is a 503, not an accepted nonce: a manual failover can leave
the old master accepting writes for a moment, and those are lost when it is demoted.

Times come from the injected clock (``clock.now_ms()``, passed to the scripts as ``ARGV``),
not Redis ``TIME``, so a test clock drives both back ends alike. Key expiry (``PX``) is
always real time, however.

Record indexes. On one server or behind Sentinel a record and its index entry are written
in one ``MULTI``/``EXEC`` transaction. Cluster cannot run a transaction across slots, so
there ``put`` adds the id to the index before writing the record, and ``delete`` removes the
record before the index entry: an interrupted call (which raised ``StoreUnavailable``) can
leave an id listed whose record is gone, never a live record that is not listed.

Modules: ``connection`` (:class:`RedisConnection`: deadline, acknowledged nonce writes,
Cluster node clients), ``topology`` (building the client: one server, Sentinel, Cluster),
``scripts`` (the Lua), ``keys`` (hash tags, slot tags), one module per store (``nonces``,
``revocations``, ``records``, ``rate_limits``, ``audit``, ``events``), and ``backend``
(:class:`RedisStores`, all of them on one connection). Everything is re-exported here.
"""

from __future__ import annotations

from authgate.stores.redis.audit import RedisAuditStore
from authgate.stores.redis.backend import RedisStores
from authgate.stores.redis.connection import RedisConnection
from authgate.stores.redis.events import RedisEventBus
from authgate.stores.redis.keys import audit_key, hash_tag, slot_tag
from authgate.stores.redis.nonces import RedisNonceStore
from authgate.stores.redis.rate_limits import RedisRateLimitStore
from authgate.stores.redis.records import RedisPairStore, RedisRecordStore
from authgate.stores.redis.revocations import RedisRevocationStore
from authgate.stores.redis.scripts import (
    EPOCH_PRIME_SCRIPT,
    GCRA_MANY_SCRIPT,
    GCRA_SCRIPT,
    NONCE_CONSUME_SCRIPT,
    NONCE_LIMIT_SCRIPT,
)

__all__ = [
    "EPOCH_PRIME_SCRIPT",
    "GCRA_MANY_SCRIPT",
    "GCRA_SCRIPT",
    "NONCE_CONSUME_SCRIPT",
    "NONCE_LIMIT_SCRIPT",
    "RedisAuditStore",
    "RedisConnection",
    "RedisEventBus",
    "RedisNonceStore",
    "RedisPairStore",
    "RedisRateLimitStore",
    "RedisRecordStore",
    "RedisRevocationStore",
    "RedisStores",
    "audit_key",
    "hash_tag",
    "slot_tag",
]
