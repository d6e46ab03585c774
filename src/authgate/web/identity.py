"""Identity headers: what authgate tells the upstream about the caller.

A client must never be able to set one. :class:`IdentityNames` alone decides which request
header names count as identity headers, *in any spelling*: CGI-style upstreams (WSGI,
PHP-FPM, Rack, nginx's ``$http_*``, ...) upper-case a header name and turn every character
but letters and digits into ``_``, so ``X_Authgate_Subject``, ``X.Authgate.Subject`` and
``X~Authgate~Subject`` all reach such an app as ``X-Authgate-Subject``. What each door does
with one:

* the forward-auth doors (``/auth``, ``/auth/forward``, ``/auth/envoy``) refuse the request
  (400 ``forged_identity_header``, naming the header): authgate cannot remove a header the
  proxy forwards to the app;
* the sidecar removes them before proxying (it writes the upstream request itself), along
  with other gateways' identity headers (``proxy.foreign_identity_headers``: ``X-Remote-User``,
  ``X-Forwarded-User``, ...).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from multidict import CIMultiDict

from authgate.cache import BoundedCache
from authgate.config.model import IdentitySettings
from authgate.errors import ForgedIdentityHeader
from authgate.policy.rules import Decision
from authgate.tokens.keys import KeyManager

_WORD = re.compile(r"[a-z0-9]+")
# What IdentityNames remembers of a (lower-case) header name.
_PLAIN, _FOREIGN, _OWN = 0, 1, 2
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
_PLAIN_HEADER_VALUE = re.compile(r"[\x21-\x24\x26-\x7e]*")

# What is kept per principal: the identity headers, and the forward-auth 200's header block
# (those and Cache-Control) serialised.
_PerPrincipal = tuple[dict[str, str], bytes]


def header_safe(value: str) -> str:
    """Percent-encode anything outside visible ASCII so it can travel in a header."""
    if _PLAIN_HEADER_VALUE.fullmatch(value) is not None:
        return value  # the common case: nothing to encode
    return quote(value, safe=_HEADER_SAFE)


def header_words(name: str) -> tuple[str, ...]:
    """The runs of letters and digits of ``name``, case-folded: what a CGI-style upstream
    keeps of a header name (it turns everything between them into ``_``)."""
    return tuple(_WORD.findall(name.lower()))


# The longest header name whose answer is remembered (IdentityNames, the sidecar's relay
# table): names repeat, and ordinary ones are short. A client's long names (up to aiohttp's
# field limit, 8 KB) are answered every time, never kept, so neither table can be filled
# with 4,096 long strings.
REMEMBERED_NAME_LENGTH = 64


class IdentityNames:
    """Which request header names are identity headers, in any spelling.

    SECURITY: header-name aliasing (cf. Django CVE-2015-0219, Traefik's
    ``aliasHeadersStrategy``). A name is authgate's own when its letters and digits,
    case-folded, spell a configured identity header (``X_Authgate_Subject``,
    ``x.authgate.subject``, ``XAuthgateSubject``), or when its words (:func:`header_words`)
    begin with the words of a configured prefix (``X-Authgate-`` covers ``X-Authgate-Role``,
    ``X.Authgate.Role``, ``x_authgate_anything``, but not ``X-Authgateway-Id``). Every name
    a CGI-style mapping turns into one of those is therefore covered. Other gateways'
    names (``foreign``) are compared by their letters and digits too.

    Answers are remembered per name (names repeat: a proxy sends the same few), so a check
    on the request path is one dictionary read; names longer than
    :data:`REMEMBERED_NAME_LENGTH` are worked out each time.
    """

    def __init__(
        self, names: Iterable[str], *, prefixes: Iterable[str] = (), foreign: Iterable[str] = ()
    ) -> None:
        self._own: frozenset[str]
        self._foreign: frozenset[str]
        self._prefixes: tuple[tuple[str, ...], ...]
        self._known: BoundedCache[str, int]
        self.reconfigure(names, prefixes=prefixes, foreign=foreign)

    def reconfigure(
        self, names: Iterable[str], *, prefixes: Iterable[str] = (), foreign: Iterable[str] = ()
    ) -> None:
        """Answer for these names from now on (a config reload): every part is built
        first, then all are replaced in one statement, with a fresh memory of answers, so
        no check ever sees old names with new prefixes. The doors keep calling
        :meth:`check` on this same object: a reload adds no indirection to their path."""
        own = frozenset("".join(header_words(n)) for n in names)
        other = frozenset("".join(header_words(n)) for n in foreign) - own
        words = tuple(w for p in prefixes if (w := header_words(p)))
        self._own, self._foreign, self._prefixes, self._known = (
            own,
            other,
            words,
            BoundedCache(4096),
        )

    @classmethod
    def from_settings(
        cls, settings: IdentitySettings, *, foreign: Iterable[str] = ()
    ) -> IdentityNames:
        """authgate's configured identity headers and prefixes, and ``foreign``."""
        return cls(settings.header_names(), prefixes=settings.strip_prefixes, foreign=foreign)

    def forged(self, name: str) -> bool:
        """Whether ``name`` spells one of authgate's own identity headers (or falls under an
        identity prefix): a client's copy is refused at the forward-auth doors."""
        kind = self._known.get(name)
        if kind is None:
            kind = self._classify(name)
        return kind == _OWN

    def stripped(self, name: str) -> bool:
        """Whether the sidecar removes a client header of this name: authgate's own identity
        headers and other gateways', in any spelling."""
        kind = self._known.get(name)
        if kind is None:
            kind = self._classify(name)
        return kind != _PLAIN

    def check(self, name: str) -> None:
        """Raise :class:`ForgedIdentityHeader`, naming the header, if :meth:`forged` (the
        forward-auth doors call it once per request header: one dictionary read)."""
        kind = self._known.get(name)
        if kind is None:
            kind = self._classify(name)
        if kind == _OWN:
            raise ForgedIdentityHeader(
                f"request header {name[:64]!r} spells an identity header only authgate sets"
            )

    def _classify(self, name: str) -> int:
        words = header_words(name)
        key = "".join(words)
        if key in self._own or any(words[: len(p)] == p for p in self._prefixes):
            kind = _OWN
        elif key in self._foreign:
            kind = _FOREIGN
        else:
            kind = _PLAIN
        if len(name) <= REMEMBERED_NAME_LENGTH:
            self._known.put(name, kind)
        return kind


