"""Unpadded base64url (RFC 4648 §5), decoded strictly: the one decoder of JWS segments and
BPC headers.

Strict means the alphabet only (no padding, whitespace or standard-alphabet characters), a
length that can be base64 (never 1 mod 4), and the canonical encoding: the last character
leaves no bits set beyond the data, so exactly one string decodes to given bytes (a second
spelling of a signature or of signed data could otherwise slip past a comparison or a
cache). Canonical form is read off the last character rather than by encoding again.
"""

from __future__ import annotations

import binascii
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
# With 2 characters in the last quantum its low 4 bits are spare, with 3 its low 2 bits:
# canonical when they are zero.
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")


class NotBase64url(ValueError):
    """Not unpadded base64url at all."""


class NotCanonical(NotBase64url):
    """Base64url, but not the one canonical spelling of its bytes."""


def decode(text: str) -> bytes:
    """The bytes of ``text`` (``""`` is ``b""``), or :class:`NotBase64url`."""
    rest = len(text) % 4
    if rest == 1 or _ALPHABET.fullmatch(text) is None:
        raise NotBase64url()
    if rest and text[-1] not in _CANONICAL_LAST[rest]:
        raise NotCanonical()
    try:
        return binascii.a2b_base64(
            (text.encode("ascii") + _PADDING[rest]).translate(_TO_STANDARD), strict_mode=True
        )
    except (binascii.Error, ValueError):  # pragma: no cover - the checks above admit none
        raise NotBase64url() from None
