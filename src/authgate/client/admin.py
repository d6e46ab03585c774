"""A client of authgate's admin API with the operator service's own method names, so the
CLI acts the same way on a running authgate (any backend) as directly on the shared stores.
The changing acts take the operator service's ``by`` too, and ignore it: the server names the
admin token's subject (``admin:<subject>``) in its operator audit.

    async with AdminClient("http://127.0.0.1:8080", token) as admin:
        await admin.mint(sub="alice", scopes=["read"], ttl_seconds=3600, by="cli")
"""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

DEFAULT_PREFIX = "/admin"


def _strings(value: object) -> list[str]:
    """Scopes given as a list or a space-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    raise TypeError("scopes: must be a list of strings")


class AdminApiError(Exception):
    """The admin API refused: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class AdminClient:
    """The admin API of one authgate, authenticated by an admin-scoped bearer token."""

    def __init__(
        self, url: str, token: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 30.0
    ) -> None:
        self._base = url.rstrip("/") + prefix
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        if self._session is None:
            raise RuntimeError("use AdminClient as an async context manager")
        async with self._session.request(
            method, self._base + path, json=body, params=params, allow_redirects=False
        ) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
            if resp.status >= 400:
                error = data.get("error") if isinstance(data, dict) else None
                if isinstance(error, dict):
                    raise AdminApiError(
                        resp.status, str(error.get("code")), str(error.get("message"))
                    )
                raise AdminApiError(resp.status, f"http_{resp.status}", resp.reason or "")
            return data

    # --- the operator service's acts -----------------------------------------------------

    async def keys(self) -> dict[str, Any]:
        """Signing keys."""
        result: dict[str, Any] = await self._call("GET", "/keys")
        return result

    async def rotate_keys(self, *, force: bool = False, by: str = "") -> dict[str, Any]:
        """Rotate store-managed signing keys."""
        result: dict[str, Any] = await self._call("POST", "/keys/rotate", {"force": force})
        return result

    async def mint(
        self,
        *,
        sub: object,
        scopes: object = (),
        ttl_seconds: object = None,
        aud: object = None,
        role: object = None,
        by: str = "",
    ) -> dict[str, Any]:
        """Mint a token (the server records the admin token's subject as the minter)."""
        body: dict[str, Any] = {"sub": sub, "scope": " ".join(_strings(scopes))}
        for name, value in (("ttl_seconds", ttl_seconds), ("aud", aud), ("role", role)):
            if value is not None:
                body[name] = value
        result: dict[str, Any] = await self._call("POST", "/tokens", body)
        return result

    async def revoke_token(
        self, *, jti: object = None, token: object = None, by: str = ""
    ) -> dict[str, Any]:
        """Revoke a token by id or by the token itself."""
        body = {"token": token} if token is not None else {"jti": jti}
        result: dict[str, Any] = await self._call("POST", "/revoke", body)
        return result

    async def mints(self, limit: int = 100) -> list[dict[str, Any]]:
        """The mint audit."""
        result = await self._call("GET", "/mints", params={"limit": str(limit)})
        return list(result["items"])

    async def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The operator audit, newest first."""
        result = await self._call("GET", "/audit", params={"limit": str(limit)})
        return list(result["items"])

    async def add_user(
        self,
        *,
        username: object,
        password: object,
        scopes: object = (),
        role: object = None,
        by: str = "",
    ) -> dict[str, Any]:
        """Add a password user."""
        body = {"username": username, "password": password, "scopes": _strings(scopes)}
        if role is not None:
            body["role"] = role
        result: dict[str, Any] = await self._call("POST", "/users", body)
        return result

    async def set_password(
        self, *, username: object, password: object, by: str = ""
    ) -> dict[str, Any]:
        """Change a user's password."""
        path = f"/users/{quote(str(username), safe='')}/password"
        result: dict[str, Any] = await self._call("POST", path, {"password": password})
        return result

    async def remove_user(self, username: str, *, by: str = "") -> dict[str, Any]:
        """Remove a user."""
        result: dict[str, Any] = await self._call("DELETE", f"/users/{quote(username, safe='')}")
        return result

    async def users(self) -> list[dict[str, Any]]:
        """Every user."""
        return list((await self._call("GET", "/users"))["items"])

    async def create_api_key(
        self, *, name: object, scopes: object = (), by: str = ""
    ) -> dict[str, Any]:
        """Create an API key (the raw key is in this answer only)."""
        body = {"name": name, "scopes": _strings(scopes)}
        result: dict[str, Any] = await self._call("POST", "/apikeys", body)
        return result

    async def api_keys(self) -> list[dict[str, Any]]:
        """Every API key."""
        return list((await self._call("GET", "/apikeys"))["items"])

    async def revoke_api_key(self, key_id: str, *, by: str = "") -> dict[str, Any]:
        """Revoke an API key."""
        result: dict[str, Any] = await self._call("DELETE", f"/apikeys/{quote(key_id, safe='')}")
        return result

    async def pairs(self) -> list[dict[str, Any]]:
        """Every BPC pair."""
        return list((await self._call("GET", "/pairs"))["items"])

    async def pair(self, pair_id: str, *, audit: int = 20) -> dict[str, Any]:
        """One pair and its audit trail."""
        path = f"/pairs/{quote(pair_id, safe='')}"
        result: dict[str, Any] = await self._call("GET", path, params={"audit": str(audit)})
        return result

    async def _pair_act(self, pair_id: str, act: str) -> dict[str, Any]:
        path = f"/pairs/{quote(pair_id, safe='')}/{act}"
        result: dict[str, Any] = await self._call("POST", path)
        return result

    async def approve_pair(self, pair_id: str, *, by: str = "") -> dict[str, Any]:
        """Activate a pending pair."""
        return await self._pair_act(pair_id, "approve")

    async def revoke_pair(self, pair_id: str, *, by: str = "") -> dict[str, Any]:
        """Revoke a pair."""
        return await self._pair_act(pair_id, "revoke")

    async def unlock_pair(self, pair_id: str, *, by: str = "") -> dict[str, Any]:
        """Clear a pair's lock-out."""
        return await self._pair_act(pair_id, "unlock")

    async def import_pairs(self, records: object, *, by: str = "") -> dict[str, Any]:
        """Import bpc-server PairRecords."""
        result: dict[str, Any] = await self._call("POST", "/pairs/import", {"records": records})
        return result
