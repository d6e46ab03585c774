"""The console's pages: each reads through, or acts through, the one operator service.

Every change calls the same :class:`~authgate.operator.Operator` method as the admin API
and the CLI, with the operator named the way the admin API names it (``admin:<subject>``),
so the audit entry is the same whichever front made the change. Handlers only translate
forms to arguments and results to HTML.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from authgate.errors import AuthGateError, InvalidRequest, OperatorRequired
from authgate.operator import Operator
from authgate.web.console import render
from authgate.web.console.common import (
    act_log,
    checked_form,
    console,
    html,
    operator_session,
    redirect,
)
from authgate.web.console.render import e, when
from authgate.web.console.session import ConsoleSession
from authgate.web.health import readiness
from authgate.web.state import SERVICES, SETTINGS, STORES

# The notices a redirect may ask for: fixed phrases, nothing from the query is echoed.
DONE = {
    "approved": "Pair approved.",
    "denied": "Pair denied (revoked).",
    "revoked": "Pair revoked.",
    "unlocked": "Pair unlocked.",
    "token-revoked": "Token revoked.",
    "apikey-revoked": "API key revoked.",
    "rotated": "Signing keys rotated.",
}
PAIR_ACTS = {"approve": "approved", "deny": "denied", "revoke": "revoked", "unlock": "unlocked"}


def _by(session: ConsoleSession) -> str:
    return f"admin:{session.subject}"


def _operator(request: web.Request) -> Operator:
    return request.app[SERVICES].operator


async def _signed_in(request: web.Request) -> ConsoleSession | web.Response:
    session = await operator_session(request)
    if session is None:
        return redirect(f"{console(request).prefix}/signin")
    return session


async def _acting(request: web.Request) -> tuple[ConsoleSession, dict[str, str]]:
    session, form = await checked_form(request)
    current = await operator_session(request)
    if session is None or current is None or current.sid != session.sid:
        raise OperatorRequired("console: sign in as an operator first")
    return current, form


def _done(request: web.Request) -> str:
    return render.notice(DONE.get(request.query.get("done", ""), ""))


def _p(request: web.Request) -> str:
    return console(request).prefix


# --- pairs ---------------------------------------------------------------------------------


def _pair_actions(request: web.Request, pair: dict[str, Any], csrf: str) -> str:
    base = f"{_p(request)}/pairs/{pair['pair_id']}"
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
    return f'<a href="{e(_p(request))}/pairs/{e(pair_id)}"><code>{e(pair_id)}</code></a>'


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
    session = await _signed_in(request)
    if isinstance(session, web.Response):
        return session
    op = _operator(request)
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
    body = _done(request) + render.table(headers, rows, label="Pending pairs")
    return html(request, "Pending pairs", body, active="", session=session)


async def pairs(request: web.Request) -> web.StreamResponse:
    """Pairs, searched by id, name or fingerprint and filtered by status."""
    session = await _signed_in(request)
    if isinstance(session, web.Response):
        return session
    query = request.query.get("q", "")[:256].strip().lower()
    status = request.query.get("status", "")
    rows = []
    for pair in await _operator(request).pairs():
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
        f'<form method="get" action="{e(_p(request))}/pairs" class="search" role="search">'
        f'<label for="q">Search</label><input id="q" name="q" value="{e(query)}">'
        f'<label for="status">Status</label><select id="status" name="status">{options}'
        '</select><button type="submit">Search</button></form>'
    )
    headers = ["Name", "Pair", "Status", "Scope", "Fingerprint", "Created"]
    body = search + render.table(headers, rows, label="Pairs")
    return html(request, "Pairs", body, active="pairs", session=session)


async def pair(request: web.Request) -> web.StreamResponse:
    """One pair with its audit trail, and what may be done to it."""
    session = await _signed_in(request)
    if isinstance(session, web.Response):
        return session
    shown = await _operator(request).pair(request.match_info["pair_id"], audit=100)
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
        _done(request)
        + f"<dl>{facts}</dl><p>{_pair_actions(request, shown, csrf)}</p>"
        + f"<h2>Audit trail</h2>{trail}"
    )
    return html(request, f"Pair {shown['name']}", body, active="pairs", session=session)


async def pair_act(request: web.Request) -> web.StreamResponse:
    """Approve, deny, revoke or unlock a pair."""
    session, _ = await _acting(request)
    pair_id, act = request.match_info["pair_id"], request.match_info["act"]
    op = _operator(request)
    if act == "approve":
        await op.approve_pair(pair_id, by=_by(session))
    elif act in ("deny", "revoke"):
        await op.revoke_pair(pair_id, by=_by(session))
    elif act == "unlock":
        await op.unlock_pair(pair_id, by=_by(session))
    else:
        raise InvalidRequest(f"console: unknown pair act {act[:32]!r}")
    act_log(request, session, f"pair {act} {pair_id}")
    back = "" if act in ("approve", "deny") else f"pairs/{pair_id}"
    return redirect(f"{_p(request)}/{back}?done={PAIR_ACTS[act]}")


# --- tokens --------------------------------------------------------------------------------


def _tokens_body(request: web.Request, csrf: str, mints: list[dict[str, Any]]) -> str:
    tokens = request.app[SETTINGS].tokens
    roles = "".join(
        f'<option value="{e(r)}">{e(r or "none")}</option>'
        for r in ("", tokens.pico_operator_role, tokens.pico_service_role)
    )
    mint = render.form(
        f"{_p(request)}/tokens/mint",
        csrf,
        render.field("sub", "Subject", extra=" required")
        + render.field("scope", "Scopes (space-separated)")
        + render.field(
            "ttl_seconds", "Lifetime (seconds)", kind="number", value=str(tokens.access_ttl_seconds)
        )
        + render.field("aud", "Audience (optional)")
        + f'<label for="f-role">Role</label><select id="f-role" name="role">{roles}</select>',
        "Mint token",
        test_id="mint",
    )
    revoke = render.form(
        f"{_p(request)}/tokens/revoke",
        csrf,
        render.field("jti", "Token id (jti)", extra=" required"),
        "Revoke token",
        test_id="revoke-token",
    )
    rows = (
        [
            f"<code>{e(m.get('jti', ''))}</code>",
            e(m.get("sub", "")),
            e(m.get("scope", "")),
            e(m.get("minted_by", "")),
            e(when(int(m.get("exp", 0)) * 1000)),
            e("revoked" if m.get("revoked") else "expired" if m.get("expired") else "live"),
        ]
        for m in mints
    )
    audit = render.table(
        ["jti", "Subject", "Scopes", "Minted by", "Expires", "State"], rows, label="Minted tokens"
    )
    return (
        f'<div class="cols"><section aria-labelledby="h-mint"><h2 id="h-mint">Mint</h2>{mint}'
        f'</section><section aria-labelledby="h-rev"><h2 id="h-rev">Revoke</h2>{revoke}'
        f"</section></div><h2>Mint audit</h2>{audit}"
    )


async def tokens(request: web.Request) -> web.StreamResponse:
    """Mint and revoke tokens; the mint audit."""
    session = await _signed_in(request)
    if isinstance(session, web.Response):
        return session
    csrf = console(request).signer.csrf(session)
    mints = await _operator(request).mints(100)
    body = _done(request) + _tokens_body(request, csrf, mints)
    return html(request, "Tokens", body, active="tokens", session=session)


def _ttl(raw: str) -> int | None:
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise InvalidRequest("ttl_seconds: must be an integer")
    return int(raw)


async def mint(request: web.Request) -> web.StreamResponse:
    """Mint a token; it is shown once, on this answer."""
    session, form = await _acting(request)
    op = _operator(request)
    issued = await op.mint(
        sub=form.get("sub", ""),
        scopes=form.get("scope", ""),
        ttl_seconds=_ttl(form.get("ttl_seconds", "")),
        aud=form.get("aud") or None,
        role=form.get("role") or None,
        by=_by(session),
    )
    act_log(request, session, f"token mint {issued['jti']}")
    csrf = console(request).signer.csrf(session)
    body = (
        render.notice(f"Token minted: jti {issued['jti']}, expires in {issued['expires_in']} s.")
        + render.secret_once("Access token", issued["access_token"])
        + f'<p>jti: <code data-test="jti">{e(issued["jti"])}</code></p>'
        + _tokens_body(request, csrf, await op.mints(100))
    )
    return html(request, "Tokens", body, status=201, active="tokens", session=session)


async def revoke_token(request: web.Request) -> web.StreamResponse:
    """Revoke a token by its id."""
    session, form = await _acting(request)
    jti = form.get("jti", "").strip()
    await _operator(request).revoke_token(jti=jti)
    act_log(request, session, f"token revoke {jti}")
    return redirect(f"{_p(request)}/tokens?done=token-revoked")


# --- API keys ------------------------------------------------------------------------------


def _apikeys_body(request: web.Request, csrf: str, keys: list[dict[str, Any]]) -> str:
    create = render.form(
        f"{_p(request)}/apikeys",
        csrf,
        render.field("name", "Name", extra=" required")
        + render.field("scopes", "Scopes (space-separated)"),
        "Create API key",
        test_id="create-apikey",
    )
    rows = (
        [
            f"<code>{e(k['key_id'])}</code>",
            e(k["name"]),
            e(" ".join(k["scopes"])),
            e(when(k["created_at"])),
            e(when(k["revoked_at"]))
            if k["revoked_at"]
            else render.button_form(
                f"{_p(request)}/apikeys/{k['key_id']}/revoke",
                "Revoke",
                csrf,
                danger=True,
                test_id=f"revoke-{k['key_id']}",
            ),
        ]
        for k in keys
    )
    listing = render.table(
        ["Key id", "Name", "Scopes", "Created", "Revoked"], rows, label="API keys"
    )
    return f"<h2>Create</h2>{create}<h2>Keys</h2>{listing}"


async def apikeys(request: web.Request) -> web.StreamResponse:
    """API keys: list, create, revoke."""
    session = await _signed_in(request)
    if isinstance(session, web.Response):
        return session
    csrf = console(request).signer.csrf(session)
    body = _done(request) + _apikeys_body(request, csrf, await _operator(request).api_keys())
    return html(request, "API keys", body, active="apikeys", session=session)


async def create_apikey(request: web.Request) -> web.StreamResponse:
    """Create an API key; the secret is shown once, on this answer."""
    session, form = await _acting(request)
    op = _operator(request)
    created = await op.create_api_key(name=form.get("name", ""), scopes=form.get("scopes", ""))
    act_log(request, session, f"apikey create {created['key_id']}")
    csrf = console(request).signer.csrf(session)
    body = render.secret_once("API key", created["api_key"]) + _apikeys_body(
        request, csrf, await op.api_keys()
    )
    return html(request, "API keys", body, status=201, active="apikeys", session=session)


async def revoke_apikey(request: web.Request) -> web.StreamResponse:
    """Revoke an API key."""
    session, _ = await _acting(request)
    key_id = request.match_info["key_id"]
    await _operator(request).revoke_api_key(key_id)
    act_log(request, session, f"apikey revoke {key_id}")
    return redirect(f"{_p(request)}/apikeys?done=apikey-revoked")


# --- signing keys, decisions, readiness ----------------------------------------------------


async def keys(request: web.Request) -> web.StreamResponse:
    """Signing keys with their states; rotate."""
    session = await _signed_in(request)
    if isinstance(session, web.Response):
        return session
    shown = await _operator(request).keys()
    rows = (
        [
            f"<code>{e(k['kid'])}</code>",
            e(k["alg"]),
            e(k.get("state", shown.get("source", ""))),
            e(when(k.get("created_at"))),
            e(when(k.get("activated_at"))),
        ]
        for k in shown["keys"]
    )
    body = _done(request) + render.table(
        ["Key id", "Algorithm", "State", "Created", "Activated"], rows, label="Signing keys"
    )
    if shown["managed"]:
        csrf = console(request).signer.csrf(session)
        body += render.form(
            f"{_p(request)}/keys/rotate",
            csrf,
            '<label class="check"><input type="checkbox" name="force" value="1"> '
            "Force (rotate before the next key has been published long enough)</label>",
            "Rotate",
            test_id="rotate",
        )
    else:
        body += render.notice(str(shown.get("note", "")))
    return html(request, "Signing keys", body, active="keys", session=session)


async def rotate(request: web.Request) -> web.StreamResponse:
    """Rotate store-managed signing keys."""
    session, form = await _acting(request)
    await _operator(request).rotate_keys(force=form.get("force") == "1")
    act_log(request, session, "keys rotate")
    return redirect(f"{_p(request)}/keys?done=rotated")


async def decisions(request: web.Request) -> web.StreamResponse:
    """The last decisions of this process and counts by reason."""
    session = await _signed_in(request)
    if isinstance(session, web.Response):
        return session
    recent = request.app[SERVICES].recent_decisions
    latest = recent.latest(200) if recent is not None else []
    counts = recent.counts() if recent is not None else []
    count_rows = ([e("granted" if g else "denied"), e(r), e(n)] for g, r, n in counts)
    rows = (
        [
            e(when(d.ts * 1000)),
            e("granted" if d.granted else "denied"),
            f'<span data-test="reason">{e(d.reason)}</span>',
            e(d.rule_id),
            e(d.credential),
            e(d.subject),
            e(d.client_ip),
            e(d.method),
            e(d.detail),
        ]
        for d in latest
    )
    body = (
        "<h2>Counts by reason, last 15 minutes</h2>"
        + render.table(["Outcome", "Reason", "Count"], count_rows, label="Counts by reason")
        + "<h2>Latest decisions</h2>"
        + render.table(
            [
                "Time",
                "Outcome",
                "Reason",
                "Rule",
                "Credential",
                "Subject",
                "Client",
                "Method",
                "Detail",
            ],
            rows,
            label="Latest decisions",
        )
    )
    return html(request, "Decisions", body, active="decisions", session=session)


async def ready(request: web.Request) -> web.StreamResponse:
    """Readiness: stores, event bus, signing keys, external issuers."""
    session = await _signed_in(request)
    if isinstance(session, web.Response):
        return session
    checks = await readiness(request.app)
    checks["event_bus"] = "ok" if request.app[STORES].events.live else "not live"
    rows = (
        [e(name), f'<span class="{"ok" if v == "ok" else "bad"}">{e(v)}</span>']
        for name, v in checks.items()
    )
    body = render.table(["Check", "State"], rows, label="Readiness")
    return html(request, "Readiness", body, active="ready", session=session)
