"""The BPC verifier: every error code of docs/protocols.md §1 from the input that must produce it,
the order rule (nothing unauthenticated consumes a nonce or counts toward lock-out), lock-out
that only the device key can trigger, and the forward-auth body rule.

Most tests run the verifier in process on memory stores with a manual clock; the rate-limit,
lock-out and body-rule tests that need HTTP run the whole application in process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from authgate.errors import PairLockedOut, RateLimited
from authgate.models import CredentialType
from authgate.pairs.records import PairStatus
from tests.bpc.conftest import (
    ATTACKER_IP,
    SECRET,
    Device,
    GatewayFactory,
    Verifying,
    b64url,
    json_object,
    make_verifying,
    raw_exchange,
    request_bytes,
    route,
)
from tests.support import P256_ORDER

WINDOW_MS = 60_000


def high_s(signature_b64: str) -> str:
    """The other valid signature of the same message: ``(r, n - s)`` (ECDSA malleability)."""
    r, s = decode_dss_signature(base64.urlsafe_b64decode(signature_b64 + "=" * 3))
    return b64url(encode_dss_signature(r, P256_ORDER - s))


def canonical(payload: dict[str, Any]) -> bytes:
    """Sorted, compact JSON bytes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


# --- acceptance ----------------------------------------------------------------------------


async def test_a_correct_request_yields_the_pair_principal(verifying: Verifying) -> None:
    """A correctly signed request authenticates as its pair, with its scopes and fingerprint."""
    device = await verifying.register(scope="read-write")
    principal = await verifying.verify(device.headers("GET", "/api/items"))
    assert principal.subject == principal.credential_id == device.pair_id
    assert principal.credential_type is CredentialType.BPC
    assert principal.scopes == {"read", "read-write"}
    assert principal.claims["device_key_only"] is False


async def test_a_signed_body_is_checked_against_the_body_read(verifying: Verifying) -> None:
    """A POST whose signed hash matches the body it carries is accepted."""
    device = await verifying.register()
    body = b'{"name":"x"}'
    headers = device.headers("POST", "/api/items", body)
    await verifying.verify(headers, method="POST", body=body)


async def test_an_imported_pair_is_device_key_only(verifying: Verifying) -> None:
    """A pair imported with only an argon2 hash is checked by key alone and reported as such."""
    device = verifying.device()
    device.pair_id = "pair_imported"
    await verifying.pairs.import_bpc_server(
        {
            "pair_id": device.pair_id,
            "scope": "read",
            "public_key_jwk": device.public_jwk,
            "secret_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        }
    )
    principal = await verifying.verify(device.headers("GET", "/api/items", secret="any-secret"))
    assert principal.claims["device_key_only"] is True


# --- every error code ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing", ["X-BPC-Pair-ID", "X-BPC-Signed-Data", "X-BPC-Signature", "X-BPC-Version"]
)
@pytest.mark.parametrize("how", ["absent", "empty"])
async def test_missing_headers_names_the_header(
    verifying: Verifying, missing: str, how: str
) -> None:
    """Three of the four headers: missing_headers, and the message names the fourth."""
    device = await verifying.register()
    headers = device.headers("GET", "/api/items")
    if how == "absent":
        del headers[missing]
    else:
        headers[missing] = ""
    error = await verifying.refuse(headers)
    assert error.reason == "missing_headers"
    assert missing in error.message


@pytest.mark.parametrize(
    "header",
    ["pair_\u00e9", "pair_\udcff", "pair id", "p" * 129],
    ids=["latin-1", "undecodable-byte", "space", "too-long"],
)
async def test_a_malformed_pair_id_header_is_invalid_signed_data(
    verifying: Verifying, header: str
) -> None:
    """An X-BPC-Pair-ID that is no pair id (non-ASCII too) is refused cleanly, never a 500."""
    device = await verifying.register()
    headers = {**device.headers("GET", "/api/items"), "X-BPC-Pair-ID": header}
    assert (await verifying.refuse(headers)).reason == "invalid_signed_data"


