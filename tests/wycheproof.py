"""Where the Wycheproof vectors live: ``tests/data/wycheproof``, inside the repository (its
README gives their provenance and licence)."""

from __future__ import annotations

from pathlib import Path

WYCHEPROOF_DIR = Path(__file__).resolve().parent / "data" / "wycheproof"


def wycheproof_dir() -> Path:
    """The vector directory."""
    return WYCHEPROOF_DIR
