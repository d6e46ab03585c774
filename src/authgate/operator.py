"""Every operator act, one service behind the admin API and the CLI.

The admin API (``web/admin.py``) and ``authgate keys|users|token|apikeys|pairs`` (directly
on the shared stores, or over the admin API of a running authgate with ``--url``) call the
same methods here, so an act means the same thing whichever way it is made. Each method
validates its inputs (a :class:`~authgate.errors.InvalidRequest` naming the field) and
returns plain JSON-ready values; secrets appear only in the one answer that creates them.

Every changing act takes the operator as ``by`` (``admin:<subject>`` from the admin API and
the console, ``cli`` from the CLI on the stores) and, once it succeeded, appends one entry
``{ts, action, by, ...}`` to the audit stream ``operator`` (capped at
``tokens.operator_audit_cap``): the same entry whichever front made the change. An entry
names what changed (a subject, a jti, a key id, a username) and never carries a token, an
API key's secret or a password.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from authgate.apikeys import ApiKeyService
from authgate.config.model import Settings
from authgate.errors import AuthGateError, InvalidRequest, UserNotFound
from authgate.pairs.service import PairService
from authgate.stores.base import AuditStore, Clock
from authgate.tokens.issuer import TokenIssuer
from authgate.tokens.keys import KeyManager
from authgate.tokens.users import UserService

MAX_LIMIT = 10_000
OPERATOR_STREAM = "operator"


def _limit(value: int, name: str = "limit") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_LIMIT:
        raise InvalidRequest(f"{name}: must be an integer from 1 to {MAX_LIMIT}")
    return value


def _named(by: object) -> None:
    """Refuse a change whose operator is not named (checked before the change is made)."""
    if not isinstance(by, str) or not by:
        raise InvalidRequest("by: the operator must be named")


def _scopes(value: object, name: str = "scopes") -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise InvalidRequest(f"{name}: must be a list of strings")


class Parts(Protocol):
    """The services an operator act may use (``compose.Services``), each built on first use:
    listing pairs never reads signing keys."""

    @property
    def settings(self) -> Settings:
        """The settings."""
        ...

    @property
    def keys(self) -> KeyManager:
        """authgate's signing keys."""
        ...

    @property
    def issuer(self) -> TokenIssuer:
        """The token issuer."""
        ...

    @property
    def users(self) -> UserService:
        """Password users."""
        ...

    @property
    def api_keys(self) -> ApiKeyService:
        """API keys."""
        ...

    @property
    def pairs(self) -> PairService:
        """BPC pairs."""
        ...

    @property
    def audit(self) -> AuditStore:
        """The audit store (the operator stream)."""
        ...

    @property
    def clock(self) -> Clock:
        """The clock of the audit entries' ``ts``."""
        ...


