"""BPC pair lifecycle endpoints, compatible with ``bpc-client`` 1.0.0.

=====================  ==========================================  ======================
``POST /bpc/register``  unsigned JSON ``{name,scope,mode,secret,pubJwk}``  201 ``{pairId}`` or
                                                                    201 ``{approvalToken}``
``POST /bpc/approve``   operator token; ``{approvalToken}`` or ``{pairId}``  200
``POST /bpc/rotate``    BPC-signed ``{pairId,newPubJwk,newSecret}``   200
``POST /bpc/revoke``    BPC-signed ``{pairId}``, or operator token     200
``GET  /bpc/health``    —                                            200 ``{status,ok}``
``GET  /bpc/audit``     BPC-signed, ``?limit=N`` inside the signed path  200 ``{entries}``
=====================  ==========================================  ======================

``bpc-client`` 1.0.0's CLI reads ``ok`` from the health body (``bpc status``) and
``timestamp``, ``event``, ``pairId`` and ``result``/``outcome`` from each audit entry
(``bpc audit``): those members are added beside authgate's own (``status``, ``ts``,
``method``, ``path``, ``outcome``, ...), never instead of them (docs/protocols.md §1).

Signed requests are decided by ``Gate.evaluate`` under the internal lifecycle rule, with the
same :class:`BPCVerifier` as proxied traffic (one decision path: counted, logged, limited);
handlers only translate JSON.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from authgate.errors import (
    InvalidRequest,
    OperatorRequired,
    RegistrationClosed,
)
from authgate.models import Principal, RequestContext
from authgate.pairs.service import PairService
from authgate.policy.limits import rate_limited
from authgate.policy.rules import LIFECYCLE_RULE
from authgate.web.body import read_json_object
from authgate.web.callers import caller, own_context
from authgate.web.problem import Routes
from authgate.web.state import SERVICES, SETTINGS, STORES

MAX_LIFECYCLE_BODY = 16_384


async def _json_body(request: web.Request, context: RequestContext | None = None) -> dict[str, Any]:
    raw = None
    if context is not None and context.read_body is not None:
        raw = await context.read_body()  # the same bytes the verifier hashed
    return await read_json_object(request, limit=MAX_LIFECYCLE_BODY, raw=raw)


def _operator(request: web.Request) -> bool:
    """Whether the request carries the configured operator token."""
    token = request.app[SETTINGS].bpc.operator_token
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if token is None or scheme.lower() != "bearer" or not value:
        return False
    # surrogateescape: header bytes that are not UTF-8 compare as themselves (no 500).
    presented = value.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(presented, token.get_secret_value().encode())


async def _signed(request: web.Request) -> tuple[RequestContext, Principal]:
    """The pair that signed this request, decided by the gate under the lifecycle rule."""
    context = own_context(request)
    return context, await caller(request, LIFECYCLE_RULE, context)


def _pairs(request: web.Request) -> PairService:
    return request.app[SERVICES].pairs


async def register(request: web.Request) -> web.Response:
    """Register a pair; active at once only for auto-approved development pairs."""
    policy = request.app[SETTINGS].bpc.registration
    if policy == "disabled":
        raise RegistrationClosed("pair registration is disabled")
    if policy == "operator_token" and not _operator(request):
        raise RegistrationClosed("pair registration needs the operator token")
    context = own_context(request)
    limit = await request.app[STORES].rate_limits.hit(
        f"bpc-register:{context.client_ip}",
        limit=request.app[SETTINGS].bpc.registrations_per_hour,
        period_ms=3_600_000,
    )
    if not limit.allowed:
        raise rate_limited(limit, "too many registrations from this address", period_ms=3_600_000)
    data = await _json_body(request)
    # PairRequestError: a 400 naming the member
    result = await _pairs(request).register(data, address=context.client_ip)
    pair = result.pair
    if result.approval_token is None:
        body = {"pairId": pair.pair_id, "status": "active", "fingerprint": pair.fingerprint}
    else:
        # No pairId here: the published client reads a pairId as "approved".
        body = {
            "approvalToken": result.approval_token,
            "status": "pending",
            "fingerprint": pair.fingerprint,
        }
    return web.json_response(body, status=201, headers={"Cache-Control": "no-store"})


async def approve(request: web.Request) -> web.Response:
    """Operator: activate a pending pair."""
    if not _operator(request):
        raise OperatorRequired()
    data = await _json_body(request)
    token = data.get("approvalToken")
    pair_id = data.get("pairId")
    if (
        not isinstance(token, str | None)
        or not isinstance(pair_id, str | None)
        or not (token or pair_id)
    ):
        raise InvalidRequest("approvalToken or pairId (string) is required")
    pair = await _pairs(request).approve(approval_token=token, pair_id=None if token else pair_id)
    return web.json_response({"pairId": pair.pair_id, "status": pair.status.value})


async def rotate(request: web.Request) -> web.Response:
    """Replace the device key and secret; signed with the current key."""
    context, principal = await _signed(request)
    data = await _json_body(request, context)
    pair = await _pairs(request).rotate(principal.credential_id, data)
    return web.json_response({"pairId": pair.pair_id, "fingerprint": pair.fingerprint})


async def revoke(request: web.Request) -> web.Response:
    """Revoke a pair: signed by the pair itself, or by the operator for any pair."""
    if _operator(request):
        data = await _json_body(request)
        pair_id = data.get("pairId")
        by = "operator"
    else:
        context, principal = await _signed(request)
        data = await _json_body(request, context)
        pair_id = data.get("pairId")
        by = "pair"
        if pair_id != principal.credential_id:
            raise InvalidRequest("pairId: a pair may revoke only itself")
    if not isinstance(pair_id, str):
        raise InvalidRequest("pairId: must be a string")
    pair = await _pairs(request).revoke(pair_id, by=by)  # PairNotFound: 404 "pair not found"
    return web.json_response({"pairId": pair.pair_id, "status": pair.status.value})


async def health(request: web.Request) -> web.Response:
    """BPC endpoint health (``ok``: what ``bpc status`` reads)."""
    return web.json_response({"status": "ok", "ok": True, "version": "1.0"})


def client_entry(pair_id: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """One audit entry with the members the published client reads added beside ours.

    ``timestamp`` is the entry's ``ts`` (epoch ms) as ISO 8601 UTC; ``event`` is the
    lifecycle event, or ``METHOD path`` for a signed request; ``pairId`` the pair.
    """
    wire = dict(entry)
    ts = entry.get("ts")
    if isinstance(ts, int) and not isinstance(ts, bool):
        moment = datetime.fromtimestamp(ts / 1000, tz=UTC)
        wire.setdefault(
            "timestamp", moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
    if "event" not in entry and isinstance(entry.get("method"), str):
        wire["event"] = f"{entry['method']} {entry.get('path', '')}".rstrip()
    wire.setdefault("pairId", pair_id)
    return wire


async def audit(request: web.Request) -> web.Response:
    """The signing pair's newest audit entries (``?limit=N``, default 50)."""
    _, principal = await _signed(request)
    raw_limit = request.query.get("limit", "50")
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 0 < int(raw_limit) <= 10_000:
        raise InvalidRequest("limit: must be an integer from 1 to 10000")
    entries = await _pairs(request).trail(principal.credential_id, int(raw_limit))
    pair_id = principal.credential_id
    return web.json_response(
        {"pairId": pair_id, "entries": [client_entry(pair_id, e) for e in entries]},
        headers={"Cache-Control": "no-store"},
    )


def add_routes(routes: Routes) -> None:
    """Register the lifecycle endpoints."""
    routes.post("/bpc/register", register)
    routes.post("/bpc/approve", approve)
    routes.post("/bpc/rotate", rotate)
    routes.post("/bpc/revoke", revoke)
    routes.get("/bpc/health", health)
    routes.get("/bpc/audit", audit)
