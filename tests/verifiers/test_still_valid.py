"""``JWTBearerVerifier.still_valid``: the repeat path's check agrees with ``verify``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.crypto.keys import SigningKey
from authgate.errors import AuthGateError
from authgate.models import Principal
from authgate.stores.base import ManualClock
from authgate.stores.memory import MemoryStores
from authgate.tokens.revocation import RevocationList
from authgate.verifiers.jwt_bearer import JWTBearerVerifier, token_digest
from tests.verifiers import CONTEXT, NOW, Harness, mint

LEEWAY = 30


def revalidate(verifier: JWTBearerVerifier, digest: bytes) -> Principal | None:
    """The cached principal when the repeat path may still use it, else ``None``."""
    entry = verifier.verified(digest)
    return entry.principal if entry is not None and verifier.still_valid(entry) else None


async def verifier_with_list(
    key: SigningKey, *, cache_size: int = 10, start: bool = True
) -> tuple[JWTBearerVerifier, RevocationList, ManualClock, MemoryStores]:
    harness = Harness(
        [key],
        algorithms=("ES256",),
        leeway_seconds=LEEWAY,
        cache_size=cache_size,
        revocation_list=True,
    )
    if start:
        await harness.stores.events.start()
    assert isinstance(harness.revocations, RevocationList)
    return harness.verifier, harness.revocations, harness.clock, harness.stores


@settings(max_examples=200, deadline=None)
@given(
    exp=st.integers(min_value=-LEEWAY + 1, max_value=600),
    nbf=st.one_of(st.none(), st.integers(min_value=-600, max_value=LEEWAY)),
    iat=st.one_of(st.none(), st.integers(min_value=-600, max_value=LEEWAY)),
    move=st.integers(min_value=-700, max_value=700),
)
async def test_revalidate_agrees_with_verify_at_any_time(
    es: SigningKey, exp: int, nbf: int | None, iat: int | None, move: int
) -> None:
    """Accepted at NOW (so cached), then the clock moves: revalidate returns the principal
    exactly when verify accepts the same token at that moment."""
    verifier, _, clock, _ = await verifier_with_list(es)
    token = mint(
        es,
        exp=NOW + exp,
        nbf=None if nbf is None else NOW + nbf,
        iat=None if iat is None else NOW + iat,
    )
    principal = await verifier.verify(token, CONTEXT)
    clock.advance(move * 1000)
    try:
        accepted = await verifier.verify(token, CONTEXT) is principal
    except AuthGateError:
        accepted = False
    assert (revalidate(verifier, token_digest(token)) is principal) is accepted


async def test_revalidate_refuses_what_verify_must_decide(es: SigningKey) -> None:
    verifier, revocations, _, _ = await verifier_with_list(es)
    token = mint(es, jti="j-1", fam="family")
    digest = token_digest(token)
    assert revalidate(verifier, digest) is None  # never verified: not cached
    principal = await verifier.verify(token, CONTEXT)
    assert revalidate(verifier, digest) is principal
    await revocations.revoke("fam:family", expires_at_ms=(NOW + 600) * 1000)
    assert revalidate(verifier, digest) is None
    other = mint(es, jti="j-2")
    principal = await verifier.verify(other, CONTEXT)
    assert revalidate(verifier, token_digest(other)) is principal
    await revocations.revoke("j-2", expires_at_ms=(NOW + 600) * 1000)
    assert revalidate(verifier, token_digest(other)) is None


async def test_revalidate_declines_while_only_the_store_can_tell(es: SigningKey) -> None:
    """Before the event bus is live a revocation may have been missed: verify asks the
    store, revalidate declines rather than guess."""
    verifier, _, _, stores = await verifier_with_list(es, start=False)
    token = mint(es)
    principal = await verifier.verify(token, CONTEXT)
    assert revalidate(verifier, token_digest(token)) is None
    await stores.events.start()
    assert revalidate(verifier, token_digest(token)) is principal


async def test_revalidate_with_the_cache_off_declines(es: SigningKey) -> None:
    verifier, _, _, _ = await verifier_with_list(es, cache_size=0)
    token = mint(es)
    await verifier.verify(token, CONTEXT)
    assert revalidate(verifier, token_digest(token)) is None


async def test_revalidate_agrees_with_verify_at_the_edges(es: SigningKey) -> None:
    """One millisecond either side of each end of the window (leeway included)."""
    for claim, edge in (("exp", 100 + LEEWAY), ("nbf", 10 - LEEWAY), ("iat", 10 - LEEWAY)):
        for offset_ms in (-1, 0, 1):
            verifier, _, clock, _ = await verifier_with_list(es)
            claims = {"exp": NOW + 100, "nbf": NOW - 60, "iat": NOW - 60}
            claims[claim] = NOW + (100 if claim == "exp" else 10)
            token = mint(es, **claims)
            if claim != "exp":
                clock.advance(10 * 1000)  # accepted (and cached) once the window is open
            principal = await verifier.verify(token, CONTEXT)
            clock.advance(edge * 1000 + offset_ms - (clock.now_ms() - NOW * 1000))
            try:
                accepted = await verifier.verify(token, CONTEXT) is principal
            except AuthGateError:
                accepted = False
            assert (revalidate(verifier, token_digest(token)) is principal) is accepted, (
                claim,
                offset_ms,
            )


async def test_verify_asks_the_store_while_the_bus_is_not_live(es: SigningKey) -> None:
    """The cached path checks revocation locally only when the local copy is current."""
    verifier, revocations, _, stores = await verifier_with_list(es, start=False)
    token = mint(es, jti="asked")
    await verifier.verify(token, CONTEXT)  # cached
    await stores.revocations.revoke("asked", expires_at_ms=(NOW + 600) * 1000)
    with pytest.raises(AuthGateError, match="revoked"):
        await verifier.verify(token, CONTEXT)
    await stores.events.start()  # resync loads the store's list
    assert revocations.revoked_locally("asked") is True