class Operator:
    """The operator's acts on keys, tokens, users, API keys and BPC pairs."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._settings = parts.settings

    @property
    def _keys(self) -> KeyManager:
        return self._parts.keys

    @property
    def _issuer(self) -> TokenIssuer:
        return self._parts.issuer

    @property
    def _users(self) -> UserService:
        return self._parts.users

    @property
    def _api_keys(self) -> ApiKeyService:
        return self._parts.api_keys

    @property
    def _pairs(self) -> PairService:
        return self._parts.pairs

    # --- the operator audit ------------------------------------------------------------

    async def _record(self, action: str, by: str, **fields: Any) -> None:
        """Append one entry to the operator audit (after the act succeeded)."""
        entry = {"ts": self._parts.clock.now_ms(), "action": action, "by": by, **fields}
        await self._parts.audit.append(
            OPERATOR_STREAM, entry, cap=self._settings.tokens.operator_audit_cap
        )

    async def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The operator audit, newest first: every change and who made it."""
        return [dict(e) for e in await self._parts.audit.recent(OPERATOR_STREAM, _limit(limit))]

    # --- signing keys ------------------------------------------------------------------

    async def keys(self) -> dict[str, Any]:
        """The signing keys: store-managed with their states, or file-based (or the one
        ephemeral key of development mode) with their ids."""
        if self._keys.managed:
            await self._keys.load()
            return {"managed": True, "keys": self._keys.states()}
        return {
            "managed": False,
            "source": "files" if self._settings.jwt.signing_key_files else "ephemeral",
            "keys": [{"kid": k.kid, "alg": k.alg} for k in self._keys.keys],
            "note": "rotate file-based keys by deployment (jwt.signing_key_files)",
        }

    async def rotate_keys(self, *, force: bool = False, by: str) -> dict[str, Any]:
        """Promote the next store-managed key (409 when too early, unless ``force``)."""
        _named(by)
        if not isinstance(force, bool):
            raise InvalidRequest("force: must be a boolean")
        if not self._keys.managed:
            raise InvalidRequest(
                "keys: signing keys come from jwt.signing_key_files (or are ephemeral): "
                "rotate them by deployment"
            )
        await self._keys.load()
        rotated = await self._keys.rotate(force=force)
        await self._record("keys.rotate", by, kid=rotated["current"], force=force)
        return rotated

    # --- tokens ------------------------------------------------------------------------

    async def mint(
        self,
        *,
        sub: object,
        scopes: object = (),
        ttl_seconds: object = None,
        aud: object = None,
        role: object = None,
        by: str,
    ) -> dict[str, Any]:
        """Mint a token for an operator-chosen subject (in the operator audit; long-lived
        ones in the mint audit too)."""
        _named(by)
        tokens = self._settings.tokens
        ttl = tokens.access_ttl_seconds if ttl_seconds is None else ttl_seconds
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            raise InvalidRequest("sub: must be a non-empty string of at most 256 characters")
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int)
            or not 30 <= ttl <= tokens.max_mint_ttl_seconds
        ):
            raise InvalidRequest(
                f"ttl_seconds: must be an integer from 30 to {tokens.max_mint_ttl_seconds}"
            )
        if aud is not None and not isinstance(aud, str):
            raise InvalidRequest("aud: must be a string")
        roles = {tokens.pico_operator_role, tokens.pico_service_role}
        if role is not None and role not in roles:
            raise InvalidRequest(f"role: must be one of {sorted(roles)}")
        if not self._keys.loaded:  # the CLI's own services: read the keys once
            await self._keys.load()
        issued = await self._issuer.issue(
            subject=sub,
            scopes=_scopes(scopes, "scope"),
            audience=aud,
            ttl_seconds=ttl,
            extra={"role": role} if role else None,
            minted_by=by,
        )
        await self._record(
            "token.mint",
            by,
            sub=sub,
            scopes=_scopes(scopes, "scope"),
            ttl_seconds=ttl,
            jti=issued.claims["jti"],
            aud=aud,
            role=role,
        )
        return {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "jti": issued.claims["jti"],
        }

    async def revoke_token(
        self, *, jti: object = None, token: object = None, by: str
    ) -> dict[str, Any]:
        """Revoke a token on every replica until it would have expired.

        Given the token itself (one of authgate's, signature checked), its own ``exp``
        bounds the revocation and a refresh token takes its family with it. Given only the
        ``jti``: the mint audit's ``exp`` for a long-lived token, else the longest lifetime
        a token of authgate can have.
        """
        _named(by)
        if token is not None:
            if not isinstance(token, str) or not token:
                raise InvalidRequest("token: must be a non-empty string")
            claims = await self._own_claims(token)
            await self._issuer.revoke_claims(claims)
            until_ms = (int(claims["exp"]) + self._settings.jwt.leeway_seconds) * 1000
            await self._record("token.revoke", by, jti=str(claims["jti"]), until_ms=until_ms)
            return {"revoked": str(claims["jti"]), "until_ms": until_ms}
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise InvalidRequest("jti: must be a non-empty string of at most 256 characters")
        until_ms = await self._issuer.revoke_jti(jti)
        await self._record("token.revoke", by, jti=jti, until_ms=until_ms)
        return {"revoked": jti, "until_ms": until_ms}

    async def _own_claims(self, token: str) -> dict[str, Any]:
        refused: AuthGateError | None = None
        for kind in ("access", "refresh"):
            try:
                return await self._issuer.decode(token, kind=kind)
            except AuthGateError as exc:
                refused = exc
        raise InvalidRequest(
            f"token: not a valid token of this authgate ({refused.reason if refused else ''})"
        )

    async def mints(self, limit: int = 100) -> list[dict[str, Any]]:
        """Long-lived tokens minted, newest first, with their revocation state."""
        return await self._issuer.mints(_limit(limit))

    # --- users -------------------------------------------------------------------------

    async def add_user(
        self,
        *,
        username: object,
        password: object,
        scopes: object = (),
        role: object = None,
        by: str,
    ) -> dict[str, Any]:
        """Add a password user (argon2id); refuses an existing name."""
        _named(by)
        if not isinstance(username, str):
            raise InvalidRequest("username: must be a string")
        if not isinstance(password, str):
            raise InvalidRequest("password: must be a string")
        if role is not None and not isinstance(role, str):
            raise InvalidRequest("role: must be a string")
        user = await self._users.add(
            username,
            password,
            scopes=_scopes(scopes),
            role=self._settings.tokens.pico_operator_role if role is None else role,
        )
        view = user.public_view()
        await self._record(
            "user.add", by, username=username, scopes=view.get("scopes"), role=view.get("role")
        )
        return view

    async def set_password(self, *, username: object, password: object, by: str) -> dict[str, Any]:
        """Change a user's password."""
        _named(by)
        if not isinstance(username, str) or not isinstance(password, str):
            raise InvalidRequest("password: username and password must be strings")
        view = (await self._users.set_password(username, password)).public_view()
        await self._record("user.password", by, username=username)
        return view

    async def remove_user(self, username: str, *, by: str) -> dict[str, Any]:
        """Remove a user."""
        _named(by)
        if not await self._users.remove(username):
            raise UserNotFound(detail=username)
        await self._record("user.remove", by, username=username)
        return {"removed": username}

    async def users(self) -> list[dict[str, Any]]:
        """Every user (no hashes)."""
        return [u.public_view() for u in await self._users.all_users()]

    # --- API keys ----------------------------------------------------------------------

    async def create_api_key(self, *, name: object, scopes: object = (), by: str) -> dict[str, Any]:
        """Create an API key; the raw key is in this answer only."""
        _named(by)
        if not isinstance(name, str):
            raise InvalidRequest("name: must be a string")
        key, raw = await self._api_keys.create(name=name, scopes=_scopes(scopes))
        await self._record(
            "apikey.create", by, key_id=key.key_id, name=key.name, scopes=sorted(key.scopes)
        )
        return {
            **key.public_view(),
            "api_key": raw,
            "note": "shown once: authgate keeps only a hash and a sealed copy",
        }

    async def api_keys(self) -> list[dict[str, Any]]:
        """Every API key (no secrets)."""
        return [k.public_view() for k in await self._api_keys.all_keys()]

    async def revoke_api_key(self, key_id: str, *, by: str) -> dict[str, Any]:
        """Revoke an API key."""
        _named(by)
        view = (await self._api_keys.revoke(key_id)).public_view()
        await self._record("apikey.revoke", by, key_id=key_id)
        return view

    # --- BPC pairs ---------------------------------------------------------------------

    async def pairs(self) -> list[dict[str, Any]]:
        """Every pair (no secrets)."""
        return [p.public_view() for p in await self._pairs.all_pairs()]

    async def pair(self, pair_id: str, *, audit: int = 20) -> dict[str, Any]:
        """One pair and its newest audit entries."""
        record = await self._pairs.get(pair_id)
        trail = await self._pairs.trail(pair_id, _limit(audit, "audit"))
        return {**record.public_view(), "audit": trail}

    async def approve_pair(self, pair_id: str, *, by: str) -> dict[str, Any]:
        """Activate a pending pair (``by``: the operator, named in both audit trails)."""
        _named(by)
        view = (await self._pairs.approve(pair_id=pair_id, operator=by)).public_view()
        await self._record("pair.approve", by, pair_id=pair_id)
        return view

    async def revoke_pair(self, pair_id: str, *, by: str) -> dict[str, Any]:
        """Revoke a pair (a pending one: deny it)."""
        _named(by)
        view = (await self._pairs.revoke(pair_id, by="operator", operator=by)).public_view()
        await self._record("pair.revoke", by, pair_id=pair_id)
        return view

    async def unlock_pair(self, pair_id: str, *, by: str) -> dict[str, Any]:
        """Clear a pair's lock-out."""
        _named(by)
        view = (await self._pairs.unlock(pair_id, operator=by)).public_view()
        await self._record("pair.unlock", by, pair_id=pair_id)
        return view

    async def import_pairs(self, records: object, *, by: str) -> dict[str, Any]:
        """Import bpc-server ``PairRecord`` JSON (one object or a list of them)."""
        _named(by)
        if isinstance(records, str | bytes):
            try:
                records = json.loads(records)
            except ValueError:
                raise InvalidRequest("records: not JSON") from None
        items: Sequence[object] = records if isinstance(records, list) else [records]
        imported = []
        for item in items:
            if not isinstance(item, dict):
                raise InvalidRequest("records: each record must be a JSON object")
            imported.append((await self._pairs.import_bpc_server(item)).public_view())
        ids = [str(p["pair_id"]) for p in imported]
        await self._record("pairs.import", by, count=len(ids), ids=ids)
        return {
            "imported": imported,
            "note": "imported pairs are device-key-only: bpc-server keeps only an argon2 hash "
            "of the secret, which cannot check secret_hmac; re-register or rotate them to "
            "restore the secret check",
        }
