"""Fixtures shared by every test directory."""

from __future__ import annotations

import os

import pytest

from authgate.crypto.keys import SigningKey

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis the suite runs against; ``AUTHGATE_TEST_REDIS_URL`` overrides it.

    Redis is always present in CI, so a test that needs it fails (never skips) without it.
    """
    return os.environ.get("AUTHGATE_TEST_REDIS_URL", DEFAULT_REDIS_URL)


# Signing keys of each family, one per test module (generating RSA keys is slow).


@pytest.fixture(scope="module")
def es() -> SigningKey:
    return SigningKey.generate("ES256")


@pytest.fixture(scope="module")
def rs() -> SigningKey:
    return SigningKey.generate("RS256")


@pytest.fixture(scope="module")
def ed() -> SigningKey:
    return SigningKey.generate("EdDSA")
