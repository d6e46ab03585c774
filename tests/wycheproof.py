"""Where the Wycheproof vectors live: ``tests/data/wycheproof`` (see its README for their
provenance and licence). ``AUTHGATE_TESTDATA`` may point at another copy."""

from __future__ import annotations

import os
from pathlib import Path

_IN_REPO = Path(__file__).resolve().parent / "data" / "wycheproof"


def wycheproof_dir() -> Path:
    """The vector directory (``AUTHGATE_TESTDATA``, or its ``wycheproof/``, if set)."""
    configured = os.environ.get("AUTHGATE_TESTDATA")
    if not configured:
        return _IN_REPO
    base = Path(configured)
    return base / "wycheproof" if (base / "wycheproof").is_dir() else base
