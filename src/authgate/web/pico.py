"""The pico-compatible token surface under ``/api/v1/auth`` (docs/protocols.md §3).

===========================  ===========================================================
``GET  /jwks``               served by ``web/health.py`` (the same JWKS document)
``POST /challenge``          ``{"address"}`` -> ``{"challenge": <80 hex>, "ttl": 60}``
``POST /sign-in``            ``{"address","public_key","signature","challenge","algorithm"}``
                             -> ``{"access_token","refresh_token","address","algorithm",...}``
``POST /refresh``            ``{"refresh_token"}`` -> a rotated pair (reuse kills the family)
``POST /login``              ``{"username","password"}`` -> tokens carrying the user's role
``POST /revoke``             ``{"jti","reason"}``; bearer with the operator role or admin scope
``GET  /revoked-jtis``       ``{"items": [{"jti","expires_at"}]}``; bearer with the service
                             role (or operator role, or admin scope)
``POST /fleet/sessions``     ``X-Fleet-Secret`` header; ``{"session_id","agent_id","role"?,
                             "scope"?,"ttl"?}`` -> ``{"session_token","exp","expires_in"}``
                             (``tokens/fleet.py``; 404 while ``tokens.pico_fleet_secret``
                             is unset)
``GET  /mints?limit=N``      ``{"items": [...]}``: the still valid (unexpired, unrevoked)
                             tokens among the newest N audited mints; operator role or
                             admin scope
===========================  ===========================================================

Decisions, each deliberate:

* **Stateless challenges.** A challenge is ``hex(issued_ms[8] || random[16] || mac[16])``,
  ``mac`` = HMAC-SHA256 truncated to 16 bytes over a domain label, the two fields and the
  address, so it authenticates itself and is bound to the address it was asked for. The
  MAC key is derived from ``hmac.challenge_secret`` (and its ``previous_`` secrets, for
  rotation) under a label of its own, so a pico challenge and an HMAC-proof challenge can
  never stand in for each other; without a configured secret it is random per process and
  replicas refuse each other's challenges. Valid for 60 s (plus ``hmac.clock_skew_seconds``
  for a challenge stamped slightly in the future). Single use: sign-in spends it in the
  nonce store (one atomic ``SET NX PX``) after the signature verifies, keyed per address.
* **Identity is the key.** ``sub`` and the returned ``address`` are the lower-case hex of
  the verified public key in one canonical encoding (Ed25519: 32 raw bytes; secp256k1: the
  33-byte compressed point, whichever form was sent; ML-DSA-65: the 1952 raw bytes), never
  the client-supplied address, which only scopes the challenge.
* **Strict wallet keys.** Ed25519 keys with a non-canonical ``y`` or of small order are
  refused (with the identity point as key, ``R = identity, S = 0`` "verifies" any message);
  secp256k1 signatures must be minimal DER with ``s <= n/2`` (low-S).
* **Roles.** Wallet tokens carry ``role: user`` (``config.model.WALLET_ROLE``; sign-in is
  ``tokens/wallets.py``) and no scope; no privileged role may be ``user``. Password
  tokens carry the user's own role (``authgate users add --role``, default ``operator``), so
  an operator who gives a user another role is not overridden; users without a role get
  none. ``/login`` is served only when ``tokens.password_grant`` is on: it is one switch for
  password authentication whichever door it comes through. A ``role`` claim counts only on
  authgate's own tokens (an external issuer's ``role`` means what that issuer meant); the
  admin scope counts as it does on the admin API.
* **revoked-jtis lists what authgate refuses, by token id.** pico validators compare a
  token's ``jti`` alone, so a refresh-family revocation (``fam:<id>``) is never listed as
  such: revoking a family also revokes each of its unexpired access tokens by ``jti``
  (the issuer indexes them per family, ``tokens/issuer.py``), each until its own expiry.
* **Bodies.** ``application/json``, at most 16 KB, strict UTF-8 JSON objects whose members
  are all strings; duplicate and unknown members are refused. Every failure is a 4xx in
  authgate's problem format (or 503 when a store cannot answer), never a 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from authgate.config.model import Settings
from authgate.crypto.pico_challenge import CHALLENGE_TTL_SECONDS
from authgate.errors import (
    InvalidRequest,
    LoginRefused,
    NotFound,
    OAuthError,
    ScopeDenied,
)
from authgate.models import Principal
from authgate.policy.rules import BEARER_CALLER_RULE
from authgate.web.body import read_json_object
from authgate.web.callers import caller
from authgate.web.oauth import charge_password_attempt
from authgate.web.problem import REQUEST_ID, Routes
from authgate.web.state import REVOCATIONS, SERVICES, SETTINGS, STORES

PREFIX = "/api/v1/auth"
MAX_BODY_BYTES = 16_384
REVOCATION_AUDIT_STREAM = "pico-revocations"
log = logging.getLogger("authgate.pico")

_HEX = re.compile(r"[0-9a-fA-F]*")
_VISIBLE = re.compile(r"[\x21-\x7e]+")
_MAX_ADDRESS = 4096
_MAX_JTI = 256
_MAX_REASON = 256
_MAX_PASSWORD = 1024

# Accepted byte lengths: (public keys, (shortest, longest) signature).
_LENGTHS: Mapping[str, tuple[frozenset[int], tuple[int, int]]] = {
    "Ed25519": (frozenset({32}), (64, 64)),
    "secp256k1": (frozenset({33, 65}), (8, 72)),
    "ML-DSA-65": (frozenset({1952}), (3309, 3309)),
}


# --- request bodies ---------------------------------------------------------------------


async def read_fields(
    request: web.Request, *, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, str]:
    """The body's string members; anything else about the body is a 400 (or 413)."""
    data = await read_json_object(request, limit=MAX_BODY_BYTES)
    unknown = sorted(set(data) - {*required, *optional})
    if unknown:
        raise InvalidRequest(f"unknown member {unknown[0][:64]!r}")
    for name, value in data.items():
        if not isinstance(value, str):
            raise InvalidRequest(f"{name}: must be a string")
    for name in required:
        if not data.get(name):
            raise InvalidRequest(f"{name}: required")
    return data


