"""Envelope encryption of secrets at rest (BPC pair secrets, generated signing keys).

Each secret gets its own random 256-bit data key; the data key is wrapped with the
key-encryption key (KEK) from configuration, and both layers are AES-256-GCM. The record's
id is bound as associated data, so a ciphertext copied onto another record does not
decrypt. Rotating the KEK re-wraps data keys without touching the secrets.

Format (JSON-safe dict): ``{"v": 1, "kek": <kek id>, "wrapped": b64, "nonce": b64,
"ct": b64}``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


class EnvelopeError(Exception):
    """A sealed value could not be opened (wrong KEK, tampering, or malformed)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, field: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"sealed value field {field!r} is missing")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise EnvelopeError(f"sealed value field {field!r} is not base64") from None


def parse_kek(material: str) -> bytes:
    """A KEK from config: 32 bytes as base64 (``openssl rand -base64 32``)."""
    try:
        key = base64.b64decode(material.strip(), validate=True)
    except ValueError:
        raise ValueError("key-encryption key must be base64") from None
    if len(key) != 32:
        raise ValueError("key-encryption key must be 32 bytes (base64 of 32 random bytes)")
    return key


class Envelope:
    """Seals and opens secrets under one KEK (plus older KEKs for opening only)."""

    def __init__(self, kek: bytes, *, previous: tuple[bytes, ...] = ()) -> None:
        if len(kek) != 32 or any(len(k) != 32 for k in previous):
            raise ValueError("key-encryption keys must be 32 bytes")
        self._kek = kek
        self._keks = {self.kek_id(k): k for k in (kek, *previous)}

    @staticmethod
    def kek_id(kek: bytes) -> str:
        """A public identifier of a KEK (not reversible)."""
        return hashlib.sha256(b"authgate-kek-id" + kek).hexdigest()[:16]

    @classmethod
    def ephemeral(cls) -> Envelope:
        """A random KEK for development mode: sealed values do not survive a restart."""
        return cls(os.urandom(32))

    def seal(self, plaintext: bytes, *, context: str) -> dict[str, Any]:
        """Encrypt ``plaintext`` bound to ``context`` (the record id)."""
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE_BYTES)
        ct = AESGCM(data_key).encrypt(nonce, plaintext, context.encode())
        wrap_nonce = os.urandom(_NONCE_BYTES)
        wrapped = AESGCM(self._kek).encrypt(wrap_nonce, data_key, context.encode())
        return {
            "v": 1,
            "kek": self.kek_id(self._kek),
            "wrapped": _b64(wrap_nonce + wrapped),
            "nonce": _b64(nonce),
            "ct": _b64(ct),
        }

    def open(self, sealed: Mapping[str, Any], *, context: str) -> bytes:
        """Decrypt a value sealed for ``context``; raises :class:`EnvelopeError`."""
        if sealed.get("v") != 1:
            raise EnvelopeError("unknown sealed value version")
        kek = self._keks.get(str(sealed.get("kek")))
        if kek is None:
            raise EnvelopeError("sealed under a key-encryption key that is not configured")
        wrapped = _unb64(sealed.get("wrapped"), "wrapped")
        nonce = _unb64(sealed.get("nonce"), "nonce")
        ct = _unb64(sealed.get("ct"), "ct")
        if len(wrapped) <= _NONCE_BYTES or len(nonce) != _NONCE_BYTES:
            raise EnvelopeError("sealed value is truncated")
        try:
            data_key = AESGCM(kek).decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], context.encode()
            )
            return AESGCM(data_key).decrypt(nonce, ct, context.encode())
        except InvalidTag:
            raise EnvelopeError("sealed value does not open (tampered or wrong context)") from None
