"""Bounded, memoised request-body reading for body-hash checks.

Only a verifier that must hash the body calls the reader; everything else streams. The
bytes read are kept on the request, so the proxy forwards exactly what was hashed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from authgate.errors import BodyTooLarge, InvalidRequest
from authgate.outbound import read_bounded
from authgate.strict_json import StrictJSONError, loads_object

BUFFERED_BODY: web.RequestKey[bytes] = web.RequestKey("buffered_body", bytes)


def body_reader(request: web.Request, *, limit: int) -> Callable[[], Awaitable[bytes]]:
    """A reader of at most ``limit`` bytes (``b""`` when the request has no body).

    Contexts whose proxy does not forward the body at all (nginx) get no reader, which
    is how verifiers tell "empty" from "not available".
    """

    async def read() -> bytes:
        cached: bytes | None = request.get(BUFFERED_BODY)
        if cached is not None:  # first: after one read the stream is at its end
            return cached
        if not request.can_read_body:
            return b""
        declared = request.content_length
        if declared is not None and declared > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        request[BUFFERED_BODY] = body
        return body

    return read


async def read_json_object(
    request: web.Request, *, limit: int, raw: bytes | None = None, allow_empty: bool = False
) -> dict[str, Any]:
    """A request body that must be a strict JSON object of at most ``limit`` bytes.

    ``raw`` passes bytes already read (a verifier hashed them); otherwise the body is read
    here. Too large is :class:`BodyTooLarge` (413); every other fault an
    :class:`InvalidRequest` naming it.
    """
    if request.content_type != "application/json":
        raise InvalidRequest("Content-Type must be application/json")
    if raw is None:
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        raw = await read_bounded(request.content, limit)
    if len(raw) > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes")
    if allow_empty and not raw.strip():
        return {}
    try:
        return loads_object(raw, "request body")
    except StrictJSONError as exc:
        raise InvalidRequest(str(exc)) from None
