"""The console's BPC pair pages: pending pairs (approve, deny), search, one pair with its
audit trail (revoke, unlock). Each act calls the operator service (see ``pages.py``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from authgate.errors import AuthGateError, InvalidRequest
from authgate.operator import Operator
from authgate.web.console import render
from authgate.web.console.common import (
    act_log,
    acting,
    actor,
    console,
    done_notice,
    html,
    operator_service,
    prefix,
    redirect,
    signed_in,
)
from authgate.web.console.render import e, when

PAIR_ACTS = {"approve": "approved", "deny": "denied", "revoke": "revoked", "unlock": "unlocked"}


def _pair_actions(request: web.Request, pair: dict[str, Any], csrf: str) -> str:
    base = f"{prefix(request)}/pairs/{pair['pair_id']}"
    status = pair["status"]
    acts = {
        "pending": [("approve", "Approve", False), ("deny", "Deny", True)],
        "active": [("revoke", "Revoke", True)],
        "locked": [("unlock", "Unlock", False), ("revoke", "Revoke", True)],
    }.get(status, [])
    return "".join(
        render.button_form(
            f"{base}/{act}", label, csrf, danger=danger, test_id=f"{act}-{pair['pair_id']}"
        )
        for act, label, danger in acts
    )


def _pair_link(request: web.Request, pair_id: str) -> str:
    return f'<a href="{e(prefix(request))}/pairs/{e(pair_id)}"><code>{e(pair_id)}</code></a>'


async def _address(op: Operator, pair_id: str) -> str:
    """The requesting address, from the pair's ``registered`` audit entry."""
    try:
        trail = (await op.pair(pair_id, audit=200))["audit"]
    except AuthGateError:
        return "-"
    for entry in trail:
        if entry.get("event") == "registered":
            return str(entry.get("address") or "-")
    return "-"


async def pending(request: web.Request) -> web.StreamResponse:
    """Pending BPC pairs: fingerprint, requesting address; approve or deny."""
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    op = operator_service(request)
    csrf = console(request).signer.csrf(session)
    rows = []
    for pair in await op.pairs():
        if pair["status"] != "pending":
            continue
        rows.append(
            [
                e(pair["name"]),
                _pair_link(request, pair["pair_id"]),
                e(pair["scope"]),
                f'<code data-test="fingerprint">{e(pair["fingerprint"])}</code>',
                e(await _address(op, pair["pair_id"])),
                e(when(pair["created_at"])),
                _pair_actions(request, pair, csrf),
            ]
        )
    headers = ["Name", "Pair", "Scope", "Device-key fingerprint", "Address", "Requested", ""]
    body = done_notice(request) + render.table(headers, rows, label="Pending pairs")
    return html(request, "Pending pairs", body, active="", session=session)


async def pairs(request: web.Request) -> web.StreamResponse:
    """Pairs, searched by id, name or fingerprint and filtered by status."""
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    query = request.query.get("q", "")[:256].strip().lower()
    status = request.query.get("status", "")
    rows = []
    for pair in await operator_service(request).pairs():
        haystack = f"{pair['pair_id']} {pair['name']} {pair['fingerprint']}".lower()
        if (query and query not in haystack) or (status and pair["status"] != status):
            continue
        rows.append(
            [
                e(pair["name"]),
                _pair_link(request, pair["pair_id"]),
                e(pair["status"]),
                e(pair["scope"]),
                f"<code>{e(pair['fingerprint'])}</code>",
                e(when(pair["created_at"])),
            ]
        )
    options = "".join(
        f'<option value="{s}"{" selected" if s == status else ""}>{s or "any"}</option>'
        for s in ("", "pending", "active", "locked", "revoked", "expired")
    )
    search = (
        f'<form method="get" action="{e(prefix(request))}/pairs" class="search" role="search">'
        f'<label for="q">Search</label><input id="q" name="q" value="{e(query)}">'
        f'<label for="status">Status</label><select id="status" name="status">{options}'
        '</select><button type="submit">Search</button></form>'
    )
    headers = ["Name", "Pair", "Status", "Scope", "Fingerprint", "Created"]
    body = search + render.table(headers, rows, label="Pairs")
    return html(request, "Pairs", body, active="pairs", session=session)


async def pair(request: web.Request) -> web.StreamResponse:
    """One pair with its audit trail, and what may be done to it."""
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    shown = await operator_service(request).pair(request.match_info["pair_id"], audit=100)
    csrf = console(request).signer.csrf(session)
    facts = "".join(
        f"<dt>{e(k)}</dt><dd>{e(when(v) if k.endswith('_at') else v)}</dd>"
        for k, v in shown.items()
        if k != "audit"
    )
    trail = render.table(
        ["Time", "Event", "Outcome", "Details"],
        (
            [
                e(when(a.get("ts"))),
                e(a.get("event", "")),
                e(a.get("outcome", "")),
                e(
                    ", ".join(
                        f"{k}={v}" for k, v in a.items() if k not in {"ts", "event", "outcome"}
                    )
                ),
            ]
            for a in shown["audit"]
        ),
        label="Audit trail",
    )
    body = (
        done_notice(request)
        + f"<dl>{facts}</dl><p>{_pair_actions(request, shown, csrf)}</p>"
        + f"<h2>Audit trail</h2>{trail}"
    )
    return html(request, f"Pair {shown['name']}", body, active="pairs", session=session)


async def pair_act(request: web.Request) -> web.StreamResponse:
    """Approve, deny, revoke or unlock a pair."""
    session, _ = await acting(request)
    pair_id, act = request.match_info["pair_id"], request.match_info["act"]
    op = operator_service(request)
    if act == "approve":
        await op.approve_pair(pair_id, by=actor(session))
    elif act in ("deny", "revoke"):
        await op.revoke_pair(pair_id, by=actor(session))
    elif act == "unlock":
        await op.unlock_pair(pair_id, by=actor(session))
    else:
        raise InvalidRequest(f"console: unknown pair act {act[:32]!r}")
    act_log(request, session, f"pair {act} {pair_id}")
    back = "" if act in ("approve", "deny") else f"pairs/{pair_id}"
    return redirect(f"{prefix(request)}/{back}?done={PAIR_ACTS[act]}")
