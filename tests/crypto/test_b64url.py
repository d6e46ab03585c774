"""The strict base64url decoder against the rule it replaced: decode with padding, then
encode again and compare. Seeded fuzz over valid, non-canonical and foreign spellings."""

from __future__ import annotations

import base64
import binascii
import random
import re

import pytest

from authgate.crypto import b64url

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def reference(text: str) -> bytes | str:
    if re.fullmatch(r"[A-Za-z0-9_-]*", text) is None or len(text) % 4 == 1:
        return "not base64url"
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return "not base64url"
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        return "not canonical"
    return data


def ours(text: str) -> bytes | str:
    try:
        return b64url.decode(text)
    except b64url.NotCanonical:
        return "not canonical"
    except b64url.NotBase64url:
        return "not base64url"


def test_the_decoder_agrees_with_decode_then_encode_again() -> None:
    rng = random.Random(20261204)
    foreign = "=+/ \n\té\x00."
    for _ in range(60_000):
        text = "".join(
            rng.choice(foreign) if rng.random() < 0.04 else rng.choice(ALPHABET)
            for _ in range(rng.randint(0, 14))
        )
        assert ours(text) == reference(text), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", b""), ("AA", b"\x00"), ("AB", "not canonical"), ("AAA", b"\x00\x00"),
     ("AAB", "not canonical"), ("A", "not base64url"), ("AA==", "not base64url"),
     ("+/", "not base64url"), ("_-8", b"\xff\xef")],
)  # fmt: skip
def test_edges(text: str, expected: bytes | str) -> None:
    assert ours(text) == reference(text) == expected
