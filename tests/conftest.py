"""Fixtures shared by every test directory."""

from __future__ import annotations

import os

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis the suite runs against; ``AUTHGATE_TEST_REDIS_URL`` overrides it.

    Redis is always present in CI, so a test that needs it fails (never skips) without it.
    """
    return os.environ.get("AUTHGATE_TEST_REDIS_URL", DEFAULT_REDIS_URL)
