"""Issue, refresh, revoke and introspect authgate's own tokens (no HTTP here).

Access tokens (``typ: at+jwt``) carry ``iss, sub, aud, iat, exp, jti, scope`` and, when
they come from a refresh family, ``fam``. Refresh tokens are JWTs too (``typ:
refresh+jwt``, ``type: refresh``, ``aud`` = the issuer itself), so the bearer verifier
refuses them as access tokens by type and by audience.

Refresh rotation and reuse detection: each refresh token's ``jti`` is spent in the nonce
store (scope ``refresh:<family>``) when it is redeemed, one atomic operation. Presenting a
spent one again means it was copied: the whole family is revoked (the pseudo id
``fam:<family>`` goes on the revocation list, and the bearer verifier checks ``fam`` as
well as ``jti``), so the thief's and the victim's tokens all stop working.

Validators that only compare a token's ``jti`` against a polled denylist (pico-client-auth)
know nothing of families, so the issuer also keeps a family index: every access token of a
family is appended (``jti``, ``exp``) to the audit stream ``token-family:<family>``, capped
at :data:`FAMILY_INDEX_CAP` and dropped when the newest of them expires. Revoking a family
then revokes each indexed access token that has not expired by its own ``jti``, until its
own expiry, so it appears on ``revoked-jtis``. A token issued while the family is being
revoked checks the family after indexing itself, so it is never missed by both.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from authgate.config.model import Settings
from authgate.crypto.jws import parse_compact_jws, strict_json_object
from authgate.crypto.stamps import issued_at_ms, stamped
from authgate.errors import (
    AuthGateError,
    OAuthError,
    OAuthInvalidGrant,
    OAuthInvalidScope,
    OAuthInvalidTarget,
)
from authgate.policy.resources import resource_identifiers
from authgate.stores.base import AuditStore, Clock, NonceOutcome, NonceStore
from authgate.tokens.keys import KeyManager
from authgate.tokens.revocation import RevocationList
from authgate.verifiers.jwt_bearer import IssuerKeys

MINT_STREAM = "mints"
FAMILY_STREAM = "token-family:"
# Access tokens of one family remembered for revocation by jti: more than a client that
# refreshes every few seconds holds unexpired at once with the default lifetimes.
FAMILY_INDEX_CAP = 256
# Claims a refresh token carries over to the tokens it is exchanged for.
_CARRIED = ("role", "pair_id", "client_id")


@dataclass(frozen=True, slots=True)
class Issued:
    """One token response."""

    access_token: str
    expires_in: int
    scope: str
    claims: dict[str, Any]
    refresh_token: str | None = None

    def response(self) -> dict[str, Any]:
        """The RFC 6749 §5.1 body."""
        cnf = self.claims.get("cnf")
        bound = isinstance(cnf, dict) and "jkt" in cnf
        body: dict[str, Any] = {
            "access_token": self.access_token,
            # RFC 9449 §5: a DPoP-bound token is of type DPoP.
            "token_type": "DPoP" if bound else "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


def refresh_issued_at_ms(claims: Mapping[str, Any]) -> int:
    """When a (verified) refresh token was issued: its jti's stamp, else the start of iat."""
    iat = int(claims["iat"])
    try:
        raw = bytes.fromhex(str(claims.get("jti", "")))
    except ValueError:
        return iat * 1000
    return issued_at_ms(raw, iat)


def family_id(family: str) -> str:
    """The revocation-list id of a refresh family."""
    return f"fam:{family}"


