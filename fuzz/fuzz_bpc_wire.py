"""The BPC v1.0 wire format (``authgate.crypto.bpc_wire``): ``parse_signed_data`` (the
``X-BPC-Signed-Data`` header) and ``b64url_decode`` (also ``X-BPC-Signature``).

The first byte picks the entry point (the seed files start with ``0``, ``1`` or ``2``):

* ``0``: the rest is the ``X-BPC-Signed-Data`` header as sent;
* ``1``: the rest is the JSON inside it (base64url-encoded here, so the fuzzer reaches the
  member checks);
* ``2``: the rest goes to ``b64url_decode``.

Contract: a value or :class:`WireError`, nothing else. Round trips: accepted signed data
re-serialised (``canonical_json`` of its eight members) parses to an equal payload, and its
``raw`` bytes read back to the same members; ``b64url`` of decoded bytes is the input.
"""

from __future__ import annotations

import dataclasses

from harness import instrumented, main, text

with instrumented():
    from authgate.crypto.bpc_wire import (
        PAYLOAD_MEMBERS,
        SignedPayload,
        WireError,
        b64url,
        b64url_decode,
        canonical_json,
        parse_signed_data,
    )
    from authgate.strict_json import loads_object


def _members(payload: SignedPayload) -> dict[str, object]:
    return {
        f.name: getattr(payload, f.name) for f in dataclasses.fields(payload) if f.name != "raw"
    }


def _check_round_trip(payload: SignedPayload) -> None:
    members = _members(payload)
    assert set(members) == PAYLOAD_MEMBERS, members
    assert loads_object(payload.raw, "raw") == members, payload
    again = parse_signed_data(b64url(canonical_json(members)))
    if _members(again) != members:
        raise AssertionError(f"re-serialised {members!r} parses as {_members(again)!r}")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 2:
        value = text(rest)
        try:
            decoded = b64url_decode(value, what="fuzzed")
        except WireError:
            return
        assert b64url(decoded) == value, value
        return
    encoded = text(rest) if mode == 0 else b64url(rest)
    try:
        payload = parse_signed_data(encoded)
    except WireError:
        return
    _check_round_trip(payload)


if __name__ == "__main__":
    main(test_one_input)