async def test_unknown_pair(verifying: Verifying) -> None:
    """A well-signed request naming a pair nobody registered: unknown_pair."""
    stranger = verifying.device(pair_id="pair_nobody")
    assert (await verifying.refuse(stranger.headers("GET", "/api/items"))).reason == "unknown_pair"


async def test_pair_pending(verifying: Verifying) -> None:
    """A production pair awaiting approval: pair_pending."""
    device = await verifying.register(mode="production")
    assert (await verifying.refuse(device.headers("GET", "/api/items"))).reason == "pair_pending"


async def test_pair_revoked(verifying: Verifying) -> None:
    """A revoked pair: pair_revoked, even for a request signed before the revocation."""
    device = await verifying.register()
    signed_before = device.headers("GET", "/api/items")
    await verifying.pairs.revoke(device.pair_id, by="operator")
    assert (await verifying.refuse(signed_before)).reason == "pair_revoked"
    assert (await verifying.refuse(device.headers("GET", "/api/items"))).reason == "pair_revoked"


async def test_pair_expired(verifying: Verifying) -> None:
    """A pair past its expires_at: pair_expired (and accepted the millisecond before)."""
    device = await verifying.register()
    record = await verifying.pairs.get(device.pair_id)
    expires = verifying.clock.now_ms() + 1
    await verifying.stores.pairs.put(
        device.pair_id, record.with_changes(expires_at=expires).to_json()
    )
    await verifying.directory.changed(device.pair_id)
    await verifying.verify(device.headers("GET", "/api/items"))
    verifying.clock.advance(1)
    assert (await verifying.refuse(device.headers("GET", "/api/items"))).reason == "pair_expired"


async def test_pair_locked_out(verifying: Verifying) -> None:
    """A locked pair: pair_locked_out, whatever the request."""
    device = await verifying.register()
    for _ in range(verifying.settings.lockout_threshold):
        await verifying.refuse(device.headers("GET", "/api/items", secret="wrong-secret"))
    error = await verifying.refuse(device.headers("GET", "/api/items"))
    assert isinstance(error, PairLockedOut)
    assert error.reason == "pair_locked_out"


def _signed_data_cases(device: Device) -> dict[str, tuple[bytes, str]]:
    """Raw signed bytes (each validly signed by the device key) that must not parse."""
    good = device.payload("GET", "/api/items")
    padded = device.payload("GET", "/api/items" + "x" * ((1 - len(canonical(good))) % 3))
    return {
        "duplicate-key": (json_object([*good.items(), ("method", "GET")]), "repeats"),
        "extra-member": (canonical({**good, "extra": 1}), "unknown"),
        "missing-member": (canonical({k: v for k, v in good.items() if k != "nonce"}), "missing"),
        "float-timestamp": (canonical({**good, "timestamp": float(good["timestamp"])}), "integer"),
        "string-timestamp": (canonical({**good, "timestamp": str(good["timestamp"])}), "integer"),
        "bool-timestamp": (canonical({**good, "timestamp": True}), "integer"),
        "non-utf8": (canonical(good).replace(b"/api", b"/\xff\xfe"), "UTF-8"),
        "padded-base64": (canonical(padded), "base64url"),
        "pair-id-differs": (canonical({**good, "pair_id": "pair_other"}), "X-BPC-Pair-ID"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "duplicate-key",
        "extra-member",
        "missing-member",
        "float-timestamp",
        "string-timestamp",
        "bool-timestamp",
        "non-utf8",
        "padded-base64",
        "pair-id-differs",
    ],
)
async def test_invalid_signed_data(verifying: Verifying, case: str) -> None:
    """Validly signed but malformed payloads: invalid_signed_data naming the problem."""
    device = await verifying.register()
    raw, message = _signed_data_cases(device)[case]
    signed_data = b64url(raw) + ("=" * (-len(b64url(raw)) % 4) if case == "padded-base64" else "")
    assert signed_data.endswith("=") or case != "padded-base64"
    error = await verifying.refuse(device.headers_for(raw, signed_data=signed_data))
    assert error.reason == "invalid_signed_data"
    assert message in error.message


