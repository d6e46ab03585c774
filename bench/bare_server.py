"""The baseline: a bare aiohttp app answering 200 with an empty body on every path.

Run by ``bench/run.py`` as ``python bench/bare_server.py PORT``. Same Python, same aiohttp,
same ``web.run_app`` and no access log, exactly like ``authgate serve`` with
``logging.access_log: false``, so the ratio measures what authgate adds on top.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def ok(request: web.Request) -> web.Response:
    """200, empty body."""
    return web.Response(status=200)


def bare_app() -> web.Application:
    """The baseline application (``bench/inproc.py`` measures the same one in-process)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    return app


def main() -> None:
    port = int(sys.argv[1])
    web.run_app(bare_app(), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
