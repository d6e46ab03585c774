"""The strict JSON reader: what it refuses, and that what it accepts writes back to itself."""

from __future__ import annotations

import json

import pytest

from authgate.strict_json import StrictJSONError, loads_object


@pytest.mark.parametrize(
    "data",
    [b'{"x":1e678901234567890}', b'{"x":1e400}', b'{"x":-1e309}', b'{"x":[1.0E+999]}'],
    ids=repr,
)
def test_a_number_that_overflows_to_infinity_is_refused(data: bytes) -> None:
    """Found by fuzzing (fuzz/fuzz_strict_json.py, corpus file float-overflow): `1e400` is
    standard JSON that Python reads as infinity, which `json.dumps` writes back as the
    `Infinity` constant the reader refuses; such a number is refused like the constant."""
    with pytest.raises(StrictJSONError, match="out of range"):
        loads_object(data, "document")


@pytest.mark.parametrize(
    "data",
    [b'{"x":1e308}', b'{"x":-0.0}', b'{"x":1e-400}', b'{"x":12345678901234567890}'],
    ids=repr,
)
def test_large_finite_numbers_round_trip(data: bytes) -> None:
    """The largest floats, underflow to zero and big integers are accepted and write back."""
    value = loads_object(data, "document")
    assert loads_object(json.dumps(value).encode(), "written back") == value


@pytest.mark.parametrize(
    "data",
    [b'{"a":1,"a":2}', b'{"n":NaN}', b'{"n":-Infinity}', b"[]", b'"s"', b"\xff{}", b"{"],
    ids=repr,
)
def test_the_documented_refusals(data: bytes) -> None:
    """Duplicates, the non-standard constants, non-objects, non-UTF-8, broken JSON."""
    with pytest.raises(StrictJSONError):
        loads_object(data, "document")