class IdentityHeaders:
    """Builds identity headers for a decision and strips client copies."""

    def __init__(
        self,
        settings: IdentitySettings,
        *,
        key_ring: KeyManager,
        issuer: str,
        foreign: Iterable[str] = (),
    ) -> None:
        self._s = settings
        self._key_ring = key_ring
        self._issuer = issuer
        self.names = IdentityNames.from_settings(settings, foreign=foreign)
        # Headers depend only on the principal (unless an identity JWT is minted per
        # request): build them once per principal, with the forward-auth response block.
        self._cache: BoundedCache[tuple[Any, ...], _PerPrincipal] = BoundedCache(4096)
        # The sidecar's answer per (lower-case client header name, from a trusted peer):
        # whether it never reaches the upstream (web/proxy.py). It reads these names, so a
        # reload forgets it with them.
        self.never_relayed: BoundedCache[tuple[str, bool], bool] = BoundedCache(4096)

    def reconfigure(self, settings: IdentitySettings, *, foreign: Iterable[str] = ()) -> None:
        """Set and refuse the headers of ``settings`` from now on (a config reload).

        Nothing here awaits, so no request sees half of it: the settings, a fresh
        per-principal cache and a fresh memory of the sidecar's relay answers are replaced
        together, then the names
        (:meth:`IdentityNames.reconfigure`). The doors' checks and the forward-auth
        handlers keep this object, so their path is unchanged.
        """
        self._s, self._cache, self.never_relayed = settings, BoundedCache(4096), BoundedCache(4096)
        self.names.reconfigure(
            settings.header_names(), prefixes=settings.strip_prefixes, foreign=foreign
        )

    @property
    def per_request(self) -> bool:
        """Whether the headers differ on every request (an identity JWT is minted)."""
        return self._s.identity_jwt.enabled

    def is_identity(self, name: str) -> bool:
        """Whether a client header of this name never reaches the upstream
        (:meth:`IdentityNames.stripped`)."""
        return self.names.stripped(name)

    def strip(self, headers: CIMultiDict[str]) -> None:
        """Remove every client-supplied identity header, in place."""
        for name in {k for k in headers if self.names.stripped(k)}:
            del headers[name]

    def for_decision(self, decision: Decision) -> Mapping[str, str]:
        """The headers to set for ``decision`` (empty values are left out)."""
        if self._s.identity_jwt.enabled:
            return self._build(decision)  # a fresh identity JWT each time
        return self._per_principal(decision)[0]

    def response_headers(self, decision: Decision) -> CIMultiDict[str]:
        """A forward-auth 200's headers: :meth:`for_decision` and ``Cache-Control:
        no-store`` (the doors write :meth:`response_bytes`, the same serialised)."""
        if self._s.identity_jwt.enabled:
            return _response_block(self._build(decision))
        return _response_block(self._per_principal(decision)[0])

    def response_bytes(self, decision: Decision) -> bytes:
        """:meth:`response_headers` serialised as HTTP/1.1 header lines (each ending in
        CRLF), as the forward-auth doors' 200 writes them (``web/forward_auth.py``)."""
        if self._s.identity_jwt.enabled:
            return _serialized_block(self._build(decision))
        return self._per_principal(decision)[1]

    def _per_principal(self, decision: Decision) -> _PerPrincipal:
        p = decision.principal
        key = (p.subject, p.credential_type, p.scopes, p.credential_id, p.issuer)
        cached = self._cache.get(key)
        if cached is None:
            headers = self._build(decision)
            cached = (headers, _serialized_block(headers))
            self._cache.put(key, cached)
        return cached

    def _build(self, decision: Decision) -> dict[str, str]:
        p = decision.principal
        s = self._s
        out: dict[str, str] = {s.credential_header: p.credential_type.value}
        if p.subject:
            out[s.subject_header] = header_safe(p.subject)
        if p.scopes:
            out[s.scopes_header] = " ".join(sorted(p.scopes))
        if p.credential_id:
            out[s.credential_id_header] = header_safe(p.credential_id)
        if p.issuer:
            out[s.issuer_header] = header_safe(p.issuer)
        if s.identity_jwt.enabled:
            out[s.identity_jwt.header] = self._identity_jwt(decision)
        return out

    def _identity_jwt(self, decision: Decision) -> str:
        p = decision.principal
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self._issuer,
            "aud": self._s.identity_jwt.audience,
            "sub": p.subject,
            "iat": now,
            "exp": now + self._s.identity_jwt.ttl_seconds,
            "jti": uuid.uuid4().hex,
            "cred": p.credential_type.value,
            "rule": decision.rule_id,
        }
        if p.scopes:
            claims["scope"] = " ".join(sorted(p.scopes))
        if p.credential_id:
            claims["cid"] = p.credential_id
        return self._key_ring.current.sign(claims, typ="authgate-identity+jwt")


_NO_STORE = {"Cache-Control": "no-store"}  # a forward-auth 200 is never cached by the proxy


def _response_block(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict({**headers, **_NO_STORE})


def _serialized_block(headers: Mapping[str, str]) -> bytes:
    return serialize_headers({**headers, **_NO_STORE})


def serialize_headers(headers: Mapping[str, str]) -> bytes:
    """``Name: value\r\n`` lines, UTF-8, as aiohttp's serialiser writes them; a CR, LF or
    NUL in a name or value raises ``ValueError`` (aiohttp refuses those the same way), so no
    value can split the response."""
    lines = []
    for name, value in headers.items():
        line = f"{name}: {value}\r\n"
        if "\r" in line[:-2] or "\n" in line[:-2] or "\x00" in line:
            raise ValueError(f"header {name!r} contains a CR, LF or NUL character")
        lines.append(line)
    return "".join(lines).encode("utf-8")
