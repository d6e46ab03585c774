"""HTTP request -> :class:`RequestContext`, believing forwarded headers only from trusted proxies.

Each forward-auth contract has its own builder, so no endpoint has to guess which headers
to believe. ``X-Forwarded-For`` is read right to left: the client is the first address,
from the right, that is not a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from collections.abc import Iterable, Mapping

from aiohttp import web

from authgate.cache import BoundedCache
from authgate.errors import MalformedHeader, MissingForwardedHeader, UntrustedProxy
from authgate.models import RequestContext
from authgate.policy.target import canonicalize
from authgate.web.body import body_reader

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METHOD = re.compile(r"[A-Z]{1,16}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(?::[0-9]{1,5})?")
MAX_HEADER_VALUE = 8192
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


class TrustedProxies:
    """The set of peers whose forwarded headers are believed."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )
        # Peers repeat (a proxy, a few clients): remember answers, bounded.
        self._known: BoundedCache[str, bool] = BoundedCache(4096)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is a trusted proxy."""
        known = self._known.get(address)
        if known is not None:
            return known
        ip = parse_ip(address)
        answer = ip is not None and any(ip in net for net in self._networks)
        self._known.put(address, answer)
        return answer

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The calling client's address, reading ``X-Forwarded-For`` right to left."""
        if forwarded_for is None or not self.trusts(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",")]
        candidate = peer
        for hop in reversed(hops):
            ip = parse_ip(hop)
            if ip is None:
                raise MalformedHeader("X-Forwarded-For holds an entry that is not an IP address")
            candidate = str(ip)
            if not self.trusts(candidate):
                return candidate
        return candidate


def parse_ip(text: str) -> IPAddress | None:
    """An IP address (v4-mapped v6 unwrapped), or ``None``."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def peer_address(request: web.Request) -> str:
    """The TCP peer (unix sockets and unknown peers count as ``0.0.0.0``, never trusted)."""
    return request.remote or "0.0.0.0"  # noqa: S104 - a placeholder address, not a bind


def request_id(request: web.Request, header: str) -> str:
    """The client's request id when well formed, else a fresh one."""
    supplied = request.headers.get(header)
    if supplied is not None and _REQUEST_ID.fullmatch(supplied):
        return supplied
    # Correlation ids, not secrets: a random per-process prefix and a counter are unique
    # across processes and cost a fraction of a random draw per request.
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def lower_headers(request: web.Request) -> dict[str, str]:
    """Request headers by lower-case name; a repeated header a verifier reads is refused.

    Only names authgate reads for decisions are checked for repetition: two
    ``Authorization`` headers could be read differently by authgate and the upstream.
    """
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        if key in out:
            if key in SINGLE_VALUED:
                raise MalformedHeader(f"header {name} appears more than once")
            out[key] = f"{out[key]}, {value}"
        else:
            out[key] = value
        if len(value) > MAX_HEADER_VALUE and key in SINGLE_VALUED:
            raise MalformedHeader(f"header {name} is too long")
    return out


SINGLE_VALUED = frozenset(
    {
        "authorization",
        "host",
        "x-original-uri",
        "x-original-method",
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-bpc-pair-id",
        "x-bpc-signed-data",
        "x-bpc-signature",
        "x-bpc-version",
        "x-client-pubkey",
    }
)


def _method(value: str, header: str) -> str:
    if _METHOD.fullmatch(value) is None:
        raise MalformedHeader(f"{header} is not an upper-case HTTP method")
    return value


def _host(value: str, header: str) -> str:
    if _HOST.fullmatch(value) is None:
        raise MalformedHeader(f"{header} is not a valid host")
    return value


def _scheme(value: str | None, header: str) -> str:
    if value is None:
        return "http"
    scheme = value.strip().lower()
    if scheme not in {"http", "https", "ws", "wss"}:
        raise MalformedHeader(f"{header} must be http or https")
    return scheme


def _require(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower())
    if value is None or value == "":
        raise MissingForwardedHeader(f"trusted proxy did not send {name}")
    return value