@pytest.mark.parametrize("where", ["header", "payload"])
async def test_unsupported_version(verifying: Verifying, where: str) -> None:
    """Version 2.0 in the header or inside the signed payload: unsupported_version."""
    device = await verifying.register()
    if where == "header":
        headers = device.headers_for(canonical(device.payload("GET", "/api/items")), version="2.0")
    else:
        headers = device.headers("GET", "/api/items", version="2.0")
    assert (await verifying.refuse(headers)).reason == "unsupported_version"


@pytest.mark.parametrize(
    ("offset_ms", "accepted"),
    [
        (-WINDOW_MS, True),
        (-WINDOW_MS - 1, False),
        (WINDOW_MS, True),
        (WINDOW_MS + 1, False),
        (-10 * WINDOW_MS, False),
    ],
    ids=["oldest-accepted", "one-ms-too-old", "newest-accepted", "one-ms-too-new", "stale"],
)
async def test_timestamp_window_edges(verifying: Verifying, offset_ms: int, accepted: bool) -> None:
    """The window is ±60 000 ms inclusive: one millisecond beyond is timestamp_expired."""
    device = await verifying.register()
    headers = device.headers("GET", "/api/items", timestamp=verifying.clock.now_ms() + offset_ms)
    if accepted:
        await verifying.verify(headers)
    else:
        assert (await verifying.refuse(headers)).reason == "timestamp_expired"


async def test_replay_detected(verifying: Verifying) -> None:
    """The same signed request twice: the second is replay_detected."""
    device = await verifying.register()
    headers = device.headers("GET", "/api/items")
    await verifying.verify(headers)
    assert (await verifying.refuse(headers)).reason == "replay_detected"


async def test_replay_detected_after_the_clock_moves_within_the_window(
    verifying: Verifying,
) -> None:
    """A replay near the end of the window is still caught (nonces outlive the window)."""
    device = await verifying.register()
    headers = device.headers("GET", "/api/items")
    await verifying.verify(headers)
    verifying.clock.advance(WINDOW_MS)
    assert (await verifying.refuse(headers)).reason == "replay_detected"


@pytest.mark.parametrize(
    ("signed", "sent", "rule"),
    [
        (("GET", "/api/items"), ("POST", "/api/items"), {}),
        (("GET", "/api/items"), ("GET", "/api/other"), {}),
        (("GET", "/api/items?q=1"), ("GET", "/api/items?q=2"), {}),
        (("GET", "/api/items"), ("GET", "/api/items?q=1"), {}),
        (("GET", "/api/items?q=1"), ("GET", "/api/items"), {}),
        (("GET", "/api/items"), ("GET", "/api/Items"), {}),
        (("GET", "/api/items?q=1"), ("GET", "/api/items?q=2"), {"allow_unsigned_query": True}),
        (("GET", "/api/items"), ("GET", "/api/other?q=1"), {"allow_unsigned_query": True}),
    ],
    ids=[
        "method",
        "path",
        "query-changed",
        "query-added",
        "query-removed",
        "path-case",
        "signed-query-changed-on-opt-in-route",
        "path-changed-on-opt-in-route",
    ],
)
async def test_method_path_mismatch(
    verifying: Verifying,
    signed: tuple[str, str],
    sent: tuple[str, str],
    rule: dict[str, Any],
) -> None:
    """The signed method and path (with its query) must be the request's: method_path_mismatch."""
    device = await verifying.register()
    headers = device.headers(*signed)
    error = await verifying.refuse(headers, method=sent[0], target=sent[1], rule=route(**rule))
    assert error.reason == "method_path_mismatch"


