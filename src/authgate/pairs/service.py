"""The BPC pair lifecycle: register, approve, rotate, revoke, lock out, import, audit.

No HTTP here: ``web/bpc.py`` and the CLI both call this. Every change publishes the pair id
so every replica's cache drops its copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher

from authgate.config.model import BPCSettings
from authgate.crypto.bpc_wire import PAIR_ID, jwk_fingerprint
from authgate.crypto.envelope import Envelope
from authgate.errors import PairNotFound, PairRequestError
from authgate.pairs.directory import PairDirectory
from authgate.pairs.records import (
    SCOPE_METHODS,
    PairRecord,
    PairRecordError,
    PairStatus,
    public_key_from_jwk,
)
from authgate.stores.base import AuditStore, Clock, PairStore

MODES = frozenset({"development", "production"})
MIN_SECRET_CHARS = 8
MAX_SECRET_CHARS = 1024
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@dataclass(frozen=True, slots=True)
class Registration:
    """The outcome of ``register``: an active pair id, or an approval token to wait on."""

    pair: PairRecord
    approval_token: str | None


def _text(data: Mapping[str, Any], field: str, *, max_len: int = 128) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value.strip():
        raise PairRequestError(field, "must be a non-empty string")
    if len(value) > max_len or any(ord(c) < 0x20 for c in value):
        raise PairRequestError(field, f"must be at most {max_len} printable characters")
    return value


def _secret(data: Mapping[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str):
        raise PairRequestError(field, "must be a string")
    if not MIN_SECRET_CHARS <= len(value) <= MAX_SECRET_CHARS:
        raise PairRequestError(
            field, f"must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"
        )
    return value


def _public_jwk(data: Mapping[str, Any], field: str) -> dict[str, Any]:
    jwk = data.get(field)
    try:
        public_key_from_jwk(jwk)
    except PairRecordError as exc:
        raise PairRequestError(field, str(exc)) from None
    return {k: jwk[k] for k in ("kty", "crv", "x", "y")}  # type: ignore[index]  # checked above


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class PairService:
    """Pair lifecycle operations over the pair store."""

    def __init__(
        self,
        *,
        store: PairStore,
        audit: AuditStore,
        directory: PairDirectory,
        envelope: Envelope,
        clock: Clock,
        settings: BPCSettings,
        development: bool,
    ) -> None:
        self._store = store
        self._audit = audit
        self._directory = directory
        self._envelope = envelope
        self._clock = clock
        self._settings = settings
        self._auto_approve = (
            settings.auto_approve_development_pairs
            if settings.auto_approve_development_pairs is not None
            else development
        )

    async def _save(self, record: PairRecord) -> PairRecord:
        record = record.with_changes(updated_at=self._clock.now_ms())
        await self._store.put(record.pair_id, record.to_json())
        await self._directory.changed(record.pair_id)
        return record

    async def get(self, pair_id: str) -> PairRecord:
        """The stored record; raises :class:`PairNotFound`."""
        data = await self._store.get(pair_id) if PAIR_ID.fullmatch(pair_id) else None
        if data is None:
            raise PairNotFound(detail=pair_id)
        return PairRecord.from_json(data)

    async def all_pairs(self) -> list[PairRecord]:
        """Every pair, by id."""
        out = []
        for pair_id in await self._store.list_ids():
            data = await self._store.get(pair_id)
            if data is not None:
                out.append(PairRecord.from_json(data))
        return out

    async def register(self, data: Mapping[str, Any], *, address: str = "") -> Registration:
        """Create a pair from the client's ``{"name","scope","mode","secret","pubJwk"}``;
        ``address`` (the requesting client's) goes into the audit entry for operators."""
        name = _text(data, "name")
        scope = _text(data, "scope", max_len=32)
        if scope not in SCOPE_METHODS:
            raise PairRequestError("scope", f"must be one of {sorted(SCOPE_METHODS)}")
        mode = data.get("mode", "production")
        if mode not in MODES:
            raise PairRequestError("mode", f"must be one of {sorted(MODES)}")
        secret = _secret(data, "secret")
        jwk = _public_jwk(data, "pubJwk")
        unknown = set(data) - {"name", "scope", "mode", "secret", "pubJwk"}
        if unknown:
            raise PairRequestError(sorted(unknown)[0], "unknown member")

        pair_id = "pair_" + secrets.token_urlsafe(16)
        now = self._clock.now_ms()
        approve_now = mode == "development" and self._auto_approve
        token = None if approve_now else f"{pair_id}.{secrets.token_urlsafe(32)}"
        record = PairRecord(
            pair_id=pair_id,
            name=name,
            scope=scope,
            mode=str(mode),
            public_key_jwk=jwk,
            fingerprint=jwk_fingerprint(jwk),
            secret_hash=await asyncio.to_thread(_hasher.hash, secret),
            secret_sealed=self._envelope.seal(secret.encode(), context=f"pair:{pair_id}"),
            status=PairStatus.ACTIVE if approve_now else PairStatus.PENDING,
            created_at=now,
            lockout_count=self._settings.lockout_threshold,
            approval_token_hash=None if token is None else _token_hash(token),
            approval_expires_at=None
            if token is None
            else now + self._settings.approval_ttl_seconds * 1000,
        )
        record = await self._save(record)
        await self.audit(
            record.pair_id,
            event="registered",
            outcome=record.status.value,
            **({"address": address} if address else {}),
        )
        return Registration(pair=record, approval_token=token)

    async def approve(
        self,
        *,
        approval_token: str | None = None,
        pair_id: str | None = None,
        operator: str = "",
    ) -> PairRecord:
        """Activate a pending pair, by its approval token or (operator) by id; ``operator``
        names who acted in the audit entry."""
        if approval_token is not None:
            pair_id, _, _ = approval_token.partition(".")
        if not pair_id:
            raise PairRequestError("approvalToken", "is required")
        try:
            record = await self.get(pair_id)
        except PairNotFound:
            raise PairNotFound("no pending pair for that approval token", detail=pair_id) from None
        if record.status is not PairStatus.PENDING:
            raise PairRequestError("pairId", f"pair is {record.status.value}, not pending")
        if approval_token is not None:
            expected = record.approval_token_hash or ""
            if not hmac.compare_digest(expected, _token_hash(approval_token)):
                raise PairNotFound("no pending pair for that approval token", detail=pair_id)
        if (
            record.approval_expires_at is not None
            and record.approval_expires_at < self._clock.now_ms()
        ):
            raise PairRequestError("approvalToken", "has expired; register again")
        record = await self._save(
            record.with_changes(
                status=PairStatus.ACTIVE, approval_token_hash=None, approval_expires_at=None
            )
        )
        await self.audit(record.pair_id, event="approved", outcome="active", **_by(operator))
        return record

    async def rotate(self, pair_id: str, data: Mapping[str, Any]) -> PairRecord:
        """Replace the device key and secret (the request was signed with the current key)."""
        if data.get("pairId") != pair_id:
            raise PairRequestError("pairId", "must be the signing pair's id")
        jwk = _public_jwk(data, "newPubJwk")
        secret = _secret(data, "newSecret")
        record = await self.get(pair_id)
        record = await self._save(
            record.with_changes(
                public_key_jwk=jwk,
                fingerprint=jwk_fingerprint(jwk),
                secret_hash=await asyncio.to_thread(_hasher.hash, secret),
                secret_sealed=self._envelope.seal(secret.encode(), context=f"pair:{pair_id}"),
            )
        )
        await self._store.reset_failures(pair_id)
        await self.audit(pair_id, event="rotated", outcome="active")
        return record

    async def revoke(self, pair_id: str, *, by: str, operator: str = "") -> PairRecord:
        """Revoke for good (``by``: ``pair`` or ``operator``; ``operator`` names who)."""
        record = await self.get(pair_id)
        record = await self._save(record.with_changes(status=PairStatus.REVOKED))
        await self.audit(pair_id, event="revoked", outcome=by, **_by(operator))
        return record

    async def unlock(self, pair_id: str, *, operator: str = "") -> PairRecord:
        """Operator: clear a lock-out (``operator`` names who in the audit entry)."""
        record = await self.get(pair_id)
        if record.status is not PairStatus.LOCKED:
            raise PairRequestError("pairId", f"pair is {record.status.value}, not locked")
        await self._store.reset_failures(pair_id)
        record = await self._save(record.with_changes(status=PairStatus.ACTIVE))
        await self.audit(pair_id, event="unlocked", outcome="active", **_by(operator))
        return record

    async def record_wrong_secret(self, record: PairRecord) -> bool:
        """Count a failure that proves the device key; lock the pair when the threshold is
        reached within ``bpc.lockout_window_seconds`` (older failures no longer count)."""
        count = await self._store.record_failure(
            record.pair_id, window_ms=self._settings.lockout_window_seconds * 1000
        )
        if count < record.lockout_count:
            return False
        current = await self.get(record.pair_id)
        if current.status is PairStatus.ACTIVE:
            await self._save(current.with_changes(status=PairStatus.LOCKED))
            await self.audit(record.pair_id, event="locked_out", outcome=f"{count} failures")
        return True

    async def import_bpc_server(self, data: Mapping[str, Any]) -> PairRecord:
        """Import a bpc-server ``PairRecord`` (device key plus argon2 hash only)."""
        pair_id = _text(data, "pair_id")
        if PAIR_ID.fullmatch(pair_id) is None:
            raise PairRequestError("pair_id", "must be 1-128 of A-Z a-z 0-9 _ -")
        scope = _text(data, "scope", max_len=32)
        if scope not in SCOPE_METHODS:
            raise PairRequestError("scope", f"must be one of {sorted(SCOPE_METHODS)}")
        jwk = _public_jwk(data, "public_key_jwk")
        secret_hash = data.get("secret_hash", "")
        if not isinstance(secret_hash, str):
            raise PairRequestError("secret_hash", "must be a string")
        status = data.get("status", "active")
        if status not in {"active", "pending", "revoked"}:
            raise PairRequestError("status", "must be active, pending or revoked")
        expires = data.get("expires_at")
        record = PairRecord(
            pair_id=pair_id,
            name=str(data.get("name", pair_id)),
            scope=scope,
            mode=str(data.get("mode", "production")),
            public_key_jwk=jwk,
            fingerprint=jwk_fingerprint(jwk),
            secret_hash=secret_hash,
            secret_sealed=None,
            status=PairStatus(status),
            created_at=self._clock.now_ms(),
            expires_at=_epoch_ms(expires),
            lockout_count=int(data.get("lockout_count", self._settings.lockout_threshold)),
        )
        record = await self._save(record)
        await self.audit(pair_id, event="imported", outcome="device_key_only")
        return record

    async def audit(self, pair_id: str, **entry: Any) -> None:
        """Append to the pair's trail."""
        await self._audit.append(
            pair_id, {"ts": self._clock.now_ms(), **entry}, cap=self._settings.audit_cap
        )

    async def trail(self, pair_id: str, limit: int) -> list[dict[str, Any]]:
        """The pair's newest audit entries."""
        return await self._audit.recent(pair_id, max(0, min(limit, self._settings.audit_cap)))


def _by(operator: str) -> dict[str, str]:
    """The audit member naming the operator who acted, when one did."""
    return {"operator": operator} if operator else {}


def _epoch_ms(value: Any) -> int | None:
    """``expires_at`` from bpc-server: ms, s, or ISO 8601; ``None`` when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PairRequestError("expires_at", "must be a time")
    if isinstance(value, int | float):
        return int(value if value > 10**11 else value * 1000)
    if isinstance(value, str):
        from datetime import datetime

        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            raise PairRequestError("expires_at", "must be ISO 8601 or epoch time") from None
    raise PairRequestError("expires_at", "must be a time")
