"""Console session cookies and CSRF tokens (``web/console/session.py``)."""

from __future__ import annotations

import base64

import pytest

from authgate.errors import CSRFRefused
from authgate.web.console.session import ANONYMOUS_TTL_SECONDS, SessionSigner, session_key
from tests.support import make_settings

KEY = b"k" * 32


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_cookie_reads_back_until_it_expires() -> None:
    """The session round-trips; past its expiry it is no session."""
    clock = Clock()
    signer = SessionSigner(KEY, ttl_seconds=600, now=clock)
    session, cookie = signer.issue(subject="alice", via="password")
    assert signer.read(cookie) == session
    assert session.expires_at == int(clock.now) + 600
    clock.now += 600
    assert signer.read(cookie) is None


def test_an_anonymous_session_lives_briefly_and_a_token_bounds_a_session() -> None:
    """Before sign-in: a short session; a token's exp caps the session's expiry."""
    clock = Clock()
    signer = SessionSigner(KEY, ttl_seconds=3600, now=clock)
    anonymous, _ = signer.issue()
    assert not anonymous.signed_in
    assert anonymous.expires_at == int(clock.now) + ANONYMOUS_TTL_SECONDS
    bounded, _ = signer.issue(subject="t", via="token", jti="j", not_after=int(clock.now) + 5)
    assert bounded.expires_at == int(clock.now) + 5


def test_every_one_byte_change_of_a_cookie_is_refused() -> None:
    """Flip any character of the cookie: never a session."""
    signer = SessionSigner(KEY, ttl_seconds=600)
    _, cookie = signer.issue(subject="alice", via="password")
    for i, char in enumerate(cookie):
        forged = cookie[:i] + ("A" if char != "A" else "B") + cookie[i + 1 :]
        assert signer.read(forged) is None or forged == cookie, i


@pytest.mark.parametrize(
    "value",
    [None, "", ".", "x" * 5000, "a.b.c", "!!!.AAAA", base64.b64encode(b"{}").decode() + ".x"],
    ids=["none", "empty", "dot", "too-long", "three-parts", "not-base64", "bad-mac"],
)
def test_malformed_cookies_are_no_session(value: str | None) -> None:
    """Whatever the browser sends that authgate did not sign: ``None``, never an error."""
    assert SessionSigner(KEY, ttl_seconds=600).read(value) is None


def test_another_key_does_not_read_the_cookie() -> None:
    """A cookie of one key is no session under another."""
    _, cookie = SessionSigner(KEY, ttl_seconds=600).issue(subject="alice", via="password")
    assert SessionSigner(b"j" * 32, ttl_seconds=600).read(cookie) is None


def test_the_csrf_token_is_bound_to_the_session() -> None:
    """Its own session's token passes; another session's, a changed or an empty one raise."""
    signer = SessionSigner(KEY, ttl_seconds=600)
    one, _ = signer.issue(subject="alice", via="password")
    two, _ = signer.issue(subject="alice", via="password")
    signer.check_csrf(one, signer.csrf(one))
    for bad in (signer.csrf(two), signer.csrf(one)[:-1], "", signer.csrf(one) + "A"):
        with pytest.raises(CSRFRefused):
            signer.check_csrf(one, bad)
    with pytest.raises(CSRFRefused):
        signer.check_csrf(None, signer.csrf(one))


def test_the_key_is_derived_from_the_kek_so_replicas_share_it() -> None:
    """The same KEK gives the same key (another replica reads the cookie); none: random."""
    kek = base64.b64encode(b"\x01" * 32).decode()
    settings = make_settings(secrets={"key_encryption_key": kek})
    assert session_key(settings) == session_key(settings)
    assert session_key(make_settings()) != session_key(make_settings())
    assert session_key(settings) != b"\x01" * 32
