"""Route rate limits (``policy/limits.py`` and the pipeline): GCRA budgets per client address
and per credential, the 429 with Retry-After and the IETF ``RateLimit-*`` fields, client
limits before verification (trusted-proxy aware), and credential limits for HMAC proofs
folded into the nonce round trip, which leaves the nonce unspent when it refuses.

Everything runs in process on memory stores with a clock moved by hand, so budgets and
header values are exact; ``tests/integration/test_rate_limit_replicas.py`` shows the same
budgets holding across two processes on Redis.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from authgate.config.model import Rule
from authgate.errors import RateLimited
from authgate.policy.limits import checks_for, raise_if_limited
from authgate.policy.rules import compile_rule
from authgate.stores.base import ManualClock, RateLimitCheck, RateLimitResult
from authgate.stores.memory import MemoryRateLimitStore
from authgate.web.problem import problem_response
from tests.hmac import HMACGateway, Reply, hmac_gateway

ATTACKER = "203.0.113.66"


def limited(rule_id: str, prefix: str, *limits: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A rule on ``prefix`` with ``limits``."""
    return {"id": rule_id, "path_prefix": prefix, "rate_limits": list(limits), **options}


def per_client(limit: int, period: float) -> dict[str, Any]:
    """A per-client-address limit."""
    return {"by": "client", "limit": limit, "period_seconds": period}


def per_credential(limit: int, period: float) -> dict[str, Any]:
    """A per-credential limit."""
    return {"by": "credential", "limit": limit, "period_seconds": period}


RULES = [
    limited("open", "/open", per_client(3, 60), anonymous=True),
    limited("guarded", "/guarded", per_client(2, 60), credentials=["hmac"]),
    limited("keyed", "/keyed", per_credential(2, 60), credentials=["hmac"]),
    limited("once", "/once", per_credential(1, 10), credentials=["hmac"]),
    limited("xff", "/xff", per_client(2, 60), anonymous=True),
]


@pytest.fixture
def clock() -> ManualClock:
    """The clock every store and challenge uses."""
    return ManualClock()


@pytest.fixture
async def gate(clock: ManualClock) -> AsyncIterator[HMACGateway]:
    """The application with the limited routes (127.0.0.1 is a trusted proxy)."""
    async with hmac_gateway(rules=RULES, clock=clock) as gateway:
        yield gateway


def auth(value: str) -> dict[str, str]:
    """An ``Authorization`` header."""
    return {"Authorization": value}


def assert_limited(reply: Reply, *, limit: int, window: int, retry_after: int, reset: int) -> None:
    """A 429 with the stable code, Retry-After and every RateLimit-* field."""
    assert reply.status == 429
    assert json.loads(reply.body)["error"]["code"] == "rate_limited"
    assert reply.headers["Retry-After"] == str(retry_after)
    assert reply.headers["RateLimit-Limit"] == str(limit)
    assert reply.headers["RateLimit-Remaining"] == "0"
    assert reply.headers["RateLimit-Reset"] == str(reset)
    assert reply.headers["RateLimit-Policy"] == f"{limit};w={window}"


# --- the pieces ---------------------------------------------------------------------------


def test_checks_for_selects_one_kind_keyed_by_rule_and_position() -> None:
    """Client and credential limits are separate lists; keys name the rule and the index."""
    rule = compile_rule(
        Rule.model_validate(
            limited("r", "/", per_client(5, 1), per_credential(7, 0.25), per_client(100, 3600))
        )
    )
    assert checks_for(rule, "client") == [
        RateLimitCheck("r:0", 5, 1000),
        RateLimitCheck("r:2", 100, 3_600_000),
    ]
    assert checks_for(rule, "credential") == [RateLimitCheck("r:1", 7, 250)]


async def test_a_sub_millisecond_period_is_refused_and_one_millisecond_limits() -> None:
    """A period under 1 ms is a config error (it would round to 0, which let the memory
    store admit everything and made the Redis store raise); 1 ms still limits."""
    with pytest.raises(ValueError, match="period_seconds"):
        Rule.model_validate(limited("r", "/", per_client(1, 0.0001)))
    rule = compile_rule(Rule.model_validate(limited("r", "/", per_client(1, 0.001))))
    (check,) = checks_for(rule, "client")
    assert check.period_ms == 1
    store = MemoryRateLimitStore(ManualClock())
    first, second = [await store.hit_many("t", [check]) for _ in range(2)]
    assert [first[0].allowed, second[0].allowed] == [True, False]


