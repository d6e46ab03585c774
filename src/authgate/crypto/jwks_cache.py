"""Remote JWKS cache for one external issuer.

* Fresh for ``ttl_seconds``; a stale set is refreshed on next use.
* An unknown ``kid`` triggers a refetch, at most once per ``min_refresh_interval_seconds``.
* Concurrent refreshes are coalesced into one fetch.
* When the issuer is unreachable the last good set is kept; with no good set at all the
  lookup raises :class:`IssuerUnavailable` (fail closed, 503).

The fetcher is injected (the web layer supplies an aiohttp client), so this module never
imports aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from authgate.crypto.keys import VerificationKey
from authgate.errors import IssuerUnavailable

log = logging.getLogger(__name__)

Fetcher = Callable[[str], Awaitable[bytes]]


class JWKSCache:
    """Keys of one issuer, fetched from its JWKS URL."""

    def __init__(
        self,
        *,
        url: str,
        fetch: Fetcher,
        algorithms: Iterable[str],
        ttl_seconds: float,
        min_refresh_interval_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetch = fetch
        self._algorithms = tuple(algorithms)
        self._ttl = ttl_seconds
        self._min_interval = min_refresh_interval_seconds
        self._monotonic = monotonic
        self._keys: dict[str, VerificationKey] | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._inflight: asyncio.Task[None] | None = None
        self.fetch_count = 0

    @property
    def loaded(self) -> bool:
        """Whether a good key set is held."""
        return self._keys is not None

    async def get(self, kid: str) -> VerificationKey | None:
        """The key for ``kid`` (``""`` = the only key), refreshing as the rules allow."""
        now = self._monotonic()
        if self._keys is None or now - self._fetched_at >= self._ttl:
            await self._refresh()
        key = self._lookup(kid)
        if key is None and self._keys is not None:
            await self._refresh()
            key = self._lookup(kid)
        if self._keys is None:
            raise IssuerUnavailable(f"no keys could be fetched from {self.url}")
        return key

    def _lookup(self, kid: str) -> VerificationKey | None:
        if self._keys is None:
            return None
        if kid:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _refresh(self) -> None:
        """Fetch, unless a fetch was attempted within the minimum interval.

        Waiters share one in-flight fetch; the interval also bounds retries while the
        issuer is down, so a burst of tokens with unknown ``kid`` costs one fetch.
        """
        task = self._inflight
        # A finished task left behind (every waiter was cancelled before it ended) is not
        # in flight: treat it as absent, or it would swallow the next allowed fetch.
        if task is None or task.done():
            if self._monotonic() - self._attempted_at < self._min_interval:
                return
            task = self._inflight = asyncio.ensure_future(self._do_refresh())
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._inflight is task:
                self._inflight = None

    async def _do_refresh(self) -> None:
        self._attempted_at = self._monotonic()
        self.fetch_count += 1
        try:
            body = await self._fetch(self.url)
            self._keys = parse_jwks(body, self._algorithms)
            self._fetched_at = self._monotonic()
        except Exception as exc:  # noqa: BLE001 - any failure keeps the last good set
            log.warning(
                "jwks fetch failed",
                extra={"event": "jwks_fetch_failed", "url": self.url, "error": type(exc).__name__},
            )


def parse_jwks(body: bytes, algorithms: Iterable[str]) -> dict[str, VerificationKey]:
    """Usable keys of a JWKS document by ``kid``; raises ``ValueError`` on a bad document.

    Entries that cannot serve an allowed algorithm are skipped. A ``kid`` shared by two
    usable keys is ambiguous (which key would a token mean?), so every key with it is
    dropped; keys without ``kid`` count as sharing the ``kid`` ``""``.
    """
    doc = json.loads(body.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("JWKS must be an object with a 'keys' list")  # noqa: TRY004
    allowed = tuple(algorithms)
    keys: dict[str, VerificationKey] = {}
    ambiguous: set[str] = set()
    for entry in doc["keys"]:
        if not isinstance(entry, dict):
            continue
        key = VerificationKey.from_jwk(entry, allowed=allowed)
        if key is None:
            continue
        if key.kid in keys:
            ambiguous.add(key.kid)
        keys[key.kid] = key
    for kid in ambiguous:
        del keys[kid]
        log.warning("jwks kid is ambiguous", extra={"event": "jwks_duplicate_kid"})
    return keys
