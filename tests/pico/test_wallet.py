"""Wallet sign-in (``POST /challenge`` then ``/sign-in``): every algorithm, every refusal.

Ed25519 primitive vectors (Wycheproof) are covered in tests/crypto; here the rules that sit
around the primitive: challenge binding, expiry and single use, key encodings, low-S and
strict DER, small-order keys, and the identity being the key, never the claimed address.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authgate.config.loader import load_settings
from authgate.crypto.pico_challenge import ChallengeCodec
from authgate.errors import ConfigError
from authgate.stores.base import SystemClock
from authgate.web.state import SERVICES
from tests.pico import ALGORITHMS, PICO, SECP256K1_N, Gate, Wallet, gate

SECRET = "pico-challenge-secret-of-32-chars!"
OLD_SECRET = "an-older-challenge-secret-32-chars"


@pytest.fixture
async def gw() -> AsyncIterator[Gate]:
    async with gate() as g:
        yield g


def der(r: int, s: int, *, pad_r: bool = False, long_form: bool = False) -> bytes:
    """A DER ECDSA signature, optionally with a redundant zero byte or a BER long length."""

    def integer(value: int, pad: bool) -> bytes:
        body = value.to_bytes((value.bit_length() + 8) // 8, "big")  # minimal, sign-safe
        if pad:
            body = b"\x00" + body
        return b"\x02" + bytes([len(body)]) + body

    content = integer(r, pad_r) + integer(s, False)
    length = b"\x81" + bytes([len(content)]) if long_form else bytes([len(content)])
    return b"\x30" + length + content


async def claims_of(g: Gate, token: str) -> dict[str, Any]:
    """The verified claims of an access token authgate issued."""
    return await g.app[SERVICES].issuer.decode(token, kind="access")


@pytest.mark.parametrize(
    ("algorithm", "uncompressed"),
    [("Ed25519", False), ("secp256k1", False), ("secp256k1", True), ("ML-DSA-65", False)],
    ids=["ed25519", "secp256k1-compressed", "secp256k1-uncompressed", "ml-dsa-65"],
)
async def test_sign_in_with_each_algorithm(gw: Gate, algorithm: str, uncompressed: bool) -> None:
    """Each algorithm signs in; the identity is the canonical key hex, the role ``user``."""
    wallet = Wallet.generate(algorithm, uncompressed=uncompressed)
    body = await gw.sign_in(wallet)
    assert body["address"] == wallet.identity
    assert body["algorithm"] == algorithm
    assert body["token_type"] == "Bearer"
    claims = await claims_of(gw, body["access_token"])
    assert claims["sub"] == wallet.identity
    assert claims["role"] == "user"
    assert claims["scope"] == ""
    refresh = await gw.app[SERVICES].issuer.decode(body["refresh_token"], kind="refresh")
    assert (refresh["type"], refresh["role"]) == ("refresh", "user")


@pytest.mark.parametrize(
    "algorithm",
    [
        "Ed25519",
        "secp256k1",
        pytest.param("ML-DSA-65"),
    ],
    ids=["ed25519", "secp256k1", "ml-dsa-65"],
)
async def test_wallet_tokens_pass_the_gateway(gw: Gate, algorithm: str) -> None:
    """A wallet's access token is accepted by authgate's own forward-auth decision."""
    body = await gw.sign_in(Wallet.generate(algorithm))
    assert await gw.access(body["access_token"]) == 200


async def test_secp256k1_key_forms_share_one_identity(gw: Gate) -> None:
    """Compressed and uncompressed forms of one key sign in as the same compressed hex."""
    wallet = Wallet.generate("secp256k1")
    compressed = await gw.sign_in(wallet)
    wallet.uncompressed = True
    uncompressed = await gw.sign_in(wallet)
    assert compressed["address"] == uncompressed["address"] == wallet.identity
    assert len(wallet.identity) == 66


async def test_high_s_secp256k1_signature_is_refused(gw: Gate) -> None:
    """``(r, n - s)`` verifies mathematically but is refused; the low-S twin then succeeds."""
    wallet = Wallet.generate("secp256k1")
    challenge = await gw.challenge()
    low = wallet.sign(challenge.encode())
    r, s = decode_dss_signature(low)
    assert s <= SECP256K1_N // 2
    high = der(r, SECP256K1_N - s)
    status, body = await gw.post("/sign-in", wallet.body(challenge, signature=high.hex()))
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    status, body = await gw.post("/sign-in", wallet.body(challenge, signature=low.hex()))
    assert status == 200, "a refused signature does not spend the challenge"


@pytest.mark.parametrize(
    "shape",
    [{"pad_r": True}, {"long_form": True}],
    ids=["redundant-zero-in-r", "ber-long-form-length"],
)
async def test_non_minimal_der_is_refused(gw: Gate, shape: dict[str, bool]) -> None:
    """Only the one minimal DER encoding of ``(r, s)`` is accepted."""
    wallet = Wallet.generate("secp256k1")
    challenge = await gw.challenge()
    r, s = decode_dss_signature(wallet.sign(challenge.encode()))
    loose = der(r, s, **shape)
    status, _ = await gw.post("/sign-in", wallet.body(challenge, signature=loose.hex()))
    assert status == 401
    status, _ = await gw.post("/sign-in", wallet.body(challenge, signature=der(r, s).hex()))
    assert status == 200


async def test_hybrid_secp256k1_point_is_refused(gw: Gate) -> None:
    """SEC1's hybrid form (prefix 06/07) is not a public-key encoding authgate accepts."""
    wallet = Wallet.generate("secp256k1", uncompressed=True)
    challenge = await gw.challenge()
    point = wallet.public_bytes()
    hybrid = bytes([6 + (point[-1] & 1)]) + point[1:]
    status, _ = await gw.post("/sign-in", wallet.body(challenge, public_key=hybrid.hex()))
    assert status == 401


