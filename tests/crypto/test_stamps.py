"""Issue-time stamps inside identifiers authgate issues (challenge nonces, refresh jtis)."""

from __future__ import annotations

import pytest

from authgate.crypto.hmac_proof import challenge_issued_at_ms, new_challenge
from authgate.crypto.stamps import issued_at_ms, stamped

MS = 1_796_319_195_437


def test_stamp_round_trips_within_its_second() -> None:
    """The millisecond comes back when it lies in the stated second."""
    raw = stamped(MS, 24)
    assert len(raw) == 32
    assert issued_at_ms(raw, MS // 1000) == MS


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00" * 8, stamped(MS - 1000, 8), stamped(MS + 1000, 8), bytes(range(32))],
    ids=["empty", "stamp-only", "second-before", "second-after", "unstamped"],
)
def test_a_stamp_outside_its_second_counts_from_the_second_start(raw: bytes) -> None:
    """An identifier without a matching stamp is judged by the earliest possible time."""
    assert issued_at_ms(raw, MS // 1000) == (MS // 1000) * 1000


def test_challenge_nonce_carries_the_issue_millisecond() -> None:
    """A new challenge's nonce yields its issue millisecond; a foreign nonce the second."""
    challenge = new_challenge(b"s" * 32, MS, 60)
    assert challenge["issue_ts"] == MS // 1000
    assert challenge_issued_at_ms(str(challenge["nonce"]), MS // 1000) == MS
    assert challenge_issued_at_ms("not base64!", MS // 1000) == (MS // 1000) * 1000
