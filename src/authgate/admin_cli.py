"""Operator commands: ``authgate keys|users|token|apikeys|pairs|audit ...`` and ``proof``.

Every act goes through the one operator service (``operator.py``), either directly on the
shared stores (the configuration's Redis: a change reaches every replica over the event
bus), or, with ``--url`` (or ``AUTHGATE_URL``), over the admin API of a running authgate
with an admin-scoped token from ``AUTHGATE_TOKEN``. The admin API works whatever the
backend, so on the embedded default (in-memory stores) ``--url`` is the way in: a
development-mode authgate prints such a token at start-up.

Every change is an entry of the operator audit (``authgate audit``): on the stores it names
the CLI (``by="cli"``); over ``--url`` the admin API names the admin token's subject.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from authgate.client.admin import AdminApiError, AdminClient
from authgate.compose import Services
from authgate.errors import AuthGateError, BadRequest, ConfigError, Conflict, NotFound
from authgate.operator import Operator
from authgate.preflight import load_checked_settings

Acts = Operator | AdminClient
Command = Callable[[Acts, argparse.Namespace], Awaitable[Any]]

BY = "cli"  # the operator audit's name for a change made directly on the stores

URL_ENV = "AUTHGATE_URL"
TOKEN_ENV = "AUTHGATE_TOKEN"  # noqa: S105 - the name of a variable, not a secret


class UsageError(Exception):
    """The command cannot run as given (printed as one line, exit code 2)."""


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _described(exc: AuthGateError) -> str:
    """The message, and the detail a client would not see (the operator may)."""
    return f"{exc.message} ({exc.detail})" if exc.detail else exc.message


async def _direct(args: argparse.Namespace, command: Command) -> Any:
    """Run ``command`` on the shared stores of the configuration (Redis only)."""
    try:
        settings = load_checked_settings(getattr(args, "config", None))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if settings.stores.backend != "redis":
        raise UsageError(
            f"authgate {args.command} acts directly on stores.backend: redis; the in-memory "
            f"stores live inside the serving process: give --url (or {URL_ENV}) and "
            f"{TOKEN_ENV} to act through its admin API (a development-mode authgate prints "
            "both when it starts)"
        )
    if getattr(args, "needs_kek", False) and settings.secrets.key_encryption_key is None:
        raise UsageError(f"authgate {args.command} needs secrets.key_encryption_key")
    if (
        args.command == "token"
        and args.action == "mint"
        and not (settings.secrets.key_encryption_key or settings.jwt.signing_key_files)
    ):
        raise UsageError(
            "no durable signing key (secrets.key_encryption_key or jwt.signing_key_files): "
            "a token minted here would match no server's key; use --url to mint on a "
            "running authgate"
        )
    services = Services(settings)
    try:
        return await command(services.operator, args)
    finally:
        await services.close()


async def _remote(args: argparse.Namespace, url: str, command: Command) -> Any:
    """Run ``command`` over the admin API at ``url``."""
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise UsageError(f"--url needs an admin-scoped bearer token in {TOKEN_ENV}")
    prefix = getattr(args, "admin_prefix", None) or "/admin"
    async with AdminClient(url, token, prefix=prefix) as admin:
        return await command(admin, args)


def run(command: Command) -> Callable[[argparse.Namespace], int]:
    """A command's entry point: direct or over the admin API; errors as one line."""

    def main(args: argparse.Namespace) -> int:
        import aiohttp

        url = getattr(args, "url", None) or os.environ.get(URL_ENV, "")
        try:
            if getattr(args, "password_stdin", None) is not None and args.action in {
                "add",
                "passwd",
            }:
                args.password = _read_password(args)
            if args.command == "pairs" and args.action == "import":
                args.text = (
                    sys.stdin.read()
                    if args.file == "-"
                    else Path(args.file).read_text(encoding="utf-8")
                )
            if url:
                _print(asyncio.run(_remote(args, url, command)))
            else:
                _print(asyncio.run(_direct(args, command)))
        except UsageError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        except AdminApiError as exc:
            print(f"{exc.code}: {exc.message}", file=sys.stderr)
            return 2 if exc.status in {400, 409} else 1
        except NotFound as exc:
            print(f"not found: {_described(exc)}", file=sys.stderr)
            return 1
        except BadRequest as exc:
            print(f"invalid: {_described(exc)}", file=sys.stderr)
            return 2
        except Conflict as exc:
            print(f"refused: {_described(exc)}", file=sys.stderr)
            return 2
        except AuthGateError as exc:
            print(f"{exc.reason}: {_described(exc)}", file=sys.stderr)
            return 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            print(f"cannot reach {url}: {type(exc).__name__} {exc}", file=sys.stderr)
            return 1
        except (ValueError, OSError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        return 0

    return main


# --- the acts --------------------------------------------------------------------------


async def _keys(acts: Acts, args: argparse.Namespace) -> Any:
    if args.action == "rotate":
        return await acts.rotate_keys(force=args.force, by=BY)
    return await acts.keys()


async def _users(acts: Acts, args: argparse.Namespace) -> Any:
    if args.action == "add":
        return await acts.add_user(
            username=args.username,
            password=args.password,
            scopes=args.scope or [],
            role=args.role,
            by=BY,
        )
    if args.action == "passwd":
        return await acts.set_password(username=args.username, password=args.password, by=BY)
    if args.action == "remove":
        return await acts.remove_user(args.username, by=BY)
    return await acts.users()


async def _token(acts: Acts, args: argparse.Namespace) -> Any:
    if args.action == "revoke":
        if (args.jti is None) == (args.token is None):
            raise UsageError("token revoke: give a jti or --token (one of them)")
        return await acts.revoke_token(jti=args.jti, token=args.token, by=BY)
    if args.action == "mints":
        return await acts.mints(args.limit)
    return await acts.mint(
        sub=args.sub,
        scopes=args.scope or [],
        ttl_seconds=args.ttl,
        aud=args.aud,
        role=args.role,
        by=BY,
    )


async def _apikeys(acts: Acts, args: argparse.Namespace) -> Any:
    if args.action == "create":
        return await acts.create_api_key(name=args.name, scopes=args.scope or [], by=BY)
    if args.action == "revoke":
        return await acts.revoke_api_key(args.key_id, by=BY)
    return await acts.api_keys()


async def _pairs(acts: Acts, args: argparse.Namespace) -> Any:
    if args.action == "show":
        return await acts.pair(args.pair_id, audit=args.audit)
    if args.action in ("approve", "revoke", "unlock"):
        act = getattr(acts, f"{args.action}_pair")
        return await act(args.pair_id, by=BY)
    if args.action == "import":
        try:
            records = json.loads(args.text)
        except ValueError as exc:
            raise UsageError(f"{args.file}: not JSON ({exc})") from None
        return await acts.import_pairs(records, by=BY)
    return await acts.pairs()


async def _audit(acts: Acts, args: argparse.Namespace) -> Any:
    return await acts.audit(args.limit)


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


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every operator command takes, at any position after the command."""
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="YAML config file for acting directly on the stores (default: $AUTHGATE_CONFIG)",
    )
    parser.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"act through the admin API of the authgate at this URL (default: ${URL_ENV}); "
        f"the admin-scoped bearer token is read from ${TOKEN_ENV}",
    )
    parser.add_argument(
        "--admin-prefix",
        default=argparse.SUPPRESS,
        help="path prefix of the admin API with --url (tokens.admin_prefix; default /admin)",
    )
    return parser


def _group(
    sub: Any, name: str, text: str, command: Command, **defaults: Any
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = _common(sub.add_parser(name, help=text, description=text))
    parser.set_defaults(func=run(command), **defaults)
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def _action(actions: Any, name: str, text: str) -> argparse.ArgumentParser:
    return _common(actions.add_parser(name, help=text, description=text))


def add_commands(sub: Any) -> None:
    """Register the operator commands on the top-level parser's subcommands."""
    keys = _group(sub, "keys", "signing keys: list, rotate store-managed keys", _keys)
    _action(keys, "list", "signing keys and their states (file-based keys listed too)")
    rotate = _action(keys, "rotate", "promote the next key (published a lead time before)")
    rotate.add_argument(
        "--force", action="store_true", help="skip the publication lead (an incident)"
    )

    users = _group(sub, "users", "password users (argon2id) for the password grant", _users)
    add = _action(users, "add", "add a user (password from a prompt, or stdin)")
    add.add_argument("username", help="the user name (letters, digits, . _ @ -)")
    add.add_argument("--scope", action="append", help="a scope the user holds (repeatable)")
    add.add_argument("--role", default="operator", help="role claim of its tokens")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    passwd = _action(users, "passwd", "change a password")
    passwd.add_argument("username", help="the user name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    remove = _action(users, "remove", "remove a user")
    remove.add_argument("username", help="the user name")
    _action(users, "list", "every user (no hashes)")

    token = _group(sub, "token", "tokens: mint, revoke, the mint audit", _token)
    mint = _action(token, "mint", "mint a token (audited when long-lived)")
    mint.add_argument("--sub", required=True, help="the token's subject")
    mint.add_argument("--scope", action="append", help="a scope (repeatable)")
    mint.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    mint.add_argument("--aud", help="the audience (default: the first of jwt.audiences)")
    mint.add_argument("--role", help="pico role claim (e.g. service, for revoked-jtis polls)")
    revoke = _action(token, "revoke", "revoke a token on every replica until it expires")
    revoke.add_argument("jti", nargs="?", help="the token's id")
    revoke.add_argument("--token", help="the token itself (its own expiry bounds the revocation)")
    mints = _action(token, "mints", "long-lived tokens minted, newest first")
    mints.add_argument("--limit", type=int, default=100, help="entries to show (default 100)")

    apikeys = _group(
        sub, "apikeys", "API keys (HMAC proofs, client credentials)", _apikeys, needs_kek=True
    )
    create = _action(apikeys, "create", "create a key (printed once)")
    create.add_argument("--name", required=True, help="a name for people")
    create.add_argument("--scope", action="append", help="a scope (repeatable)")
    _action(apikeys, "list", "every key (no secrets)")
    revoke_key = _action(apikeys, "revoke", "revoke a key by id")
    revoke_key.add_argument("key_id", help="the key's id")

    pairs = _group(sub, "pairs", "BPC pairs: list, show, approve, revoke, unlock, import", _pairs)
    _action(pairs, "list", "every pair (no secrets)")
    show = _action(pairs, "show", "one pair and its audit trail")
    show.add_argument("pair_id", help="the pair's id")
    show.add_argument("--audit", type=int, default=20, help="audit entries to show (default 20)")
    for name, text in (
        ("approve", "activate a pending pair"),
        ("revoke", "revoke a pair"),
        ("unlock", "clear a lock-out"),
    ):
        _action(pairs, name, text).add_argument("pair_id", help="the pair's id")
    importer = _action(pairs, "import", "import bpc-server PairRecord JSON")
    importer.add_argument("file", help="a JSON file of one record or a list, or - for stdin")

    audit_text = "the operator audit: every change and who made it, newest first"
    audit = _common(sub.add_parser("audit", help=audit_text, description=audit_text))
    audit.add_argument("--limit", type=int, default=100, help="entries to show (default 100)")
    audit.set_defaults(func=run(_audit), action="list")

    proof_cmd = sub.add_parser("proof", help="print an AGProof Authorization header for curl")
    proof_cmd.add_argument("url", help="the full URL of the request, query included")
    proof_cmd.add_argument("--method", default="GET", help="the request's method (default GET)")
    proof_cmd.add_argument("--key", help="the API key (default: $AUTHGATE_API_KEY)")
    proof_cmd.add_argument(
        "--bind-body", action="store_true", help="the route binds the body (hmac_bind_body)"
    )
    proof_cmd.add_argument("--data", help="the body (with --bind-body; - reads stdin)")
    proof_cmd.set_defaults(func=run_proof)
