"""Verifier tests, plus the JWS forging kit they share with ``tests/test_advisories.py``.

The kit builds tokens byte by byte (header and payload exactly as given, signature made
with any key or supplied raw), because the attacks under test are malformed or hostile
tokens that no well-behaved JWT library would produce.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from jwt.algorithms import get_default_algorithms

from authgate.crypto.keys import KeyRing, SigningKey
from authgate.errors import AuthGateError
from authgate.metrics import Metrics
from authgate.models import Principal, RequestContext
from authgate.stores.base import ManualClock, RevocationStore
from authgate.stores.memory import MemoryStores
from authgate.tokens.revocation import RevocationList
from authgate.verifiers.jwt_bearer import IssuerKeys, JWTBearerVerifier
from tests.support import AUDIENCE, ISSUER

NOW = 1_700_000_000
"""Seconds; the ManualClock starts here."""
PYJWT_ALGORITHMS = get_default_algorithms()
CONTEXT = RequestContext(
    method="GET",
    path="/api",
    query="",
    host="app.test",
    scheme="https",
    headers={},
    client_ip="127.0.0.1",
)


def b64(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def dumps(value: Any) -> bytes:
    """Compact JSON, UTF-8."""
    return json.dumps(value, separators=(",", ":")).encode()


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims at :data:`NOW`; a ``None`` override removes the claim."""
    out: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": NOW,
        "exp": NOW + 300,
        "jti": uuid.uuid4().hex,
        "scope": "read write",
    }
    for name, value in overrides.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def header_for(key: SigningKey, **overrides: Any) -> dict[str, Any]:
    """``alg``/``kid``/``typ`` of ``key``; a ``None`` override removes the member."""
    out: dict[str, Any] = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
    for name, value in overrides.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def sign_segments(key: SigningKey, header: str, payload: str, *, alg: str | None = None) -> str:
    """``header.payload.signature`` with already-encoded segments, signed by ``key``."""
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = PYJWT_ALGORITHMS[alg or key.alg].sign(signing_input, key.private_key)
    return f"{header}.{payload}.{b64(signature)}"


def forge(
    key: SigningKey,
    *,
    header: dict[str, Any] | bytes | None = None,
    payload: dict[str, Any] | bytes | None = None,
) -> str:
    """A token with exactly these header and payload bytes, validly signed by ``key``."""
    raw_header = header if isinstance(header, bytes) else dumps(header or header_for(key))
    raw_payload = payload if isinstance(payload, bytes) else dumps(payload or claims())
    return sign_segments(key, b64(raw_header), b64(raw_payload))


def mint(key: SigningKey, **overrides: Any) -> str:
    """A valid token from ``key`` with claim overrides."""
    return forge(key, payload=claims(**overrides))


def split(token: str) -> tuple[str, str, bytes]:
    """Header segment, payload segment, decoded signature."""
    header, payload, signature = token.split(".")
    return header, payload, base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))


@dataclass
class Harness:
    """A verifier over one key ring, a manual clock, in-memory stores and its metrics."""

    keys: list[SigningKey]
    algorithms: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
    leeway_seconds: int = 30
    max_token_bytes: int = 8192
    cache_size: int = 100
    require_jti: bool = True
    max_lifetime_seconds: float = float("inf")
    clock: ManualClock = field(default_factory=lambda: ManualClock(NOW * 1000))
    metrics: Metrics = field(default_factory=Metrics)
    # Revocations through the app's local denylist (needs ``stores.events.start()``)
    # instead of the store itself.
    revocation_list: bool = False
    stores: MemoryStores = field(init=False)
    revocations: RevocationStore = field(init=False)
    verifier: JWTBearerVerifier = field(init=False)

    def __post_init__(self) -> None:
        self.stores = MemoryStores(self.clock)
        self.revocations = (
            RevocationList(
                store=self.stores.revocations, events=self.stores.events, clock=self.clock
            )
            if self.revocation_list
            else self.stores.revocations
        )
        issuer = IssuerKeys(
            issuer=ISSUER,
            audiences=frozenset({AUDIENCE}),
            algorithms=frozenset(self.algorithms),
            require_jti=self.require_jti,
            key_ring=KeyRing(self.keys),
            max_lifetime_seconds=self.max_lifetime_seconds,
        )
        self.verifier = JWTBearerVerifier(
            issuers=[issuer],
            revocations=self.revocations,
            clock=self.clock,
            leeway_seconds=self.leeway_seconds,
            max_token_bytes=self.max_token_bytes,
            cache_size=self.cache_size,
            metrics=self.metrics,
        )

    async def accept(self, token: str) -> Principal:
        """The principal, failing the test if the token is refused."""
        return await self.verifier.verify(token, CONTEXT)

    async def refusal(self, token: str) -> str:
        """The stable reason the token is refused; fails the test if it is accepted."""
        try:
            principal = await self.verifier.verify(token, CONTEXT)
        except AuthGateError as exc:
            return exc.reason
        raise AssertionError(f"token was accepted as {principal.subject!r}")

    def cache_lookups(self, result: str) -> float:
        """``authgate_cache_lookups_total{cache="jwt", result=...}``."""
        value = self.metrics.registry.get_sample_value(
            "authgate_cache_lookups_total", {"cache": "jwt", "result": result}
        )
        return value or 0.0
