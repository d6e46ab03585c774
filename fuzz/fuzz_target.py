"""The request-target canonicaliser (``authgate.policy.target.canonicalize``).

Contract: a :class:`Target` or :class:`InvalidTarget`, nothing else. Properties of an
accepted target: the path starts with ``/`` and holds printable ASCII only; canonicalising
the canonical form gives it back (idempotent); and the fast path (the regex) agrees with the
byte-by-byte path on every input it takes.
"""

from __future__ import annotations

from harness import instrumented, main, text

with instrumented():
    from authgate.errors import InvalidTarget
    from authgate.policy import target as target_module
    from authgate.policy.target import MAX_TARGET_LENGTH, Target, canonicalize


def _slow(raw: str) -> Target:
    """``canonicalize`` without its fast path."""
    if not raw or len(raw) > MAX_TARGET_LENGTH or not raw.startswith("/"):
        raise InvalidTarget("refused before the path")
    path, sep, query = raw.partition("?")
    canonical = target_module._canonical_path(path)
    if sep:
        target_module._check_query(query)
    return Target(canonical, query)


def test_one_input(data: bytes) -> None:
    raw = text(data)
    try:
        got = canonicalize(raw)
    except InvalidTarget:
        got = None
    try:
        slow: Target | None = _slow(raw)
    except InvalidTarget:
        slow = None
    if got != slow:
        raise AssertionError(f"fast and slow paths disagree on {raw!r}: {got!r} != {slow!r}")
    if got is None:
        return
    assert got.path.startswith("/"), got
    assert all(0x21 <= ord(c) < 0x7F for c in str(got)), got
    again = canonicalize(str(got))
    if again != got:
        raise AssertionError(f"not idempotent: {raw!r} -> {got!r} -> {again!r}")


if __name__ == "__main__":
    main(test_one_input)
