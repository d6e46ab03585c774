"""Repeat grants: answer a forward-auth request that the full path has already granted.

The full path (``ContextBuilder`` then ``Gate.evaluate``) decides every request the first
time. When it grants a bearer JWT on a rule without rate limits, :class:`RepeatGrants`
remembers two things, each bounded:

* **targets**: the raw bytes of the headers through which the door learns the method,
  host and path (nginx: ``X-Original-Method``, ``X-Original-URI``, ``Host``,
  ``X-Forwarded-Host``, ``X-Forwarded-Proto``) -> the rule they matched;
* **grants**: (that rule, SHA-256 of the raw ``Authorization`` value) -> the decision and
  the verifier's entry for the token. Tokens themselves are never kept.

A later request is answered from these only when nothing the full path reads could differ:

* its header names (remembered per distinct list of names) repeat no single-valued header,
  carry no single-valued header outside the door's set (so no BPC headers and no other
  door's headers; every value the full path would have checked is one it did check) and at
  most one ``X-Forwarded-For``;
* the peer is a trusted proxy and ``X-Forwarded-For`` parses, exactly as on the full path;
* the target values were seen before, the bearer token hashes to a remembered grant for the
  rule they matched;
* the token is inside its validity window now, and this process knows without a store
  round trip that neither its ``jti`` nor its refresh family is revoked
  (``JWTBearerVerifier.still_valid``).

Otherwise, or on any doubt, the full path decides, and its answer is what the client gets.
The answer from here is counted and logged like any other decision. Nothing here ever
refuses a request: a refusal always comes from the full path, with its exact reason.
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

from aiohttp import web
from multidict import CIMultiDict

from authgate.errors import AuthGateError
from authgate.metrics import CounterChild, Metrics
from authgate.models import CredentialType, RequestContext
from authgate.pipeline import Gate
from authgate.policy.rules import CompiledRule, Decision
from authgate.verifiers.jwt_bearer import (
    JWTBearerVerifier,
    VerifiedToken,
    bearer_token,
    token_digest,
)
from authgate.web.context import SINGLE_VALUED, TrustedProxies
from authgate.web.identity import IdentityHeaders

_NAME = itemgetter(0)
_VALUE = itemgetter(1)
_JWT = CredentialType.JWT.value
_sha256 = hashlib.sha256
# What is remembered stays small whatever clients send: longer header-name lists and
# longer target values are decided by the full path every time.
MAX_TARGETS = 4096
MAX_TARGET_CHARS = 2048
MAX_SHAPES = 1024
MAX_SHAPE_BYTES = 2048

RawHeaders = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Door:
    """What a forward-auth door reads to learn the original request's target.

    ``key_headers`` fix the method, host and path (with the request's own method and path
    for Envoy, ``request_line``); the door's requests may carry no other single-valued
    header than these and ``Authorization``.
    """

    name: str
    key_headers: tuple[str, ...]
    request_line: bool = False

    @property
    def single_valued(self) -> frozenset[str]:
        """The single-valued headers a request answered from memory may carry."""
        return frozenset({"authorization", *self.key_headers})


NGINX = Door(
    "nginx",
    ("x-original-method", "x-original-uri", "host", "x-forwarded-host", "x-forwarded-proto"),
)
TRAEFIK = Door(
    "traefik",
    ("x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "host", "x-forwarded-proto"),
)
ENVOY = Door("envoy", ("host", "x-forwarded-proto"), request_line=True)


class _Shape(NamedTuple):
    """What one list of header names says, worked out once per distinct list."""

    key: Callable[[RawHeaders], RawHeaders]  # the door's key headers, (name, value) pairs
    authorization: int  # its index in the raw headers
    forwarded_for: int  # its index, or -1


class _Target(NamedTuple):
    rule: CompiledRule
    method: str


class Pending(NamedTuple):
    """What :meth:`DoorRepeats.answer` worked out for a request it could not answer."""

    shape: _Shape
    key: object  # the target key
    target: _Target | None  # the remembered target, when only the grant was missing


class Grant(NamedTuple):
    """A remembered grant: the decision, and the response headers when they are the same
    on every request (``None`` when an identity JWT is minted per request)."""

    decision: Decision
    headers: CIMultiDict[str] | None
    token: VerifiedToken  # the verifier's entry, rechecked (time, revocation) on every use


class RepeatGrants:
    """The grants remembered for every door, and each door's own memories."""

    def __init__(
        self,
        *,
        gate: Gate,
        verifier: JWTBearerVerifier,
        trusted: TrustedProxies,
        max_entries: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.gate = gate
        self.verifier = verifier
        self.trusted = trusted
        self.max_entries = max_entries
        self.hits = metrics.cache_lookups.labels("repeat", "hit") if metrics else CounterChild()
        self.misses = metrics.cache_lookups.labels("repeat", "miss") if metrics else CounterChild()
        self.grants: dict[tuple[CompiledRule, bytes], Grant] = {}
        self.doors = {d.name: DoorRepeats(d, self) for d in (NGINX, TRAEFIK, ENVOY)}

    def __len__(self) -> int:
        return len(self.grants)

    def forget(self) -> None:
        """Drop everything remembered (the next request of each kind takes the full path)."""
        self.grants.clear()
        for door in self.doors.values():
            door.forget()


class DoorRepeats:
    """One door's memories (header-name lists, targets) over the shared grants.

    Lookups use the raw header bytes: any byte that differs from what the full path saw
    is a miss, never a different reading.
    """

    def __init__(self, door: Door, shared: RepeatGrants) -> None:
        self.door = door
        self._shared = shared
        self._gate = shared.gate
        self._verifier = shared.verifier
        self._trusted = shared.trusted
        self._grants = shared.grants
        self._single_valued = door.single_valued
        self._request_line = door.request_line
        self._hits = shared.hits
        self._granted = shared.gate.children("granted", "ok", _JWT)
        self._shapes: dict[tuple[bytes, ...], _Shape | None] = {}
        self._targets: dict[object, _Target] = {}

    def forget(self) -> None:
        """Drop this door's header-name lists and targets."""
        self._shapes.clear()
        self._targets.clear()

    def answer(self, request: web.Request, request_id: str) -> Grant | Pending | None:
        """The remembered grant for this request when it provably still holds (the decision
        is counted and logged). Otherwise the full path must decide: :class:`Pending` (what
        was worked out, for :meth:`remember`) or ``None`` (nothing here may be reused)."""
        started = time.perf_counter()
        raw = request.raw_headers
        names = tuple(map(_NAME, raw))
        shape = self._shapes.get(names, _UNSEEN)
        if shape is _UNSEEN:
            shape = self._learn_shape(names)
        if shape is None:
            return None
        key: object = shape.key(raw)
        if self._request_line:
            key = (request.method, request.raw_path, key)
        target = self._targets.get(key)
        if target is None:
            return Pending(shape, key, None)
        grant = self._grants.get((target.rule, _sha256(raw[shape.authorization][1]).digest()))
        if grant is None:
            return Pending(shape, key, target)
        peer = request.remote or "0.0.0.0"  # noqa: S104 - as peer_address(): never trusted
        trusted = self._trusted
        if not trusted.trusts(peer):
            return None
        client_ip = peer
        if shape.forwarded_for >= 0:
            try:
                client_ip = trusted.client_ip(peer, request.headers["x-forwarded-for"])
            except AuthGateError:
                return None  # the full path refuses it, with the reason
        decision = grant.decision
        if not self._verifier.still_valid(grant.token):
            return None
        count, seconds = self._granted
        elapsed = time.perf_counter() - started
        count.value += 1.0  # Gate.record's counting, inlined: this is the hot path
        seconds.counts[bisect_left(seconds.bounds, elapsed)] += 1
        seconds.sum += elapsed
        if self._gate.access_log:
            self._gate.log(
                "granted",
                "ok",
                _JWT,
                target.rule.id,
                decision.principal.subject,
                request_id,
                target.method,
                client_ip,
            )
        self._hits.value += 1.0  # CounterChild.inc, inlined
        return grant

    def remember(
        self,
        pending: Pending | None,
        request: web.Request,
        context: RequestContext,
        decision: Decision,
        identity: IdentityHeaders,
    ) -> None:
        """Note a grant the full path just made for ``request`` (which :meth:`answer` left
        as ``pending``), if a repeat may reuse it."""
        if pending is None or not self._shared.max_entries:
            return
        rule = decision.rule
        if (
            rule is None
            or rule.rate_limits
            or decision.principal.credential_type is not CredentialType.JWT
        ):
            return
        shape, key, target = pending
        raw = request.raw_headers
        digest = _sha256(raw[shape.authorization][1]).digest()
        grant = self._grants.get((rule, digest))
        if grant is None or grant.decision.principal is not decision.principal:
            grant = self._grant(request, decision, identity)
            if grant is None:
                return
            if len(self._grants) >= self._shared.max_entries:
                self._grants.clear()
            self._grants[(rule, digest)] = grant
        if target is None or target.rule is not rule:
            if sum(map(len, map(_VALUE, shape.key(raw)))) > MAX_TARGET_CHARS:
                return
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()
            self._targets[key] = _Target(rule, context.method)

    def _grant(
        self, request: web.Request, decision: Decision, identity: IdentityHeaders
    ) -> Grant | None:
        """A grant for the token the full path just verified, if it is the verifier's
        cached entry and still valid."""
        try:
            token = bearer_token(request.headers.get("authorization"))
        except AuthGateError:
            return None
        if token is None:
            return None
        verified = self._verifier.verified(token_digest(token))
        if (
            verified is None
            or verified.principal is not decision.principal
            or not self._verifier.still_valid(verified)
        ):
            return None  # not (or no longer) the verifier's cached principal
        headers = None if identity.per_request else identity.response_headers(decision)
        return Grant(decision, headers, verified)

    def _learn_shape(self, names: tuple[bytes, ...]) -> _Shape | None:
        shape = _shape(names, self.door, self._single_valued)
        if sum(map(len, names)) <= MAX_SHAPE_BYTES:
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()
            self._shapes[names] = shape
        return shape


_UNSEEN = _Shape(lambda raw: (), -1, -1)


def _pairs_at(indices: list[int]) -> Callable[[RawHeaders], RawHeaders]:
    """The (name, value) pairs at ``indices`` as a tuple (``itemgetter(i)`` is no tuple)."""

    def pairs(raw: RawHeaders) -> RawHeaders:
        return tuple(raw[i] for i in indices)

    return pairs


def _shape(names: tuple[bytes, ...], door: Door, allowed: frozenset[str]) -> _Shape | None:
    """The shape of a request the door may answer from memory, or ``None``: a repeated
    single-valued header, one outside ``allowed``, more than one ``X-Forwarded-For``, or
    no ``Authorization``."""
    # Header names are HTTP tokens (ASCII) by now: aiohttp's parser refuses any other byte,
    # so this lower-casing is the full path's (``lower_headers``).
    lower = [raw.decode("latin-1").lower() for raw in names]
    counts: dict[str, int] = {}
    for name in lower:
        counts[name] = counts.get(name, 0) + 1
    single = {n: c for n, c in counts.items() if n in SINGLE_VALUED}
    if (
        counts.get("x-forwarded-for", 0) > 1
        or any(c > 1 for c in single.values())
        or not set(single) <= allowed
        or "authorization" not in single
    ):
        return None
    indices = [lower.index(h) for h in door.key_headers if h in counts]
    key: Callable[[RawHeaders], RawHeaders] = (
        itemgetter(*indices) if len(indices) > 1 else _pairs_at(indices)
    )
    return _Shape(
        key,
        lower.index("authorization"),
        lower.index("x-forwarded-for") if "x-forwarded-for" in counts else -1,
    )
