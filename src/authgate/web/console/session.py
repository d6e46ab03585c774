"""Console sessions: a signed cookie with an expiry, and the CSRF token bound to it.

The cookie holds ``{sid, sub, via, jti, exp}`` as base64url JSON and an HMAC-SHA256 over it
with a key derived from ``secrets.key_encryption_key`` (so every worker and replica reads
every other's cookies), or a random key per process when none is configured (development:
sessions end with the process). ``sid`` is random per session; a sign-in always starts a new
one (no session fixation). Before sign-in the browser holds an anonymous session (``sub``
empty) so that the sign-in form carries a CSRF token too.

The CSRF token is a synchroniser token derived from the session, ``HMAC(key, "csrf" | sid)``:
every form carries it and every POST is refused (403 ``csrf_refused``) unless it matches, and
unless the request's ``Origin`` (when sent) is the console's own and ``Sec-Fetch-Site`` (when
sent) is ``same-origin``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from authgate.config.model import Settings
from authgate.crypto.envelope import parse_kek
from authgate.errors import CSRFRefused

COOKIE = "authgate_console"
MAX_COOKIE_CHARS = 4096
ANONYMOUS_TTL_SECONDS = 1800


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """One console session; ``subject`` is empty before sign-in."""

    sid: str
    subject: str
    via: str  # "password", "token" or "" (anonymous)
    jti: str
    expires_at: int

    @property
    def signed_in(self) -> bool:
        """Whether an operator signed in."""
        return bool(self.subject)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_key(settings: Settings) -> bytes:
    """The cookie key: derived from the KEK (shared by replicas), else random per process."""
    kek = settings.secrets.key_encryption_key
    if kek is None:
        return secrets.token_bytes(32)
    root = parse_kek(kek.get_secret_value())
    return hmac.new(root, b"authgate/console-session/v1", hashlib.sha256).digest()


class SessionSigner:
    """Issues and reads console session cookies; derives and checks CSRF tokens."""

    def __init__(
        self, key: bytes, *, ttl_seconds: int, now: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self._ttl = ttl_seconds
        self._now = now

    def issue(
        self, *, subject: str = "", via: str = "", jti: str = "", not_after: int | None = None
    ) -> tuple[ConsoleSession, str]:
        """A new session (new ``sid``) and its cookie value."""
        ttl = self._ttl if subject else ANONYMOUS_TTL_SECONDS
        expires = int(self._now()) + ttl
        if not_after is not None:
            expires = min(expires, not_after)
        session = ConsoleSession(secrets.token_urlsafe(18), subject, via, jti, expires)
        body = json.dumps(
            {"sid": session.sid, "sub": subject, "via": via, "jti": jti, "exp": expires},
            separators=(",", ":"),
        ).encode()
        return session, f"{_b64(body)}.{self._mac(body)}"

    def read(self, value: str | None) -> ConsoleSession | None:
        """The session in a cookie value, or ``None`` when absent, forged or expired."""
        if not value or len(value) > MAX_COOKIE_CHARS or value.count(".") != 1:
            return None
        body_text, mac = value.split(".")
        try:
            body = _unb64(body_text)
        except (binascii.Error, ValueError):
            return None
        if _b64(body) != body_text:  # one spelling per cookie: no malleable padding bits
            return None
        expected = self._mac(body)
        if len(mac) != len(expected) or not hmac.compare_digest(mac, expected):
            return None
        try:
            data = json.loads(body)
            session = ConsoleSession(
                str(data["sid"]),
                str(data["sub"]),
                str(data["via"]),
                str(data["jti"]),
                int(data["exp"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > self._now() else None

    def csrf(self, session: ConsoleSession) -> str:
        """The session's CSRF token."""
        return _b64(hmac.new(self._key, b"csrf|" + session.sid.encode(), hashlib.sha256).digest())

    def check_csrf(self, session: ConsoleSession | None, token: str) -> None:
        """Raise :class:`CSRFRefused` unless ``token`` is this session's CSRF token."""
        if session is None:
            raise CSRFRefused("console: no session (reload the page)")
        expected = self.csrf(session)
        if len(token) != len(expected) or not hmac.compare_digest(token, expected):
            raise CSRFRefused("console: the form's CSRF token is missing or wrong")

    def _mac(self, body: bytes) -> str:
        return _b64(hmac.new(self._key, b"session|" + body, hashlib.sha256).digest())
