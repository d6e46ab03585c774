"""BPC pair records as stored (JSON) and as used (a loaded public key, a recoverable secret)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from authgate.crypto.bpc_wire import b64url_decode, jwk_fingerprint

SCOPE_METHODS: dict[str, frozenset[str]] = {
    "read": frozenset({"GET", "HEAD", "OPTIONS"}),
    "read-write": frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"}),
    "admin": frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"}),
}
# A pair's scope implies the weaker ones, so route scopes can name any of them.
IMPLIED_SCOPES: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "read-write": frozenset({"read", "read-write"}),
    "admin": frozenset({"read", "read-write", "admin"}),
}


class PairStatus(StrEnum):
    """Lifecycle states."""

    PENDING = "pending"
    ACTIVE = "active"
    LOCKED = "locked"
    REVOKED = "revoked"


class PairRecordError(ValueError):
    """A stored or submitted pair record is malformed; the message names the field.

    Internal, never a refusal by itself: a submitted key's fault becomes a
    :class:`~authgate.errors.PairRequestError` naming the member (``pairs/service.py``),
    an unreadable stored record is logged (``verifiers/bpc.py``) or answered as a 500.
    """


def public_key_from_jwk(jwk: Any) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from ``{"kty":"EC","crv":"P-256","x":..,"y":..}`` (strictly)."""
    if not isinstance(jwk, dict):
        raise PairRecordError("public key must be a JWK object")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise PairRecordError("public key must be an EC P-256 JWK")
    extra = set(jwk) - {"kty", "crv", "x", "y", "kid", "alg", "use", "key_ops", "ext"}
    if extra or "d" in jwk:
        raise PairRecordError("public key JWK has unexpected members (a private key?)")
    try:
        x = b64url_decode(str(jwk.get("x", "")), what="x")
        y = b64url_decode(str(jwk.get("y", "")), what="y")
    except ValueError as exc:
        raise PairRecordError(f"public key: {exc}") from None
    if len(x) != 32 or len(y) != 32:
        raise PairRecordError("public key coordinates must be 32 bytes each")
    try:
        return ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
    except ValueError:
        raise PairRecordError("public key is not a point on P-256") from None


@dataclass(frozen=True, slots=True)
class PairRecord:
    """One pair. ``secret_sealed`` is ``None`` for imported, device-key-only pairs."""

    pair_id: str
    name: str
    scope: str
    mode: str
    public_key_jwk: dict[str, Any]
    fingerprint: str
    secret_hash: str
    secret_sealed: dict[str, Any] | None
    status: PairStatus
    created_at: int
    expires_at: int | None = None
    lockout_count: int = 10
    approval_token_hash: str | None = None
    approval_expires_at: int | None = None
    updated_at: int = 0

    @property
    def device_key_only(self) -> bool:
        """Imported from bpc-server with only an argon2 hash: ``secret_hmac`` cannot be checked."""
        return self.secret_sealed is None

    @property
    def scopes(self) -> frozenset[str]:
        """The pair's scope and every weaker one."""
        return IMPLIED_SCOPES.get(self.scope, frozenset())

    def allows_method(self, method: str) -> bool:
        """Whether the pair's scope permits ``method``."""
        return method in SCOPE_METHODS.get(self.scope, frozenset())

    def with_changes(self, **changes: Any) -> PairRecord:
        """A copy with fields replaced."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "pair_id": self.pair_id,
            "name": self.name,
            "scope": self.scope,
            "mode": self.mode,
            "public_key_jwk": self.public_key_jwk,
            "fingerprint": self.fingerprint,
            "secret_hash": self.secret_hash,
            "secret_sealed": self.secret_sealed,
            "status": self.status.value,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "lockout_count": self.lockout_count,
            "approval_token_hash": self.approval_token_hash,
            "approval_expires_at": self.approval_expires_at,
            "updated_at": self.updated_at,
        }

    def public_view(self) -> dict[str, Any]:
        """What operators see: no secret material, no approval token hash."""
        return {
            "pair_id": self.pair_id,
            "name": self.name,
            "scope": self.scope,
            "mode": self.mode,
            "fingerprint": self.fingerprint,
            "status": self.status.value,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "lockout_count": self.lockout_count,
            "device_key_only": self.device_key_only,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairRecord:
        """Parse the stored form."""
        try:
            return cls(
                pair_id=str(data["pair_id"]),
                name=str(data.get("name", "")),
                scope=str(data["scope"]),
                mode=str(data.get("mode", "production")),
                public_key_jwk=dict(data["public_key_jwk"]),
                fingerprint=str(data.get("fingerprint") or jwk_fingerprint(data["public_key_jwk"])),
                secret_hash=str(data.get("secret_hash", "")),
                secret_sealed=data.get("secret_sealed"),
                status=PairStatus(data["status"]),
                created_at=int(data.get("created_at", 0)),
                expires_at=None if data.get("expires_at") is None else int(data["expires_at"]),
                lockout_count=int(data.get("lockout_count", 10)),
                approval_token_hash=data.get("approval_token_hash"),
                approval_expires_at=data.get("approval_expires_at"),
                updated_at=int(data.get("updated_at", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PairRecordError(f"stored pair record is malformed: {exc}") from None
