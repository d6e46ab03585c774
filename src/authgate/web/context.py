"""HTTP request -> :class:`RequestContext`, believing forwarded headers only from trusted proxies.

Each door (the sidecar and one per forward-auth contract) is a :class:`Door` that owns
the headers it reads and builds the context, so no endpoint has to guess which headers to
believe. ``X-Forwarded-For`` is read right to left: the client is the first address,
from the right, that is not a trusted proxy. Several ``X-Forwarded-For`` lines are one list
(RFC 9110 §5.3), joined in order: HAProxy-style proxies add a line instead of appending.

The *forwarding family* (:func:`is_forwarding`) is every header a proxy writes to say where a
request came from and what it was (``Forwarded``, ``X-Forwarded-*``, ``X-Original-*``,
``X-Real-IP``, ``True-Client-IP``, ...), in any spelling: names are compared case-folded with
every character but letters and digits removed, so ``X_Forwarded_For`` (which CGI-style
apps read as ``X-Forwarded-For``) and ``x.forwarded.for`` are family members too.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from aiohttp import web

from authgate.cache import BoundedCache
from authgate.errors import MalformedHeader, MissingForwardedHeader, TokenTooLarge, UntrustedProxy
from authgate.models import RequestContext
from authgate.policy.target import canonicalize
from authgate.verifiers.cert_binding import CLIENT_CERT, FORWARDED_CLIENT_CERT, presented_thumbprint
from authgate.web.body import body_reader

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METHOD = re.compile(r"[A-Z]{1,16}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(?::[0-9]{1,5})?")
MAX_HEADER_VALUE = 8192
# The longest Authorization value beyond its token: the scheme ("Bearer "), with slack for
# spaces. The Authorization cap is jwt.max_token_bytes plus this, so a long bearer token
# reaches the verifier (401 token_too_large), never a 400 from a fixed header cap; the
# configuration requires server.max_header_bytes to hold it (config/model.py).
AUTHORIZATION_OVERHEAD = 32
# Every ASCII character but letters and digits, deleted by header_key().
_NOT_ALNUM = str.maketrans("", "", "".join(chr(c) for c in range(128) if not chr(c).isalnum()))
_ID_PREFIX = os.urandom(8).hex()
# The W3C Trace Context headers a door keeps from a trusted proxy when tracing is on.
TRACE_HEADERS = ("traceparent", "tracestate")
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
            # A zone (`fe80::1%eth0`, `::ffff:198%51.100.1`) names an interface of the host
            # that wrote it, never a client: refused, or the client address would carry any
            # text after `%` to the rate limits, the logs and X-Real-IP (found by fuzzing).
            ip = parse_ip(hop) if "%" not in hop else None
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


# Called with each request header's lower-case name; raises to refuse the request. The
# forward-auth doors pass IdentityNames.check (web/identity.py): a client's copy of an
# identity header, in any spelling, is refused there.
HeaderCheck = Callable[[str], None]


def lower_headers(
    request: web.Request,
    *,
    max_authorization: int = MAX_HEADER_VALUE,
    check: HeaderCheck | None = None,
) -> dict[str, str]:
    """Request headers by lower-case name; a repeated header a verifier reads is refused,
    and so is every header ``check`` raises for.

    Only names authgate reads for decisions are checked for repetition: two
    ``Authorization`` headers could be read differently by authgate and the upstream.
    Single-valued headers are capped at :data:`MAX_HEADER_VALUE` characters, except
    ``Authorization``, capped at ``max_authorization`` (the token limit plus the scheme): a
    longer bearer value is 401 ``token_too_large``, like a long token under the cap.
    """
    shortest_cap = min(MAX_HEADER_VALUE, max_authorization)
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        if check is not None:
            check(key)
        if "_" in key:
            # CGI-style apps read `_` as `-`: an underscore spelling of a header authgate
            # reads is that header (so it is refused as a repeat, or believed as it).
            dashed = key.replace("_", "-")
            if dashed in SINGLE_VALUED or dashed in FORWARDING_FAMILY:
                key = dashed
        if key in out:
            if key in SINGLE_VALUED:
                raise MalformedHeader(f"header {name} appears more than once")
            out[key] = f"{out[key]}, {value}"
        else:
            out[key] = value
        if len(value) > shortest_cap and key in SINGLE_VALUED:
            _check_length(name, key, value, max_authorization)
    return out


def _check_length(name: str, key: str, value: str, max_authorization: int) -> None:
    if key != "authorization":
        if len(value) > MAX_HEADER_VALUE:
            raise MalformedHeader(f"header {name} is too long")
        return
    if len(value) > max_authorization:
        if value[:7].lower() == "bearer " or value[:5].lower() == "dpop ":
            raise TokenTooLarge("bearer token exceeds jwt.max_token_bytes")
        raise MalformedHeader(f"header {name} is too long")


def header_key(name: str) -> str:
    """``name`` case-folded with every ASCII character but letters and digits removed: the
    spellings an upstream might read as one header (``X_Authgate_Subject``,
    ``x.authgate.subject``, ``X-Authgate-Subject``) share one key."""
    return name.lower().translate(_NOT_ALNUM)


# The forwarding headers that name the client's address. The sidecar writes the two the
# upstream reads (X-Forwarded-For, X-Real-IP) itself and drops the others from every peer,
# so the address the upstream reads is the one authgate decided with.
CLIENT_ADDRESS_HEADERS = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        "x-proxyuser-ip",
        "client-ip",
        "x-original-forwarded-for",
    }
)
# The forwarding family, lower-case and dashed (their canonical spelling), and the prefixes
# whose every header belongs to it.
FORWARDING_FAMILY = CLIENT_ADDRESS_HEADERS | frozenset(
    {
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-uri",
        "x-forwarded-method",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "x-original-uri",
        "x-original-url",
        "x-original-method",
        "x-original-host",
        "x-rewrite-url",
        "x-host",
        "x-url-scheme",
        "front-end-https",
    }
)
FORWARDING_PREFIXES = ("x-forwarded-", "x-original-")
_FAMILY_KEYS = frozenset(header_key(name) for name in FORWARDING_FAMILY)
_FAMILY_KEY_PREFIXES = tuple(header_key(prefix) for prefix in FORWARDING_PREFIXES)


def is_forwarding(name: str) -> bool:
    """Whether ``name``, in any spelling, is a header of the forwarding family."""
    return is_forwarding_key(header_key(name))


def is_forwarding_key(key: str) -> bool:
    """:func:`is_forwarding` for a name already passed through :func:`header_key`."""
    return key in _FAMILY_KEYS or key.startswith(_FAMILY_KEY_PREFIXES)


def is_canonical_forwarding(lower: str) -> bool:
    """Whether a lower-case name is a forwarding header in its canonical (dashed) spelling."""
    return lower in FORWARDING_FAMILY or lower.startswith(FORWARDING_PREFIXES)


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


class Door:
    """One way a request reaches authgate: which headers say what the original request was,
    whether they are believed only from a trusted proxy, and how the context is built.

    Every door (the sidecar and one per forward-auth contract) is one of these; nothing
    else lists which headers a door reads. ``reads`` are lower-case header names.
    """

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]]
    forwards_body: ClassVar[bool] = True
    # Whether ``identity_check`` applies: a forward-auth door cannot remove a header the
    # proxy forwards to the app, so it refuses the request; the sidecar removes them instead
    # (web/proxy.py), since it writes the upstream request itself.
    refuses_identity_headers: ClassVar[bool] = True

    def __init__(
        self,
        *,
        trusted: TrustedProxies,
        max_body_bytes: int,
        identity_check: HeaderCheck,
        max_token_bytes: int = MAX_HEADER_VALUE - AUTHORIZATION_OVERHEAD,
        trace: bool = False,
    ) -> None:
        self.trusted = trusted
        self.max_body_bytes = max_body_bytes
        self.max_authorization = max_token_bytes + AUTHORIZATION_OVERHEAD
        self._check = identity_check if self.refuses_identity_headers else None
        self._trace = trace

    def context(self, request: web.Request, rid: str) -> RequestContext:
        """The request as the door reconstructs it, or a :class:`BadRequest` leaf."""
        headers = lower_headers(
            request, max_authorization=self.max_authorization, check=self._check
        )
        peer = peer_address(request)
        client = self.trusted.client_ip(peer, headers.get("x-forwarded-for"))
        method, raw_target, host, scheme = self.original(request, headers, peer)
        target = canonicalize(raw_target)
        carrier = None
        if self._trace and "traceparent" in headers and self.trusted.trusts(peer):
            # W3C trace context, believed from a trusted proxy only: from anyone else a
            # traceparent is ignored and the decision starts a new trace.
            carrier = {k: headers[k] for k in TRACE_HEADERS if k in headers}
        cert = None
        if (CLIENT_CERT in headers or FORWARDED_CLIENT_CERT in headers) and self.trusted.trusts(
            peer
        ):
            # The client certificate (RFC 8705 §3), believed from a trusted proxy only: from
            # anyone else the headers are ignored, so a certificate-bound token is refused.
            cert = presented_thumbprint(headers)
        return RequestContext(
            method=method,
            path=target.path,
            query=target.query,
            host=host,
            scheme=scheme,
            headers=headers,
            client_ip=client,
            request_id=rid,
            read_body=(
                body_reader(request, limit=self.max_body_bytes) if self.forwards_body else None
            ),
            raw_target=raw_target,
            trace_carrier=carrier,
            client_cert=cert,
        )

    def original(
        self, request: web.Request, headers: Mapping[str, str], peer: str
    ) -> tuple[str, str, str, str]:
        """The original request's method, raw target, host and scheme."""
        raise NotImplementedError

    def _require_trusted(self, peer: str) -> None:
        if not self.trusted.trusts(peer):
            raise UntrustedProxy()