@pytest.mark.parametrize(
    ("result", "period_ms", "headers"),
    [
        (
            RateLimitResult(False, 10, 0, retry_after_ms=5_999, reset_after_ms=60_000),
            60_000,
            {"Retry-After": "6", "RateLimit-Reset": "60", "RateLimit-Policy": "10;w=60"},
        ),
        (
            RateLimitResult(False, 3, 0, retry_after_ms=1, reset_after_ms=1),
            500,
            {"Retry-After": "1", "RateLimit-Reset": "1", "RateLimit-Policy": "3;w=1"},
        ),
    ],
    ids=["seconds-rounded-up", "sub-second-window"],
)
def test_refusal_carries_retry_after_and_ratelimit_fields(
    result: RateLimitResult, period_ms: int, headers: dict[str, str]
) -> None:
    """Milliseconds are rounded up to whole seconds, never down to 0."""
    check = RateLimitCheck("r:0", result.limit, period_ms)
    with pytest.raises(RateLimited) as info:
        raise_if_limited([result], [check], by="client")
    response = problem_response(info.value)
    assert response.status == 429
    assert response.headers["RateLimit-Limit"] == str(result.limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    for name, value in headers.items():
        assert response.headers[name] == value


def test_nothing_is_raised_when_every_check_admits() -> None:
    """All allowed: no refusal."""
    ok = RateLimitResult(True, 5, 4, retry_after_ms=0, reset_after_ms=12_000)
    raise_if_limited([ok, ok], [RateLimitCheck("a", 5, 60_000)] * 2, by="credential")


# --- per client address -------------------------------------------------------------------


async def test_client_budget_refuses_then_refills_then_resets(
    gate: HMACGateway, clock: ManualClock
) -> None:
    """3 per 60 s: three pass, the fourth is 429 with exact fields; one more after 20 s;
    the whole burst again once the period has passed."""
    for _ in range(3):
        assert (await gate.auth("GET", "/open", {})).status == 200
    assert_limited(
        await gate.auth("GET", "/open", {}), limit=3, window=60, retry_after=20, reset=60
    )
    clock.advance(20_000)
    assert (await gate.auth("GET", "/open", {})).status == 200
    assert (await gate.auth("GET", "/open", {})).status == 429
    clock.advance(60_000)
    assert [(await gate.auth("GET", "/open", {})).status for _ in range(4)] == [200] * 3 + [429]


async def test_client_limits_run_before_verification(gate: HMACGateway, clock: ManualClock) -> None:
    """Failed proofs spend the address's budget, so guessing is bounded; a good proof that
    arrives over budget is 429 without being verified, and its nonce stays usable."""
    key = await gate.new_key()
    good = await gate.proof(key, "GET", "/guarded")
    bad = auth(good[:-6] + "AAAAA=")
    assert [(await gate.auth("GET", "/guarded", bad)).status for _ in range(2)] == [401, 401]
    assert_limited(
        await gate.auth("GET", "/guarded", auth(good)), limit=2, window=60, retry_after=30, reset=60
    )
    assert (await gate.auth("GET", "/guarded", bad)).status == 429
    clock.advance(30_000)
    assert (await gate.auth("GET", "/guarded", auth(good))).status == 200


async def test_forwarded_for_from_a_trusted_proxy_gives_each_client_its_budget(
    gate: HMACGateway,
) -> None:
    """Through /auth from 127.0.0.1 (trusted), X-Forwarded-For names the client: each
    address has its own budget, and trusted hops on the right are skipped."""
    one = {"X-Forwarded-For": "198.51.100.1"}
    two = {"X-Forwarded-For": "198.51.100.2"}
    via_hop = {"X-Forwarded-For": "198.51.100.1, 127.0.0.9"}
    assert [(await gate.auth("GET", "/xff", one)).status for _ in range(2)] == [200, 200]
    assert (await gate.auth("GET", "/xff", via_hop)).status == 429
    assert [(await gate.auth("GET", "/xff", two)).status for _ in range(3)] == [200, 200, 429]
    assert (await gate.auth("GET", "/xff", {})).status == 200  # the proxy's own address


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(clock: ManualClock) -> None:
    """When 127.0.0.1 is not a trusted proxy, a client cannot buy budget by inventing
    X-Forwarded-For values: every request counts against its real address."""
    async with hmac_gateway(
        rules=RULES, clock=clock, server={"trusted_proxies": ["10.0.0.0/8"]}
    ) as gate:
        statuses = [
            (await gate.send("GET", "/xff", {"X-Forwarded-For": f"198.51.100.{i}"})).status
            for i in range(4)
        ]
        assert statuses == [200, 200, 429, 429]
        forwarded = {"X-Original-URI": "/xff", "X-Original-Method": "GET"}
        assert (await gate.send("GET", "/auth", forwarded)).status == 403  # untrusted_proxy


# --- per credential -----------------------------------------------------------------------


async def test_each_api_key_has_its_own_budget(gate: HMACGateway) -> None:
    """2 per 60 s per key: key A is refused on its third request, key B still has two."""
    a, b = await gate.new_key(name="a"), await gate.new_key(name="b")
    for _ in range(2):
        assert (
            await gate.send("GET", "/keyed", auth(await gate.proof(a, "GET", "/keyed")))
        ).status == 200
    refused = await gate.send("GET", "/keyed", auth(await gate.proof(a, "GET", "/keyed")))
    assert_limited(refused, limit=2, window=60, retry_after=30, reset=60)
    for _ in range(2):
        assert (
            await gate.send("GET", "/keyed", auth(await gate.proof(b, "GET", "/keyed")))
        ).status == 200
    assert (
        await gate.auth("GET", "/keyed", auth(await gate.proof(b, "GET", "/keyed")))
    ).status == 429


async def test_hmac_credential_limit_shares_the_nonce_round_trip(gate: HMACGateway) -> None:
    """An HMAC request on a credential-limited route makes one store call for nonce and
    limits together (``consume_limited``), admitted or refused; no separate limit call."""

    def calls() -> tuple[float, float, float]:
        return (
            gate.store_calls("nonces", "consume_limited"),
            gate.store_calls("nonces", "consume"),
            gate.store_calls("rate_limits", "hit_many"),
        )

    key = await gate.new_key()
    for expected in (200, 200, 429):
        header = await gate.proof(key, "GET", "/keyed")
        before = calls()
        assert (await gate.send("GET", "/keyed", auth(header))).status == expected
        after = calls()
        assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (1, 0, 0)


async def test_a_rate_limited_proof_keeps_its_nonce(gate: HMACGateway, clock: ManualClock) -> None:
    """1 per 10 s: the second proof is refused with 429 and its nonce left unspent, so the
    same proof is admitted once the window has passed, and only once."""
    key = await gate.new_key()
    first = await gate.proof(key, "GET", "/once")
    second = await gate.proof(key, "GET", "/once")
    assert (await gate.send("GET", "/once", auth(first))).status == 200
    assert_limited(
        await gate.send("GET", "/once", auth(second)), limit=1, window=10, retry_after=10, reset=10
    )
    assert (await gate.send("GET", "/once", auth(second))).status == 429  # still unspent
    clock.advance(10_000)
    assert (await gate.send("GET", "/once", auth(second))).status == 200
    clock.advance(10_000)
    replayed = await gate.send("GET", "/once", auth(second))
    assert replayed.status == 401
    assert json.loads(replayed.body)["error"]["code"] == "invalid_proof"


async def test_a_replayed_proof_does_not_spend_the_credential_budget(
    gate: HMACGateway,
) -> None:
    """Replays are refused before any limit is charged: a captured proof cannot be used
    to exhaust its key's budget."""
    key = await gate.new_key()
    header = await gate.proof(key, "GET", "/keyed")
    assert (await gate.send("GET", "/keyed", auth(header))).status == 200
    for _ in range(5):
        assert (await gate.send("GET", "/keyed", auth(header))).status == 401
    fresh = await gate.proof(key, "GET", "/keyed")
    assert (await gate.send("GET", "/keyed", auth(fresh))).status == 200


async def test_jwt_credential_budget_is_per_subject_not_per_token() -> None:
    """Every token of one subject shares the budget: minting a new token gives no more."""
    from aiohttp.test_utils import TestClient, TestServer

    from authgate.crypto.keys import KeyRing
    from authgate.stores.memory import MemoryStores
    from authgate.web.app import create_app
    from tests.support import TokenFactory, make_settings

    tokens = TokenFactory()
    rules = [
        {
            "id": "api",
            "path_prefix": "/api",
            "rate_limits": [{"by": "credential", "limit": 2, "period_seconds": 60}],
        }
    ]
    app = create_app(
        make_settings(policy={"rules": rules}),
        stores=MemoryStores(),
        key_ring=KeyRing([tokens.key]),
    )
    async with TestClient(TestServer(app)) as client:
        statuses = []
        for sub in ["alice", "alice", "alice", "bob"]:
            headers = {
                "Authorization": f"Bearer {tokens.mint(sub=sub)}",
                "X-Original-URI": "/api/x",
                "X-Original-Method": "GET",
            }
            statuses.append((await client.get("/auth", headers=headers)).status)
    assert statuses == [200, 200, 429, 200]
