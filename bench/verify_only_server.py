"""A reference, not a baseline of any target: aiohttp whose one handler checks the bearer
token's ES256 signature and does nothing else.

Run by ``bench/run.py`` as ``python bench/verify_only_server.py PORT KEY_PEM``. No claims,
no policy, no replay or revocation store, no identity headers, no access log: the bearer
token's signature (``cryptography``, the same call authgate makes) decides 200 or 401. Its
ratio to "the limit" (1 / (t_bare + t_verify)) shows how much of the limit any aiohttp
handler reaches once a verify sits inside a request, where the verify runs with caches
that the request's own work has filled (``bench/inproc.py --scenarios cold`` measures the
same in-process).
"""

from __future__ import annotations

import base64
import binascii
import sys
from pathlib import Path

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def verify_only_app(public_key: ec.EllipticCurvePublicKey) -> web.Application:
    """200 when ``Authorization: Bearer <JWS>`` carries a valid ES256 signature, else 401."""
    ecdsa = ec.ECDSA(hashes.SHA256())

    async def verify(request: web.Request) -> web.Response:
        value = request.headers.get("Authorization", "")
        signing_input, _, signature = value.removeprefix("Bearer ").rpartition(".")
        try:
            raw = base64.urlsafe_b64decode(signature + "==")
            if len(raw) != 64:
                return web.Response(status=401)
            der = encode_dss_signature(
                int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
            )
            public_key.verify(der, signing_input.encode(), ecdsa)
        except (InvalidSignature, binascii.Error, ValueError):
            return web.Response(status=401)
        return web.Response(status=200)

    async def ready(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get("/healthz", ready)  # bench/procs.Server's readiness check
    app.router.add_route("*", "/{tail:.*}", verify)
    return app


def load_public_key(pem: Path) -> ec.EllipticCurvePublicKey:
    """The public half of the bench's ES256 signing key."""
    key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{pem}: not an EC private key")
    return key.public_key()


def main() -> None:
    port, pem = int(sys.argv[1]), Path(sys.argv[2])
    app = verify_only_app(load_public_key(pem))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