class Sidecar(Door):
    """The sidecar proxy: the request itself is the original request."""

    name = "sidecar"
    reads = ("host", "x-forwarded-proto")
    refuses_identity_headers = False

    def original(
        self, request: web.Request, headers: Mapping[str, str], peer: str
    ) -> tuple[str, str, str, str]:
        """The request line and ``Host``; ``X-Forwarded-Proto`` from a trusted proxy."""
        host = _host(headers["host"], "Host") if "host" in headers else ""
        scheme = request.scheme
        if "x-forwarded-proto" in headers and self.trusted.trusts(peer):
            scheme = _scheme(headers["x-forwarded-proto"], "X-Forwarded-Proto")
        return request.method.upper(), request.raw_path, host, scheme


class Nginx(Door):
    """nginx ``auth_request``: ``X-Original-Method`` and ``X-Original-URI``; no body."""

    name = "nginx"
    reads = ("x-original-method", "x-original-uri", "x-forwarded-host", "host", "x-forwarded-proto")
    forwards_body = False

    def original(
        self, request: web.Request, headers: Mapping[str, str], peer: str
    ) -> tuple[str, str, str, str]:
        """From the ``X-Original-*`` headers of a trusted proxy."""
        self._require_trusted(peer)
        method = _method(_require(headers, "X-Original-Method"), "X-Original-Method")
        raw_target = _require(headers, "X-Original-URI")
        host_value = headers.get("x-forwarded-host") or headers.get("host", "")
        host = _host(host_value, "X-Forwarded-Host") if host_value else ""
        return (
            method,
            raw_target,
            host,
            _scheme(headers.get("x-forwarded-proto"), "X-Forwarded-Proto"),
        )


