"""Admin API (under ``tokens.admin_prefix``, default ``/admin``): every operator act over
HTTP, for a bearer JWT with ``tokens.admin_scope`` (decided by the gate under the internal
``admin-api`` rule). Each handler reads JSON and calls the one operator service
(``operator.py``) that the CLI and the console call too, naming the caller ``admin:<subject>``
in the operator audit.

==========================================  ===========================================
``GET  {p}/mints?limit=N``                  long-lived tokens minted, with revocation state
``GET  {p}/audit?limit=N``                  the operator audit: every change, newest first
``GET  {p}/keys``                           signing keys (store-managed with states, or
                                            file-based / ephemeral with their ids)
``POST {p}/keys/rotate``                    ``{"force": false}``; 409 when too early
``POST {p}/tokens``                         ``{"sub","scope","ttl_seconds","aud","role"}``
``POST {p}/revoke``                         ``{"jti"}`` or ``{"token"}``
``GET  {p}/apikeys`` / ``POST``             list / ``{"name","scopes"}`` create (shown once)
``DELETE {p}/apikeys/{key_id}``             revoke an API key
``GET  {p}/users`` / ``POST``               list / ``{"username","password","scopes","role"}``
``POST {p}/users/{username}/password``      ``{"password"}``
``DELETE {p}/users/{username}``             remove a user
``GET  {p}/pairs``                          BPC pairs (no secrets)
``GET  {p}/pairs/{pair_id}?audit=N``        one pair and its audit trail
``POST {p}/pairs/{pair_id}/approve``        activate a pending pair (also ``/revoke``,
                                            ``/unlock``)
``POST {p}/pairs/import``                   ``{"records": [...]}`` bpc-server PairRecords
==========================================  ===========================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from authgate.errors import InvalidRequest
from authgate.models import Principal
from authgate.operator import Operator
from authgate.web.body import read_json_object
from authgate.web.callers import caller
from authgate.web.problem import Routes
from authgate.web.state import SERVICES

MAX_BODY = 1024**2  # a bpc-server import may carry many records


async def _admin(request: web.Request) -> tuple[Operator, Principal]:
    """The operator service and the caller: a bearer JWT with the admin scope, decided by
    the gate under the ``admin-api`` rule."""
    services = request.app[SERVICES]
    principal = await caller(request, services.admin_rule)
    return services.operator, principal


async def _body(request: web.Request) -> dict[str, Any]:
    return await read_json_object(request, limit=MAX_BODY, allow_empty=True)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _query_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name, str(default))
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= 10_000:
        raise InvalidRequest(f"{name}: must be an integer from 1 to 10000")
    return int(raw)


def _unknown(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown member {unknown[0][:64]!r}")


async def mints(request: web.Request) -> web.Response:
    """The mint audit trail."""
    operator, _ = await _admin(request)
    return _json({"items": await operator.mints(_query_int(request, "limit", 100))})


async def audit(request: web.Request) -> web.Response:
    """The operator audit trail."""
    operator, _ = await _admin(request)
    return _json({"items": await operator.audit(_query_int(request, "limit", 100))})


def _by(principal: Principal) -> str:
    """The operator as every audit entry of the admin API names them."""
    return f"admin:{principal.subject}"


async def keys(request: web.Request) -> web.Response:
    """Signing keys."""
    operator, _ = await _admin(request)
    return _json(await operator.keys())


async def rotate(request: web.Request) -> web.Response:
    """Rotate store-managed signing keys."""
    operator, principal = await _admin(request)
    data = await _body(request)
    _unknown(data, {"force"})
    return _json(await operator.rotate_keys(force=data.get("force", False), by=_by(principal)))


async def mint(request: web.Request) -> web.Response:
    """Mint a token for an operator-chosen subject."""
    operator, principal = await _admin(request)
    data = await _body(request)
    _unknown(data, {"sub", "scope", "ttl_seconds", "aud", "role"})
    if not isinstance(data.get("scope", ""), str):
        raise InvalidRequest("scope: must be a space-separated string")
    issued = await operator.mint(
        sub=data.get("sub"),
        scopes=data.get("scope", ""),
        ttl_seconds=data.get("ttl_seconds"),
        aud=data.get("aud"),
        role=data.get("role"),
        by=_by(principal),
    )
    return _json(issued, 201)


async def revoke(request: web.Request) -> web.Response:
    """Revoke a token by id, or by the token itself."""
    operator, principal = await _admin(request)
    data = await _body(request)
    _unknown(data, {"jti", "token"})
    if ("jti" in data) == ("token" in data):
        raise InvalidRequest("jti: give either jti or token")
    revoked = await operator.revoke_token(
        jti=data.get("jti"), token=data.get("token"), by=_by(principal)
    )
    return _json(revoked)


async def list_apikeys(request: web.Request) -> web.Response:
    """API keys (no secrets)."""
    operator, _ = await _admin(request)
    return _json({"items": await operator.api_keys()})


async def create_apikey(request: web.Request) -> web.Response:
    """Create an API key; the raw key is in this answer only."""
    operator, principal = await _admin(request)
    data = await _body(request)
    _unknown(data, {"name", "scopes"})
    created = await operator.create_api_key(
        name=data.get("name"), scopes=data.get("scopes", []), by=_by(principal)
    )
    return _json(created, 201)


async def revoke_apikey(request: web.Request) -> web.Response:
    """Revoke an API key."""
    operator, principal = await _admin(request)
    return _json(await operator.revoke_api_key(request.match_info["key_id"], by=_by(principal)))


async def list_users(request: web.Request) -> web.Response:
    """Password users (no hashes)."""
    operator, _ = await _admin(request)
    return _json({"items": await operator.users()})


async def add_user(request: web.Request) -> web.Response:
    """Add a password user."""
    operator, principal = await _admin(request)
    data = await _body(request)
    _unknown(data, {"username", "password", "scopes", "role"})
    user = await operator.add_user(
        username=data.get("username"),
        password=data.get("password"),
        scopes=data.get("scopes", []),
        role=data.get("role"),
        by=_by(principal),
    )
    return _json(user, 201)


async def set_password(request: web.Request) -> web.Response:
    """Change a user's password."""
    operator, principal = await _admin(request)
    data = await _body(request)
    _unknown(data, {"password"})
    return _json(
        await operator.set_password(
            username=request.match_info["username"],
            password=data.get("password"),
            by=_by(principal),
        )
    )


