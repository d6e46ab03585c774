"""The AGProof verifier through the whole application in process (memory stores, a clock
moved by hand): one uniform 401 for every failure, replay, freshness, revocation, the
X-Client-Pubkey binding, body binding and O(1) key lookup.

Each refusal is compared byte for byte (body) and header for header (``WWW-Authenticate``)
with the refusal of a replayed proof, so no check can be told from another. A tampered
request must also leave the genuine request's nonce unspent: an unauthenticated request
never consumes a nonce.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authgate.client.hmac_proof import proof_header
from authgate.crypto.hmac_proof import b64, new_challenge
from authgate.stores.base import ManualClock
from authgate.web.state import SERVICES
from tests.hmac import CHALLENGE_SECRET, HMACGateway, Reply, hmac_gateway

RULES: list[dict[str, Any]] = [
    {"id": "bound", "path_prefix": "/bound", "hmac_bind_body": True},
    {"id": "api", "path_prefix": "/api"},
]
TARGET = "/api/items?page=2"
UNIFORM_BODY = {"error": {"code": "invalid_proof", "message": "challenge proof rejected"}}
TTL = 60
SKEW = 5


@pytest.fixture
def clock() -> ManualClock:
    """A whole-second wall clock, moved by hand (challenges and checks both use it)."""
    return ManualClock()


@pytest.fixture
async def gate(clock: ManualClock) -> AsyncIterator[HMACGateway]:
    """The application with the suite's rules, on the manual clock."""
    async with hmac_gateway(
        rules=RULES, clock=clock, hmac={"ttl_seconds": TTL, "clock_skew_seconds": SKEW}
    ) as gateway:
        yield gateway


def auth(value: str) -> dict[str, str]:
    """An ``Authorization`` header."""
    return {"Authorization": value}


def fields(header: str) -> list[str]:
    """``[key_id, nonce, issue_ts, sig, proof]`` of an AGProof header."""
    _, _, rest = header.partition(" ")
    version, *parts = rest.split(".")
    assert version == "v1"
    return parts


def with_field(header: str, index: int, value: str) -> str:
    """The header with one field replaced."""
    parts = fields(header)
    parts[index] = value
    return "AGProof v1." + ".".join(parts)


def pubkey() -> str:
    """A fresh X25519 public key, standard base64 (what X-Client-Pubkey carries)."""
    raw = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return b64(raw)


async def replay_refusal(gate: HMACGateway, key: str) -> Reply:
    """The refusal of a replayed proof: the reference every other refusal must equal."""
    header = await gate.proof(key, "GET", TARGET)
    assert (await gate.send("GET", TARGET, auth(header))).status == 200
    replayed = await gate.send("GET", TARGET, auth(header))
    assert replayed.status == 401
    assert json.loads(replayed.body) == UNIFORM_BODY
    return replayed


def assert_uniform(reply: Reply, reference: Reply) -> None:
    """Same status, byte-equal body, equal WWW-Authenticate."""
    assert reply.status == 401
    assert reply.body == reference.body
    assert reply.headers["WWW-Authenticate"] == reference.headers["WWW-Authenticate"]
    assert reply.headers["WWW-Authenticate"].startswith("AGProof ")


async def test_a_valid_proof_is_admitted_with_its_identity(gate: HMACGateway) -> None:
    """A proof over method and target with query passes; the upstream learns the key id."""
    key = await gate.new_key(name="billing", scopes=["read", "write"])
    key_id = key.split("_")[1]
    reply = await gate.send("GET", TARGET, auth(await gate.proof(key, "GET", TARGET)))
    assert reply.status == 200
    seen = dict(json.loads(reply.body)["headers"])
    assert seen["X-Authgate-Credential"] == "hmac"
    assert seen["X-Authgate-Subject"] == f"apikey:{key_id}"
    assert seen["X-Authgate-Credential-Id"] == key_id
    assert seen["X-Authgate-Scopes"] == "read write"
    assert "Authorization" in seen  # forwarded as sent; it is single-use anyway


async def test_replay_is_refused(gate: HMACGateway) -> None:
    """The second use of a proof is 401, through either door."""
    key = await gate.new_key()
    header = await gate.proof(key, "GET", TARGET)
    assert (await gate.auth("GET", TARGET, auth(header))).status == 200
    assert (await gate.auth("GET", TARGET, auth(header))).status == 401
    assert (await gate.send("GET", TARGET, auth(header))).status == 401


