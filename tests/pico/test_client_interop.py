"""The published validator, ``pico-client-auth`` 0.7.1, unchanged, against a real authgate.

authgate runs as a subprocess with an RS256 key file and its own base URL as issuer. The
validator is pointed at it exactly as a pico service would be (issuer, JWKS endpoint,
revoked-jtis endpoint with a service-role bearer) and must accept authgate's tokens, and
refuse one once an operator has revoked it through authgate's ``/api/v1/auth/revoke``.
Operator and service tokens are minted in the test with authgate's own key, since the
subprocess keeps its users in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pico_client_auth.config import AuthClientSettings  # type: ignore[import-untyped]
from pico_client_auth.errors import TokenInvalidError  # type: ignore[import-untyped]
from pico_client_auth.jwks_client import JWKSClient  # type: ignore[import-untyped]
from pico_client_auth.revocation_cache import RevocationCache  # type: ignore[import-untyped]
from pico_client_auth.token_validator import TokenValidator  # type: ignore[import-untyped]

from authgate.crypto.keys import SigningKey
from tests.pico import ALGORITHMS, PICO, Wallet
from tests.support import AuthgateProcess, TokenFactory, free_port, running

AUDIENCE = "pico"
FLEET_SECRET = "fleet-secret-for-interop-0123456789abcdef"


@dataclass(frozen=True)
class Server:
    """The authgate process and a factory holding its signing key."""

    proc: AuthgateProcess
    tokens: TokenFactory

    @property
    def url(self) -> str:
        """Base URL, which is also the issuer."""
        return self.proc.url

    def bearer(self, role: str) -> str:
        """A token of ``role`` signed with authgate's key."""
        return self.tokens.mint(role=role, sub=f"{role}-1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """authgate with an RS256 PEM key, issuer = its own base URL, audience ``pico``."""
    directory: Path = tmp_path_factory.mktemp("pico-interop")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tokens = TokenFactory(key=SigningKey.generate("RS256"), issuer=url, audience=AUDIENCE)
    config = {
        "jwt": {
            "issuer": url,
            "audiences": [AUDIENCE],
            "signing_key_files": [str(tokens.write_key(directory))],
        },
        "tokens": {"pico_fleet_secret": FLEET_SECRET},
        "logging": {"level": "WARNING", "access_log": False},
    }
    with running(config, directory, port=port) as proc:
        yield Server(proc, tokens)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the test's own calls."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


def pico_validator(server: Server, *, bearer: str, ttl_seconds: int = 1) -> Any:
    """The validator as a pico service wires it, pointed at authgate."""
    settings = AuthClientSettings(
        issuer=server.url,
        audience=AUDIENCE,
        jwks_endpoint=f"{server.url}{PICO}/jwks",
        accepted_algorithms=("RS256",),
        revocation_endpoint=f"{server.url}{PICO}/revoked-jtis",
        revocation_ttl_seconds=ttl_seconds,
        revocation_bearer=bearer,
    )
    return TokenValidator(settings, JWKSClient(settings), RevocationCache(settings))


async def post(
    session: aiohttp.ClientSession, url: str, body: dict[str, str], bearer: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST JSON; the status and JSON answer."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def sign_in(session: aiohttp.ClientSession, server: Server, wallet: Wallet) -> Any:
    """A wallet sign-in against the process."""
    status, challenge = await post(session, f"{server.url}{PICO}/challenge", {"address": "0xw"})
    assert status == 200, challenge
    body = wallet.body(challenge["challenge"], address="0xw")
    status, tokens = await post(session, f"{server.url}{PICO}/sign-in", body)
    assert status == 200, tokens
    return tokens


async def test_jwks_serves_what_the_pico_jwks_client_needs(server: Server) -> None:
    """The client finds authgate's key by ``kid`` with kty, alg, use, n and e."""
    settings = AuthClientSettings(issuer=server.url, audience=AUDIENCE)  # the default URL
    key = await JWKSClient(settings).get_key(server.tokens.key.kid)
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert key["n"] and key["e"]


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=["ed25519", "secp256k1", "ml-dsa-65"])
async def test_pico_validator_accepts_wallet_tokens(
    server: Server, session: aiohttp.ClientSession, algorithm: str
) -> None:
    """An RS256 access token from a wallet sign-in validates; sub is the key, role user."""
    wallet = Wallet.generate(algorithm)
    tokens = await sign_in(session, server, wallet)
    validator = pico_validator(server, bearer=server.bearer("service"))
    claims, raw = await validator.validate(tokens["access_token"])
    assert (claims.sub, claims.role) == (wallet.identity, "user")
    assert claims.jti == raw["jti"]


