"""Signing and verification keys: loading, thumbprint ``kid``, JWK rendering, signing.

Signing uses PyJWT; verification keys are PyJWT ``PyJWK`` objects or plain
``cryptography`` public keys paired with the one algorithm they may be used with.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

# Which JWK key types may carry which algorithms.
ALGORITHM_KEY_TYPES: Mapping[str, str] = {
    "ES256": "EC",
    "ES384": "EC",
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "EdDSA": "OKP",
}
_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384"}
MIN_RSA_BITS = 2048
# JWK members that only a private or symmetric key has: a verification key never carries them.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# ROCA (CVE-2017-15361): Infineon RSALib primes are k*M + (65537^a mod M) for a primorial M
# that always includes the primes below 168, so n mod p lies in the subgroup that 65537
# generates mod p for each of them. A random modulus passes all 38 tests with p ~ 4e-9.
_ROCA_PRIMES = tuple(p for p in range(3, 168) if all(p % q for q in range(2, int(p**0.5) + 1)))
_ROCA_SUBGROUPS = {p: frozenset(pow(65537, k, p) for k in range(p)) for p in _ROCA_PRIMES}


def has_roca_fingerprint(modulus: int) -> bool:
    """Whether an RSA modulus has the ROCA (CVE-2017-15361) structure: its key is weak."""
    return all(modulus % p in _ROCA_SUBGROUPS[p] for p in _ROCA_PRIMES)


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # immutable: made once, not per verify


def verify_p256_der(
    public_key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes
) -> None:
    """Verify an ECDSA P-256/SHA-256 signature in strict DER; raises ``InvalidSignature``.

    Only the one minimal DER encoding of ``(r, s)`` is accepted (no BER long-form lengths,
    padded integers or trailing bytes), checked by re-encoding, so exactly one byte string
    per ``(r, s)`` passes whatever the underlying library tolerates. ECDSA stays malleable:
    ``(r, n - s)`` verifies too, so nothing may be keyed on signature bytes.
    """
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise InvalidSignature("not a P-256 key")
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        raise InvalidSignature("signature is not DER") from None
    if encode_dss_signature(r, s) != signature:
        raise InvalidSignature("signature is not minimal DER")
    public_key.verify(signature, message, _ECDSA_SHA256)


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: PublicKey) -> dict[str, Any]:
    """The public JWK members of ``key`` (no ``kid``/``alg``/``use``)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return json.loads(ECAlgorithm.to_jwk(key))  # type: ignore[no-any-return]
    if isinstance(key, rsa.RSAPublicKey):
        return json.loads(RSAAlgorithm.to_jwk(key))  # type: ignore[no-any-return]
    return json.loads(OKPAlgorithm.to_jwk(key))  # type: ignore[no-any-return]


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {k: jwk[k] for k in required[str(jwk["kty"])]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The one JWS algorithm authgate signs with for this key type."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ES256"
        if isinstance(key.curve, ec.SECP384R1):
            return "ES384"
        raise ValueError(f"unsupported curve {key.curve.name}")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("RSA keys must be at least 2048 bits")
        return "RS256"
    return "EdDSA"


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key bound to exactly one algorithm."""

    kid: str
    alg: str
    key: Any  # PyJWT's prepared key object for ``alg``

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any], *, allowed: Iterable[str]) -> VerificationKey | None:
        """Parse one JWKS entry; ``None`` when it cannot serve any allowed algorithm.

        Refused: ``use`` other than ``sig``; ``key_ops`` without ``verify``; private or
        symmetric members; an ``alg`` or curve that does not fit; RSA moduli under 2048
        bits or with the ROCA fingerprint; anything PyJWT cannot load.
        """
        if jwk.get("use", "sig") != "sig":
            return None
        key_ops = jwk.get("key_ops")
        if key_ops is not None and (
            not isinstance(key_ops, list)
            or not all(isinstance(op, str) for op in key_ops)
            or "verify" not in key_ops
        ):
            return None
        if any(member in jwk for member in _PRIVATE_MEMBERS):
            return None
        kty = jwk.get("kty")
        alg = jwk.get("alg")
        candidates = [a for a in allowed if ALGORITHM_KEY_TYPES.get(a) == kty]
        if alg is not None:
            if alg not in candidates:
                return None
            candidates = [alg]
        if kty == "EC":
            candidates = [a for a in candidates if _CURVE_FOR_ALG.get(a) == jwk.get("crv")]
        if kty == "OKP" and jwk.get("crv") != "Ed25519":
            return None
        if len(candidates) != 1:
            # An EC key names its algorithm through its curve; an RSA key without ``alg``
            # could be used with several: take RS256 only if it is the sole RSA choice.
            return None
        try:
            pyjwk = jwt.PyJWK(dict(jwk), algorithm=candidates[0])
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            return None
        if isinstance(pyjwk.key, rsa.RSAPublicKey) and (
            pyjwk.key.key_size < MIN_RSA_BITS or has_roca_fingerprint(pyjwk.key.public_numbers().n)
        ):
            return None
        kid = jwk.get("kid")
        return cls(kid=kid if isinstance(kid, str) else "", alg=candidates[0], key=pyjwk.key)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key with its ``kid`` and algorithm."""

    kid: str
    alg: str
    private_key: PrivateKey

    @classmethod
    def from_private_key(cls, key: PrivateKey) -> SigningKey:
        """Wrap a key; ``kid`` is its RFC 7638 thumbprint."""
        return cls(
            kid=thumbprint(public_jwk(key.public_key())), alg=algorithm_for(key), private_key=key
        )

    @classmethod
    def generate(cls, alg: str = "ES256") -> SigningKey:
        """A fresh key (ephemeral development key, tests, rotation)."""
        key: PrivateKey
        if alg == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "RS256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"cannot generate keys for {alg}")
        return cls.from_private_key(key)

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        """Load an unencrypted PEM private key."""
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(
            key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        ):
            raise ValueError("unsupported private key type (use EC P-256, RSA or Ed25519)")  # noqa: TRY004
        return cls.from_private_key(key)

    @classmethod
    def from_file(cls, path: str | Path) -> SigningKey:
        """Load a PEM file (a Kubernetes secret mount); see :func:`key_file_problems`."""
        return cls.from_pem(Path(path).read_bytes())

    def to_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted (callers encrypt before storing)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_jwk(self) -> dict[str, Any]:
        """The JWKS entry for this key."""
        return {
            **public_jwk(self.private_key.public_key()),
            "kid": self.kid,
            "alg": self.alg,
            "use": "sig",
        }

    def verification_key(self) -> VerificationKey:
        """The matching public key for the verifier."""
        found = VerificationKey.from_jwk(self.public_jwk(), allowed=[self.alg])
        if found is None:  # pragma: no cover - our own JWK always parses
            raise ValueError("own key does not render as a usable JWK")
        return found

    def sign(self, claims: Mapping[str, Any], *, typ: str = "JWT") -> str:
        """A compact JWS over ``claims``."""
        return jwt.encode(
            dict(claims),
            self.private_key,
            algorithm=self.alg,
            headers={"kid": self.kid, "typ": typ},
        )


# A signing key file may be group-readable (a Kubernetes secret mounted with fsGroup), never
# readable by others, nor writable by anyone but its owner.
_KEY_FILE_FORBIDDEN_MODE = stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH | stat.S_IWGRP


def key_file_problems(path: str | Path) -> list[str]:
    """Everything wrong with a signing key file, in plain words with the fix; ``[]`` when
    :meth:`SigningKey.from_file` will load it.

    Checked: the file exists, is a regular file and readable; its mode lets no one but its
    owner (and its group, reading) at it; it holds one unencrypted PEM private key of a type
    authgate signs with.
    """
    file = Path(path)
    try:
        info = file.stat()
    except FileNotFoundError:
        return ["file not found; check the path, or mount the key file there"]
    except OSError as exc:
        return [f"cannot look at the file: {exc.strerror}"]
    if not stat.S_ISREG(info.st_mode):
        return ["not a regular file; give the path of the PEM file itself"]
    problems: list[str] = []
    mode = stat.S_IMODE(info.st_mode)
    if mode & _KEY_FILE_FORBIDDEN_MODE:
        problems.append(
            f"mode {mode:04o} lets other users read or change the private key; "
            "chmod 600 it (640 when a group must read it)"
        )
    try:
        data = file.read_bytes()
    except OSError as exc:
        problems.append(
            f"cannot read the file ({exc.strerror}); let authgate's user read it "
            "(chown it, or chmod 640 and a shared group)"
        )
        return problems
    problem = _pem_problem(data)
    if problem is not None:
        problems.append(problem)
    return problems


_KEY_TYPES = "use EC P-256 or P-384, RSA of 2048 bits or more, or Ed25519"


def _pem_problem(data: bytes) -> str | None:
    if b"-----BEGIN" not in data:
        return (
            "not a PEM file; give an unencrypted PEM private key "
            "(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)"
        )
    for marker, what in (
        (b"PUBLIC KEY-----", "a public key"),
        (b"CERTIFICATE-----", "a certificate"),
    ):
        if marker in data and b"PRIVATE KEY-----" not in data:
            return f"holds {what}, not a private key; give the PEM private key"
    if b"ENCRYPTED" in data:
        return "the private key is encrypted; give it unencrypted (the file is the secret)"
    try:
        SigningKey.from_pem(data)
    except TypeError:  # cryptography: encrypted without a password
        return "the private key is encrypted; give it unencrypted (the file is the secret)"
    except UnsupportedAlgorithm:
        return f"key type not supported; {_KEY_TYPES}"
    except ValueError as exc:
        detail = str(exc)
        if detail.startswith(("unsupported curve", "RSA keys must")):
            return f"{detail}; {_KEY_TYPES}"
        if detail.startswith("unsupported private key type"):
            return f"key type not supported; {_KEY_TYPES}"
        return "not a readable PEM private key; check the file is complete and not encrypted"
    return None


class KeyRing:
    """authgate's own keys: the first signs, all verify and are published."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        self.keys = tuple(keys)
        if not self.keys:
            raise ValueError("a key ring needs at least one key")
        self._verification = {k.kid: k.verification_key() for k in self.keys}

    @property
    def current(self) -> SigningKey:
        """The key that signs."""
        return self.keys[0]

    def verification_key(self, kid: str) -> VerificationKey | None:
        """The public key for ``kid``, if it is ours."""
        return self._verification.get(kid)

    def only_key(self) -> VerificationKey | None:
        """The single key, when there is exactly one (tokens without ``kid``)."""
        return next(iter(self._verification.values())) if len(self._verification) == 1 else None

    def jwks(self) -> dict[str, Any]:
        """The JWKS document."""
        return {"keys": [k.public_jwk() for k in self.keys]}
