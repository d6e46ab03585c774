"""``GET /.well-known/oauth-protected-resource[/<path>]``: RFC 9728 metadata.

One document per configured resource (a rule's ``resource`` section), found by the path
after the well-known prefix (RFC 9728 §3.1 inserts the well-known segment between the
identifier's host and path) and, when several resources share a path, by the request's
host. The documents are built once, at start-up.

Where this is served: in the sidecar the app's own origin (these routes come before the
proxy's catch-all); behind a forward-auth proxy the proxy routes
``/.well-known/oauth-protected-resource`` (and the paths under it) of the app's host to
authgate (``docs/deployment.md`` shows the nginx, Traefik and Envoy routes).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from authgate.config.model import Settings
from authgate.errors import NotFound
from authgate.policy.resources import WELL_KNOWN, resource_documents
from authgate.web.problem import TAIL, Handler, Routes

_HEADERS = {
    "Cache-Control": "public, max-age=3600",
    # Public metadata: browser-based clients (MCP inspectors) fetch it cross-origin.
    "Access-Control-Allow-Origin": "*",
}


def _handler(documents: dict[tuple[str, str], dict[str, Any]]) -> Handler:
    by_path: dict[str, list[dict[str, Any]]] = {}
    for (_, path), document in documents.items():
        by_path.setdefault(path, []).append(document)

    async def metadata(request: web.Request) -> web.Response:
        """The metadata of the resource this path names."""
        path = request.rel_url.raw_path[len(WELL_KNOWN) :]
        document = documents.get((request.host.lower(), path))
        if document is None:
            candidates = by_path.get(path, [])
            if len(candidates) != 1:
                raise NotFound("no protected resource is described at this path")
            document = candidates[0]
        return web.json_response(document, headers=_HEADERS)

    return metadata


def add_routes(routes: Routes, settings: Settings) -> None:
    """Register the metadata routes when a rule names a resource."""
    documents = resource_documents(
        settings.policy.rules,
        issuer=settings.jwt.issuer,
        dpop_algorithms=settings.jwt.dpop.algorithms,
    )
    if not documents:
        return
    handler = _handler(documents)
    routes.get(WELL_KNOWN, handler)
    routes.get(WELL_KNOWN + "/" + TAIL, handler)