class Traefik(Door):
    """Traefik ``ForwardAuth`` / Caddy ``forward_auth``: ``X-Forwarded-Method/Proto/Host/Uri``;
    the body when the proxy forwards it."""

    name = "traefik"
    reads = ("x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "x-forwarded-proto")

    def original(
        self, request: web.Request, headers: Mapping[str, str], peer: str
    ) -> tuple[str, str, str, str]:
        """From the ``X-Forwarded-*`` headers of a trusted proxy."""
        self._require_trusted(peer)
        method = _method(_require(headers, "X-Forwarded-Method"), "X-Forwarded-Method")
        raw_target = _require(headers, "X-Forwarded-Uri")
        host = _host(_require(headers, "X-Forwarded-Host"), "X-Forwarded-Host")
        return (
            method,
            raw_target,
            host,
            _scheme(headers.get("x-forwarded-proto"), "X-Forwarded-Proto"),
        )


class Envoy(Door):
    """Envoy ``ext_authz`` HTTP service: the original method, and the original path after
    the door's own prefix (``path_prefix``); the body when ``with_request_body`` is set."""

    name = "envoy"
    reads = ("host", "x-forwarded-proto")
    prefix: ClassVar[str] = "/auth/envoy"

    def original(
        self, request: web.Request, headers: Mapping[str, str], peer: str
    ) -> tuple[str, str, str, str]:
        """From the request line (after the prefix) and ``Host`` of a trusted proxy."""
        self._require_trusted(peer)
        raw = request.raw_path
        if not raw.startswith(self.prefix + "/"):
            raise MissingForwardedHeader("ext_authz request lacks the original path")
        host_value = headers.get("host", "")
        host = _host(host_value, "Host") if host_value else ""
        return (
            _method(request.method.upper(), "method"),
            raw[len(self.prefix) :],
            host,
            _scheme(headers.get("x-forwarded-proto"), "X-Forwarded-Proto"),
        )


DOORS: tuple[type[Door], ...] = (Sidecar, Nginx, Traefik, Envoy)
D = TypeVar("D", bound=Door)

# The headers a credential is read from (the verifiers' inputs).
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "dpop",  # RFC 9449 §4.3: exactly one proof
        "x-bpc-pair-id",
        "x-bpc-signed-data",
        "x-bpc-signature",
        "x-bpc-version",
        "x-client-pubkey",
        "client-cert",  # RFC 9440 §2: one certificate (believed from a trusted proxy only)
    }
)

# Headers that must appear at most once: two ``Authorization`` or ``X-Original-URI`` lines
# could be read differently by authgate and by the proxy or upstream.
SINGLE_VALUED = CREDENTIAL_HEADERS.union(*(door.reads for door in DOORS))


@dataclass(frozen=True, slots=True)
class Doors:
    """The doors of one application, over one trusted-proxy policy."""

    trusted: TrustedProxies
    sidecar: Sidecar
    nginx: Nginx
    traefik: Traefik
    envoy: Envoy

    @classmethod
    def build(
        cls,
        *,
        trusted: TrustedProxies,
        max_body_bytes: int,
        identity_check: HeaderCheck,
        max_token_bytes: int = MAX_HEADER_VALUE - AUTHORIZATION_OVERHEAD,
        trace: bool = False,
    ) -> Doors:
        """Every door, each with ``trusted``, the body limit, the token limit, the
        identity-header check (``IdentityNames.check``) and whether trace context is read."""

        def door(kind: type[D]) -> D:
            return kind(
                trusted=trusted,
                max_body_bytes=max_body_bytes,
                identity_check=identity_check,
                max_token_bytes=max_token_bytes,
                trace=trace,
            )

        return cls(trusted, door(Sidecar), door(Nginx), door(Traefik), door(Envoy))
