"""Sidecar reverse proxy: authenticate, then stream the request to the upstream.

Bodies are streamed both ways (never fully buffered); hop-by-hop headers and every
client-supplied identity header are removed; the forwarding headers are authgate's (see
:func:`upstream_headers`); WebSocket upgrades
are passed after authentication. Upstream failures answer 502 or 504 with a JSON body.

Every exchange runs unbounded until shutdown, then until the drain deadline
(``web/drain.py``): an upstream still silent then is abandoned (its call cancelled) with a
504, so a slow upstream cannot hold the process past its termination grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from authgate.errors import AuthGateError, UpstreamTimeout, UpstreamUnreachable
from authgate.models import RequestContext
from authgate.policy.rules import Decision
from authgate.web.body import BUFFERED_BODY
from authgate.web.context import (
    CLIENT_ADDRESS_HEADERS,
    header_key,
    is_canonical_forwarding,
    is_forwarding_key,
)
from authgate.web.drain import DRAIN
from authgate.web.identity import REMEMBERED_NAME_LENGTH, IdentityHeaders
from authgate.web.problem import REQUEST_ID, TAIL, Handler, Routes
from authgate.web.state import DOORS, IDENTITY, METRICS, SERVICES, SETTINGS

if TYPE_CHECKING:  # the otel extra
    from authgate.tracing import Tracing

log = logging.getLogger("authgate.proxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_CHUNK = 64 * 1024
# RFC 9440 Client-Cert in any spelling (X-Forwarded-Client-Cert is a forwarding header).
_CLIENT_CERT_KEY = header_key("client-cert")
# At the drain deadline, how long each end of a proxied WebSocket gets for its close frame.
_WS_CLOSE_SECONDS = 0.2

# Never copied from the client's request: hop-by-hop, and what the upstream request sets.
_NOT_FROM_CLIENT = HOP_BY_HOP | {"content-length", "expect"}


def _hop_by_hop(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], base: frozenset[str] = HOP_BY_HOP
) -> frozenset[str]:
    """``base`` plus the names a ``Connection`` header lists (read in place, not copied)."""
    listed = headers.getall("connection", ())
    if not listed:
        return base
    names = set(base)
    for value in listed:
        names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return frozenset(names)


def upstream_headers(
    request: web.Request, context: RequestContext, decision: Decision
) -> CIMultiDict[str]:
    """Headers for the upstream request.

    The upstream sees forwarding headers only as authgate wrote them:

    * from an untrusted peer, every header of the forwarding family
      (:func:`~authgate.web.context.is_forwarding`: ``Forwarded``, ``X-Forwarded-*``,
      ``X-Original-*``, ``X-Real-IP``, ``True-Client-IP``, ...) is dropped, in any spelling;
    * from a trusted proxy, the family is relayed in its canonical (dashed) spelling only,
      except the client-address headers;
    * ``X-Forwarded-For`` is the chain authgate decided with (every line the trusted proxy
      sent, joined in order) plus the peer, or just the peer; ``X-Real-IP`` is the client
      address authgate decided with: the right-most untrusted entry of the chain;
    * identity headers (authgate's, in any spelling, and other gateways') never pass.
    """
    app = request.app
    settings = app[SETTINGS]
    drop = _hop_by_hop(request.headers, _NOT_FROM_CLIENT)
    peer = request.remote or ""
    trusted = app[DOORS].trusted.trusts(peer)
    identity = app[IDENTITY]
    # Names repeat (a client sends the same few): each one's answer is worked out once. Only
    # names of ordinary length are kept, so the table holds at most 4,096 short strings.
    verdicts = identity.never_relayed
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        lower = name.lower()
        if lower in drop:
            continue
        never = verdicts.get((lower, trusted))
        if never is None:
            never = _never_relayed(lower, identity, trusted=trusted)
            if len(lower) <= REMEMBERED_NAME_LENGTH:
                verdicts.put((lower, trusted), never)
        if not never:
            out.add(name, value)
    if request.can_read_body and request.content_length is not None:
        out["Content-Length"] = str(request.content_length)
    # The chain the door read (every line, joined in order), believed only from a trusted
    # peer: the upstream reading it right to left finds the client authgate decided with.
    chain = context.headers.get("x-forwarded-for") if trusted else None
    out["X-Forwarded-For"] = f"{chain}, {peer}" if chain else peer
    out["X-Real-IP"] = context.client_ip
    out["X-Forwarded-Proto"] = context.scheme
    if context.host:
        out.setdefault("X-Forwarded-Host", context.host)
    if not settings.proxy.preserve_host:
        out.popall("Host", None)
    out["X-Request-Id"] = context.request_id
    out.update(identity.for_decision(decision))
    return out


def _never_relayed(lower: str, identity: IdentityHeaders, *, trusted: bool) -> bool:
    """Whether a client's header of this (lower-case) name must not reach the upstream."""
    if identity.is_identity(lower):
        return True  # authgate's identity headers and other gateways', in any spelling
    key = header_key(lower)
    if key.startswith("xbpc"):
        # The BPC signed data carries secret_hmac, an offline guessing oracle for the pair's
        # secret to anyone who can read upstream traffic or logs: it never leaves authgate.
        return True
    if key == _CLIENT_CERT_KEY:
        # RFC 9440 Client-Cert: believed (and relayed) from a trusted proxy only.
        return not trusted or lower != "client-cert"
    if not is_forwarding_key(key):
        return False
    # A forwarding header: relayed only from a trusted proxy, only in its canonical
    # spelling, and never one naming the client (authgate writes those itself).
    return not trusted or not is_canonical_forwarding(lower) or lower in CLIENT_ADDRESS_HEADERS


