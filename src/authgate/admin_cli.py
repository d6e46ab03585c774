"""Operator commands that act on the shared stores: ``authgate pairs ...``.

They load the same configuration as ``authgate serve`` and talk to the same Redis, so a
change made here reaches every replica (pair changes are published on the event bus).
With in-memory stores there is nothing to act on from outside the serving process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from authgate.compose import Services
from authgate.config.loader import load_settings
from authgate.config.model import Settings
from authgate.errors import (
    ApiKeyError,
    ApiKeyNotFound,
    AuthGateError,
    ConfigError,
    PairNotFound,
    PairRequestError,
    RotationRefused,
    UserError,
)
from authgate.pairs.records import PairRecordError
from authgate.pairs.service import PairService

Action = Callable[[PairService, argparse.Namespace], Awaitable[Any]]


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _described(exc: AuthGateError) -> str:
    """The message, and the detail a client would not see (the operator may)."""
    return f"{exc.message} ({exc.detail})" if exc.detail else exc.message


def _load(args: argparse.Namespace, *, need_kek: bool) -> Settings | None:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None
    if settings.stores.backend != "redis":
        print(
            f"authgate {args.command} needs stores.backend: redis (in-memory stores live "
            "inside the serving process)",
            file=sys.stderr,
        )
        return None
    if need_kek and settings.secrets.key_encryption_key is None:
        print(f"authgate {args.command} needs secrets.key_encryption_key", file=sys.stderr)
        return None
    return settings


async def _with_pairs(settings: Settings, action: Action, args: argparse.Namespace) -> Any:
    services = Services(settings)
    try:
        return await action(services.pairs, args)
    finally:
        await services.close()


async def _list(pairs: PairService, args: argparse.Namespace) -> Any:
    return [p.public_view() for p in await pairs.all_pairs()]


async def _show(pairs: PairService, args: argparse.Namespace) -> Any:
    record = await pairs.get(args.pair_id)
    return {**record.public_view(), "audit": await pairs.trail(args.pair_id, args.audit)}


async def _approve(pairs: PairService, args: argparse.Namespace) -> Any:
    return (await pairs.approve(pair_id=args.pair_id)).public_view()


async def _revoke(pairs: PairService, args: argparse.Namespace) -> Any:
    return (await pairs.revoke(args.pair_id, by="operator")).public_view()


async def _unlock(pairs: PairService, args: argparse.Namespace) -> Any:
    return (await pairs.unlock(args.pair_id)).public_view()


async def _import(pairs: PairService, args: argparse.Namespace) -> Any:
    data = json.loads(args.text)
    records = data if isinstance(data, list) else [data]
    imported = []
    for item in records:
        if not isinstance(item, dict):
            raise PairRequestError("record", "each record must be a JSON object")
        record = await pairs.import_bpc_server(item)
        imported.append(record.public_view())
    return {
        "imported": imported,
        "note": "imported pairs are device-key-only: bpc-server keeps only an argon2 hash of "
        "the secret, which cannot check secret_hmac; re-register or rotate them to restore "
        "the secret check",
    }


_ACTIONS: dict[str, Action] = {
    "list": _list,
    "show": _show,
    "approve": _approve,
    "revoke": _revoke,
    "unlock": _unlock,
    "import": _import,
}


def run_pairs(args: argparse.Namespace) -> int:
    """``authgate pairs <action>``."""
    settings = _load(args, need_kek=False)
    if settings is None:
        return 2
    try:
        if args.action == "import":
            args.text = (
                sys.stdin.read()
                if args.file == "-"
                else Path(args.file).read_text(encoding="utf-8")
            )
        _print(asyncio.run(_with_pairs(settings, _ACTIONS[args.action], args)))
    except PairNotFound as exc:
        print(f"not found: {_described(exc)}", file=sys.stderr)
        return 1
    except (PairRequestError, PairRecordError, ValueError, OSError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    except AuthGateError as exc:
        print(f"{exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    return 0


async def _apikeys(settings: Settings, args: argparse.Namespace) -> Any:
    services = Services(settings)
    try:
        service = services.api_keys
        if args.action == "create":
            key, raw = await service.create(name=args.name, scopes=args.scope or ())
            return {
                **key.public_view(),
                "api_key": raw,
                "note": "shown once: authgate keeps only a hash and a sealed copy",
            }
        if args.action == "revoke":
            return (await service.revoke(args.key_id)).public_view()
        return [k.public_view() for k in await service.all_keys()]
    finally:
        await services.close()


def run_apikeys(args: argparse.Namespace) -> int:
    """``authgate apikeys <action>``."""
    settings = _load(args, need_kek=True)
    if settings is None:
        return 2
    try:
        _print(asyncio.run(_apikeys(settings, args)))
    except ApiKeyNotFound as exc:
        print(f"not found: {_described(exc)}", file=sys.stderr)
        return 1
    except (ApiKeyError, ValueError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    except AuthGateError as exc:
        print(f"{exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    return 0


async def _proof(args: argparse.Namespace) -> str:
    import aiohttp
    from yarl import URL

    from authgate.client.hmac_proof import fetch_proof_header

    url = URL(args.url, encoded=True)
    base = str(url.origin())
    body = None
    if args.bind_body:
        body = sys.stdin.buffer.read() if args.data == "-" else (args.data or "").encode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        return await fetch_proof_header(
            session, base, args.key, args.method.upper(), url.raw_path_qs, body=body
        )


def run_proof(args: argparse.Namespace) -> int:
    """``authgate proof``: print an Authorization header for one request (for curl)."""
    import os

    args.key = args.key or os.environ.get("AUTHGATE_API_KEY", "")
    if not args.key:
        print("give --key or set AUTHGATE_API_KEY", file=sys.stderr)
        return 2
    import aiohttp

    try:
        header = asyncio.run(_proof(args))
    except (ValueError, OSError, aiohttp.ClientError) as exc:
        print(f"cannot build proof: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(f"Authorization: {header}\n")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("passwords differ")
    return first


async def _keys_users_tokens(settings: Settings, args: argparse.Namespace) -> Any:
    services = Services(settings)
    clock = services.clock
    try:
        if args.command == "users":
            users = services.users
            if args.action == "add":
                return (
                    await users.add(
                        args.username, args.password, scopes=args.scope or (), role=args.role
                    )
                ).public_view()
            if args.action == "passwd":
                return (await users.set_password(args.username, args.password)).public_view()
            if args.action == "remove":
                if not await users.remove(args.username):
                    raise LookupError(args.username)
                return {"removed": args.username}
            return [u.public_view() for u in await users.all_users()]
        if args.command == "token" and args.action == "revoke":
            longest = max(settings.tokens.refresh_ttl_seconds, settings.tokens.max_mint_ttl_seconds)
            until = clock.now_ms() + (longest + settings.jwt.leeway_seconds) * 1000
            await services.revocations.revoke(args.jti, expires_at_ms=until)
            return {"revoked": args.jti, "until_ms": until}
        keys = services.keys
        if args.command == "keys":
            if not keys.managed:
                raise ValueError(
                    "signing keys come from jwt.signing_key_files: rotate them by deployment"
                )
            await keys.load()
            if args.action == "rotate":
                return await keys.rotate(force=args.force)
            return keys.states()
        if not (keys.managed or settings.jwt.signing_key_files):
            raise ValueError("no durable signing key: a minted token would match no server's key")
        await keys.load()
        issuer = services.issuer
        if not 30 <= args.ttl <= settings.tokens.max_mint_ttl_seconds:
            raise ValueError(f"--ttl must be 30 to {settings.tokens.max_mint_ttl_seconds} seconds")
        roles = {settings.tokens.pico_operator_role, settings.tokens.pico_service_role}
        if args.role is not None and args.role not in roles:
            raise ValueError(f"--role must be one of {sorted(roles)}")
        issued = await issuer.issue(
            subject=args.sub,
            scopes=args.scope or (),
            audience=args.aud,
            ttl_seconds=args.ttl,
            extra={"role": args.role} if args.role else None,
            minted_by="cli",
        )
        return {
            "access_token": issued.access_token,
            "expires_in": args.ttl,
            "jti": issued.claims["jti"],
        }
    finally:
        await services.close()


def run_keys_users_tokens(args: argparse.Namespace) -> int:
    """``authgate keys|users|token ...``."""
    from authgate.tokens.keys import KeysUnreadable

    settings = _load(args, need_kek=args.command == "keys")
    if settings is None:
        return 2
    try:
        if args.command == "users" and args.action in {"add", "passwd"}:
            args.password = _read_password(args)
        _print(asyncio.run(_keys_users_tokens(settings, args)))
    except LookupError as exc:
        print(f"not found: {exc}", file=sys.stderr)
        return 1
    except (UserError, ValueError, RotationRefused, KeysUnreadable) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except AuthGateError as exc:
        print(f"{exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: Any) -> None:
    """Register the operator commands on the top-level parser's subcommands."""
    keys_cmd = sub.add_parser("keys", help="store-managed signing keys")
    keys_cmd.add_argument("--config")
    keys_actions = keys_cmd.add_subparsers(dest="action", required=True)
    keys_actions.add_parser("list", help="keys and their states")
    rotate = keys_actions.add_parser("rotate", help="promote the next key (published first)")
    rotate.add_argument("--force", action="store_true", help="skip the publication lead (incident)")
    keys_cmd.set_defaults(func=run_keys_users_tokens)

    users_cmd = sub.add_parser("users", help="operator users (argon2id)")
    users_cmd.add_argument("--config")
    user_actions = users_cmd.add_subparsers(dest="action", required=True)
    add = user_actions.add_parser("add", help="add a user (password from a prompt or stdin)")
    add.add_argument("username")
    add.add_argument("--scope", action="append")
    add.add_argument("--role", default="operator")
    add.add_argument("--password-stdin", action="store_true")
    passwd = user_actions.add_parser("passwd", help="change a password")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    remove = user_actions.add_parser("remove", help="remove a user")
    remove.add_argument("username")
    user_actions.add_parser("list", help="every user (no hashes)")
    users_cmd.set_defaults(func=run_keys_users_tokens)

    token_cmd = sub.add_parser("token", help="operator tokens")
    token_cmd.add_argument("--config")
    token_actions = token_cmd.add_subparsers(dest="action", required=True)
    mint = token_actions.add_parser("mint", help="mint a token (audited when long-lived)")
    mint.add_argument("--sub", required=True)
    mint.add_argument("--scope", action="append")
    mint.add_argument("--ttl", type=int, default=3600, help="seconds")
    mint.add_argument("--aud")
    mint.add_argument("--role", help="pico role claim (e.g. service, for revoked-jtis polls)")
    revoke_token = token_actions.add_parser("revoke", help="revoke a token by jti on every replica")
    revoke_token.add_argument("jti")
    token_cmd.set_defaults(func=run_keys_users_tokens)

    keys = sub.add_parser("apikeys", help="manage API keys in the shared store")
    keys.add_argument("--config", help="YAML config file (default: $AUTHGATE_CONFIG)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="create a key (printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", help="a scope (repeat for several)")
    key_actions.add_parser("list", help="every key (no secrets)")
    revoke_key = key_actions.add_parser("revoke", help="revoke a key by id")
    revoke_key.add_argument("key_id")
    keys.set_defaults(func=run_apikeys)

    proof_cmd = sub.add_parser("proof", help="print an AGProof Authorization header for curl")
    proof_cmd.add_argument("url", help="the full URL of the request, query included")
    proof_cmd.add_argument("--method", default="GET")
    proof_cmd.add_argument("--key", help="the API key (default: $AUTHGATE_API_KEY)")
    proof_cmd.add_argument("--bind-body", action="store_true", help="route binds the body")
    proof_cmd.add_argument("--data", help="the body (with --bind-body; - reads stdin)")
    proof_cmd.set_defaults(func=run_proof)

    pairs = sub.add_parser("pairs", help="manage BPC pairs in the shared store")
    pairs.add_argument("--config", help="YAML config file (default: $AUTHGATE_CONFIG)")
    actions = pairs.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every pair (no secrets)")
    show = actions.add_parser("show", help="one pair and its audit trail")
    show.add_argument("pair_id")
    show.add_argument("--audit", type=int, default=20, help="audit entries to show")
    for name, text in (
        ("approve", "activate a pending pair"),
        ("revoke", "revoke a pair"),
        ("unlock", "clear a lock-out"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("pair_id")
    importer = actions.add_parser("import", help="import bpc-server PairRecord JSON (file or -)")
    importer.add_argument("file")
    pairs.set_defaults(func=run_pairs)
