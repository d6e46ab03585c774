"""HTML for the console: one layout, small builders, every value escaped.

No inline script and no inline style anywhere (the Content-Security-Policy forbids both):
the look is ``static/console.css`` and the little behaviour there is ``static/console.js``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from html import escape

NAV = (
    ("", "Pending pairs"),
    ("pairs", "Pairs"),
    ("tokens", "Tokens"),
    ("apikeys", "API keys"),
    ("keys", "Signing keys"),
    ("decisions", "Decisions"),
    ("audit", "Audit"),
    ("ready", "Readiness"),
)


def e(value: object) -> str:
    """``value`` as escaped HTML text."""
    return escape(str(value), quote=True)


def when(ms: object) -> str:
    """An epoch-milliseconds value as UTC time (``-`` when absent)."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, label: str) -> str:
    """A table; each cell of ``rows`` is HTML already (escape with :func:`e`)."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">No {e(label.lower())}.</p>'
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in headers)
    return (
        f'<table aria-label="{e(label)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def button_form(
    action: str, label: str, csrf: str, *, danger: bool = False, test_id: str = ""
) -> str:
    """A one-button POST form."""
    cls = "danger" if danger else ""
    tid = f' data-test="{e(test_id)}"' if test_id else ""
    return (
        f'<form method="post" action="{e(action)}" class="inline">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<button type="submit" class="{cls}"{tid}>{e(label)}</button></form>'
    )


def field(name: str, label: str, *, kind: str = "text", value: str = "", extra: str = "") -> str:
    """A labelled input."""
    return (
        f'<label for="f-{e(name)}">{e(label)}</label>'
        f'<input id="f-{e(name)}" name="{e(name)}" type="{e(kind)}" value="{e(value)}"{extra}>'
    )


def form(action: str, csrf: str, fields: str, submit: str, *, test_id: str = "") -> str:
    """A POST form with the CSRF token."""
    tid = f' data-test="{e(test_id)}"' if test_id else ""
    return (
        f'<form method="post" action="{e(action)}" class="stack"{tid}>'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">{fields}'
        f'<button type="submit">{e(submit)}</button></form>'
    )


def notice(message: str, *, error: bool = False, code: str = "") -> str:
    """A status message (``role=alert`` for errors)."""
    if not message:
        return ""
    if error:
        data = f' data-error="{e(code)}"' if code else ""
        return f'<p class="notice error" role="alert"{data}>{e(message)}</p>'
    return f'<p class="notice" role="status">{e(message)}</p>'


def secret_once(label: str, value: str) -> str:
    """A secret shown once, with a copy button (``console.js``)."""
    return (
        '<div class="secret" role="region" aria-label="shown once">'
        f"<p><strong>{e(label)}</strong>: shown once, authgate will not show it again.</p>"
        f'<textarea id="secret" readonly rows="4" data-test="secret">{e(value)}</textarea>'
        '<button type="button" class="copy" data-copy="secret">Copy</button></div>'
    )


def layout(
    prefix: str,
    title: str,
    body: str,
    *,
    active: str | None = None,
    operator: str = "",
    csrf: str = "",
) -> str:
    """The whole page."""
    nav = ""
    if operator:
        links = "".join(
            f'<li><a href="{e(prefix)}/{e(path)}"'
            + (' aria-current="page"' if path == active else "")
            + f">{e(name)}</a></li>"
            for path, name in NAV
        )
        nav = (
            f'<nav aria-label="console"><ul>{links}</ul>'
            f'<div class="who">Signed in as <strong data-test="operator">{e(operator)}</strong> '
            f"{button_form(f'{prefix}/signout', 'Sign out', csrf, test_id='signout')}</div></nav>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · authgate console</title>"
        f'<link rel="stylesheet" href="{e(prefix)}/static/console.css">'
        f'<script src="{e(prefix)}/static/console.js" defer></script>'
        f'</head><body><header><p class="brand">authgate console</p>{nav}</header>'
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>"
    )
