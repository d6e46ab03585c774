"""API keys: ``agk_<key_id>_<secret>``, shown once, looked up by public id in O(1).

At rest a key is kept sealed under the key-encryption key (an HMAC challenge proof needs
the key itself to recompute the MAC) together with a SHA-256 of the raw key, so
``client_credentials`` can check a presented key without opening the envelope. The raw key
is never stored and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from authgate.cache import ExpiringCache
from authgate.crypto.envelope import Envelope, EnvelopeError
from authgate.errors import ApiKeyError, ApiKeyNotFound
from authgate.stores.base import Clock, EventBus, RecordStore

KEY_PREFIX = "agk"
KEY_ID = re.compile(r"[a-z0-9]{12}")
_RAW_KEY = re.compile(r"agk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
CHANNEL = "apikeys"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class ApiKeyUnreadable(ValueError):
    """A stored key cannot be opened (another key-encryption key, or a damaged record).

    Internal: an operator fault, never a refusal; reaching ``web/problem.py`` it is a
    logged 500. (Refusals of a key request are :class:`~authgate.errors.ApiKeyError`.)
    """


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A usable key: its public record and, once opened, its secret."""

    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: int
    revoked_at: int | None
    raw_key: str  # the whole "agk_<id>_<secret>" string: the HMAC key

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def public_view(self) -> dict[str, Any]:
        """What operators see."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def parse_raw_key(raw: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed raw key, else ``None``."""
    match = _RAW_KEY.fullmatch(raw)
    return (match.group(1), match.group(2)) if match else None


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKeyService:
    """Creates, finds (cached, invalidated over the event bus) and revokes API keys."""

    def __init__(
        self,
        *,
        store: RecordStore,
        events: EventBus,
        envelope: Envelope,
        clock: Clock,
        cache_size: int = 10_000,
        cache_ttl_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self._events = events
        self._envelope = envelope
        self._clock = clock
        self._cache: ExpiringCache[str, ApiKey | None] = ExpiringCache(
            cache_size, ttl_seconds=cache_ttl_seconds
        )
        self._generation = 0
        events.subscribe(CHANNEL, self._invalidate)
        events.on_resync(self._resync)

    def _invalidate(self, key_id: str) -> None:
        self._generation += 1
        self._cache.discard(key_id)

    async def _resync(self) -> None:
        self._generation += 1
        self._cache.clear()

    async def create(self, *, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
        """A new key; the raw key is returned once and never again."""
        if not name or len(name) > 128 or any(ord(c) < 0x20 for c in name):
            raise ApiKeyError("name: must be 1-128 printable characters")
        scope_set = frozenset(scopes)
        for scope in scope_set:
            if _SCOPE.fullmatch(scope) is None:
                raise ApiKeyError(f"scopes: {scope!r} is not a valid scope token")
        key_id = "".join(secrets.choice(_ALPHABET) for _ in range(12))
        raw = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        now = self._clock.now_ms()
        record = {
            "key_id": key_id,
            "name": name,
            "scopes": sorted(scope_set),
            "created_at": now,
            "revoked_at": None,
            "sha256": _digest(raw),
            "sealed": self._envelope.seal(raw.encode(), context=f"apikey:{key_id}"),
        }
        await self._store.put(key_id, record)
        await self._changed(key_id)
        return self._load(record), raw

    async def get(self, key_id: str) -> ApiKey | None:
        """The key by public id (cached while the event bus is live), or ``None``."""
        if KEY_ID.fullmatch(key_id) is None:
            return None
        use_cache = self._cache.max_entries > 0 and self._events.live
        if use_cache:
            hit = self._cache.fresh(key_id)
            if hit is not None:
                return hit[1]
        generation = self._generation
        record = await self._store.get(key_id)
        key = self._load(record) if record is not None else None
        if use_cache and self._events.live and generation == self._generation:
            self._cache.put(key_id, key)
        return key

    async def authenticate(self, raw: str) -> ApiKey | None:
        """The active key whose raw form is ``raw`` (constant-time), or ``None``."""
        parsed = parse_raw_key(raw)
        if parsed is None:
            return None
        key = await self.get(parsed[0])
        if key is None or not key.active:
            return None
        if not hmac.compare_digest(_digest(key.raw_key), _digest(raw)):
            return None
        return key

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke for good; raises :class:`ApiKeyNotFound` for an unknown id."""
        record = await self._store.get(key_id) if KEY_ID.fullmatch(key_id) else None
        if record is None:
            raise ApiKeyNotFound(detail=key_id)
        record["revoked_at"] = record.get("revoked_at") or self._clock.now_ms()
        await self._store.put(key_id, record)
        await self._changed(key_id)
        return self._load(record)

    async def all_keys(self) -> list[ApiKey]:
        """Every key, by id."""
        out = []
        for key_id in await self._store.list_ids():
            record = await self._store.get(key_id)
            if record is not None:
                out.append(self._load(record))
        return out

    async def _changed(self, key_id: str) -> None:
        self._invalidate(key_id)
        await self._events.publish(CHANNEL, key_id)

    def _load(self, record: dict[str, Any]) -> ApiKey:
        key_id = str(record["key_id"])
        try:
            raw = self._envelope.open(record["sealed"], context=f"apikey:{key_id}").decode()
        except (EnvelopeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise ApiKeyUnreadable(f"stored key {key_id} cannot be opened: {exc}") from None
        return ApiKey(
            key_id=key_id,
            name=str(record.get("name", "")),
            scopes=frozenset(record.get("scopes", ())),
            created_at=int(record.get("created_at", 0)),
            revoked_at=record.get("revoked_at"),
            raw_key=raw,
        )
