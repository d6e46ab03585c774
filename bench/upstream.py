"""The upstream of the proxy scenarios: 1 KB answers, and uploads read and thrown away.

Run by ``bench/run.py`` as ``python bench/upstream.py PORT``. ``GET``/``HEAD`` (any path)
answer 200 with a fixed 1024-byte body; any request with a body is read to its end in
chunks (never held) and answered with ``{"bytes": N}``, the count it received, so the
streamed-upload run can check that every byte arrived.
"""

from __future__ import annotations

import sys

from aiohttp import web

BODY = b"x" * 1023 + b"\n"  # 1 KB


async def answer(request: web.Request) -> web.Response:
    """1 KB for a request without a body, else the byte count of the discarded body."""
    if not request.can_read_body:
        return web.Response(body=BODY, content_type="text/plain")
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
    return web.json_response({"bytes": received})


def upstream_app() -> web.Application:
    """The upstream application."""
    app = web.Application(client_max_size=0)  # 0: no cap, the body is streamed and dropped
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def main() -> None:
    port = int(sys.argv[1])
    web.run_app(upstream_app(), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