async def test_unsigned_query_is_accepted_only_where_the_route_opts_in(
    verifying: Verifying,
) -> None:
    """A path signed without the request's query passes only with allow_unsigned_query."""
    device = await verifying.register()
    headers = device.headers("GET", "/api/items")
    error = await verifying.refuse(headers, target="/api/items?q=1", rule=route())
    assert error.reason == "method_path_mismatch"
    rule = route(allow_unsigned_query=True)
    await verifying.verify(headers, target="/api/items?q=1", rule=rule)


@pytest.mark.parametrize(
    ("signed_body", "sent_body"),
    [(b'{"a":1}', b'{"a":2}'), (b"", b"x"), (b"x", b"")],
    ids=["different", "added", "removed"],
)
async def test_body_hash_mismatch(
    verifying: Verifying, signed_body: bytes, sent_body: bytes
) -> None:
    """A body that is not the signed one: body_hash_mismatch."""
    device = await verifying.register()
    headers = device.headers("POST", "/api/items", signed_body)
    error = await verifying.refuse(headers, method="POST", body=sent_body)
    assert error.reason == "body_hash_mismatch"


def _bad_signatures(device: Device, raw: bytes) -> dict[str, str]:
    der = base64.urlsafe_b64decode(device.sign(raw) + "==")
    r, s = decode_dss_signature(der)
    body = der[2:]
    return {
        "other-key": Device(secret=SECRET, now_ms=device.now_ms).sign(raw),
        "flipped-bit": b64url(der[:-1] + bytes([der[-1] ^ 1])),
        "raw-r-s": b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big")),
        "ber-long-length": b64url(b"\x30\x81" + bytes([len(body)]) + body),
        "trailing-byte": b64url(der + b"\x00"),
        "not-base64url": "!!" + device.sign(raw),
        "padded": device.sign(raw) + "=",
        "too-long": b64url(der + b"\x00" * 64),
        "zero-r-s": b64url(encode_dss_signature(0, 0)),
        "empty-der": b64url(b"\x30\x00"),
    }


BAD_SIGNATURE_IDS = [
    "other-key",
    "flipped-bit",
    "raw-r-s",
    "ber-long-length",
    "trailing-byte",
    "not-base64url",
    "padded",
    "too-long",
    "zero-r-s",
    "empty-der",
]


@pytest.mark.parametrize("case", BAD_SIGNATURE_IDS)
async def test_signature_invalid(verifying: Verifying, case: str) -> None:
    """A signature that is not the device key's, or not strict DER: signature_invalid."""
    device = await verifying.register()
    raw = canonical(device.payload("GET", "/api/items"))
    headers = device.headers_for(raw, signature=_bad_signatures(device, raw)[case])
    assert (await verifying.refuse(headers)).reason == "signature_invalid"


async def test_wrong_secret_is_signature_invalid(verifying: Verifying) -> None:
    """The device key's signature over a wrong secret_hmac: signature_invalid."""
    device = await verifying.register()
    headers = device.headers("GET", "/api/items", secret="not-the-secret")
    assert (await verifying.refuse(headers)).reason == "signature_invalid"


async def test_high_s_signature_verifies_but_its_replay_is_caught(verifying: Verifying) -> None:
    """(r, n-s) is a second valid signature; the nonce, not the signature, is keyed."""
    device = await verifying.register()
    headers = device.headers("GET", "/api/items")
    reshaped = {**headers, "X-BPC-Signature": high_s(headers["X-BPC-Signature"])}
    assert reshaped["X-BPC-Signature"] != headers["X-BPC-Signature"]
    await verifying.verify(headers)
    error = await verifying.refuse(reshaped)
    assert error.reason == "replay_detected"  # it passed the signature check


