"""The forwarded-header readers (``authgate.web.context``): ``TrustedProxies.client_ip`` over
``X-Forwarded-For``, and each door's ``context`` (header folding and repeats, the
method/host/scheme readers, ``X-Original-URI`` / ``X-Forwarded-Uri``, the target).

Input, as text (seed files are readable):

* ``xff <peer>`` on the first line: the second line is an ``X-Forwarded-For`` value read by
  ``client_ip`` for that peer;
* ``<door> <peer>`` on the first line (``sidecar``, ``nginx``, ``traefik``, ``envoy``):
  every further line is one ``Name: value`` header (repeats allowed); the sidecar and Envoy
  read the request line from the ``:method`` and ``:path`` pseudo-lines (a method that is not
  an HTTP token is skipped: aiohttp's parser refuses it first).

Peers: ``127.0.0.1`` and ``10.0.0.1`` are trusted proxies, anything else is not.

Contract: a value, or a 4xx :class:`AuthGateError` leaf (``MalformedHeader``,
``MissingForwardedHeader``, ``UntrustedProxy``, ``TokenTooLarge``, ``InvalidTarget``), never
another exception. Properties: the client address is the peer or a plain IP address (what
the upstream reads in ``X-Real-IP``: hex digits, dots and colons); a context's method is an
upper-case token, its host a valid host or empty, its scheme one of four, its path canonical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness import check_refusal, instrumented, main, text
from multidict import CIMultiDict

with instrumented():
    from authgate.config.model import IdentitySettings
    from authgate.errors import AuthGateError
    from authgate.policy.target import canonicalize
    from authgate.web.context import Doors, TrustedProxies, parse_ip
    from authgate.web.identity import IdentityNames

TRUSTED = TrustedProxies(["127.0.0.0/8", "10.0.0.0/8", "::1/128"])
DOORS = Doors.build(
    trusted=TRUSTED,
    max_body_bytes=1024,
    identity_check=IdentityNames.from_settings(IdentitySettings()).check,
    max_token_bytes=4096,
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PLAIN_IP = re.compile(r"[0-9a-f.:]+")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(?::[0-9]{1,5})?")


@dataclass
class FakeRequest:
    """What the doors read of an aiohttp request."""

    headers: CIMultiDict[str]
    remote: str
    method: str
    raw_path: str
    scheme: str = "http"


def _check_client(peer: str, client: str) -> None:
    if client == peer:
        return
    ip = parse_ip(client)
    if ip is None or str(ip) != client or _PLAIN_IP.fullmatch(client) is None:
        raise AssertionError(f"client address {client!r} is not a plain IP address")


def _client_ip(peer: str, value: str) -> None:
    try:
        client = TRUSTED.client_ip(peer, value)
    except AuthGateError as exc:
        check_refusal(exc)
        return
    _check_client(peer, client)


def _door(name: str, peer: str, lines: list[str]) -> None:
    door = getattr(DOORS, name, None)
    if door is None:
        return
    headers: CIMultiDict[str] = CIMultiDict()
    method, path = "GET", "/"
    for line in lines:
        key, sep, value = line.partition(": ")
        if not sep or not key:
            continue
        if key == ":method":
            method = value
        elif key == ":path":
            path = value
        else:
            headers.add(key, value)
    if _TOKEN.fullmatch(method) is None:
        return  # aiohttp's parser refuses a request line whose method is not a token
    request = FakeRequest(headers=headers, remote=peer, method=method, raw_path=path)
    try:
        context = door.context(request, "rid")
    except AuthGateError as exc:
        check_refusal(exc)
        return
    # The forward-auth doors read an upper-case method; the sidecar the request line's token.
    assert _TOKEN.fullmatch(context.method) and context.method == context.method.upper(), context
    assert name == "sidecar" or re.fullmatch(r"[A-Z]{1,16}", context.method), context
    assert context.host == "" or _HOST.fullmatch(context.host), context
    assert context.scheme in {"http", "https", "ws", "wss"}, context
    assert canonicalize(context.raw_target).path == context.path, context
    _check_client(peer, context.client_ip)


def test_one_input(data: bytes) -> None:
    first, _, rest = text(data).partition("\n")
    kind, _, peer = first.partition(" ")
    if kind == "xff":
        _client_ip(peer, rest.partition("\n")[0])
    else:
        _door(kind, peer, rest.split("\n"))


if __name__ == "__main__":
    main(test_one_input)
