"""BPC under hostile input (issue 13): the body is read only once the device key is proven,
and wrong-secret counts decay."""

from __future__ import annotations

import json

import pytest

from authgate.errors import AuthGateError
from authgate.pairs.records import PairStatus
from tests.bpc.conftest import Verifying, b64url, make_verifying

BIG = b"x" * 900_000


async def test_a_wrong_signature_never_reads_the_body(verifying: Verifying) -> None:
    """Naming a known pair with a bad signature and a large body: the body is never read."""
    device = await verifying.register()
    payload = device.payload("POST", "/api/items", BIG)
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    other = verifying.device()
    headers = device.headers_for(raw, signature=other.sign(raw))  # another key's signature
    reads: list[int] = []

    async def read() -> bytes:
        reads.append(1)
        return BIG

    context = verifying.context(headers, method="POST", body=BIG)._replace(read_body=read)
    credential = verifying.verifier.extract(context)
    assert credential is not None
    with pytest.raises(AuthGateError) as info:
        await verifying.verifier.verify(credential, context)
    assert info.value.reason == "signature_invalid"
    assert reads == []


async def test_a_valid_signature_still_checks_the_body(verifying: Verifying) -> None:
    """With the device key proven, a body that differs from the signed hash is refused."""
    device = await verifying.register()
    headers = device.headers("POST", "/api/items", b"signed body")
    error = await verifying.refuse(headers, method="POST", body=b"another body")
    assert error.reason == "body_hash_mismatch"
    principal = await verifying.verify(
        device.headers("POST", "/api/items", b"signed body"), method="POST", body=b"signed body"
    )
    assert principal.subject == device.pair_id


async def test_garbage_signature_on_a_body_is_signature_invalid(verifying: Verifying) -> None:
    device = await verifying.register()
    payload = device.payload("POST", "/api/items", b"body")
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    headers = device.headers_for(raw, signature=b64url(b"\x30" * 70))
    error = await verifying.refuse(headers, method="POST", body=b"different")
    assert error.reason == "signature_invalid"


async def test_wrong_secrets_spread_over_months_never_lock_the_pair_out() -> None:
    """Wrong-secret counts decay: ten a month for a year, never ten within the window."""
    harness = await make_verifying(lockout_threshold=10, lockout_window_seconds=3600)
    device = await harness.register()
    for _ in range(12 * 10):
        error = await harness.refuse(device.headers("GET", "/api/items", secret="wrong-secret"))
        assert error.reason == "signature_invalid"
        harness.clock.advance(3 * 86_400_000)  # every three days
    await harness.verify(device.headers("GET", "/api/items"))
    assert (await harness.pairs.get(device.pair_id)).status is PairStatus.ACTIVE


async def test_ten_wrong_secrets_within_the_window_still_lock_the_pair_out() -> None:
    harness = await make_verifying(lockout_threshold=10, lockout_window_seconds=3600)
    device = await harness.register()
    for _ in range(10):
        await harness.refuse(device.headers("GET", "/api/items", secret="wrong-secret"))
        harness.clock.advance(5 * 60_000)  # 45 minutes in all
    assert (await harness.pairs.get(device.pair_id)).status is PairStatus.LOCKED
