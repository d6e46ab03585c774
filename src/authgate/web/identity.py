"""Identity headers: what authgate tells the upstream about the caller.

Client-supplied copies are removed before anything is forwarded: every configured
identity header name, every header under a configured prefix (``X-Authgate-``), and other
gateways' identity headers (``proxy.foreign_identity_headers``: ``X-Remote-User``,
``X-Forwarded-User``, ...), in any spelling: names are compared by
:func:`~authgate.web.context.header_key` (case-folded, every character but letters and
digits removed), so ``X_Authgate_Subject`` and ``X.Authgate.Subject`` go too.
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
from authgate.policy.rules import Decision
from authgate.tokens.keys import KeyManager
from authgate.web.context import header_key

_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
_PLAIN_HEADER_VALUE = re.compile(r"[\x21-\x24\x26-\x7e]*")


def header_safe(value: str) -> str:
    """Percent-encode anything outside visible ASCII so it can travel in a header."""
    if _PLAIN_HEADER_VALUE.fullmatch(value) is not None:
        return value  # the common case: nothing to encode
    return quote(value, safe=_HEADER_SAFE)


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
        self._keys = frozenset(header_key(n) for n in (*settings.header_names(), *foreign))
        self._prefixes = tuple(header_key(p) for p in settings.strip_prefixes)
        # Headers depend only on the principal (unless an identity JWT is minted per
        # request): build them once per principal, with the forward-auth response block.
        self._cache: BoundedCache[tuple[Any, ...], tuple[dict[str, str], CIMultiDict[str]]] = (
            BoundedCache(4096)
        )

    @property
    def per_request(self) -> bool:
        """Whether the headers differ on every request (an identity JWT is minted)."""
        return self._s.identity_jwt.enabled

    def is_identity(self, name: str) -> bool:
        """Whether a header of this name is one authgate alone may set.

        SECURITY: underscore aliasing (cf. Django CVE-2015-0219). CGI-style upstreams
        (WSGI, PHP-FPM, ...) read ``X_Authgate_Subject`` as ``X-Authgate-Subject``, and
        lenient servers fold other punctuation, so names are compared by
        :func:`header_key` (case-folded, only letters and digits kept). Other gateways'
        identity headers (``foreign``) count too: authgate never relays them.
        """
        return self.is_identity_key(header_key(name))

    def is_identity_key(self, key: str) -> bool:
        """:meth:`is_identity` for a name already passed through :func:`header_key`."""
        return key in self._keys or key.startswith(self._prefixes)

    def strip(self, headers: CIMultiDict[str]) -> None:
        """Remove every client-supplied identity header, in place."""
        for name in {k for k in headers if self.is_identity(k)}:
            del headers[name]

    def for_decision(self, decision: Decision) -> Mapping[str, str]:
        """The headers to set for ``decision`` (empty values are left out)."""
        if self._s.identity_jwt.enabled:
            return self._build(decision)  # a fresh identity JWT each time
        return self._per_principal(decision)[0]

    def response_headers(self, decision: Decision) -> CIMultiDict[str]:
        """A forward-auth 200's headers: :meth:`for_decision` and ``Cache-Control:
        no-store``. Callers copy it (``web.Response`` does) and never change it."""
        if self._s.identity_jwt.enabled:
            return _response_block(self._build(decision))
        return self._per_principal(decision)[1]

    def _per_principal(self, decision: Decision) -> tuple[dict[str, str], CIMultiDict[str]]:
        p = decision.principal
        key = (p.subject, p.credential_type, p.scopes, p.credential_id, p.issuer)
        cached = self._cache.get(key)
        if cached is None:
            headers = self._build(decision)
            cached = (headers, _response_block(headers))
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


def _response_block(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict({**headers, "Cache-Control": "no-store"})
