"""The strict JSON reader (``authgate.strict_json.loads_object``).

Contract: a ``dict`` or :class:`StrictJSONError`, nothing else. Properties of an accepted
object: Python's own ``json`` reads the same text to an equal value (strictness only takes
away); it round-trips: ``json.dumps`` of it reads back, strictly, to an equal object (so no
value the strict reader accepts is one it would refuse when written back, e.g. an
infinity); no member name repeats.
"""

from __future__ import annotations

import json

from harness import instrumented, main

with instrumented():
    from authgate.strict_json import StrictJSONError, loads_object


def test_one_input(data: bytes) -> None:
    try:
        value = loads_object(data, "fuzzed input")
    except StrictJSONError:
        return
    assert isinstance(value, dict), value
    assert json.loads(data.decode("utf-8")) == value
    written = json.dumps(value).encode()
    try:
        again = loads_object(written, "written back")
    except StrictJSONError as exc:
        raise AssertionError(f"{data!r} is accepted but its json.dumps {written!r}: {exc}") from exc
    if again != value:
        raise AssertionError(f"round trip changed {value!r} into {again!r}")


if __name__ == "__main__":
    main(test_one_input)