async def test_high_s_signature_alone_is_accepted_once(verifying: Verifying) -> None:
    """The re-shaped signature is accepted on its own, and then the original is the replay."""
    device = await verifying.register()
    headers = device.headers("GET", "/api/items")
    reshaped = {**headers, "X-BPC-Signature": high_s(headers["X-BPC-Signature"])}
    await verifying.verify(reshaped)
    assert (await verifying.refuse(headers)).reason == "replay_detected"


async def test_scope_denied(verifying: Verifying) -> None:
    """A read pair may GET but not POST: scope_denied with 403."""
    device = await verifying.register(scope="read")
    await verifying.verify(device.headers("GET", "/api/items"))
    error = await verifying.refuse(device.headers("POST", "/api/items"), method="POST")
    assert (error.reason, error.status) == ("scope_denied", 403)


@pytest.mark.parametrize(
    ("scope", "method", "allowed"),
    [
        ("read", "HEAD", True),
        ("read", "OPTIONS", True),
        ("read", "PUT", False),
        ("read-write", "PATCH", True),
        ("read-write", "DELETE", False),
        ("admin", "DELETE", True),
    ],
    ids=["read-head", "read-options", "read-put", "rw-patch", "rw-delete", "admin-delete"],
)
async def test_scope_methods(verifying: Verifying, scope: str, method: str, allowed: bool) -> None:
    """Each scope allows exactly its methods."""
    device = await verifying.register(scope=scope)
    headers = device.headers(method, "/api/items")
    if allowed:
        await verifying.verify(headers, method=method)
    else:
        assert (await verifying.refuse(headers, method=method)).reason == "scope_denied"


# --- the order rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "copy",
    ["bad-signature", "high-s-of-other-payload", "wrong-target", "wrong-body", "pending-check"],
)
async def test_a_refused_copy_never_consumes_the_nonce(verifying: Verifying, copy: str) -> None:
    """A refused request carrying a good request's nonce first; the good one still passes."""
    device = await verifying.register()
    nonce, timestamp = str(uuid.uuid4()), verifying.clock.now_ms()
    body = b'{"a":1}'
    good = device.headers("POST", "/api/items", body, nonce=nonce, timestamp=timestamp)
    request: dict[str, Any] = {"method": "POST", "target": "/api/items", "body": body}
    if copy == "bad-signature":
        first = {**good, "X-BPC-Signature": Device(secret=SECRET, now_ms=device.now_ms).sign(b"")}
    elif copy == "high-s-of-other-payload":
        other = device.headers("POST", "/api/other", body, nonce=nonce, timestamp=timestamp)
        first = {**good, "X-BPC-Signature": high_s(other["X-BPC-Signature"])}
    elif copy == "pending-check":  # refused before the signature: the wrong method
        first = good
        request = {**request, "method": "PUT"}
    elif copy == "wrong-target":
        first = good
        request = {**request, "target": "/api/elsewhere"}
    else:
        first = good
        request = {**request, "body": b'{"a":2}'}
    await verifying.refuse(first, **request)
    await verifying.verify(good, method="POST", target="/api/items", body=body)


async def test_a_wrong_secret_request_spends_its_nonce_so_replays_are_not_counted(
    verifying: Verifying,
) -> None:
    """A wrong-secret request counts once; replaying the captured copy is replay_detected."""
    device = await verifying.register()
    captured = device.headers("GET", "/api/items", secret="typo-secret")
    assert (await verifying.refuse(captured)).reason == "signature_invalid"
    for i in range(2 * verifying.settings.lockout_threshold):
        error = await verifying.refuse(captured, client_ip=f"203.0.113.{i}")
        assert error.reason == "replay_detected"
    assert verifying.failure_count(device.pair_id) == 1
    assert (await verifying.pairs.get(device.pair_id)).status is PairStatus.ACTIVE
    await verifying.verify(device.headers("GET", "/api/items"))


