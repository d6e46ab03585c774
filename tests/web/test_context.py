"""Trusted proxies: forwarded headers believed only from them, X-Forwarded-For right to left."""

from __future__ import annotations

import pytest

from authgate.errors import MalformedHeader
from authgate.web.context import TrustedProxies

TRUSTED = TrustedProxies(["127.0.0.0/8", "10.0.0.0/8", "::1/128"])


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "198.51.100.7, 10.1.2.3", "198.51.100.7"),
        ("127.0.0.1", "10.0.0.5, 10.1.2.3", "10.0.0.5"),
        ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),
    ],
    ids=[
        "untrusted-peer-ignored",
        "no-header",
        "one-hop",
        "spoofed-left-entry-ignored",
        "skip-trusted-hops",
        "all-trusted-leftmost",
        "v4-mapped-peer",
    ],
)
def test_client_ip(peer: str, xff: str | None, client: str) -> None:
    """The client is the first untrusted address from the right; untrusted peers are not believed."""
    assert TRUSTED.client_ip(peer, xff) == client


def test_garbage_in_forwarded_for_from_a_trusted_proxy_is_a_400() -> None:
    """A malformed X-Forwarded-For entry is refused, not skipped."""
    with pytest.raises(MalformedHeader):
        TRUSTED.client_ip("127.0.0.1", "198.51.100.7, not-an-ip")


@pytest.mark.parametrize(
    "xff",
    ["::ffff:198%51.100.1", "fe80::1%eth0", "198.51.100.7, fe80::1%25x", "fe80::1%\udcff"],
    ids=repr,
)
def test_an_ipv6_zone_in_forwarded_for_is_a_400(xff: str) -> None:
    """Found by fuzzing (fuzz/fuzz_forwarded.py, corpus file xff-ipv6-zone): Python's
    ipaddress reads any text after `%` as an IPv6 zone, so `::ffff:198%51.100.1` became the
    client address, with whatever the client wrote after `%`, in the rate-limit key, the
    logs and the upstream's X-Real-IP. A zone names an interface, never a client."""
    with pytest.raises(MalformedHeader):
        TRUSTED.client_ip("127.0.0.1", xff)


def test_default_trusts_loopback_only() -> None:
    """Unlike allow-all defaults, only loopback is trusted out of the box."""
    from authgate.config.model import ServerSettings

    default = TrustedProxies(ServerSettings().trusted_proxies)
    assert default.trusts("127.0.0.1") and default.trusts("::1")
    assert not default.trusts("10.0.0.1") and not default.trusts("192.168.1.1")
