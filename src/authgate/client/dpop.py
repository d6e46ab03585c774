"""Build DPoP proofs (RFC 9449) for authgate's ``/token`` and for DPoP-bound calls.

::

    key = DPoPKey.generate()
    token = ...  # POST /token with headers={"DPoP": key.proof("POST", token_url)}
    headers = key.headers("GET", "https://api.example/items", token["access_token"])

The private key never leaves the client: each request carries a fresh proof signed with
it, naming the method, the URL (without query and fragment) and the token's hash. When a
server answers ``use_dpop_nonce``, retry with the nonce of its ``DPoP-Nonce`` header.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authgate.crypto.keys import PrivateKey, algorithm_for, b64url, public_jwk, thumbprint

_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}


class DPoPKey:
    """A client's DPoP key pair: makes proofs and names its thumbprint (``jkt``)."""

    def __init__(self, private_key: PrivateKey, *, alg: str | None = None) -> None:
        self.private_key = private_key
        self.alg = alg or algorithm_for(private_key)
        self.jwk: dict[str, Any] = public_jwk(private_key.public_key())

    @classmethod
    def generate(cls, alg: str = "ES256") -> DPoPKey:
        """A fresh key for ``alg`` (ES256, ES384, EdDSA, RS256 or PS256)."""
        key: PrivateKey
        if alg in _CURVES:
            key = ec.generate_private_key(_CURVES[alg]())
        elif alg == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        elif alg in ("RS256", "PS256"):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(f"no DPoP key for algorithm {alg!r}")
        return cls(key, alg=alg)

    @property
    def jkt(self) -> str:
        """The RFC 7638 thumbprint a bound token names in ``cnf.jkt``."""
        return thumbprint(self.jwk)

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        iat: int | None = None,
        jti: str | None = None,
    ) -> str:
        """A proof for one request (``url`` may carry a query: it is dropped)."""
        parts = urlsplit(url)
        claims: dict[str, Any] = {
            "jti": jti or secrets.token_urlsafe(18),
            "htm": method.upper(),
            "htu": urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", "")),
            "iat": int(time.time()) if iat is None else iat,
        }
        if access_token is not None:
            claims["ath"] = b64url(hashlib.sha256(access_token.encode("ascii")).digest())
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode(
            claims,
            self.private_key,
            algorithm=self.alg,
            headers={"typ": "dpop+jwt", "jwk": self.jwk},
        )

    def headers(
        self, method: str, url: str, access_token: str, *, nonce: str | None = None
    ) -> dict[str, str]:
        """``Authorization: DPoP <token>`` and a fresh ``DPoP`` proof for one request."""
        return {
            "Authorization": f"DPoP {access_token}",
            "DPoP": self.proof(method, url, access_token=access_token, nonce=nonce),
        }