def _hex(value: str, name: str, lengths: Callable[[int], bool]) -> bytes:
    if len(value) % 2 or _HEX.fullmatch(value) is None or not lengths(len(value) // 2):
        raise InvalidRequest(f"{name}: not hex of the right length for the algorithm")
    return bytes.fromhex(value)


def _visible(value: str, name: str, limit: int) -> str:
    if len(value) > limit or _VISIBLE.fullmatch(value) is None:
        raise InvalidRequest(f"{name}: 1-{limit} visible ASCII characters")
    return value


def _json(body: Mapping[str, Any]) -> web.Response:
    return web.json_response(
        dict(body), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


# --- callers with a bearer token --------------------------------------------------------


async def _caller(request: web.Request) -> Principal:
    """The bearer-token caller, decided by the gate (roles are checked by the endpoint)."""
    return await caller(request, BEARER_CALLER_RULE)


def _require(principal: Principal, settings: Settings, roles: Sequence[str]) -> None:
    if settings.tokens.admin_scope in principal.scopes:
        return
    own = principal.issuer == settings.jwt.issuer
    role = principal.claims.get("role")
    if not (own and isinstance(role, str) and role in roles):
        raise ScopeDenied(f"needs role {' or '.join(roles)} or scope {settings.tokens.admin_scope}")


# --- handlers ---------------------------------------------------------------------------


async def challenge(request: web.Request) -> web.Response:
    """``POST /challenge``."""
    fields = await read_fields(request, required=("address",))
    address = _visible(fields["address"], "address", _MAX_ADDRESS)
    return _json(
        {
            "challenge": request.app[SERVICES].wallets.challenge(address),
            "ttl": CHALLENGE_TTL_SECONDS,
        }
    )


async def sign_in(request: web.Request) -> web.Response:
    """``POST /sign-in``: a wallet signature over a challenge buys a token pair."""
    app = request.app
    fields = await read_fields(
        request, required=("address", "public_key", "signature", "challenge", "algorithm")
    )
    algorithm = fields["algorithm"]
    if algorithm not in app[SETTINGS].tokens.pico_wallet_algorithms:
        raise InvalidRequest(f"algorithm: {algorithm[:32]!r} is not accepted here")
    address = _visible(fields["address"], "address", _MAX_ADDRESS)
    key_lengths, (shortest, longest) = _LENGTHS[algorithm]
    public_key = _hex(fields["public_key"], "public_key", key_lengths.__contains__)
    signature = _hex(fields["signature"], "signature", lambda n: shortest <= n <= longest)
    identity, issued = await app[SERVICES].wallets.sign_in(
        algorithm=algorithm,
        address=address,
        public_key=public_key,
        signature=signature,
        challenge=fields["challenge"],
    )
    return _json({**issued.response(), "address": identity, "algorithm": algorithm})


async def refresh(request: web.Request) -> web.Response:
    """``POST /refresh``: rotation through the one refresh path (``TokenIssuer``)."""
    fields = await read_fields(request, required=("refresh_token",))
    try:
        issued = await request.app[SERVICES].issuer.redeem_refresh(
            fields["refresh_token"], scopes=None, client_id=None
        )
    except OAuthError as exc:
        raise LoginRefused(f"refresh token refused: {exc.message}") from None
    return _json(issued.response())


async def login(request: web.Request) -> web.Response:
    """``POST /login``: password login (operator bootstrap)."""
    app = request.app
    if not app[SETTINGS].tokens.password_grant:
        raise NotFound("password login is disabled (tokens.password_grant)")
    fields = await read_fields(request, required=("username", "password"))
    if len(fields["username"]) > 64 or len(fields["password"]) > _MAX_PASSWORD:
        raise InvalidRequest("username or password too long")
    await charge_password_attempt(request)
    user = await app[SERVICES].users.authenticate(fields["username"], fields["password"])
    if user is None:
        raise LoginRefused("wrong username or password")
    issued = await app[SERVICES].issuer.issue(
        subject=f"user:{user.username}",
        scopes=user.scopes,
        refresh=True,
        extra={"role": user.role} if user.role else None,
        minted_by=f"pico-login:{user.username}",
    )
    return _json(issued.response())


async def revoke(request: web.Request) -> web.Response:
    """``POST /revoke``: an operator revokes a token by ``jti``."""
    app = request.app
    settings = app[SETTINGS]
    principal = await _caller(request)
    _require(principal, settings, (settings.tokens.pico_operator_role,))
    fields = await read_fields(request, required=("jti",), optional=("reason",))
    jti = _visible(fields["jti"], "jti", _MAX_JTI)
    reason = fields.get("reason", "")
    if len(reason) > _MAX_REASON or not reason.isprintable():
        raise InvalidRequest(f"reason: at most {_MAX_REASON} printable characters")
    await app[SERVICES].issuer.revoke_jti(jti)
    await app[STORES].audit.append(
        REVOCATION_AUDIT_STREAM,
        {"jti": jti, "by": principal.subject, "reason": reason},
        cap=settings.tokens.mint_audit_cap,
    )
    log.info(
        "token revoked by id",
        extra={
            "event": "pico_revoke",
            "subject": principal.subject,
            "request_id": request[REQUEST_ID],
        },
    )
    return _json({"revoked": jti})


async def revoked_jtis(request: web.Request) -> web.Response:
    """``GET /revoked-jtis``: the denylist pico validators poll."""
    app = request.app
    tokens = app[SETTINGS].tokens
    _require(
        await _caller(request), app[SETTINGS], (tokens.pico_service_role, tokens.pico_operator_role)
    )
    revoked = await app[REVOCATIONS].list_revoked()
    items = [
        {"jti": jti, "expires_at": expires_ms // 1000}
        for jti, expires_ms in sorted(revoked.items())
        if not jti.startswith("fam:")
    ]
    return _json({"items": items})


_FLEET_MEMBERS = {"session_id", "agent_id", "role", "scope", "ttl"}
_MAX_FLEET_ID = 256
_MAX_MINTS = 10_000


async def fleet_session(request: web.Request) -> web.Response:
    """``POST /fleet/sessions``: the fleet secret buys a session token for one agent."""
    fleet = request.app[SERVICES].fleet
    fleet.check_secret(request.headers.get("X-Fleet-Secret"))  # before the body is read
    data = await read_json_object(request, limit=MAX_BODY_BYTES)
    unknown = sorted(set(data) - _FLEET_MEMBERS)
    if unknown:
        raise InvalidRequest(f"unknown member {unknown[0][:64]!r}")
    fields: dict[str, str] = {}
    for name in ("session_id", "agent_id", "role", "scope"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{name}: must be a string")
        if value is not None:
            fields[name] = value
    for name in ("session_id", "agent_id"):
        if not fields.get(name):
            raise InvalidRequest(f"{name}: required")
        _visible(fields[name], name, _MAX_FLEET_ID)
    if "role" in fields:
        _visible(fields["role"], "role", _MAX_FLEET_ID)
    scope = fields.get("scope", "")
    if len(scope) > _MAX_ADDRESS or (scope and _VISIBLE.fullmatch(scope.replace(" ", "!")) is None):
        raise InvalidRequest("scope: space-separated visible ASCII scopes")
    ttl = data.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
        raise InvalidRequest("ttl: must be a positive integer (seconds)")
    issued = await fleet.mint(
        session_id=fields["session_id"],
        agent_id=fields["agent_id"],
        role=fields.get("role"),
        scopes=sorted(set(scope.split()) - {""}),
        ttl=ttl,
    )
    log.info(
        "fleet session minted",
        extra={
            "event": "pico_fleet_session",
            "subject": fields["session_id"][:64],
            "request_id": request[REQUEST_ID],
        },
    )
    return _json(
        {
            "session_token": issued.access_token,
            "exp": issued.claims["exp"],
            "expires_in": issued.expires_in,
        }
    )


async def mints(request: web.Request) -> web.Response:
    """``GET /mints``: the long-lived tokens minted here that are still valid (operator)."""
    app = request.app
    settings = app[SETTINGS]
    _require(await _caller(request), settings, (settings.tokens.pico_operator_role,))
    raw = request.query.get("limit", "200")
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= _MAX_MINTS:
        raise InvalidRequest(f"limit: must be an integer from 1 to {_MAX_MINTS}")
    items = [
        entry
        for entry in await app[SERVICES].issuer.mints(int(raw))
        if not entry["revoked"] and not entry["expired"]
    ]
    return _json({"items": items})


def add_routes(routes: Routes) -> None:
    """Register the pico endpoints (``GET /jwks`` is registered by ``web/health.py``)."""
    routes.post(f"{PREFIX}/challenge", challenge)
    routes.post(f"{PREFIX}/sign-in", sign_in)
    routes.post(f"{PREFIX}/refresh", refresh)
    routes.post(f"{PREFIX}/login", login)
    routes.post(f"{PREFIX}/revoke", revoke)
    routes.get(f"{PREFIX}/revoked-jtis", revoked_jtis)
    routes.post(f"{PREFIX}/fleet/sessions", fleet_session)
    routes.get(f"{PREFIX}/mints", mints)
