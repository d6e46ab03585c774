"""The config loader (``authgate.config.loader.load_settings``) on fuzzed YAML bytes written
to a private (0600) temporary file, with an empty environment.

Contract: :class:`Settings` or :class:`ConfigError` (every problem named by key), nothing
else: not a YAML constructor's ``ValueError``, not a ``TypeError`` from an odd key, not a
``RecursionError`` from a self-referencing alias.
"""

from __future__ import annotations

import os
import tempfile

from harness import instrumented, main

with instrumented():
    from authgate.config.loader import load_settings
    from authgate.config.model import Settings
    from authgate.errors import ConfigError

_FD, PATH = tempfile.mkstemp(prefix="authgate-fuzz-", suffix=".yaml")
os.close(_FD)
os.chmod(PATH, 0o600)


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as file:
        file.write(data)
    try:
        settings = load_settings(PATH, environ={})
    except ConfigError as exc:
        assert exc.problems, exc
        assert all(isinstance(k, str) and isinstance(m, str) for k, m in exc.problems), exc
        return
    assert isinstance(settings, Settings), settings


if __name__ == "__main__":
    try:
        main(test_one_input)
    finally:
        os.unlink(PATH)