async def test_the_reason_a_uniform_401_hides_is_in_the_decision_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client learns nothing; the operator's log says which check failed."""
    async with hmac_gateway(rules=RULES, logging={"access_log": True}) as gate:
        key = await gate.new_key()
        header = await gate.proof(key, "GET", TARGET)
        assert (await gate.auth("GET", TARGET, auth(header))).status == 200
        with caplog.at_level("INFO", logger="authgate.decision"):
            reply = await gate.auth("GET", TARGET, auth(header))
    assert json.loads(reply.body) == UNIFORM_BODY
    (line,) = [r for r in caplog.records if r.getMessage() == "decision"]
    assert line.__dict__["reason"] == "invalid_proof"
    assert line.__dict__["detail"] == "nonce replayed"


# (method, target, headers) to send instead of the genuine GET TARGET with ``header``.
Request = tuple[str, str, dict[str, str]]


@dataclass(frozen=True)
class Keys:
    """The key the genuine proof is made with, and another active key."""

    mine: str
    other: str


Tamper = Callable[[HMACGateway, Keys, str], Awaitable[Request]]


async def wrong_key(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """The same request and challenge, MACed with another key but naming mine."""
    key_id, nonce, ts, sig, _ = fields(header)
    challenge = {"nonce": nonce, "issue_ts": int(ts), "sig": sig}
    forged = proof_header(challenge, keys.other, "GET", TARGET)
    return "GET", TARGET, auth(with_field(forged, 0, key_id))


async def other_key_id(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """The header names another existing key id."""
    return "GET", TARGET, auth(with_field(header, 0, keys.other.split("_")[1]))


async def unknown_key_id(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """The header names a key id nobody holds."""
    return "GET", TARGET, auth(with_field(header, 0, "zzzzzzzzzzzz"))


async def other_path(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """Sent to another path."""
    return "GET", "/api/orders?page=2", auth(header)


async def other_query(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """Sent with another query."""
    return "GET", "/api/items?page=3", auth(header)


async def no_query(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """Sent without the signed query."""
    return "GET", "/api/items", auth(header)


async def other_method(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """Sent with another method."""
    return "DELETE", TARGET, auth(header)


async def later_issue_ts(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """issue_ts moved one second (the challenge signature no longer matches)."""
    return "GET", TARGET, auth(with_field(header, 2, str(int(fields(header)[2]) + 1)))


async def earlier_issue_ts(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """issue_ts moved back one second."""
    return "GET", TARGET, auth(with_field(header, 2, str(int(fields(header)[2]) - 1)))


async def other_challenge_sig(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """The signature of another genuine challenge."""
    return "GET", TARGET, auth(with_field(header, 3, (await gate.challenge())["sig"]))


async def flipped_sig_bit(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """One bit of the challenge signature flipped."""
    raw = bytearray(base64.b64decode(fields(header)[3]))
    raw[0] ^= 1
    return "GET", TARGET, auth(with_field(header, 3, b64(bytes(raw))))


async def other_nonce(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """The nonce of another genuine challenge."""
    return "GET", TARGET, auth(with_field(header, 1, (await gate.challenge())["nonce"]))


async def flipped_proof_bit(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """One bit of the proof flipped."""
    raw = bytearray(base64.b64decode(fields(header)[4]))
    raw[-1] ^= 0x80
    return "GET", TARGET, auth(with_field(header, 4, b64(bytes(raw))))


async def proof_of_other_request(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """The proof field of a proof made for another target, same challenge."""
    _, nonce, ts, sig, _ = fields(header)
    challenge = {"nonce": nonce, "issue_ts": int(ts), "sig": sig}
    other = proof_header(challenge, keys.mine, "GET", "/api/orders")
    return "GET", TARGET, auth(with_field(header, 4, fields(other)[4]))


async def malformed(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """A header that does not parse."""
    return "GET", TARGET, auth(header.replace(".", ":", 1))


async def lower_case_scheme(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """The scheme in lower case with a tampered proof: still this verifier's uniform 401."""
    return "GET", TARGET, auth("agproof" + with_field(header, 4, b64(bytes(32)))[7:])


async def pubkey_added(gate: HMACGateway, keys: Keys, header: str) -> Request:
    """An X-Client-Pubkey the proof was not made with."""
    return "GET", TARGET, {**auth(header), "X-Client-Pubkey": pubkey()}


TAMPERS: list[Tamper] = [
    wrong_key,
    other_key_id,
    unknown_key_id,
    other_path,
    other_query,
    no_query,
    other_method,
    later_issue_ts,
    earlier_issue_ts,
    other_challenge_sig,
    flipped_sig_bit,
    other_nonce,
    flipped_proof_bit,
    proof_of_other_request,
    malformed,
    lower_case_scheme,
    pubkey_added,
]


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.__name__.replace("_", "-") for t in TAMPERS])
async def test_every_tampering_gets_the_same_401(gate: HMACGateway, tamper: Tamper) -> None:
    """Each tampered request is refused exactly like a replay, and leaves the genuine
    request's nonce unspent."""
    keys = Keys(mine=await gate.new_key(), other=await gate.new_key())
    reference = await replay_refusal(gate, keys.mine)
    header = await gate.proof(keys.mine, "GET", TARGET)
    method, target, headers = await tamper(gate, keys, header)
    assert_uniform(await gate.send(method, target, headers), reference)
    assert_uniform(await gate.auth(method, target, headers), reference)
    assert (await gate.send("GET", TARGET, auth(header))).status == 200


async def test_expiry_is_inclusive_of_ttl_then_refused(
    gate: HMACGateway, clock: ManualClock
) -> None:
    """A challenge is good for ``ttl`` whole seconds after issue_ts, and refused after."""
    key = await gate.new_key()
    reference = await replay_refusal(gate, key)
    on_time = await gate.proof(key, "GET", TARGET)
    late = await gate.proof(key, "GET", TARGET)
    clock.advance(TTL * 1000 + 999)
    assert (await gate.send("GET", TARGET, auth(on_time))).status == 200
    clock.advance(1)
    assert_uniform(await gate.send("GET", TARGET, auth(late)), reference)


async def test_challenge_from_the_future_beyond_skew_is_refused(
    gate: HMACGateway, clock: ManualClock
) -> None:
    """issue_ts up to ``clock_skew_seconds`` ahead passes; one second more is refused."""
    key = await gate.new_key()
    reference = await replay_refusal(gate, key)
    now_s = clock.now_ms() // 1000
    for ahead, status in [(SKEW, 200), (SKEW + 1, 401), (3600, 401)]:
        challenge = new_challenge(CHALLENGE_SECRET.encode(), (now_s + ahead) * 1000, TTL)
        reply = await gate.send("GET", TARGET, auth(proof_header(challenge, key, "GET", TARGET)))
        assert reply.status == status, ahead
        if status == 401:
            assert_uniform(reply, reference)


async def test_challenge_signed_with_another_secret_is_refused(gate: HMACGateway) -> None:
    """A well-formed challenge from a server with another secret gets the same 401."""
    key = await gate.new_key()
    reference = await replay_refusal(gate, key)
    ts = int(fields(await gate.proof(key, "GET", TARGET))[2])
    foreign = new_challenge(b"another-server-secret-0123456789abcdef", ts * 1000, TTL)
    reply = await gate.send("GET", TARGET, auth(proof_header(foreign, key, "GET", TARGET)))
    assert_uniform(reply, reference)


async def test_replay_in_the_last_second_of_a_challenge_is_refused(
    clock: ManualClock,
) -> None:
    """With no skew allowance the nonce must still outlive the challenge's last second
    (it once expired at issue_ts + ttl while the challenge stayed fresh until the end of
    that second)."""
    async with hmac_gateway(
        rules=RULES, clock=clock, hmac={"ttl_seconds": TTL, "clock_skew_seconds": 0}
    ) as gate:
        key = await gate.new_key()
        header = await gate.proof(key, "GET", TARGET)
        clock.advance(TTL * 1000 + 500)
        assert (await gate.send("GET", TARGET, auth(header))).status == 200
        clock.advance(400)
        assert (await gate.send("GET", TARGET, auth(header))).status == 401


async def test_revoked_key_gets_the_same_401(gate: HMACGateway) -> None:
    """Revocation reaches a key the verifier has cached; its refusal is the uniform one."""
    key = await gate.new_key()
    reference = await replay_refusal(gate, key)  # the key is now cached
    pending = await gate.proof(key, "GET", TARGET)
    await gate.app[SERVICES].api_keys.revoke(key.split("_")[1])
    assert_uniform(await gate.send("GET", TARGET, auth(pending)), reference)
    fresh = await gate.proof(key, "GET", TARGET)
    assert_uniform(await gate.send("GET", TARGET, auth(fresh)), reference)


async def test_client_pubkey_binds_the_proof(gate: HMACGateway) -> None:
    """A proof made with X25519 key A passes only with A; B, none, or garbage: 401."""
    key = await gate.new_key()
    reference = await replay_refusal(gate, key)
    a, b = pubkey(), pubkey()
    header = await gate.proof(key, "GET", TARGET, client_pubkey=a)
    short = b64(base64.b64decode(a)[:31])
    for sent in ({"X-Client-Pubkey": b}, {}, {"X-Client-Pubkey": short}):
        assert_uniform(await gate.send("GET", TARGET, {**auth(header), **sent}), reference)
    assert (await gate.send("GET", TARGET, {**auth(header), "X-Client-Pubkey": a})).status == 200


@pytest.mark.parametrize(
    "value",
    ["not base64!", "AAAA", "A" * 43, "A" * 44, b64(bytes(33)), b64(bytes(32)).rstrip("=")],
    ids=["not-base64", "3-bytes", "unpadded-43", "bad-padding", "33-bytes", "unpadded-32"],
)
async def test_malformed_client_pubkey_gets_the_same_401(gate: HMACGateway, value: str) -> None:
    """A malformed X-Client-Pubkey is refused even if the proof was made over it."""
    key = await gate.new_key()
    reference = await replay_refusal(gate, key)
    header = await gate.proof(key, "GET", TARGET, client_pubkey=value)
    reply = await gate.send("GET", TARGET, {**auth(header), "X-Client-Pubkey": value})
    assert_uniform(reply, reference)


async def test_bound_body_is_checked(gate: HMACGateway) -> None:
    """On a hmac_bind_body route the exact body passes; another body, or a proof made
    without the body, is refused like everything else."""
    key = await gate.new_key()
    reference = await replay_refusal(gate, key)
    body = b'{"amount":100}'
    header = await gate.proof(key, "POST", "/bound/pay", body=body)
    tampered = await gate.send("POST", "/bound/pay", auth(header), b'{"amount":999}')
    assert_uniform(tampered, reference)
    unbound = await gate.proof(key, "POST", "/bound/pay")
    assert_uniform(await gate.send("POST", "/bound/pay", auth(unbound), body), reference)
    reply = await gate.send("POST", "/bound/pay", auth(header), body)
    assert reply.status == 200
    assert json.loads(reply.body)["body_size"] == len(body)


async def test_bound_body_route_through_nginx_auth_is_refused(gate: HMACGateway) -> None:
    """nginx ``auth_request`` never forwards the body, so a body-bound proof cannot be
    checked there: the uniform 401, never an unchecked pass."""
    key = await gate.new_key()
    reference = await replay_refusal(gate, key)
    for body in (b'{"amount":100}', b""):
        header = await gate.proof(key, "POST", "/bound/pay", body=body)
        assert_uniform(await gate.auth("POST", "/bound/pay", auth(header)), reference)


async def test_a_route_that_does_not_bind_the_body_ignores_it(gate: HMACGateway) -> None:
    """Without hmac_bind_body a proof made with a body hash does not match (the message
    layouts differ), and one made without it passes whatever the body."""
    key = await gate.new_key()
    with_hash = await gate.proof(key, "POST", "/api/items", body=b"x")
    assert (await gate.send("POST", "/api/items", auth(with_hash), b"x")).status == 401
    plain = await gate.proof(key, "POST", "/api/items")
    assert (await gate.send("POST", "/api/items", auth(plain), b"anything")).status == 200


async def test_key_lookup_is_one_store_read_then_cached(gate: HMACGateway) -> None:
    """Among many keys, a request reads exactly one record by id (no scan); with the event
    bus live the next request for that key reads none."""
    keys = [await gate.new_key(name=f"k{i}") for i in range(40)]
    key = keys[17]
    gets, lists = gate.store_calls("api_keys", "get"), gate.store_calls("api_keys", "list_ids")
    assert (
        await gate.send("GET", TARGET, auth(await gate.proof(key, "GET", TARGET)))
    ).status == 200
    assert gate.store_calls("api_keys", "get") == gets + 1
    for _ in range(3):
        reply = await gate.send("GET", TARGET, auth(await gate.proof(key, "GET", TARGET)))
        assert reply.status == 200
    assert gate.store_calls("api_keys", "get") == gets + 1
    assert gate.store_calls("api_keys", "list_ids") == lists


async def test_unknown_key_ids_cost_one_read_each_and_are_not_found(gate: HMACGateway) -> None:
    """A made-up key id is one lookup, and a well-formed proof naming it is refused."""
    key = await gate.new_key()
    header = with_field(await gate.proof(key, "GET", TARGET), 0, "nobodyhas123")
    gets = gate.store_calls("api_keys", "get")
    assert (await gate.send("GET", TARGET, auth(header))).status == 401
    assert gate.store_calls("api_keys", "get") == gets + 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_body_binding_accepts_an_empty_body_through_the_sidecar(method: str) -> None:
    """On an hmac_bind_body route an empty body is hashed as b"" (not refused as missing)."""
    rules = [{"id": "bound", "path_prefix": "/", "credentials": ["hmac"], "hmac_bind_body": True}]
    async with hmac_gateway(rules=rules) as gw:
        key = await gw.new_key()
        header = await gw.proof(key, method, "/api/x", body=b"")
        reply = await gw.send(method, "/api/x", {"Authorization": header})
        assert reply.status == 200
