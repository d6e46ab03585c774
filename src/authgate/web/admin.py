"""Admin API (under ``tokens.admin_prefix``, default ``/admin``): needs a bearer JWT with
``tokens.admin_scope``.

=====================================  =============================================
``GET  {p}/mints?limit=N``             long-lived tokens minted, with revocation state
``GET  {p}/keys``                      signing keys and their states
``POST {p}/keys/rotate``               ``{"force": false}``; 409 when too early
``POST {p}/tokens``                    ``{"sub","scope","ttl_seconds","aud","role"}`` mint
``POST {p}/revoke``                    ``{"jti"}``
``GET  {p}/apikeys`` / ``POST``        list / ``{"name","scopes"}`` create (shown once)
``DELETE {p}/apikeys/{key_id}``        revoke an API key
``GET  {p}/pairs``                     BPC pairs (no secrets)
=====================================  =============================================
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from authgate.errors import (
    InvalidRequest,
)
from authgate.models import Principal
from authgate.web.body import read_json_object
from authgate.web.callers import caller
from authgate.web.problem import Routes
from authgate.web.state import SERVICES, SETTINGS

MAX_BODY = 16_384


async def _admin(request: web.Request) -> Principal:
    """The admin API's caller: a bearer JWT with the admin scope, decided by the gate."""
    return await caller(request, request.app[SERVICES].admin_rule)


async def _body(request: web.Request) -> dict[str, Any]:
    return await read_json_object(request, limit=MAX_BODY, allow_empty=True)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _limit(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= 10_000:
        raise InvalidRequest("limit: must be an integer from 1 to 10000")
    return int(raw)


async def mints(request: web.Request) -> web.Response:
    """The mint audit trail."""
    await _admin(request)
    return _json({"items": await request.app[SERVICES].issuer.mints(_limit(request))})


async def keys(request: web.Request) -> web.Response:
    """Signing keys."""
    await _admin(request)
    manager = request.app[SERVICES].keys
    if manager.managed:
        return _json({"managed": True, "keys": manager.states()})
    return _json({"managed": False, "keys": [{"kid": k.kid, "alg": k.alg} for k in manager.keys]})


async def rotate(request: web.Request) -> web.Response:
    """Rotate store-managed signing keys."""
    await _admin(request)
    data = await _body(request)
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRequest("force: must be a boolean")
    return _json(await request.app[SERVICES].keys.rotate(force=force))  # RotationRefused: 409


async def mint(request: web.Request) -> web.Response:
    """Mint a token for an operator-chosen subject."""
    principal = await _admin(request)
    data = await _body(request)
    settings = request.app[SETTINGS].tokens
    sub, scope, ttl = (
        data.get("sub"),
        data.get("scope", ""),
        data.get("ttl_seconds", settings.access_ttl_seconds),
    )
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise InvalidRequest("sub: must be a non-empty string")
    if not isinstance(scope, str):
        raise InvalidRequest("scope: must be a space-separated string")
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, int)
        or not 30 <= ttl <= settings.max_mint_ttl_seconds
    ):
        raise InvalidRequest(
            f"ttl_seconds: must be an integer from 30 to {settings.max_mint_ttl_seconds}"
        )
    aud = data.get("aud")
    if aud is not None and not isinstance(aud, str):
        raise InvalidRequest("aud: must be a string")
    role = data.get("role")
    roles = {settings.pico_operator_role, settings.pico_service_role}
    if role is not None and role not in roles:
        raise InvalidRequest(f"role: must be one of {sorted(roles)}")
    issued = await request.app[SERVICES].issuer.issue(
        subject=sub,
        scopes=scope.split(),
        audience=aud,
        ttl_seconds=ttl,
        extra={"role": role} if role else None,
        minted_by=f"admin:{principal.subject}",
    )
    return _json(
        {"access_token": issued.access_token, "expires_in": ttl, "jti": issued.claims["jti"]}, 201
    )


async def revoke(request: web.Request) -> web.Response:
    """Revoke a token by id."""
    await _admin(request)
    jti = (await _body(request)).get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 256:
        raise InvalidRequest("jti: must be a non-empty string")
    await request.app[SERVICES].issuer.revoke_jti(jti)
    return _json({"revoked": jti})


async def list_apikeys(request: web.Request) -> web.Response:
    """API keys (no secrets)."""
    await _admin(request)
    keys = await request.app[SERVICES].api_keys.all_keys()
    return _json({"items": [k.public_view() for k in keys]})


async def create_apikey(request: web.Request) -> web.Response:
    """Create an API key; the raw key is in this answer only."""
    await _admin(request)
    data = await _body(request)
    name, scopes = data.get("name"), data.get("scopes", [])
    if not isinstance(name, str):
        raise InvalidRequest("name: must be a string")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise InvalidRequest("scopes: must be a list of strings")
    key, raw = await request.app[SERVICES].api_keys.create(name=name, scopes=scopes)  # 400s
    return _json({**key.public_view(), "api_key": raw}, 201)


async def revoke_apikey(request: web.Request) -> web.Response:
    """Revoke an API key."""
    await _admin(request)
    key = await request.app[SERVICES].api_keys.revoke(request.match_info["key_id"])  # 404
    return _json(key.public_view())


async def pairs(request: web.Request) -> web.Response:
    """BPC pairs."""
    await _admin(request)
    pairs = await request.app[SERVICES].pairs.all_pairs()
    return _json({"items": [p.public_view() for p in pairs]})


def add_routes(routes: Routes, prefix: str) -> None:
    """Register the admin API under ``prefix``."""
    routes.get(f"{prefix}/mints", mints)
    routes.get(f"{prefix}/keys", keys)
    routes.post(f"{prefix}/keys/rotate", rotate)
    routes.post(f"{prefix}/tokens", mint)
    routes.post(f"{prefix}/revoke", revoke)
    routes.get(f"{prefix}/apikeys", list_apikeys)
    routes.post(f"{prefix}/apikeys", create_apikey)
    routes.delete(f"{prefix}/apikeys/{{key_id}}", revoke_apikey)
    routes.get(f"{prefix}/pairs", pairs)
