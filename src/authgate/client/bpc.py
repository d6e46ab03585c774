"""Sign requests in the BPC v1.0 format, with helpers for aiohttp and httpx.

Unlike the published client, these helpers always sign the path *with* its query, exactly
as it goes on the wire, which is what authgate requires by default::

    signer = BPCSigner.from_pem(pair_id, secret, pem_bytes)
    headers = signer.headers("GET", "/api/items?page=2")

    async with aiohttp.ClientSession() as session:
        async with await signed_request(session, signer, "POST", "https://api/x", json={...}) as r:
            ...

    httpx.get("https://api/items?page=2", auth=httpx_auth(signer))
"""

from __future__ import annotations

import json as jsonlib
import time
import uuid
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.crypto.bpc_wire import (
    VERSION,
    b64url,
    body_hash,
    canonical_json,
    jwk_fingerprint,
    secret_hmac,
)

if TYPE_CHECKING:  # optional dependencies of the helpers
    import aiohttp
    import httpx


class BPCSigner:
    """Holds a pair's id, secret and device key; produces the four ``X-BPC-*`` headers."""

    def __init__(self, pair_id: str, secret: str, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise TypeError("BPC device keys are ECDSA P-256")
        self.pair_id = pair_id
        self._secret = secret
        self._key = private_key

    @classmethod
    def from_pem(cls, pair_id: str, secret: str, pem: bytes) -> BPCSigner:
        """From an unencrypted PKCS#8 PEM private key (what bpc-client stores)."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("BPC device keys are ECDSA P-256")
        return cls(pair_id, secret, key)

    @staticmethod
    def generate_key() -> tuple[ec.EllipticCurvePrivateKey, dict[str, str], str]:
        """A new device key, its public JWK (for ``/bpc/register``) and its fingerprint."""
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
        return key, jwk, jwk_fingerprint(jwk)

    def headers(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        nonce: str | None = None,
        timestamp_ms: int | None = None,
    ) -> dict[str, str]:
        """Headers for one request; ``path`` is the target as sent (path and query)."""
        nonce = nonce or str(uuid.uuid4())
        timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        payload = {
            "body_hash": body_hash(body),
            "method": method.upper(),
            "nonce": nonce,
            "pair_id": self.pair_id,
            "path": path,
            "secret_hmac": secret_hmac(self._secret, nonce, timestamp),
            "timestamp": timestamp,
            "version": VERSION,
        }
        data = canonical_json(payload)
        signature = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        return {
            "X-BPC-Pair-ID": self.pair_id,
            "X-BPC-Signed-Data": b64url(data),
            "X-BPC-Signature": b64url(signature),
            "X-BPC-Version": VERSION,
        }


def _encode_body(body: bytes | None, json: Any) -> tuple[bytes, dict[str, str]]:
    if json is not None:
        return jsonlib.dumps(json, separators=(",", ":")).encode(), {
            "Content-Type": "application/json"
        }
    return body or b"", {}


async def signed_request(
    session: aiohttp.ClientSession,
    signer: BPCSigner,
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> aiohttp.ClientResponse:
    """Send one signed request with aiohttp; the URL is sent exactly as written."""
    from yarl import URL

    target = URL(url, encoded=True)
    data, extra = _encode_body(body, json)
    signed = signer.headers(method, target.raw_path_qs, data)
    all_headers = {**extra, **(headers or {}), **signed}
    return await session.request(method, target, data=data or None, headers=all_headers, **kwargs)


def httpx_auth(signer: BPCSigner) -> httpx.Auth:
    """An ``httpx.Auth`` that signs each request (path and query as sent, body included)."""
    import httpx

    class _BPCAuth(httpx.Auth):
        requires_request_body = True

        def auth_flow(
            self, request: httpx.Request
        ) -> Generator[httpx.Request, httpx.Response, None]:
            target = request.url.raw_path.decode("ascii")
            request.headers.update(signer.headers(request.method, target, request.content))
            yield request

    return _BPCAuth()
