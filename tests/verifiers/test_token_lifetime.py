"""A per-issuer maximum token lifetime (issue 13): ``exp - iat``, or ``exp - now`` when the
token carries no ``iat``; beyond it, 401 ``token_lifetime_too_long``."""

from __future__ import annotations

import pytest

from authgate.compose import Services, own_token_lifetime
from authgate.crypto.keys import KeyRing, SigningKey
from authgate.stores.memory import MemoryStores
from tests.support import make_settings
from tests.verifiers import NOW, Harness, mint

HOUR = 3600


@pytest.fixture
def gate(es: SigningKey) -> Harness:
    return Harness([es], max_lifetime_seconds=HOUR)


async def test_a_lifetime_up_to_the_maximum_is_accepted(es: SigningKey, gate: Harness) -> None:
    await gate.accept(mint(es, iat=NOW, exp=NOW + HOUR))
    await gate.accept(mint(es, iat=None, exp=NOW + HOUR + 30))  # exp - now, with the leeway


@pytest.mark.parametrize(
    ("iat", "exp"),
    [
        (NOW, NOW + HOUR + 1),
        (NOW - 3000, NOW + 1000),  # issued a while ago, still over the limit
        (NOW, NOW + 10 * 365 * 86_400),  # ten years out
        (None, NOW + HOUR + 31),
    ],
    ids=["one-second-over", "issued-earlier", "ten-years", "no-iat"],
)
async def test_a_longer_lifetime_is_refused(
    es: SigningKey, gate: Harness, iat: int | None, exp: int
) -> None:
    assert await gate.refusal(mint(es, iat=iat, exp=exp)) == "token_lifetime_too_long"


def test_own_tokens_default_to_the_longest_lifetime_authgate_issues() -> None:
    settings = make_settings()
    assert own_token_lifetime(settings) == settings.tokens.max_mint_ttl_seconds
    short = make_settings(
        tokens={
            "max_mint_ttl_seconds": 600,
            "pico_fleet_max_ttl_seconds": 600,
            "pico_fleet_ttl_seconds": 600,
        }
    )
    assert own_token_lifetime(short) == short.tokens.access_ttl_seconds  # 900
    assert own_token_lifetime(make_settings(jwt={"max_token_lifetime_seconds": 7200})) == 7200


def test_a_maximum_below_what_authgate_issues_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"jwt\.max_token_lifetime_seconds"):
        make_settings(jwt={"max_token_lifetime_seconds": 600})


def test_each_issuer_gets_its_own_maximum(es: SigningKey) -> None:
    settings = make_settings(
        jwt={
            "max_token_lifetime_seconds": 7200,
            "external_issuers": [
                {
                    "issuer": "https://idp.test",
                    "jwks_url": "https://idp.test/jwks",
                    "audiences": ["a"],
                },
                {
                    "issuer": "https://long.test",
                    "jwks_url": "https://long.test/jwks",
                    "audiences": ["a"],
                    "max_lifetime_seconds": 172_800,
                },
            ],
        }
    )
    services = Services(settings, stores=MemoryStores(), key_ring=KeyRing([es]))
    issuers = services.jwt_verifier._issuers
    assert issuers[settings.jwt.issuer].max_lifetime_seconds == 7200
    assert issuers["https://idp.test"].max_lifetime_seconds == 86_400
    assert issuers["https://long.test"].max_lifetime_seconds == 172_800