P25519 = 2**255 - 19
Y_ORDER_8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
FORGED = (1).to_bytes(32, "little") + bytes(32)  # R = the identity point, S = 0


def primitive_accepts(key: bytes, challenge: str) -> bool:
    """Whether the bare Ed25519 primitive accepts :data:`FORGED` for ``key``."""
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key).verify(FORGED, challenge.encode())
    except InvalidSignature:
        return False
    return True


@pytest.mark.parametrize("sign_bit", [0, 1 << 255], ids=["x-even", "x-odd"])
@pytest.mark.parametrize(
    "y",
    [1, 0, P25519 - 1, Y_ORDER_8, P25519 - Y_ORDER_8, P25519, P25519 + 1],
    ids=[
        "identity",
        "order-4",
        "order-2",
        "order-8",
        "order-8-neg",
        "non-canonical-0",
        "non-canonical-1",
    ],
)
async def test_small_order_ed25519_keys_cannot_forge_a_sign_in(
    gw: Gate, y: int, sign_bit: int
) -> None:
    """``R = identity, S = 0`` under a small-order or non-canonical key: the primitive
    accepts it for some challenges (for the identity key, all); authgate refuses every one."""
    key = (y | sign_bit).to_bytes(32, "little")
    for _ in range(128):  # an order-8 key is forgeable for 1 challenge in 8
        challenge = await gw.challenge()
        if primitive_accepts(key, challenge):
            break
    else:
        pytest.fail("no challenge made the primitive accept the forgery")
    body = {
        "address": "0xwallet",
        "public_key": key.hex(),
        "signature": FORGED.hex(),
        "challenge": challenge,
        "algorithm": "Ed25519",
    }
    status, answer = await gw.post("/sign-in", body)
    assert (status, answer["error"]["code"]) == (401, "unauthenticated")


async def test_claimed_address_never_becomes_the_identity(gw: Gate) -> None:
    """A sign-in claiming another wallet's address still yields the signing key's identity."""
    victim, attacker = Wallet.generate("Ed25519"), Wallet.generate("Ed25519")
    body = await gw.sign_in(attacker, address=victim.identity)
    assert body["address"] == attacker.identity != victim.identity
    assert (await claims_of(gw, body["access_token"]))["sub"] == attacker.identity


