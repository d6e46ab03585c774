"""The JWS/JWT parser and the claims checks: ``authgate.crypto.jws.parse_compact_jws`` and
``JWTBearerVerifier.verify`` (memory stores, a manual clock, one Ed25519 key).

The first byte picks the entry point (the seed files start with ``0``, ``1`` or ``2``):

* ``0``: the rest is the bearer token as sent, to ``parse_compact_jws``;
* ``1``: the rest is the token's payload (the claims), in a token validly signed by the
  verifier's key, to ``JWTBearerVerifier.verify``;
* ``2``: the rest is the token's header, with valid claims, validly signed, to ``verify``.

Contract: ``parse_compact_jws`` returns a :class:`CompactJWS` or raises
:class:`TokenMalformed`; ``verify`` returns a :class:`Principal` or raises a 4xx
:class:`AuthGateError` leaf (the ``Token*`` leaves, 401), never another exception.
Properties: a parsed token's segments re-encode to exactly the token; an accepted
principal names the configured issuer and a subject without control characters.
"""

from __future__ import annotations

import asyncio
import base64
import json

from cryptography.hazmat.primitives.asymmetric import ed25519
from harness import check_refusal, instrumented, main, text

with instrumented():
    from authgate.crypto.jws import parse_compact_jws
    from authgate.crypto.keys import KeyRing, SigningKey
    from authgate.errors import AuthGateError, TokenMalformed
    from authgate.models import Principal, RequestContext
    from authgate.stores.base import ManualClock
    from authgate.stores.memory import MemoryStores
    from authgate.verifiers.jwt_bearer import IssuerKeys, JWTBearerVerifier

ISSUER = "https://issuer.test"
AUDIENCE = "fuzz"
NOW = 1_700_000_000
PRIVATE = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY = SigningKey.from_private_key(PRIVATE)
CONTEXT = RequestContext(
    method="GET", path="/", query="", host="app.test", scheme="https", headers={}, client_ip="::1"
)
CLOCK = ManualClock(NOW * 1000)
STORES = MemoryStores(CLOCK)
VERIFIER = JWTBearerVerifier(
    issuers=[
        IssuerKeys(
            issuer=ISSUER,
            audiences=frozenset({AUDIENCE}),
            algorithms=frozenset({"EdDSA", "ES256"}),
            require_jti=False,
            key_ring=KeyRing([KEY]),
            max_lifetime_seconds=86_400,
        )
    ],
    revocations=STORES.revocations,
    clock=CLOCK,
    leeway_seconds=30,
    max_token_bytes=16_384,
    cache_size=0,
)
LOOP = asyncio.new_event_loop()
HEADER = {"alg": "EdDSA", "kid": KEY.kid, "typ": "JWT"}
CLAIMS = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": NOW, "exp": NOW + 300}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed(header: bytes, payload: bytes) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    signature = PRIVATE.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def _verify(token: str) -> None:
    try:
        principal = LOOP.run_until_complete(VERIFIER.verify(token, CONTEXT))
    except AuthGateError as exc:
        check_refusal(exc)
        return
    assert isinstance(principal, Principal), principal
    assert principal.issuer == ISSUER, principal
    assert principal.subject, principal
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in principal.subject), principal
    assert all(isinstance(s, str) and s for s in principal.scopes), principal


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 1:
        _verify(signed(json.dumps(HEADER).encode(), rest))
        return
    if mode == 2:
        _verify(signed(rest, json.dumps(CLAIMS).encode()))
        return
    token = text(rest)
    try:
        jws = parse_compact_jws(token)
    except TokenMalformed:
        return
    header, payload, signature = token.split(".")
    assert jws.signing_input == f"{header}.{payload}".encode(), token
    assert b64url(jws.payload) == payload and b64url(jws.signature) == signature, token
    assert isinstance(jws.alg, str) and isinstance(jws.kid, str), jws


if __name__ == "__main__":
    main(test_one_input)
