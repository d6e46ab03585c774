"""Which settings a running authgate takes on a reload, and which need a restart.

A reload (``SIGHUP``, or a watched config file) loads the settings exactly as ``serve``
does, then compares them with the running ones. Only the keys of :data:`LIVE_KEYS` may
differ: every other difference refuses the whole reload, naming each key (never a value:
some are secrets). ``docs/runbook.md`` has the same list as a table; a test keeps them
together.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from authgate.config.loader import effective_config
from authgate.config.model import Settings
from authgate.policy.resources import resource_documents

# Each live key (a section, or one key of one) and what takes the new value on a reload.
# Everything else is fixed for the life of the process: the listening sockets and process
# model (server.*), the stores and their connections (stores.*), key material and secrets
# (secrets.*, jwt.signing_key_files, hmac.*, bpc.operator_token), what authgate issues
# (tokens.*, jwt.issuer/audiences/algorithms), and the routes the application registered
# at start (bpc.enabled, tokens.admin_api, proxy.*, ...).
LIVE_KEYS: dict[str, str] = {
    "policy.rules": "the gate's compiled policy (rules, their scopes and rate limits)",
    "policy.default_action": "the gate's compiled policy",
    "jwt.external_issuers": "a new JWT verifier; an issuer whose JWKS settings did not "
    "change keeps its fetched keys",
    "jwt.leeway_seconds": "a new JWT verifier",
    "jwt.cache_size": "a new JWT verifier (its verified-token cache starts empty)",
    "jwt.jwks_fetch_timeout_seconds": "the next JWKS fetch",
    "jwt.jwks_max_bytes": "the next JWKS fetch",
    "identity": "the identity headers set upstream and refused from clients (every key)",
    "proxy.foreign_identity_headers": "the identity headers removed from proxied requests",
}


def changed_keys(old: BaseModel, new: BaseModel, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two settings trees (a nested section is
    compared key by key; any other value, a list of rules included, as a whole)."""
    changed: list[str] = []
    for name in type(old).model_fields:
        key = f"{prefix}{name}"
        before, after = getattr(old, name), getattr(new, name)
        if isinstance(before, BaseModel) and type(before) is type(after):
            changed += changed_keys(before, after, key + ".")
        elif before != after:  # SecretStr compares its secret: a changed secret is seen
            changed.append(key)
    return changed


def is_live(key: str) -> bool:
    """Whether ``key`` (dotted) is one of :data:`LIVE_KEYS` or lies under one."""
    return any(key == live or key.startswith(live + ".") for live in LIVE_KEYS)


def proxies(settings: Settings) -> bool:
    """Whether the application proxies (its catch-all route is the sidecar proxy)."""
    return bool(settings.proxy.upstream or any(r.upstream for r in settings.policy.rules))


def fixed_changes(old: Settings, new: Settings) -> list[tuple[str, str]]:
    """``(key, message)`` for every difference a reload cannot apply; empty: it can."""
    problems = [
        (key, "cannot change while authgate runs; restart to apply it")
        for key in changed_keys(old, new)
        if not is_live(key)
    ]
    if proxies(old) != proxies(new):
        # The sidecar proxy's catch-all route is registered at start (web/app.py).
        problems.append(
            (
                "policy.rules",
                "a rule's upstream would turn the sidecar proxy "
                + ("off" if proxies(old) else "on")
                + " (proxy.upstream and every rule's upstream decide it at start); "
                "restart to apply it",
            )
        )
    if resource_documents(old.policy.rules, issuer=old.jwt.issuer) != resource_documents(
        new.policy.rules, issuer=new.jwt.issuer
    ):
        # The metadata documents, the audiences of authgate's own tokens and the resources
        # /token issues for are built at start (web/protected_resource.py, compose.py).
        problems.append(
            (
                "policy.rules",
                "a rule's resource (or the scopes its metadata lists) would change; the "
                "protected-resource metadata and the audiences authgate issues are fixed at "
                "start; restart to apply it",
            )
        )
    return problems


def config_hash(settings: Settings) -> str:
    """The first 16 hex digits of the SHA-256 of the effective configuration, as
    ``authgate check-config`` prints it (secrets masked, so the hash reveals none)."""
    return hashlib.sha256(effective_config(settings).encode()).hexdigest()[:16]