async def test_challenge_is_bound_to_its_address(gw: Gate) -> None:
    """A challenge asked for one address is refused with any other."""
    wallet = Wallet.generate("Ed25519")
    challenge = await gw.challenge("0xalice")
    status, body = await gw.post("/sign-in", wallet.body(challenge, address="0xbob"))
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    status, _ = await gw.post("/sign-in", wallet.body(challenge, address="0xalice"))
    assert status == 200


async def test_replayed_challenge_is_refused(gw: Gate) -> None:
    """A challenge is spent by its sign-in: the same body, or another key's, is refused."""
    wallet, other = Wallet.generate("Ed25519"), Wallet.generate("secp256k1")
    challenge = await gw.challenge()
    body = wallet.body(challenge)
    assert (await gw.post("/sign-in", body))[0] == 200
    status, answer = await gw.post("/sign-in", body)
    assert (status, answer["error"]["message"]) == (
        401,
        "challenge is invalid, expired or already used",
    )
    assert (await gw.post("/sign-in", other.body(challenge)))[0] == 401


@pytest.mark.parametrize(
    ("elapsed_ms", "status"),
    [(59_999, 200), (60_000, 200), (60_001, 401), (3_600_000, 401)],
    ids=["just-inside", "at-ttl", "just-expired", "an-hour-old"],
)
async def test_challenge_expires_after_60_seconds(elapsed_ms: int, status: int) -> None:
    """A challenge is good for exactly its 60 s ``ttl``."""
    async with gate(manual_clock=True) as g:
        assert g.clock is not None
        wallet = Wallet.generate("Ed25519")
        challenge = await g.challenge()
        g.clock.advance(elapsed_ms)
        assert (await g.post("/sign-in", wallet.body(challenge)))[0] == status


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-1] + ("0" if c[-1] != "0" else "1"),
        lambda c: ("f" if c[0] != "f" else "e") + c[1:],
        lambda c: c[:40] + ("0" if c[40] != "0" else "1") + c[41:],
        str.upper,
        lambda c: c[:-2],
        lambda c: c + "00",
        lambda c: "zz" + c[2:],
    ],
    ids=["mac", "timestamp", "random", "upper-case", "truncated", "extended", "non-hex"],
)
async def test_tampered_challenge_is_refused(gw: Gate, tamper: Any) -> None:
    """Any change to the challenge string (signed as such by the wallet) is refused."""
    wallet = Wallet.generate("Ed25519")
    challenge = tamper(await gw.challenge())
    status, body = await gw.post("/sign-in", wallet.body(challenge))
    assert (status, body["error"]["code"]) == (401, "unauthenticated")


async def test_challenges_are_stateless_under_a_shared_secret() -> None:
    """With ``hmac.challenge_secret`` set, any replica's challenge (or a previous secret's) works;
    another secret's does not."""
    async with gate(
        hmac={"challenge_secret": SECRET, "previous_challenge_secrets": [OLD_SECRET]}
    ) as g:
        wallet = Wallet.generate("Ed25519")
        for secret, status in ((SECRET, 200), (OLD_SECRET, 200), ("x" * 32, 401)):
            codec = ChallengeCodec([secret.encode()], clock=SystemClock(), skew_seconds=5)
            challenge = codec.issue("0xwallet")
            assert (await g.post("/sign-in", wallet.body(challenge)))[0] == status, secret