async def remove_user(request: web.Request) -> web.Response:
    """Remove a user."""
    operator, principal = await _admin(request)
    return _json(await operator.remove_user(request.match_info["username"], by=_by(principal)))


async def pairs(request: web.Request) -> web.Response:
    """BPC pairs."""
    operator, _ = await _admin(request)
    return _json({"items": await operator.pairs()})


async def pair(request: web.Request) -> web.Response:
    """One BPC pair and its audit trail."""
    operator, _ = await _admin(request)
    audit = _query_int(request, "audit", 20)
    return _json(await operator.pair(request.match_info["pair_id"], audit=audit))


def _pair_act(act: Callable[..., Awaitable[dict[str, Any]]], doc: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        operator, principal = await _admin(request)
        pair_id = request.match_info["pair_id"]
        return _json(await act(operator, pair_id, by=_by(principal)))

    handler.__doc__ = doc
    return handler


async def import_pairs(request: web.Request) -> web.Response:
    """Import bpc-server PairRecords."""
    operator, principal = await _admin(request)
    data = await _body(request)
    _unknown(data, {"records"})
    return _json(await operator.import_pairs(data.get("records"), by=_by(principal)), 201)


def add_routes(routes: Routes, prefix: str) -> None:
    """Register the admin API under ``prefix``."""
    routes.get(f"{prefix}/mints", mints)
    routes.get(f"{prefix}/audit", audit)
    routes.get(f"{prefix}/keys", keys)
    routes.post(f"{prefix}/keys/rotate", rotate)
    routes.post(f"{prefix}/tokens", mint)
    routes.post(f"{prefix}/revoke", revoke)
    routes.get(f"{prefix}/apikeys", list_apikeys)
    routes.post(f"{prefix}/apikeys", create_apikey)
    routes.delete(f"{prefix}/apikeys/{{key_id}}", revoke_apikey)
    routes.get(f"{prefix}/users", list_users)
    routes.post(f"{prefix}/users", add_user)
    routes.post(f"{prefix}/users/{{username}}/password", set_password)
    routes.delete(f"{prefix}/users/{{username}}", remove_user)
    routes.get(f"{prefix}/pairs", pairs)
    routes.post(f"{prefix}/pairs/import", import_pairs)
    routes.get(f"{prefix}/pairs/{{pair_id}}", pair)
    routes.post(
        f"{prefix}/pairs/{{pair_id}}/approve",
        _pair_act(Operator.approve_pair, "Activate a pending pair."),
    )
    routes.post(
        f"{prefix}/pairs/{{pair_id}}/revoke", _pair_act(Operator.revoke_pair, "Revoke a pair.")
    )
    routes.post(
        f"{prefix}/pairs/{{pair_id}}/unlock",
        _pair_act(Operator.unlock_pair, "Clear a pair's lock-out."),
    )
