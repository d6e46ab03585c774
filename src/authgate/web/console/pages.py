"""The console's token, API key, signing key, decision, audit and readiness pages (the pair
pages are in ``pairs.py``): each reads or acts through the one operator service.

Every change calls the same :class:`~authgate.operator.Operator` method as the admin API
and the CLI, with the operator named the way the admin API names it (``admin:<subject>``),
so the audit entry is the same whichever front made the change. Handlers only translate
forms to arguments and results to HTML.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from authgate.errors import InvalidRequest
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
from authgate.web.health import readiness
from authgate.web.state import RELOADER, SERVICES, SETTINGS, STORES

AUDIT_SHOWN = 200

# --- tokens --------------------------------------------------------------------------------


def _tokens_body(request: web.Request, csrf: str, mints: list[dict[str, Any]]) -> str:
    tokens = request.app[SETTINGS].tokens
    roles = "".join(
        f'<option value="{e(r)}">{e(r or "none")}</option>'
        for r in ("", tokens.pico_operator_role, tokens.pico_service_role)
    )
    mint = render.form(
        f"{prefix(request)}/tokens/mint",
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
        f"{prefix(request)}/tokens/revoke",
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
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    csrf = console(request).signer.csrf(session)
    mints = await operator_service(request).mints(100)
    body = done_notice(request) + _tokens_body(request, csrf, mints)
    return html(request, "Tokens", body, active="tokens", session=session)


def _ttl(raw: str) -> int | None:
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise InvalidRequest("ttl_seconds: must be an integer")
    return int(raw)


async def mint(request: web.Request) -> web.StreamResponse:
    """Mint a token; it is shown once, on this answer."""
    session, form = await acting(request)
    op = operator_service(request)
    issued = await op.mint(
        sub=form.get("sub", ""),
        scopes=form.get("scope", ""),
        ttl_seconds=_ttl(form.get("ttl_seconds", "")),
        aud=form.get("aud") or None,
        role=form.get("role") or None,
        by=actor(session),
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
    session, form = await acting(request)
    jti = form.get("jti", "").strip()
    await operator_service(request).revoke_token(jti=jti, by=actor(session))
    act_log(request, session, f"token revoke {jti}")
    return redirect(f"{prefix(request)}/tokens?done=token-revoked")


# --- API keys ------------------------------------------------------------------------------


def _apikeys_body(request: web.Request, csrf: str, keys: list[dict[str, Any]]) -> str:
    create = render.form(
        f"{prefix(request)}/apikeys",
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
                f"{prefix(request)}/apikeys/{k['key_id']}/revoke",
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
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    csrf = console(request).signer.csrf(session)
    body = done_notice(request) + _apikeys_body(
        request, csrf, await operator_service(request).api_keys()
    )
    return html(request, "API keys", body, active="apikeys", session=session)


async def create_apikey(request: web.Request) -> web.StreamResponse:
    """Create an API key; the secret is shown once, on this answer."""
    session, form = await acting(request)
    op = operator_service(request)
    created = await op.create_api_key(
        name=form.get("name", ""), scopes=form.get("scopes", ""), by=actor(session)
    )
    act_log(request, session, f"apikey create {created['key_id']}")
    csrf = console(request).signer.csrf(session)
    body = render.secret_once("API key", created["api_key"]) + _apikeys_body(
        request, csrf, await op.api_keys()
    )
    return html(request, "API keys", body, status=201, active="apikeys", session=session)


async def revoke_apikey(request: web.Request) -> web.StreamResponse:
    """Revoke an API key."""
    session, _ = await acting(request)
    key_id = request.match_info["key_id"]
    await operator_service(request).revoke_api_key(key_id, by=actor(session))
    act_log(request, session, f"apikey revoke {key_id}")
    return redirect(f"{prefix(request)}/apikeys?done=apikey-revoked")


# --- signing keys, decisions, readiness ----------------------------------------------------


async def keys(request: web.Request) -> web.StreamResponse:
    """Signing keys with their states; rotate."""
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    shown = await operator_service(request).keys()
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
    body = done_notice(request) + render.table(
        ["Key id", "Algorithm", "State", "Created", "Activated"], rows, label="Signing keys"
    )
    if shown["managed"]:
        csrf = console(request).signer.csrf(session)
        body += render.form(
            f"{prefix(request)}/keys/rotate",
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
    session, form = await acting(request)
    await operator_service(request).rotate_keys(force=form.get("force") == "1", by=actor(session))
    act_log(request, session, "keys rotate")
    return redirect(f"{prefix(request)}/keys?done=rotated")


async def decisions(request: web.Request) -> web.StreamResponse:
    """The last decisions of this process and counts by reason."""
    session = await signed_in(request)
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


def _fields(entry: dict[str, Any]) -> str:
    """An audit entry's own fields as ``name=value`` pairs (escaped by the caller)."""
    return " ".join(
        f"{k}={' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in entry.items()
        if k not in ("ts", "action", "by") and v is not None
    )


async def audit(request: web.Request) -> web.StreamResponse:
    """The operator audit: every change made through the console, the admin API or the CLI."""
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    entries = await operator_service(request).audit(AUDIT_SHOWN)
    rows = (
        [
            e(when(int(a.get("ts", 0)))),
            f'<span data-test="action">{e(a.get("action", ""))}</span>',
            e(a.get("by", "")),
            e(_fields(a)),
        ]
        for a in entries
    )
    body = f"<p>The newest {AUDIT_SHOWN} changes, whichever front made them.</p>" + render.table(
        ["Time", "Action", "By", "Details"], rows, label="Operator audit"
    )
    return html(request, "Audit", body, active="audit", session=session)


async def ready(request: web.Request) -> web.StreamResponse:
    """Readiness: stores, event bus, signing keys, external issuers, and the configuration in
    force (generation and hash). The event bus is shown, not required: ``/readyz`` does not
    fail on it (the gate checks the stores on every request while it is down)."""
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    checks = await readiness(request.app)
    checks["event_bus"] = "ok" if request.app[STORES].events.live else "not live"
    rows = (
        [
            e(name),
            f'<span class="{"ok" if v == "ok" else "bad"}" data-test="{e(name)}">{e(v)}</span>',
        ]
        for name, v in checks.items()
    )
    reloader = request.app[RELOADER]
    config = render.table(
        ["Generation", "Hash"],
        [
            [
                f'<span data-test="config-generation">{e(reloader.generation)}</span>',
                f'<code data-test="config-hash">{e(reloader.hash)}</code>',
            ]
        ],
        label="Configuration in force",
    )
    body = (
        render.table(["Check", "State"], rows, label="Readiness")
        + f"<h2>Configuration in force</h2>{config}"
    )
    return html(request, "Readiness", body, active="ready", session=session)