async def test_a_bad_signature_never_touches_the_failure_counter(verifying: Verifying) -> None:
    """Requests failing the signature leave the pair's lock-out counter at zero."""
    device = await verifying.register()
    raw = canonical(device.payload("GET", "/api/items"))
    for case, signature in _bad_signatures(device, raw).items():
        error = await verifying.refuse(device.headers_for(raw, signature=signature))
        assert error.reason == "signature_invalid", case
    assert verifying.failure_count(device.pair_id) == 0


# --- lock-out ------------------------------------------------------------------------------


def _garbage(victim: Device, attacker: Device, i: int) -> dict[str, str]:
    """Requests naming the victim's pair that prove nothing: three kinds, rotating."""
    kind = i % 3
    if kind == 0:  # a well-formed request signed by another key
        attacker.pair_id = victim.pair_id
        return attacker.headers("GET", "/api/items")
    if kind == 1:  # signed data that is not a payload
        return victim.headers_for(os.urandom(48), signature=b64url(os.urandom(70)))
    return {  # random header values
        "X-BPC-Pair-ID": victim.pair_id,
        "X-BPC-Signed-Data": b64url(os.urandom(200)),
        "X-BPC-Signature": b64url(os.urandom(72)),
        "X-BPC-Version": "1.0",
    }


async def test_garbage_naming_a_pair_never_locks_it_out(verifying: Verifying) -> None:
    """Hundreds of garbage requests from many addresses: the victim's pair still works."""
    victim = await verifying.register()
    attacker = verifying.device(secret="attacker-secret")
    for i in range(300):
        error = await verifying.refuse(
            _garbage(victim, attacker, i), client_ip=f"203.0.113.{i % 50}"
        )
        assert error.reason in {"signature_invalid", "invalid_signed_data"}
    assert verifying.failure_count(victim.pair_id) == 0
    assert (await verifying.pairs.get(victim.pair_id)).status is PairStatus.ACTIVE
    await verifying.verify(victim.headers("GET", "/api/items"))


async def test_garbage_is_rate_limited_per_address() -> None:
    """After failures_per_minute failures an address gets 429; other addresses are unaffected."""
    harness = await make_verifying(failures_per_minute=5)
    victim = await harness.register()
    attacker = harness.device(secret="attacker-secret")
    for i in range(5):
        error = await harness.refuse(_garbage(victim, attacker, i), client_ip=ATTACKER_IP)
        assert error.reason != "rate_limited"
    error = await harness.refuse(_garbage(victim, attacker, 5), client_ip=ATTACKER_IP)
    assert isinstance(error, RateLimited)
    assert error.retry_after_seconds >= 1
    await harness.verify(victim.headers("GET", "/api/items"))


async def test_an_address_over_its_budget_cannot_flush_the_pairs_audit_trail() -> None:
    """Refusals answered 429 write no audit entry, so garbage cannot evict the pair's trail."""
    harness = await make_verifying(failures_per_minute=5, audit_cap=20)
    victim = await harness.register()
    await harness.verify(victim.headers("GET", "/api/genuine"), target="/api/genuine")
    attacker = harness.device(secret="attacker-secret")
    for i in range(60):
        await harness.refuse(_garbage(victim, attacker, i), client_ip=ATTACKER_IP)
    trail = await harness.pairs.trail(victim.pair_id, 20)
    refusals = [e for e in trail if e.get("client_ip") == ATTACKER_IP]
    assert len(refusals) == 5
    assert "/api/genuine" in {e.get("path") for e in trail}


async def test_wrong_secret_with_the_device_key_locks_the_pair_out(verifying: Verifying) -> None:
    """Ten wrong-secret requests signed by the device key lock the pair; then all is refused."""
    device = await verifying.register()
    reasons = [
        (await verifying.refuse(device.headers("GET", "/api/items", secret="wrong-secret"))).reason
        for _ in range(11)
    ]
    assert reasons[:9] == ["signature_invalid"] * 9
    assert reasons[9] in {"signature_invalid", "pair_locked_out"}
    assert reasons[10] == "pair_locked_out"
    assert (await verifying.pairs.get(device.pair_id)).status is PairStatus.LOCKED
    error = await verifying.refuse(device.headers("GET", "/api/items"))
    assert error.reason == "pair_locked_out"


