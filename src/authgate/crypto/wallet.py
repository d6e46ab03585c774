"""Wallet signatures for pico sign-in: Ed25519, secp256k1 and ML-DSA-65.

The identity is the verified public key in one canonical encoding (Ed25519: 32 raw bytes;
secp256k1: the 33-byte compressed point, whichever form was sent; ML-DSA-65: the 1952 raw
bytes). Keys and signatures are strict: Ed25519 keys with a non-canonical ``y`` or of small
order are refused (with the identity point as key, ``R = identity, S = 0`` "verifies" any
message); secp256k1 signatures must be minimal DER with ``s <= n/2`` (low-S).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from authgate.errors import InvalidRequest, LoginRefused

try:  # ML-DSA arrived in cryptography 47; with an older one ML-DSA-65 sign-in is refused.
    from cryptography.hazmat.primitives.asymmetric import mldsa
except ImportError:  # pragma: no cover - the pinned test environment has it
    mldsa = None  # type: ignore[assignment]


# Ed25519: the field prime, and the y of every point of order 1, 2, 4 and 8 (both order-8
# y values; x's sign bit is ignored, so these cover all eight small-order points).
_P25519 = 2**255 - 19
_Y_ORDER_8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_SMALL_ORDER_Y = frozenset({0, 1, _P25519 - 1, _Y_ORDER_8, _P25519 - _Y_ORDER_8})
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _verify_ed25519(public_key: bytes, signature: bytes, message: bytes) -> bytes:
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    if y >= _P25519 or y in _SMALL_ORDER_Y:
        raise InvalidSignature("non-canonical or small-order Ed25519 key")
    ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    return public_key


def _verify_secp256k1(public_key: bytes, signature: bytes, message: bytes) -> bytes:
    if public_key[0] not in ((2, 3) if len(public_key) == 33 else (4,)):
        raise InvalidSignature("not a SEC1 compressed or uncompressed point")
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), public_key)
    r, s = decode_dss_signature(signature)
    if encode_dss_signature(r, s) != signature:
        raise InvalidSignature("signature is not minimal DER")
    if not 0 < s <= _SECP256K1_N // 2:
        raise InvalidSignature("high-S signature")  # (r, n - s) is the same signature
    point.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    return point.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )


def _verify_mldsa65(public_key: bytes, signature: bytes, message: bytes) -> bytes:
    if mldsa is None:  # pragma: no cover - see the import
        raise UnsupportedAlgorithm("ML-DSA-65 needs cryptography >= 47")
    mldsa.MLDSA65PublicKey.from_public_bytes(public_key).verify(signature, message)
    return public_key


_VERIFIERS: Mapping[str, Callable[[bytes, bytes, bytes], bytes]] = {
    "Ed25519": _verify_ed25519,
    "secp256k1": _verify_secp256k1,
    "ML-DSA-65": _verify_mldsa65,
}


def wallet_identity(algorithm: str, public_key: bytes, signature: bytes, message: bytes) -> str:
    """The identity (canonical key hex) once ``signature`` verifies; else 401."""
    try:
        return _VERIFIERS[algorithm](public_key, signature, message).hex()
    except UnsupportedAlgorithm:
        raise InvalidRequest(f"algorithm: {algorithm} is not available on this server") from None
    except (InvalidSignature, ValueError) as exc:
        raise LoginRefused("wallet signature does not verify", detail=type(exc).__name__) from None
