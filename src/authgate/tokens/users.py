"""Operator users for the password grant and pico ``/login``: argon2id hashes only."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from authgate.errors import UserError, UserNotFound
from authgate.stores.base import Clock, RecordStore

USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
_hasher = PasswordHasher()
# Verified against when the user does not exist, so both paths cost one argon2 check.
_DUMMY = _hasher.hash("authgate-no-such-user")


@dataclass(frozen=True, slots=True)
class User:
    """An operator user (no password material)."""

    username: str
    scopes: frozenset[str]
    role: str
    created_at: int

    def public_view(self) -> dict[str, Any]:
        """What operators see."""
        return {
            "username": self.username,
            "scopes": sorted(self.scopes),
            "role": self.role,
            "created_at": self.created_at,
        }


def _check_password(password: str) -> None:
    if not 12 <= len(password) <= 1024:
        raise UserError("password: must be 12 to 1024 characters")


class UserService:
    """Add, change, remove and authenticate users."""

    def __init__(self, *, store: RecordStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def add(self, username: str, password: str, *, scopes: Iterable[str], role: str) -> User:
        """Create a user; refuses an existing name."""
        if USERNAME.fullmatch(username) is None:
            raise UserError("username: 1-64 of A-Z a-z 0-9 . _ @ -")
        _check_password(password)
        scope_set = frozenset(scopes)
        for scope in scope_set:
            if _SCOPE.fullmatch(scope) is None:
                raise UserError(f"scopes: {scope!r} is not a valid scope token")
        if await self._store.get(username) is not None:
            raise UserError(f"username: {username} already exists")
        record = {
            "username": username,
            "hash": await asyncio.to_thread(_hasher.hash, password),
            "scopes": sorted(scope_set),
            "role": role,
            "created_at": self._clock.now_ms(),
        }
        await self._store.put(username, record)
        return self._user(record)

    async def set_password(self, username: str, password: str) -> User:
        """Replace a user's password."""
        _check_password(password)
        record = await self._store.get(username) if USERNAME.fullmatch(username) else None
        if record is None:
            raise UserNotFound(detail=username)
        record["hash"] = await asyncio.to_thread(_hasher.hash, password)
        await self._store.put(username, record)
        return self._user(record)

    async def remove(self, username: str) -> bool:
        """Delete a user; ``True`` when it existed."""
        return USERNAME.fullmatch(username) is not None and await self._store.delete(username)

    async def get(self, username: str) -> User | None:
        """One user, or ``None`` when there is no such user."""
        record = await self._store.get(username) if USERNAME.fullmatch(username) else None
        return self._user(record) if record is not None else None

    async def all_users(self) -> list[User]:
        """Every user."""
        out = []
        for name in await self._store.list_ids():
            record = await self._store.get(name)
            if record is not None:
                out.append(self._user(record))
        return out

    async def authenticate(self, username: str, password: str) -> User | None:
        """The user when the password matches; one argon2 verification either way."""
        record = await self._store.get(username) if USERNAME.fullmatch(username) else None
        stored = str(record.get("hash", _DUMMY)) if record is not None else _DUMMY
        try:
            # argon2 takes hundreds of milliseconds by design: off the event loop, so other
            # requests (and the event bus's heartbeat) are not held up meanwhile.
            await asyncio.to_thread(_hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return self._user(record) if record is not None else None

    @staticmethod
    def _user(record: dict[str, Any]) -> User:
        return User(
            username=str(record["username"]),
            scopes=frozenset(record.get("scopes", ())),
            role=str(record.get("role", "")),
            created_at=int(record.get("created_at", 0)),
        )
