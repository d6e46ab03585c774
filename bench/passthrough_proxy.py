"""The sidecar row's baseline: a minimal aiohttp pass-through proxy, no authentication.

Run by ``bench/run.py`` as ``python bench/passthrough_proxy.py PORT UPSTREAM_URL``. What any
aiohttp reverse proxy has to do at least, the way authgate's sidecar does it: one pooled
``ClientSession`` (100 connections, authgate's default ``proxy.pool_size``), the request
body streamed upstream, the response streamed back chunk by chunk, hop-by-hop headers
dropped both ways. No access log, no auth, no policy: the ratio of the sidecar row is
"what authenticating costs a proxy", not "what proxying costs".
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    )
)
CHUNK = 65536
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


async def forward(request: web.Request) -> web.StreamResponse:
    """Send the request upstream and stream the answer back."""
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    data = _body(request) if request.can_read_body else None
    async with request.app[SESSION].request(
        request.method,
        request.app[UPSTREAM] + request.raw_path,
        headers=headers,
        data=data,
        allow_redirects=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP or name.lower() == "content-length":
                response.headers.add(name, value)
        if upstream.content_length is None:
            response.enable_chunked_encoding()
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(CHUNK):
            await response.write(chunk)
        await response.write_eof()
        return response


def proxy_app(upstream: str) -> web.Application:
    """The pass-through application (the session opened and closed in ``cleanup_ctx``)."""
    app = web.Application(client_max_size=0)
    app[UPSTREAM] = upstream.rstrip("/")

    async def session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=60),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # as authgate's session (outbound.py)
        ) as s:
            app[SESSION] = s
            yield

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    web.run_app(proxy_app(upstream), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