async def test_wrong_secret_failures_are_not_charged_to_the_address() -> None:
    """The device's own wrong-secret requests reach lock-out, not the address rate limit."""
    harness = await make_verifying(failures_per_minute=3, lockout_threshold=10)
    device = await harness.register()
    reasons = {
        (await harness.refuse(device.headers("GET", "/api/items", secret="wrong"))).reason
        for _ in range(9)
    }
    assert reasons == {"signature_invalid"}


async def test_an_unlocked_pair_works_again(verifying: Verifying) -> None:
    """After an operator unlock the counter starts from zero."""
    device = await verifying.register()
    for _ in range(verifying.settings.lockout_threshold):
        await verifying.refuse(device.headers("GET", "/api/items", secret="wrong-secret"))
    await verifying.pairs.unlock(device.pair_id)
    await verifying.verify(device.headers("GET", "/api/items"))
    assert verifying.failure_count(device.pair_id) == 0


async def test_garbage_from_an_address_gets_429_with_retry_after(
    gateway_factory: GatewayFactory,
) -> None:
    """Over HTTP: the attacker's address gets 429 rate_limited with Retry-After; the pair works."""
    gw = await gateway_factory(bpc={"failures_per_minute": 5})
    victim = gw.device()
    await gw.register(victim)
    attacker = gw.device(secret="attacker-secret")
    xff = {"X-Forwarded-For": ATTACKER_IP}
    for i in range(5):
        status, body, _ = await gw.send(
            "GET", "/api/items", {**_garbage(victim, attacker, i), **xff}
        )
        assert status == 401, body
    for i in range(5, 25):
        status, body, headers = await gw.send(
            "GET", "/api/items", {**_garbage(victim, attacker, i), **xff}
        )
        assert (status, body["error"]["code"]) == (429, "rate_limited")
        assert int(headers["Retry-After"]) >= 1
    status, body, _ = await gw.send("GET", "/api/items", victim.headers("GET", "/api/items"))
    assert status == 200, body
    assert gw.stores.pairs._failures.get(victim.pair_id, 0) == 0


async def test_a_non_ascii_pair_id_over_http_is_401_not_500(
    gateway_factory: GatewayFactory,
) -> None:
    """Raw header bytes outside ASCII in X-BPC-Pair-ID: 401 invalid_signed_data."""
    gw = await gateway_factory()
    device = gw.device()
    await gw.register(device)
    headers = {**device.headers("GET", "/api/items"), "X-BPC-Pair-ID": "pair_\u00e9"}
    status, body = await raw_exchange(gw.port, request_bytes("GET", "/api/items", headers))
    assert (status, body["error"]["code"]) == (401, "invalid_signed_data")


async def test_a_repeated_bpc_header_is_refused(gateway_factory: GatewayFactory) -> None:
    """Two X-BPC-Signature headers could be read differently upstream: 400 malformed_header."""
    gw = await gateway_factory()
    device = gw.device()
    await gw.register(device)
    headers = device.headers("GET", "/api/items")
    twice = [*headers.items(), ("X-BPC-Signature", headers["X-BPC-Signature"])]
    status, body = await raw_exchange(gw.port, request_bytes("GET", "/api/items", twice))
    assert (status, body["error"]["code"]) == (400, "malformed_header")


# --- the forward-auth body rule --------------------------------------------------------------


NGINX = {"X-Original-Method": "POST", "X-Original-URI": "/api/items"}
TRAEFIK = {
    "X-Forwarded-Method": "POST",
    "X-Forwarded-Uri": "/api/items",
    "X-Forwarded-Host": "app.test",
    "X-Forwarded-Proto": "https",
}
BODY = b'{"name":"widget"}'


