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

from authgate.config.loader import load_settings
from authgate.config.model import Settings
from authgate.errors import AuthGateError, ConfigError
from authgate.pairs.records import PairRecordError
from authgate.pairs.service import PairNotFound, PairRequestError, PairService
from authgate.services import build_pair_services, load_envelope
from authgate.stores import build_stores
from authgate.stores.base import SystemClock

Action = Callable[[PairService, argparse.Namespace], Awaitable[Any]]


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


async def _with_pairs(settings: Settings, action: Action, args: argparse.Namespace) -> Any:
    stores = build_stores(settings.stores, SystemClock())
    try:
        services = build_pair_services(settings, stores, load_envelope(settings), SystemClock())
        return await action(services.service, args)
    finally:
        await stores.close()


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
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if settings.stores.backend != "redis":
        print(
            "authgate pairs needs stores.backend: redis (in-memory stores live inside the "
            "serving process)",
            file=sys.stderr,
        )
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
        print(f"not found: {exc}", file=sys.stderr)
        return 1
    except (PairRequestError, PairRecordError, ValueError, OSError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    except AuthGateError as exc:
        print(f"{exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: Any) -> None:
    """Register ``pairs`` on the top-level parser's subcommands."""
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
