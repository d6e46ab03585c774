"""The operator audit on the in-memory stores: a change names its operator or is refused
before it is made; the stream is capped by ``tokens.operator_audit_cap``."""

from __future__ import annotations

import pytest

from authgate.compose import Services
from authgate.errors import InvalidRequest
from authgate.stores.memory import MemoryStores
from tests.support import make_settings

PASSWORD = "a long enough passphrase"


async def test_a_change_without_an_operator_is_refused_before_it_is_made() -> None:
    """``by=""``: 400 ``invalid_request``, no user added, no audit entry."""
    services = Services(make_settings(), stores=MemoryStores())
    with pytest.raises(InvalidRequest, match="by:"):
        await services.operator.add_user(username="erin", password=PASSWORD, by="")
    assert await services.operator.users() == []
    assert await services.operator.audit(10) == []


async def test_the_stream_keeps_the_newest_entries_up_to_its_cap() -> None:
    """With ``tokens.operator_audit_cap: 2`` three changes leave the newest two, newest
    first."""
    services = Services(make_settings(tokens={"operator_audit_cap": 2}), stores=MemoryStores())
    for jti in ("a", "b", "c"):
        await services.operator.revoke_token(jti=jti, by="cli")
    entries = await services.operator.audit(10)
    assert [(e["action"], e["by"], e["jti"]) for e in entries] == [
        ("token.revoke", "cli", "c"),
        ("token.revoke", "cli", "b"),
    ]