async def test_signature_over_another_message_is_refused(gw: Gate) -> None:
    """The signed message is the challenge string itself."""
    wallet = Wallet.generate("ML-DSA-65")
    challenge = await gw.challenge()
    other = wallet.sign(bytes.fromhex(challenge)).hex()  # the raw bytes, not the hex string
    status, _ = await gw.post("/sign-in", wallet.body(challenge, signature=other))
    assert status == 401


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"public_key": "abc"}, 400),
        ({"public_key": "zz" * 32}, 400),
        ({"public_key": "0x" + "ab" * 31}, 400),
        ({"public_key": "ab" * 31}, 400),
        ({"public_key": "ab" * 33}, 400),
        ({"public_key": "ab" * 1952}, 400),
        ({"signature": "ab" * 63}, 400),
        ({"signature": "ab" * 65}, 400),
        ({"signature": "ab" * 3309}, 400),
        ({"algorithm": "RSA"}, 400),
        ({"algorithm": "ed25519"}, 400),
        ({"algorithm": "ML-DSA-87"}, 400),
        ({"address": ""}, 400),
        ({"address": "0x wallet"}, 400),
        ({"address": "0x\u00e9"}, 400),
        ({"address": "a" * 4097}, 400),
        ({"challenge": ""}, 400),
        ({"challenge": "zz"}, 401),
    ],
    ids=[
        "odd-length-hex",
        "non-hex",
        "0x-prefix",
        "short-key",
        "long-key",
        "ml-dsa-sized-key",
        "short-signature",
        "long-signature",
        "ml-dsa-sized-signature",
        "unknown-algorithm",
        "algorithm-case",
        "unsupported-ml-dsa-87",
        "empty-address",
        "address-with-space",
        "non-ascii-address",
        "address-too-long",
        "empty-challenge",
        "malformed-challenge",
    ],
)
async def test_malformed_sign_in_members_are_refused(
    gw: Gate, overrides: dict[str, str], status: int
) -> None:
    """Wrong hex, lengths, algorithms and addresses: a 4xx with a stable code, no token."""
    wallet = Wallet.generate("Ed25519")
    challenge = await gw.challenge()
    code, body = await gw.post("/sign-in", wallet.body(challenge, **overrides))
    assert code == status, body
    assert body["error"]["code"] == ("invalid_request" if status == 400 else "unauthenticated")
    assert "access_token" not in body


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b'{"address": "0xw"}', "text/plain", 400),
        (b"", "application/json", 400),
        (b"not json", "application/json", 400),
        (b'["0xw"]', "application/json", 400),
        (b'{"address": "0xw", "address": "0xv"}', "application/json", 400),
        (b'{"address": "0xw", "extra": "1"}', "application/json", 400),
        (b'{"address": 7}', "application/json", 400),
        (b'{"address": NaN}', "application/json", 400),
        (b'{"address": "\xff"}', "application/json", 400),
        (b"[" * 100_000, "application/json", 413),
        (json.dumps({"address": "a" * 17_000}).encode(), "application/json", 413),
        (b'{"address": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json", 400),
    ],
    ids=[
        "wrong-content-type",
        "empty",
        "not-json",
        "not-an-object",
        "duplicate-member",
        "unknown-member",
        "number",
        "nan",
        "not-utf8",
        "oversized",
        "oversized-member",
        "deep-nesting",
    ],
)
async def test_bad_challenge_bodies_are_refused(
    gw: Gate, raw: bytes, content_type: str, status: int
) -> None:
    """``/challenge`` accepts one strict JSON object with one string member."""
    async with gw.client.post(
        PICO + "/challenge", data=raw, headers={"Content-Type": content_type}
    ) as resp:
        assert resp.status == status
        body = await resp.json()
    assert body["error"]["code"] in {"invalid_request", "body_too_large"}


async def test_algorithms_can_be_restricted_by_configuration() -> None:
    """``tokens.pico_wallet_algorithms`` is an allowlist."""
    async with gate(tokens={"pico_wallet_algorithms": ["Ed25519"]}) as g:
        assert (await g.sign_in(Wallet.generate("Ed25519")))["algorithm"] == "Ed25519"
        for algorithm in ALGORITHMS[1:]:
            wallet = Wallet.generate(algorithm)
            status, body = await g.post("/sign-in", wallet.body(await g.challenge()))
            assert (status, body["error"]["code"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    "tokens",
    [{"pico_operator_role": "user"}, {"pico_service_role": "user"}],
    ids=["operator", "service"],
)
def test_the_wallet_role_cannot_be_a_privileged_role(tokens: dict[str, str]) -> None:
    """Configuring ``user`` as the operator or service role would make every wallet one:
    refused when the configuration loads (so ``authgate check-config`` reports it)."""
    ((name, value),) = tokens.items()
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={f"AUTHGATE_TOKENS__{name.upper()}": value})
    ((key, message),) = info.value.problems
    assert key == "tokens"
    assert f"tokens.{name}" in message and "wallet" in message