class TokenIssuer:
    """authgate's token service core."""

    def __init__(
        self,
        *,
        keys: KeyManager,
        settings: Settings,
        clock: Clock,
        revocations: RevocationList,
        nonces: NonceStore,
        audit: AuditStore,
    ) -> None:
        self._keys = keys
        self._s = settings
        self._clock = clock
        self._revocations = revocations
        self._nonces = nonces
        self._audit = audit
        self.issuer = settings.jwt.issuer
        # The identifiers of the protected resources (``policy.rules[].resource``).
        self.resources = resource_identifiers(settings.policy.rules)
        self._own = IssuerKeys(
            issuer=self.issuer,
            audiences=frozenset(settings.jwt.audiences),
            algorithms=frozenset(settings.jwt.algorithms),
            require_jti=True,
            key_ring=keys,
        )

    def _now(self) -> int:
        return self._clock.now_ms() // 1000

    def audience(self, requested: str | None) -> str:
        """The ``aud`` to issue: a configured audience (the first by default), or the
        identifier of a configured protected resource (RFC 8707)."""
        if requested is None:
            return self._s.jwt.audiences[0]
        if requested not in self._s.jwt.audiences and requested not in self.resources:
            raise OAuthInvalidTarget(f"audience {requested!r} is not served here")
        return requested

    async def issue(
        self,
        *,
        subject: str,
        scopes: Iterable[str],
        audience: str | None = None,
        ttl_seconds: int | None = None,
        refresh: bool = False,
        family: str | None = None,
        extra: Mapping[str, Any] | None = None,
        minted_by: str = "token-endpoint",
        jkt: str | None = None,
        refresh_jkt: str | None = None,
        x5t: str | None = None,
    ) -> Issued:
        """Mint an access token (and, with ``refresh``, a refresh token of a family).

        ``jkt`` binds the access token to a DPoP key (``cnf.jkt``, RFC 9449 §6.1) and
        ``refresh_jkt`` the refresh token (a public client's, RFC 9449 §5). ``x5t`` binds
        the access token to a client certificate (``cnf["x5t#S256"]``, RFC 8705 §3.1).
        """
        if jkt is not None:
            cnf = dict((extra or {}).get("cnf") or {})
            extra = {**dict(extra or {}), "cnf": {**cnf, "jkt": jkt}}
        if x5t is not None:
            cnf = dict((extra or {}).get("cnf") or {})
            extra = {**dict(extra or {}), "cnf": {**cnf, "x5t#S256": x5t}}
        now_ms = self._clock.now_ms()
        now = now_ms // 1000
        ttl = ttl_seconds or self._s.tokens.access_ttl_seconds
        scope = " ".join(sorted(set(scopes)))
        fam = family or (uuid.uuid4().hex if refresh else None)
        # Registered claims last: nothing in ``extra`` may override iss, sub, exp, ...
        claims: dict[str, Any] = {
            **dict(extra or {}),
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience(audience),
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "scope": scope,
        }
        if fam is not None:
            claims["fam"] = fam
        token = self._keys.current.sign(claims, typ="at+jwt")
        await self._audit_mint(claims, kind="access", minted_by=minted_by, ttl=ttl)
        if fam is not None:
            await self._index_family_member(fam, claims)
        refresh_token = None
        if refresh and fam is not None:
            refresh_claims = {
                "iss": self.issuer,
                "sub": subject,
                "aud": self.issuer,
                "iat": now,
                "exp": now + self._s.tokens.refresh_ttl_seconds,
                # The jti starts with the issue millisecond, which reuse detection compares
                # with the nonce store's epoch (authgate.crypto.stamps).
                "jti": stamped(now_ms, 8).hex(),
                "scope": scope,
                "fam": fam,
                "type": "refresh",
            }
            if refresh_jkt is not None:
                refresh_claims["cnf"] = {"jkt": refresh_jkt}
            refresh_claims = {
                **{k: v for k, v in (extra or {}).items() if k in _CARRIED},
                **refresh_claims,
            }
            refresh_token = self._keys.current.sign(refresh_claims, typ="refresh+jwt")
        return Issued(
            access_token=token,
            expires_in=ttl,
            scope=scope,
            claims=claims,
            refresh_token=refresh_token,
        )

    async def decode(self, token: str, *, kind: str) -> dict[str, Any]:
        """Claims of one of our own tokens (``kind``: ``access`` or ``refresh``).

        Signature, issuer, type and expiry are checked; revocation is not (callers
        decide what revocation means for them). Raises an ``AuthGateError`` leaf.
        """
        jws = parse_compact_jws(token)
        claims = strict_json_object(jws.payload, "payload")
        await self._own.verify_jws(jws)
        if claims.get("iss") != self.issuer:
            raise OAuthInvalidGrant("token was not issued here")
        is_refresh = (
            claims.get("type") == "refresh"
            or str(jws.header.get("typ", "")).lower() == "refresh+jwt"
        )
        if is_refresh != (kind == "refresh"):
            raise OAuthInvalidGrant(f"not a {kind} token")
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int) or exp <= self._now():
            raise OAuthInvalidGrant("token has expired")
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("sub"), str):
            raise OAuthInvalidGrant("token lacks jti or sub")
        return claims

    async def is_revoked(self, claims: Mapping[str, Any]) -> bool:
        """Whether the token or its family is revoked."""
        if await self._revocations.is_revoked(str(claims["jti"])):
            return True
        fam = claims.get("fam")
        return isinstance(fam, str) and await self._revocations.is_revoked(family_id(fam))

    async def redeem_refresh(
        self,
        token: str,
        *,
        scopes: Iterable[str] | None,
        client_id: str | None,
        jkt: str | None = None,
        audience: str | None = None,
        x5t: str | None = None,
    ) -> Issued:
        """Rotate a refresh token; a reused one revokes its whole family.

        ``jkt`` is the key of the request's DPoP proof: a DPoP-bound refresh token is
        redeemed only with a proof of its own key (checked before the token is spent, so a
        thief without the key cannot even rotate it), and the new tokens are bound to it.
        """
        try:
            claims = await self.decode(token, kind="refresh")
        except OAuthError:
            raise
        except AuthGateError:
            raise OAuthInvalidGrant("refresh token is invalid") from None
        fam = claims.get("fam")
        if not isinstance(fam, str):
            raise OAuthInvalidGrant("refresh token has no family")
        if claims.get("client_id") is not None and claims.get("client_id") != client_id:
            raise OAuthInvalidGrant("refresh token was issued to another client")
        bound = _refresh_binding(claims)
        if bound is not None and (jkt is None or not hmac.compare_digest(bound, jkt)):
            raise OAuthInvalidGrant(
                "refresh token is DPoP-bound: send a DPoP proof made with its key"
            )
        if await self.is_revoked(claims):
            raise OAuthInvalidGrant("refresh token has been revoked")
        outcome = await self._nonces.consume(
            f"refresh:{fam}",
            str(claims["jti"]),
            ttl_ms=max(1, (int(claims["exp"]) - self._now()) * 1000),
            signed_at_ms=refresh_issued_at_ms(claims),
        )
        if outcome is not NonceOutcome.FRESH:
            await self.revoke_family(fam)
            raise OAuthInvalidGrant(
                "refresh token reuse detected: the whole token family is revoked"
            )
        granted = set(str(claims.get("scope", "")).split()) - {""}
        requested = set(scopes) if scopes is not None else granted
        if not requested <= granted:
            raise OAuthInvalidScope("requested scope exceeds the original grant")
        carried = {k: claims[k] for k in _CARRIED if k in claims}
        return await self.issue(
            subject=str(claims["sub"]),
            scopes=requested,
            audience=audience,
            refresh=True,
            family=fam,
            extra=carried,
            minted_by="refresh",
            jkt=jkt,
            # A public client's refresh token stays bound (RFC 9449 §5).
            refresh_jkt=jkt if claims.get("client_id") is None else None,
            x5t=x5t,
        )

    async def revoke_family(self, fam: str) -> None:
        """Revoke every token of a refresh family (access tokens carry ``fam`` too), and
        each indexed, unexpired access token of it by its own ``jti`` (for validators that
        poll a jti denylist)."""
        until = (
            self._now() + self._s.tokens.refresh_ttl_seconds + self._s.jwt.leeway_seconds
        ) * 1000
        await self._revocations.revoke(family_id(fam), expires_at_ms=until)
        now = self._now()
        members = await self._audit.recent(FAMILY_STREAM + fam, FAMILY_INDEX_CAP)
        for member in members:
            jti, exp = member.get("jti"), member.get("exp")
            if isinstance(jti, str) and isinstance(exp, int) and exp > now:
                await self._revoke_member(jti, exp)

    async def _revoke_member(self, jti: str, exp: int) -> None:
        """Revoke one access token by ``jti`` until it would have expired."""
        await self._revocations.revoke(jti, expires_at_ms=(exp + self._s.jwt.leeway_seconds) * 1000)

    async def _index_family_member(self, fam: str, claims: Mapping[str, Any]) -> None:
        """Remember an access token of ``fam`` (the index lives as long as it may be used)."""
        exp = int(claims["exp"])
        await self._audit.append(
            FAMILY_STREAM + fam,
            {"jti": claims["jti"], "exp": exp},
            cap=FAMILY_INDEX_CAP,
            expires_at_ms=(exp + self._s.jwt.leeway_seconds) * 1000,
        )
        # Indexed first, checked second: a revocation that read the index before this
        # token was in it is seen here, so the token is listed either way.
        if await self._revocations.is_revoked(family_id(fam)):
            await self._revoke_member(str(claims["jti"]), exp)

    async def revoke_claims(self, claims: Mapping[str, Any]) -> None:
        """Revoke one token (a refresh token takes its family with it)."""
        exp_ms = (int(claims["exp"]) + self._s.jwt.leeway_seconds) * 1000
        await self._revocations.revoke(str(claims["jti"]), expires_at_ms=exp_ms)
        if claims.get("type") == "refresh" and isinstance(claims.get("fam"), str):
            await self.revoke_family(str(claims["fam"]))

    async def revoke_jti(self, jti: str) -> int:
        """Revoke by id alone (pico ``/revoke``, the admin API, the CLI) until the token
        would have expired; returns that time (ms). A long-lived token's expiry is in the
        mint audit; for any other id, the longest lifetime a token of authgate can have."""
        exp = await self._minted_exp(jti)
        if exp is None:
            longest = max(
                self._s.tokens.access_ttl_seconds,
                self._s.tokens.refresh_ttl_seconds,
                self._s.tokens.max_mint_ttl_seconds,
            )
            exp = self._now() + longest
        until = (exp + self._s.jwt.leeway_seconds) * 1000
        await self._revocations.revoke(jti, expires_at_ms=until)
        return until

    async def _minted_exp(self, jti: str) -> int | None:
        for entry in await self._audit.recent(MINT_STREAM, self._s.tokens.mint_audit_cap):
            if entry.get("jti") == jti and isinstance(entry.get("exp"), int):
                return int(entry["exp"])
        return None

    async def _audit_mint(
        self, claims: Mapping[str, Any], *, kind: str, minted_by: str, ttl: int
    ) -> None:
        if ttl < self._s.tokens.mint_audit_min_ttl_seconds:
            return
        entry = {
            "jti": claims["jti"],
            "sub": claims["sub"],
            "kind": kind,
            "scope": claims.get("scope", ""),
            "iat": claims["iat"],
            "exp": claims["exp"],
            "minted_by": minted_by,
        }
        if isinstance(claims.get("fam"), str):
            entry["fam"] = claims["fam"]
        await self._audit.append(MINT_STREAM, entry, cap=self._s.tokens.mint_audit_cap)

    async def mints(self, limit: int) -> list[dict[str, Any]]:
        """Long-lived tokens minted, newest first, each with its revocation state."""
        now = self._now()  # the issuer's clock, as for every other expiry decision here
        out = []
        for entry in await self._audit.recent(MINT_STREAM, limit):
            revoked = await self.is_revoked({"jti": entry.get("jti", ""), "fam": entry.get("fam")})
            out.append({**entry, "revoked": revoked, "expired": int(entry.get("exp", 0)) <= now})
        return out


def _refresh_binding(claims: Mapping[str, Any]) -> str | None:
    """The DPoP key a refresh token is bound to (``cnf.jkt``), or ``None``."""
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str):
        raise OAuthInvalidGrant("refresh token has a malformed 'cnf'")
    return jkt


def scopes_from(value: str | None) -> set[str] | None:
    """Parse an OAuth ``scope`` parameter; ``None`` when absent."""
    if value is None:
        return None
    scopes = set(value.split(" ")) - {""}
    for scope in scopes:
        if not all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in scope):
            raise OAuthInvalidScope("scope has an invalid character")
    return scopes


def introspection(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7662 body for an active token."""
    body = {
        "active": True,
        "token_type": "refresh_token" if claims.get("type") == "refresh" else "access_token",
    }
    for name in ("iss", "sub", "aud", "iat", "exp", "jti", "scope", "client_id", "cnf"):
        if name in claims:
            body[name] = claims[name]
    return json.loads(json.dumps(body))  # type: ignore[no-any-return]