class ContextBuilder:
    """Builds contexts for each front door with one trusted-proxy policy."""

    def __init__(
        self, *, trusted: TrustedProxies, request_id_header: str, max_body_bytes: int
    ) -> None:
        self.trusted = trusted
        self.request_id_header = request_id_header
        self.max_body_bytes = max_body_bytes

    def _base(self, request: web.Request) -> tuple[dict[str, str], str, str]:
        headers = lower_headers(request)
        peer = peer_address(request)
        client = self.trusted.client_ip(peer, headers.get("x-forwarded-for"))
        return headers, peer, client

    def direct(self, request: web.Request, *, rid: str) -> RequestContext:
        """The sidecar proxy: the request itself is the original request."""
        headers, peer, client = self._base(request)
        target = canonicalize(request.raw_path)
        host = _host(headers.get("host", ""), "Host") if "host" in headers else ""
        scheme = request.scheme
        if self.trusted.trusts(peer) and "x-forwarded-proto" in headers:
            scheme = _scheme(headers["x-forwarded-proto"], "X-Forwarded-Proto")
        return RequestContext(
            method=request.method.upper(),
            path=target.path,
            query=target.query,
            host=host,
            scheme=scheme,
            headers=headers,
            client_ip=client,
            request_id=rid,
            read_body=body_reader(request, limit=self.max_body_bytes),
            raw_target=request.raw_path,
        )

    def _forwarded(
        self,
        request: web.Request,
        *,
        rid: str,
        method: str,
        raw_target: str,
        host: str,
        scheme: str,
        headers: dict[str, str],
        client: str,
        with_body: bool,
    ) -> RequestContext:
        target = canonicalize(raw_target)
        return RequestContext(
            method=method,
            path=target.path,
            query=target.query,
            host=host,
            scheme=scheme,
            headers=headers,
            client_ip=client,
            request_id=rid,
            read_body=body_reader(request, limit=self.max_body_bytes) if with_body else None,
            raw_target=raw_target,
        )

    def _require_trusted(self, peer: str) -> None:
        if not self.trusted.trusts(peer):
            raise UntrustedProxy()

    def nginx(self, request: web.Request, *, rid: str) -> RequestContext:
        """nginx ``auth_request``: ``X-Original-Method`` and ``X-Original-URI``; no body."""
        headers, peer, client = self._base(request)
        self._require_trusted(peer)
        method = _method(_require(headers, "X-Original-Method"), "X-Original-Method")
        raw_target = _require(headers, "X-Original-URI")
        host_value = headers.get("x-forwarded-host") or headers.get("host", "")
        return self._forwarded(
            request,
            rid=rid,
            method=method,
            raw_target=raw_target,
            host=_host(host_value, "X-Forwarded-Host") if host_value else "",
            scheme=_scheme(headers.get("x-forwarded-proto"), "X-Forwarded-Proto"),
            headers=headers,
            client=client,
            with_body=False,
        )

    def traefik(self, request: web.Request, *, rid: str) -> RequestContext:
        """Traefik / Caddy: ``X-Forwarded-Method/Proto/Host/Uri``; body when forwarded."""
        headers, peer, client = self._base(request)
        self._require_trusted(peer)
        method = _method(_require(headers, "X-Forwarded-Method"), "X-Forwarded-Method")
        raw_target = _require(headers, "X-Forwarded-Uri")
        host = _host(_require(headers, "X-Forwarded-Host"), "X-Forwarded-Host")
        return self._forwarded(
            request,
            rid=rid,
            method=method,
            raw_target=raw_target,
            host=host,
            scheme=_scheme(headers.get("x-forwarded-proto"), "X-Forwarded-Proto"),
            headers=headers,
            client=client,
            with_body=True,
        )

    def envoy(self, request: web.Request, *, rid: str, prefix: str) -> RequestContext:
        """Envoy ``ext_authz``: original method; original path after ``prefix``."""
        headers, peer, client = self._base(request)
        self._require_trusted(peer)
        raw = request.raw_path
        if not raw.startswith(prefix + "/"):
            raise MissingForwardedHeader("ext_authz request lacks the original path")
        host_value = headers.get("host", "")
        return self._forwarded(
            request,
            rid=rid,
            method=_method(request.method.upper(), "method"),
            raw_target=raw[len(prefix) :],
            host=_host(host_value, "Host") if host_value else "",
            scheme=_scheme(headers.get("x-forwarded-proto"), "X-Forwarded-Proto"),
            headers=headers,
            client=client,
            with_body=True,
        )