def _session(request: web.Request) -> aiohttp.ClientSession:
    session = request.app[SERVICES].http
    if session is None:  # pragma: no cover - the application's start-up opens it
        raise UpstreamUnreachable("the upstream client is not open")
    return session


# A refusal raised while reading the client's body (408 request_timeout from
# web/protocol.py): the client session reports it as a connection error of the upstream.
BODY_REFUSAL: web.RequestKey[AuthGateError] = web.RequestKey("body_refusal", AuthGateError)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            yield chunk
    except AuthGateError as exc:
        request[BODY_REFUSAL] = exc
        raise


def _is_websocket(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    """Authenticate and forward any request no other route claims."""
    context = request.app[DOORS].sidecar.context(request, request[REQUEST_ID])
    return await _forward(request, context, None)


def traced_proxy_handler(tracing: Tracing) -> Handler:
    """:func:`proxy_handler` in an ``authgate.proxy`` span (tracing on): the decision span
    is its child, and the upstream request carries this span's ``traceparent``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        context = request.app[DOORS].sidecar.context(request, request[REQUEST_ID])
        with tracing.request_span("authgate.proxy", context) as span:
            response = await _forward(request, context, tracing.inject)
            span.set_attribute("http.response.status_code", response.status)
            return response

    handler.__doc__ = proxy_handler.__doc__
    return handler


async def _forward(
    request: web.Request,
    context: RequestContext,
    inject: Callable[[CIMultiDict[str]], None] | None,
) -> web.StreamResponse:
    app = request.app
    decision = await app[SERVICES].gate.evaluate(context)
    upstream = decision.upstream or app[SETTINGS].proxy.upstream
    if upstream is None:
        raise UpstreamUnreachable(f"rule {decision.rule_id!r} has no upstream")
    url = URL(upstream.rstrip("/") + context.target, encoded=True)
    headers = upstream_headers(request, context, decision)
    if inject is not None:  # tracing: authgate's traceparent, never the client's
        inject(headers)
    if _is_websocket(request) and app[SETTINGS].proxy.websockets:
        return await _proxy_websocket(request, url, headers)
    return await _proxy_http(request, url, headers)


async def _proxy_http(
    request: web.Request, url: URL, headers: CIMultiDict[str]
) -> web.StreamResponse:
    started: list[web.StreamResponse] = []  # the client's response, once its headers are sent
    try:
        async with request.app[DRAIN].bounded():
            return await _exchange(request, url, headers, started)
    except TimeoutError:  # the drain deadline (_exchange turns its own timeouts into errors)
        request.app[METRICS].upstream_responses.labels("shutdown").inc()
        log.warning(
            "upstream exchange cut at the drain deadline",
            extra={"event": "upstream_cut", "request_id": request[REQUEST_ID]},
        )
        if not started:
            raise UpstreamTimeout("upstream did not answer before shutdown") from None
        # Headers are already sent: abort, so the client sees a truncated response.
        if request.transport is not None:
            request.transport.abort()
        return started[0]


async def _exchange(
    request: web.Request,
    url: URL,
    headers: CIMultiDict[str],
    started: list[web.StreamResponse],
) -> web.StreamResponse:
    session = _session(request)
    metrics = request.app[METRICS]
    # A verifier that hashed the body buffered it: forward exactly those bytes.
    data: bytes | AsyncIterator[bytes] | None = request.get(BUFFERED_BODY)
    if data is None and request.can_read_body:
        data = _body(request)
    try:
        async with session.request(
            request.method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            drop = _hop_by_hop(upstream.headers)
            for name, value in upstream.headers.items():
                if name.lower() not in drop:
                    response.headers.add(name, value)
            response.headers["X-Request-Id"] = request[REQUEST_ID]
            if upstream.content_length is None and "content-length" not in response.headers:
                response.enable_chunked_encoding()
            # The whole answer is already here (a small one arrives with its head, and the
            # client's flow control bounds what can wait unread): head and body go out in
            # one write, instead of one each and a third for a chunked answer's end. An
            # answer still arriving has its head sent at once, so a streamed response
            # (server-sent events, a long poll) shows its status before its body.
            whole = upstream.content.is_eof()
            if whole:
                response._send_headers_immediately = False  # aiohttp's switch (web.Response's)
            await response.prepare(request)
            started.append(response)
            try:
                if whole:
                    await response.write_eof(await upstream.content.read())
                else:
                    async for chunk in upstream.content.iter_chunked(_CHUNK):
                        await response.write(chunk)
                    await response.write_eof()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                # Headers are already sent: the only honest signal left is to abort the
                # connection, so the client sees a truncated response, never a whole one.
                metrics.upstream_responses.labels("aborted").inc()
                log.warning(
                    "upstream failed mid-response",
                    extra={"event": "upstream_aborted", "error": type(exc).__name__},
                )
                if request.transport is not None:
                    request.transport.abort()
                return response
            metrics.upstream_responses.labels(f"{upstream.status // 100}xx").inc()
            return response
    except TimeoutError:
        metrics.upstream_responses.labels("timeout").inc()
        raise UpstreamTimeout() from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
        refusal = request.get(BODY_REFUSAL)
        if refusal is not None:  # the client's body failed, not the upstream
            raise refusal from None
        if isinstance(exc, aiohttp.ServerTimeoutError):
            metrics.upstream_responses.labels("timeout").inc()
            raise UpstreamTimeout() from None
        metrics.upstream_responses.labels("unreachable").inc()
        log.warning(
            "upstream failed",
            extra={
                "event": "upstream_error",
                "error": type(exc).__name__,
                "request_id": request[REQUEST_ID],
            },
        )
        raise UpstreamUnreachable() from None


async def _proxy_websocket(
    request: web.Request, url: URL, headers: CIMultiDict[str]
) -> web.StreamResponse:
    session = _session(request)
    for name in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions", "Host"):
        headers.popall(name, None)
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    headers.popall("Sec-WebSocket-Protocol", None)
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    try:
        upstream = await session.ws_connect(
            ws_url, headers=headers, protocols=protocols, autoping=False
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise UpstreamUnreachable(f"websocket upstream failed: {type(exc).__name__}") from None
    client = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (), autoping=False
    )
    await client.prepare(request)

    async def pump(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for msg in source:
            if msg.type == WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type == WSMsgType.PING:
                await sink.ping(msg.data)
            elif msg.type == WSMsgType.PONG:
                await sink.pong(msg.data)
            else:
                break
        await sink.close()

    try:
        async with request.app[DRAIN].bounded():
            await asyncio.gather(pump(client, upstream), pump(upstream, client))
    except TimeoutError:  # the drain deadline: tell both ends "going away", briefly
        request.app[METRICS].upstream_responses.labels("shutdown").inc()
        for end in (client, upstream):
            with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                async with asyncio.timeout(_WS_CLOSE_SECONDS):
                    await end.close(code=WSCloseCode.GOING_AWAY, message=b"shutting down")
    finally:
        await upstream.close()
        await client.close()
    return client


def add_routes(routes: Routes, *, tracing: Tracing | None = None) -> None:
    """The catch-all route; registered last so authgate's own endpoints win."""
    routes.add("*", "/" + TAIL, proxy_handler if tracing is None else traced_proxy_handler(tracing))