async def test_revocation_reaches_the_pico_validator_through_its_poll(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """Revoked by an operator at authgate, the token is refused after the next poll (1 s)."""
    tokens = await sign_in(session, server, Wallet.generate("Ed25519"))
    validator = pico_validator(server, bearer=server.bearer("service"))
    claims, _ = await validator.validate(tokens["access_token"])
    status, body = await post(
        session,
        f"{server.url}{PICO}/revoke",
        {"jti": claims.jti, "reason": "interop test"},
        server.bearer("operator"),
    )
    assert (status, body) == (200, {"revoked": claims.jti})
    await asyncio.sleep(1.1)  # revocation_ttl_seconds = 1: the next validation polls
    with pytest.raises(TokenInvalidError, match="revoked"):
        await validator.validate(tokens["access_token"])


async def test_refresh_reuse_reaches_the_pico_validator_through_its_poll(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """A reused refresh token revokes its family at authgate; the validator's next poll
    lists the family's access tokens by ``jti``, so it refuses the earlier ones too."""
    first = await sign_in(session, server, Wallet.generate("Ed25519"))
    validator = pico_validator(server, bearer=server.bearer("service"))
    await validator.validate(first["access_token"])
    refresh_url = f"{server.url}{PICO}/refresh"
    status, second = await post(session, refresh_url, {"refresh_token": first["refresh_token"]})
    assert status == 200, second
    await validator.validate(second["access_token"])
    status, reused = await post(session, refresh_url, {"refresh_token": first["refresh_token"]})
    assert status == 401, reused
    await asyncio.sleep(1.1)  # revocation_ttl_seconds = 1: the next validation polls
    for token in (first["access_token"], second["access_token"]):
        with pytest.raises(TokenInvalidError, match="revoked"):
            await validator.validate(token)


async def test_force_refresh_picks_up_a_revocation_at_once(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """With a long poll interval, the client's own ``force_refresh`` sees the revocation."""
    tokens = await sign_in(session, server, Wallet.generate("secp256k1"))
    validator = pico_validator(server, bearer=server.bearer("service"), ttl_seconds=3600)
    # The cache's first poll is due once time.monotonic() (host uptime) exceeds the TTL:
    # on a host up for less than an hour it would never poll, and fail closed. Prime it.
    await validator._revocations.force_refresh()
    claims, _ = await validator.validate(tokens["access_token"])
    revoke = {"jti": claims.jti}
    status, _ = await post(session, f"{server.url}{PICO}/revoke", revoke, server.bearer("operator"))
    assert status == 200
    await validator.validate(tokens["access_token"])  # its denylist is fresh for an hour
    await validator._revocations.force_refresh()
    with pytest.raises(TokenInvalidError, match="revoked"):
        await validator.validate(tokens["access_token"])


@pytest.mark.parametrize("role", ["user", "nobody"], ids=["wallet-role", "unknown-role"])
async def test_a_poll_without_the_service_role_fails_closed(
    server: Server, session: aiohttp.ClientSession, role: str
) -> None:
    """authgate refuses the denylist to other roles (403); the client then refuses tokens."""
    tokens = await sign_in(session, server, Wallet.generate("Ed25519"))
    validator = pico_validator(server, bearer=server.bearer(role))
    with pytest.raises(TokenInvalidError, match="revoked"):
        await validator.validate(tokens["access_token"])


async def test_refreshed_tokens_keep_identity_and_role(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """``/refresh`` output validates with the same subject and role."""
    wallet = Wallet.generate("Ed25519")
    first = await sign_in(session, server, wallet)
    status, second = await post(
        session, f"{server.url}{PICO}/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert status == 200, second
    validator = pico_validator(server, bearer=server.bearer("service"))
    claims, _ = await validator.validate(second["access_token"])
    assert (claims.sub, claims.role) == (wallet.identity, "user")


async def test_pico_validator_accepts_a_fleet_session_token(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """A token minted with the fleet secret validates: sub the session, role agent."""
    async with session.post(
        f"{server.url}{PICO}/fleet/sessions",
        json={"session_id": "sess-9", "agent_id": "agent-1", "ttl": 3600},
        headers={"X-Fleet-Secret": FLEET_SECRET},
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    validator = pico_validator(server, bearer=server.bearer("service"))
    claims, raw = await validator.validate(body["session_token"])
    assert (claims.sub, claims.role) == ("sess-9", "agent")
    assert (raw["agent_id"], raw["exp"]) == ("agent-1", body["exp"])


async def test_pico_validator_refuses_a_refresh_token(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """A refresh token's audience is authgate itself, so a pico service refuses it."""
    tokens = await sign_in(session, server, Wallet.generate("Ed25519"))
    validator = pico_validator(server, bearer=server.bearer("service"))
    with pytest.raises(TokenInvalidError):
        await validator.validate(tokens["refresh_token"])
