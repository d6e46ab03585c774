"""Key naming shared by the Redis stores: Cluster hash tags, one tag per hash slot, and
audit list keys. The key layout itself is in the package docstring."""

from __future__ import annotations

from typing import Protocol, cast

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot


class Prefixed(Protocol):
    """What names keys under the configured prefix (``RedisConnection``)."""

    def key(self, name: str) -> str:
        """``name`` under the prefix."""
        ...


def hash_tag(value: str) -> str:
    """``value`` as a Cluster hash tag: ``{value}`` with ``%``, ``{`` and ``}`` encoded."""
    return "{" + value.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") + "}"


_SLOT_TAGS: list[str] = []


def slot_tag(slot: int) -> str:
    """A short string whose Cluster hash slot is ``slot`` (table built on first use)."""
    if not _SLOT_TAGS:
        table: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        missing, i = REDIS_CLUSTER_HASH_SLOTS, 0
        while missing:
            candidate = format(i, "x")
            found = key_slot(candidate.encode())
            if table[found] is None:
                table[found] = candidate
                missing -= 1
            i += 1
        _SLOT_TAGS.extend(cast(list[str], table))
    return _SLOT_TAGS[slot]


def audit_key(conn: Prefixed, stream: str) -> str:
    """An audit list's key; hash-tagged so a nonce of the same scope shares its slot."""
    return conn.key(f"audit:{hash_tag(stream)}")
