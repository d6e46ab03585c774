"""The composition root builds each service on first use: an operator act touches only
what it needs (listing pairs never reads signing keys)."""

from __future__ import annotations

from authgate.compose import Services
from authgate.stores.memory import MemoryStores
from tests.support import make_settings


async def test_listing_pairs_builds_no_signing_keys() -> None:
    services = Services(make_settings(), stores=MemoryStores())
    try:
        assert await services.operator.pairs() == []
        built = set(vars(services))
        assert "pairs" in built
        assert not {"keys", "issuer", "gate", "jwt_verifier"} & built
    finally:
        await services.close()


async def test_the_gate_is_built_once_with_its_verifiers() -> None:
    services = Services(make_settings(), stores=MemoryStores())
    try:
        assert services.gate is services.gate
        assert {"bpc_verifier", "hmac_verifier", "jwt_verifier"} <= set(vars(services))
    finally:
        await services.close()
