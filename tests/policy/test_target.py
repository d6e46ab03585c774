"""Request-target canonicalisation: refuse what two parsers could read differently."""

from __future__ import annotations

import string
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.errors import InvalidTarget
from authgate.policy.target import canonicalize


@pytest.mark.parametrize(
    ("raw", "path", "query"),
    [
        ("/", "/", ""),
        ("/api/items", "/api/items", ""),
        ("/api/items/", "/api/items/", ""),
        ("/api/%61bc", "/api/abc", ""),
        ("/api/%7euser", "/api/~user", ""),
        ("/api/a%20b", "/api/a%20b", ""),
        ("/api/a%c3%a9", "/api/a%C3%A9", ""),
        ("/api?x=%2F&y=..", "/api", "x=%2F&y=.."),
        ("/api?", "/api", ""),
        ("/a.b/c..d/.e", "/a.b/c..d/.e", ""),
    ],
    ids=[
        "root",
        "plain",
        "trailing-slash",
        "unreserved-decoded",
        "tilde-decoded",
        "space-kept",
        "utf8-upper-hex",
        "query-as-sent",
        "empty-query",
        "dots-inside-names",
    ],
)
def test_canonical_forms(raw: str, path: str, query: str) -> None:
    """Accepted targets canonicalise to the documented form."""
    target = canonicalize(raw)
    assert (target.path, target.query) == (path, query)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "api",
        "*",
        "http://evil.test/admin",
        "//admin",
        "/public/../admin",
        "/public/./admin",
        "/public/..",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2e/admin",
        "/public%2fadmin",
        "/public%2Fadmin",
        "/public%5cadmin",
        "/public\\admin",
        "/admin;jsessionid=1",
        "/admin%3bx",
        "/admin%23frag",
        "/admin#frag",
        "/admin%00",
        "/admin%0a",
        "/admin%7f",
        "/a//b",
        "/a/%zz",
        "/a/%4",
        "/a/%c3",
        "/a/%ff%fe",
        "/a b",
        "/a\x00b",
        "/caf\u00e9",
        "/a?x=1#frag",
        "/a?x=%00",
        "/a?x=%g1",
        "/" + "a" * 9000,
    ],
    ids=lambda r: repr(r)[:40],
)
def test_ambiguous_targets_are_refused(raw: str) -> None:
    """Every ambiguous target raises InvalidTarget (400 invalid_target)."""
    with pytest.raises(InvalidTarget):
        canonicalize(raw)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=string.printable + "\x00\u00e9%", max_size=60))
def test_any_input_either_canonicalises_or_raises_invalid_target(raw: str) -> None:
    """Malformed input raises only the documented error."""
    try:
        target = canonicalize("/" + raw)
    except InvalidTarget:
        return
    # Accepted: the canonical form is a fixed point and holds no dot or empty segment.
    assert canonicalize(str(target)) == target
    segments = target.path.split("/")[1:]
    assert ".." not in segments and "." not in segments
    assert "" not in segments[:-1]
    decoded = unquote_to_bytes(target.path)
    assert b"\x00" not in decoded and b"\\" not in decoded and b";" not in decoded
    decoded.decode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=string.ascii_letters + string.digits + "-_~", min_size=1, max_size=8),
        min_size=1,
        max_size=5,
    )
)
def test_percent_encoding_unreserved_characters_does_not_change_the_target(
    segments: list[str],
) -> None:
    """Round trip: encoding unreserved characters yields the same canonical path."""
    plain = "/" + "/".join(segments)
    encoded = "/" + "/".join("".join(f"%{ord(c):02x}" for c in seg) for seg in segments)
    assert canonicalize(encoded).path == canonicalize(plain).path == plain


@pytest.mark.parametrize(
    "raw",
    ["/a/..?b", "/a/.?b", "/public/..?x=1", "/..?a", "/a/b/..?..", "/a/...?b", "/a/.?"],
    ids=repr,
)
def test_a_dot_segment_before_a_query_is_refused_or_kept_whole(raw: str) -> None:
    """Found by fuzzing (fuzz/fuzz_target.py, corpus file dot-segment-before-query): the fast
    path's look-ahead for "a dot with another character in its segment" ran on into the
    query, so `/a/..?b` was accepted with the path `/a/..` (which the app reads as `/`)."""
    path = raw.partition("?")[0]
    if path.rsplit("/", 1)[-1] in {".", ".."}:
        with pytest.raises(InvalidTarget):
            canonicalize(raw)
    else:
        assert canonicalize(raw).path == path
