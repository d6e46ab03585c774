"""Which request header names are identity headers (``web/identity.py``: IdentityNames).

One predicate decides for every door: the forward-auth doors refuse what it calls forged,
the sidecar removes that and other gateways' identity headers.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authgate.config.model import FOREIGN_IDENTITY_HEADERS, IdentitySettings
from authgate.errors import ForgedIdentityHeader
from authgate.web.identity import REMEMBERED_NAME_LENGTH, IdentityNames
from tests.support import TCHAR_PUNCTUATION, alias_spellings

DEFAULTS = IdentitySettings()
NAMES = IdentityNames.from_settings(DEFAULTS, foreign=FOREIGN_IDENTITY_HEADERS)
OWN = DEFAULTS.header_names()

# Headers authgate legitimately receives from trusted proxies: none is an identity alias.
PROXY_HEADERS = [
    "Host",
    "Authorization",
    "X-Forwarded-For",
    "X-Forwarded-Method",
    "X-Forwarded-Uri",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Prefix",
    "X-Original-URI",
    "X-Original-Method",
    "X-Original-URL",
    "X-Real-IP",
    "X-Request-Id",
    "x-envoy-internal",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-original-path",
    "X-Bpc-Signature",
    "X-Client-Pubkey",
    "Content-Type",
    "Content-Length",
    "X-Authgateway-Id",
    "X-Authgatekeeper",
    "Authgate-Subject",
]


def cgi(name: str) -> str:
    """The variable a CGI-style upstream reads a header into (``HTTP_`` left off)."""
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in name.upper())


@pytest.mark.parametrize(
    "name", [s for own in OWN for s in (own, own.lower(), own.upper(), *alias_spellings(own))]
)
def test_every_spelling_of_an_identity_header_is_forged(name: str) -> None:
    """Each CGI alias of each identity header (every punctuation for ``-``) is authgate's."""
    assert NAMES.forged(name.lower())
    assert NAMES.stripped(name.lower())
    with pytest.raises(ForgedIdentityHeader, match="spells an identity header"):
        NAMES.check(name.lower())


@pytest.mark.parametrize(
    "name",
    [
        "X-Authgate-Role",
        "X.Authgate.Role",
        "X~Authgate~Role",
        "x_authgate_anything",
        "X-Authgate-",
        "X-AUTHGATE--Subject-2",
        "XAuthgateSubject",
    ],
)
def test_every_name_under_the_prefix_is_forged(name: str) -> None:
    """Anything under ``X-Authgate-``, in any spelling, is refused like the six names."""
    assert NAMES.forged(name.lower())


@pytest.mark.parametrize("name", PROXY_HEADERS)
def test_proxy_headers_are_not_identity_aliases(name: str) -> None:
    """What trusted proxies send (X-Forwarded-*, X-Original-*, x-envoy-*) is never refused,
    and a name that only starts with the prefix's letters (``X-Authgateway-Id``) is not in it."""
    assert not NAMES.forged(name.lower())
    assert not NAMES.stripped(name.lower())
    NAMES.check(name.lower())


@pytest.mark.parametrize("name", ["X-Remote-User", "x_forwarded_user", "Remote.User"])
def test_foreign_identity_headers_are_stripped_but_not_refused(name: str) -> None:
    """Other gateways' headers: the sidecar removes them; a forward-auth door lets them be
    (a proxy may chain another gateway in front of authgate)."""
    assert NAMES.stripped(name.lower())
    assert not NAMES.forged(name.lower())


def test_configured_names_and_prefixes_decide() -> None:
    """Renamed headers and another prefix: matched word by word, so ``X-Auth-`` covers
    ``X.Auth.Token`` but not ``X-Authorization``."""
    names = IdentityNames(["X-User"], prefixes=["X-Auth-"])
    assert names.forged("x.user")
    assert names.forged("x_auth_token")
    assert not names.forged("x-authorization")
    assert not names.forged("x-users")
    assert not names.forged("x-authgate-subject")


def test_the_message_names_the_header() -> None:
    """The 400's message says which header was refused."""
    with pytest.raises(ForgedIdentityHeader) as caught:
        NAMES.check("x.authgate.subject")
    assert "x.authgate.subject" in caught.value.message
    assert caught.value.reason == "forged_identity_header"
    assert caught.value.status == 400


_LETTER = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_TOKEN = st.text(st.sampled_from(TCHAR_PUNCTUATION) | _LETTER, min_size=1, max_size=40)


@given(
    name=st.sampled_from(OWN),
    separators=st.lists(st.sampled_from(TCHAR_PUNCTUATION), min_size=4, max_size=4),
    upper=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_any_cgi_alias_of_an_identity_header_is_forged(
    name: str, separators: list[str], upper: list[bool]
) -> None:
    """Property: every separator any punctuation, every letter any case: forged."""
    parts = name.split("-")
    seps = separators[: len(parts) - 1]
    spelled = parts[0] + "".join(sep + part for sep, part in zip(seps, parts[1:], strict=True))
    cases = upper[: len(spelled)]
    spelled = "".join(c.upper() if u else c.lower() for c, u in zip(spelled, cases, strict=True))
    assert cgi(spelled) == cgi(name)
    assert NAMES.forged(spelled.lower())


@given(name=_TOKEN)
def test_whatever_a_cgi_app_reads_as_an_identity_header_is_forged(name: str) -> None:
    """Property: a name whose CGI variable is an identity header's, or under the prefix's,
    is forged (the converse need not hold: ``XAuthgateSubject`` is refused too)."""
    variable = cgi(name)
    if variable in {cgi(n) for n in OWN} or variable.startswith("X_AUTHGATE_"):
        assert NAMES.forged(name.lower())
    if NAMES.forged(name.lower()):
        assert "".join(c for c in variable if c != "_").startswith("XAUTHGATE")


@given(suffix=_TOKEN, separator=st.sampled_from(TCHAR_PUNCTUATION))
def test_any_name_under_the_prefix_in_any_spelling_is_forged(suffix: str, separator: str) -> None:
    """Property: ``X<p>Authgate<p><anything>`` is forged for every punctuation ``<p>``."""
    assert NAMES.forged(f"x{separator}authgate{separator}{suffix}".lower())


def test_long_names_are_answered_every_time_but_never_remembered() -> None:
    """A client may send names up to aiohttp's field limit (8 KB): the answers for them are
    the same as for short ones, but only names of up to REMEMBERED_NAME_LENGTH characters
    are kept, so the 4,096-entry memory never holds long strings."""
    names = IdentityNames.from_settings(DEFAULTS, foreign=FOREIGN_IDENTITY_HEADERS)
    long_own = "x-authgate-" + "a" * 4000  # under the prefix: forged
    long_plain = "x-" + "b" * 4000
    for _ in range(2):  # the second time too: nothing remembered changes the answer
        assert names.forged(long_own)
        assert not names.forged(long_plain)
        with pytest.raises(ForgedIdentityHeader):
            names.check(long_own)
    at_limit = "x-authgate-" + "c" * (REMEMBERED_NAME_LENGTH - len("x-authgate-"))
    assert names.forged(at_limit)
    for index in range(100):
        names.stripped(f"x-{index}-" + "d" * 500)
    assert at_limit in names._known  # a name of ordinary length is remembered
    assert all(len(name) <= REMEMBERED_NAME_LENGTH for name in names._known)
