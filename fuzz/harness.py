"""What every harness shares: how fuzzed bytes become text, the contract of a refusal, and
the atheris entry point.

A harness module imports the code under test inside :func:`instrumented` (so atheris sees
its branches) and ends with ``main(test_one_input)``. Run one directly::

    PYTHONPATH=src python fuzz/fuzz_target.py -atheris_runs=10000 fuzz/corpus/target
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import atheris


def instrumented() -> AbstractContextManager[Any]:
    """Instrument authgate's modules imported inside this block (and nothing else)."""
    return atheris.instrument_imports(include=["authgate"])  # type: ignore[no-any-return]


def text(data: bytes) -> str:
    """Fuzzed bytes as the text a parser receives: UTF-8, any invalid byte kept as a lone
    surrogate (what aiohttp hands over for undecodable header bytes), so every input is
    reachable and the corpus files stay readable."""
    return data.decode("utf-8", "surrogateescape")


def check_refusal(exc: BaseException) -> None:
    """An :class:`~authgate.errors.AuthGateError` raised for client bytes must be a 4xx leaf
    (never the 500 group, never an internal fault)."""
    from authgate.errors import AuthGateError

    if not isinstance(exc, AuthGateError) or not 400 <= exc.status < 500:
        raise AssertionError(f"refusal is not a 4xx leaf: {exc!r}") from exc
    if exc.reason in {"internal_error", "bad_request"}:
        raise AssertionError(f"refusal is a group, not a leaf: {exc!r}") from exc


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Run libFuzzer over ``test_one_input`` with the command line's flags and corpora."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
