"""authgate's own outbound HTTP: the client session (upstreams, JWKS documents) and the
bounded read every response body goes through. Used by the composition root and ``web/``.
"""

from __future__ import annotations

import aiohttp
from aiohttp import StreamReader

from authgate.config.model import JWTSettings, ProxySettings
from authgate.metrics import Metrics


async def read_bounded(stream: StreamReader, limit: int) -> bytes:
    """The whole stream, or its first ``limit + 1`` bytes when it is longer.

    ``StreamReader.read(n)`` answers as soon as *some* bytes arrived, so one call can cut a
    body that came in several pieces (chunked, slow clients): read until EOF instead.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def open_session(settings: ProxySettings) -> aiohttp.ClientSession:
    """The one client session: pooled, no cookies, bodies passed through undecoded."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.pool_size),
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout_seconds,
            sock_read=settings.read_timeout_seconds,
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def fetch_jwks(
    session: aiohttp.ClientSession, url: str, *, settings: JWTSettings, metrics: Metrics
) -> bytes:
    """A JWKS document, bounded in size and time, no redirects; counted ok or error."""
    try:
        body = await _get_jwks(session, url, settings)
    except Exception:
        metrics.jwks_fetches.labels("error").inc()
        raise
    metrics.jwks_fetches.labels("ok").inc()
    return body


async def _get_jwks(session: aiohttp.ClientSession, url: str, settings: JWTSettings) -> bytes:
    async with session.get(
        url,
        timeout=aiohttp.ClientTimeout(total=settings.jwks_fetch_timeout_seconds),
        allow_redirects=False,
    ) as resp:
        if resp.status != 200:
            raise ValueError(f"JWKS answered {resp.status}")
        body = await read_bounded(resp.content, settings.jwks_max_bytes)
    if len(body) > settings.jwks_max_bytes:
        raise ValueError("JWKS document too large")
    return body
