"""Decoded JOSE headers are kept by their segment (``crypto/jws.py``): every token of one
key shares its header. What is kept must never let a token through that parsing would
refuse, must not be changeable by a caller, and must stay bounded."""

from __future__ import annotations

import base64
import json

import pytest

from authgate.crypto import jws
from authgate.errors import TokenMalformed


def _segment(header: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()


def _token(header: dict[str, object]) -> str:
    return f"{_segment(header)}.e30.{'A' * 86}"


def test_a_kept_header_is_the_same_answer_and_read_only() -> None:
    token = _token({"alg": "ES256", "kid": "k1", "typ": "JWT"})
    first, second = jws.parse_compact_jws(token), jws.parse_compact_jws(token)
    assert (first.alg, first.kid) == (second.alg, second.kid) == ("ES256", "k1")
    assert first.header is second.header
    with pytest.raises(TypeError):
        first.header["alg"] = "none"  # type: ignore[index]


@pytest.mark.parametrize(
    "header",
    [{"alg": "ES256", "crit": ["exp"]}, {"kid": "k1"}, {"alg": "ES256", "kid": 7}],
    ids=["crit", "no-alg", "kid-not-a-string"],
)
def test_a_refused_header_is_refused_every_time_and_never_kept(header: dict[str, object]) -> None:
    token = _token(header)
    for _ in range(2):
        with pytest.raises(TokenMalformed):
            jws.parse_compact_jws(token)
    assert _segment(header) not in jws._HEADERS


def test_the_table_stays_bounded() -> None:
    for i in range(jws._HEADERS_KEPT * 3):
        jws.parse_compact_jws(_token({"alg": "ES256", "kid": f"k{i}"}))
        assert len(jws._HEADERS) <= jws._HEADERS_KEPT