async def test_nginx_door_refuses_a_body_it_cannot_see(gateway_factory: GatewayFactory) -> None:
    """/auth gets no body: a signed non-empty body hash is body_hash_mismatch, and says why."""
    gw = await gateway_factory()
    device = gw.device()
    await gw.register(device)
    status, body, _ = await gw.send(
        "GET", "/auth", {**NGINX, **device.headers("POST", "/api/items", BODY)}
    )
    assert (status, body["error"]["code"]) == (401, "body_hash_mismatch")
    assert "did not forward the request body" in body["error"]["message"]
    assert "allow_unverified_body" in body["error"]["message"]


async def test_nginx_door_accepts_a_signed_empty_body(gateway_factory: GatewayFactory) -> None:
    """/auth: a POST signed with the empty body hash needs no body to check."""
    gw = await gateway_factory()
    device = gw.device()
    await gw.register(device)
    status, body, headers = await gw.send(
        "GET", "/auth", {**NGINX, **device.headers("POST", "/api/items")}
    )
    assert status == 200, body
    assert headers["X-Authgate-Subject"] == device.pair_id


async def test_nginx_door_accepts_an_unverified_body_where_the_route_allows(
    gateway_factory: GatewayFactory,
) -> None:
    """/auth: a route with allow_unverified_body accepts the signed hash unchecked."""
    rules = [
        {"id": "uploads", "path_prefix": "/api", "allow_unverified_body": True},
        {"id": "rest", "path_prefix": "/"},
    ]
    gw = await gateway_factory(policy={"rules": rules})
    device = gw.device()
    await gw.register(device)
    status, body, _ = await gw.send(
        "GET", "/auth", {**NGINX, **device.headers("POST", "/api/items", BODY)}
    )
    assert status == 200, body
    other = {**NGINX, "X-Original-URI": "/other"}
    status, body, _ = await gw.send(
        "GET", "/auth", {**other, **device.headers("POST", "/other", BODY)}
    )
    assert (status, body["error"]["code"]) == (401, "body_hash_mismatch")


@pytest.mark.parametrize(
    ("sent", "expected"),
    [(BODY, 200), (b'{"name":"gadget"}', 401), (b"", 401)],
    ids=["same-body", "tampered-body", "no-body"],
)
async def test_traefik_door_checks_a_forwarded_body(
    gateway_factory: GatewayFactory, sent: bytes, expected: int
) -> None:
    """/auth/forward with the body forwarded: the body is hashed and compared."""
    gw = await gateway_factory()
    device = gw.device()
    await gw.register(device)
    headers = {**TRAEFIK, **device.headers("POST", "/api/items", BODY)}
    status, body, _ = await gw.send("POST", "/auth/forward", headers, sent or None)
    assert status == expected, body
    if expected == 401:
        assert body["error"]["code"] == "body_hash_mismatch"


@pytest.mark.parametrize("door", ["sidecar", "traefik"])
async def test_a_body_over_the_limit_is_413(gateway_factory: GatewayFactory, door: str) -> None:
    """A body beyond bpc.max_body_bytes is refused with 413 body_too_large, never buffered."""
    gw = await gateway_factory(bpc={"max_body_bytes": 1024})
    device = gw.device()
    await gw.register(device)
    big = b"x" * 4096
    headers = device.headers("POST", "/api/items", big)
    if door == "sidecar":
        status, body, _ = await gw.send("POST", "/api/items", headers, big)
    else:
        status, body, _ = await gw.send("POST", "/auth/forward", {**TRAEFIK, **headers}, big)
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    fits = b"y" * 1024
    headers = device.headers("POST", "/api/items", fits)
    status, echoed, _ = await gw.send("POST", "/api/items", headers, fits)
    assert status == 200
    assert echoed["body_sha256"] == hashlib.sha256(fits).hexdigest()
