"""Instructions per forward-auth request, counted by valgrind (callgrind), not timed.

    .venv/bin/python bench/instructions.py                 # authgate, warm-uris, log off
    .venv/bin/python bench/instructions.py --access-log    # with the access log (defaults)
    .venv/bin/python bench/instructions.py --bare          # bare aiohttp, same requests

Wall-clock figures move with whatever else the machine runs; instruction counts do not, so
this tells whether a change made the request path cheaper or dearer even on a busy
machine. It serves ``--small`` and then ``--large`` requests through ``bench/inproc.py``'s
in-process server (a cached ES256 bearer token, a new ``X-Original-URI`` every request),
each run under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``, and prints the
difference divided by the difference in requests: start-up and imports cancel out. Counts
repeat to within about 1 %; instructions are not time (cache misses are not counted), so
``bench/run.py`` stays the benchmark of record. Needs Debian's valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


async def serve(requests: int, *, access_log: bool, bare: bool) -> None:
    """Serve ``requests`` warm-uris requests in process (the measured child's work)."""
    sys.path.insert(0, str(ROOT))
    import yaml
    from bench.bare_server import bare_app
    from bench.inproc import Server, request_bytes
    from bench.run import authgate_config
    from tests.support import TokenFactory

    from authgate.config.loader import load_settings
    from authgate.log import configure_logging
    from authgate.web.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        factory = TokenFactory()
        config = Path(tmp) / "authgate.yaml"
        tree = authgate_config(factory.write_key(Path(tmp)), 1, access_log=access_log)
        config.write_text(yaml.safe_dump(tree))
        config.chmod(0o600)
        if access_log:
            sys.stderr = open(Path(tmp) / "access.log", "w")  # noqa: SIM115 - the run's life
            configure_logging(level="INFO", fmt="json")
        token = factory.mint(exp=int(time.time()) + 3600)
        wire = [request_bytes(token, f"/api/orders/{i}?expand=items") for i in range(requests)]
        app = bare_app() if bare else create_app(load_settings(config))
        async with Server(app) as server:
            await server.run(lambda i: wire[i], requests)


def count(requests: int, args: argparse.Namespace) -> int:
    """Instructions of one whole child run serving ``requests`` requests."""
    with tempfile.TemporaryDirectory() as tmp:
        child = [sys.executable, __file__, "--child", str(requests)]
        child += ["--access-log"] if args.access_log else []
        child += ["--bare"] if args.bare else []
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT / "src"))
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", *child],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if found is None:
        raise SystemExit(f"valgrind printed no instruction count:\n{out.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--access-log", action="store_true", help="authgate's defaults")
    parser.add_argument("--bare", action="store_true", help="bare aiohttp instead")
    parser.add_argument("--small", type=int, default=300, help="requests of the first run")
    parser.add_argument("--large", type=int, default=1300, help="requests of the second run")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(serve(args.child, access_log=args.access_log, bare=args.bare))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    small, large = count(args.small, args), count(args.large, args)
    per_request = (large - small) / (args.large - args.small)
    what = (
        "bare aiohttp" if args.bare else "authgate" + (", access log on" if args.access_log else "")
    )
    print(f"{what}: {per_request:,.0f} instructions per request")


if __name__ == "__main__":
    main()
