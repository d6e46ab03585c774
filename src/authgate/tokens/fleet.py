"""Pico fleet session tokens: a fleet runtime that holds the shared fleet secret mints an
access token for one agent session (``POST /api/v1/auth/fleet/sessions``, docs/protocols.md
§3; the HTTP surface is ``web/pico.py``).

The secret is compared in constant time over its UTF-8 bytes. Without a configured secret
the endpoint does not exist (404): a fresh deployment cannot mint for arbitrary subjects.
The token's role and scopes come from allow-lists in the settings (never a privileged role,
never the admin scope), its lifetime is the asked ``ttl`` brought into
[60 s, ``tokens.pico_fleet_max_ttl_seconds``], and it is minted by the token issuer, so it
is audited like every other long-lived mint.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from authgate.config.model import Settings
from authgate.errors import FleetSecretInvalid, NotFound, ScopeDenied
from authgate.tokens.issuer import Issued, TokenIssuer

MIN_FLEET_TTL_SECONDS = 60


class FleetSessions:
    """Checks the fleet secret and mints fleet session tokens through the issuer."""

    def __init__(self, *, settings: Settings, issuer: TokenIssuer) -> None:
        self._tokens = settings.tokens
        self._issuer = issuer

    def check_secret(self, presented: str | None) -> None:
        """Raise unless ``presented`` is the configured fleet secret (404 when none is)."""
        expected = self._tokens.pico_fleet_secret
        if expected is None:
            raise NotFound("fleet sessions are disabled (tokens.pico_fleet_secret is not set)")
        # surrogateescape: header bytes that are not UTF-8 compare as themselves (no 500).
        given = (presented or "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected.get_secret_value().encode()):
            raise FleetSecretInvalid()

    def lifetime(self, ttl: int | None) -> int:
        """The asked lifetime, or the default, brought into the allowed range."""
        if ttl is None:
            return self._tokens.pico_fleet_ttl_seconds
        return min(max(ttl, MIN_FLEET_TTL_SECONDS), self._tokens.pico_fleet_max_ttl_seconds)

    async def mint(
        self,
        *,
        session_id: str,
        agent_id: str,
        role: str | None,
        scopes: Sequence[str],
        ttl: int | None,
    ) -> Issued:
        """An access token for one agent session (``sub`` = the session id)."""
        chosen = role if role is not None else self._tokens.pico_fleet_roles[0]
        if chosen not in self._tokens.pico_fleet_roles:
            raise ScopeDenied(
                f"role: {chosen[:64]!r} is not a fleet role (tokens.pico_fleet_roles)"
            )
        refused = sorted(set(scopes) - set(self._tokens.pico_fleet_scopes))
        if refused:
            raise ScopeDenied(
                f"scope: {refused[0][:64]!r} is not a fleet scope (tokens.pico_fleet_scopes)"
            )
        return await self._issuer.issue(
            subject=session_id,
            scopes=scopes,
            ttl_seconds=self.lifetime(ttl),
            extra={"role": chosen, "session_id": session_id, "agent_id": agent_id},
            minted_by=f"pico-fleet:{agent_id}",
        )
