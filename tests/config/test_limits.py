"""Limits that must agree across sections (issue 13): the HTTP parser's header cap holds the
largest token, and token lifetimes are bounded per issuer."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.support import make_settings


def test_max_token_bytes_above_the_header_cap_is_refused_naming_both_keys() -> None:
    with pytest.raises(ValidationError) as info:
        make_settings(jwt={"max_token_bytes": 16384})
    message = str(info.value)
    assert "server.max_header_bytes" in message
    assert "jwt.max_token_bytes" in message


def test_a_header_cap_that_holds_the_token_is_accepted() -> None:
    settings = make_settings(jwt={"max_token_bytes": 16384}, server={"max_header_bytes": 16448})
    assert settings.jwt.max_token_bytes == 16384
    make_settings()  # the defaults agree
