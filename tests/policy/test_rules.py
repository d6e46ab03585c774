"""Route rules: first match wins; prefixes are segment-aware; no match denies by default."""

from __future__ import annotations

import pytest

from authgate.config.model import PolicySettings
from authgate.errors import NoMatchingRule, ScopeDenied
from authgate.models import CredentialType, Principal
from authgate.policy.rules import Policy, normalize_host


def policy(rules: list[dict[str, object]], default_action: str = "deny") -> Policy:
    return Policy.from_settings(
        PolicySettings.model_validate({"rules": rules, "default_action": default_action})
    )


RULES: list[dict[str, object]] = [
    {"id": "admin-host", "hosts": ["admin.example.com"], "path_prefix": "/"},
    {"id": "wild", "hosts": ["*.apps.test"], "path_prefix": "/"},
    {"id": "api-read", "path_prefix": "/api", "methods": ["GET", "HEAD"]},
    {"id": "api-write", "path_prefix": "/api/", "methods": ["POST"], "scopes": ["write"]},
    {"id": "files", "path_glob": "/files/*/meta"},
    {"id": "deep", "path_glob": "/deep/**"},
]


@pytest.mark.parametrize(
    ("method", "host", "path", "rule_id"),
    [
        ("GET", "admin.example.com", "/anything", "admin-host"),
        ("GET", "ADMIN.example.com:8443", "/x", "admin-host"),
        ("GET", "a.apps.test", "/x", "wild"),
        ("GET", "a.b.apps.test", "/x", "wild"),
        ("GET", "svc", "/api", "api-read"),
        ("GET", "svc", "/api/items", "api-read"),
        ("POST", "svc", "/api/items", "api-write"),
        ("GET", "svc", "/files/one/meta", "files"),
        ("GET", "svc", "/deep/a/b/c", "deep"),
    ],
    ids=[
        "exact-host",
        "host-case-port",
        "wildcard",
        "wildcard-deep",
        "prefix-itself",
        "prefix-child",
        "method",
        "glob-segment",
        "glob-deep",
    ],
)
def test_first_matching_rule_wins(method: str, host: str, path: str, rule_id: str) -> None:
    """The first rule whose host, path and method match decides."""
    assert policy(RULES).match(method, host, path).id == rule_id


@pytest.mark.parametrize(
    ("method", "host", "path"),
    [
        ("GET", "svc", "/apix"),
        ("DELETE", "svc", "/api/items"),
        ("GET", "apps.test", "/x"),
        ("GET", "svc", "/files/a/b/meta"),
        ("GET", "evil-admin.example.com", "/"),
    ],
    ids=[
        "prefix-not-segment",
        "method-not-listed",
        "wildcard-needs-label",
        "glob-one-segment",
        "host-not-suffix",
    ],
)
def test_no_match_denies(method: str, host: str, path: str) -> None:
    """Without a matching rule the default action denies."""
    with pytest.raises(NoMatchingRule):
        policy(RULES).match(method, host, path)


def test_default_authenticate_returns_a_rule_without_scopes() -> None:
    """default_action: authenticate admits any valid credential when nothing matches."""
    rule = policy(RULES, "authenticate").match("GET", "svc", "/nowhere")
    assert rule.id == "default" and not rule.scopes and not rule.anonymous


def test_scopes_must_all_be_held() -> None:
    """A principal missing one required scope is denied."""
    rule = policy([{"id": "r", "path_prefix": "/", "scopes": ["a", "b"]}]).match("GET", "h", "/")
    rule.check_scopes(Principal("s", CredentialType.JWT, frozenset({"a", "b", "c"})))
    with pytest.raises(ScopeDenied):
        rule.check_scopes(Principal("s", CredentialType.JWT, frozenset({"a"})))


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("Example.COM", "example.com"),
        ("example.com:80", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:8080", "[::1]"),
    ],
    ids=["case", "port", "trailing-dot", "ipv6"],
)
def test_host_normalisation(raw: str, host: str) -> None:
    """Hosts compare lower-case, without port or trailing dot."""
    assert normalize_host(raw) == host


@pytest.mark.parametrize(
    "rule",
    [
        {"id": "x", "path_prefix": "/a", "path_glob": "/b"},
        {"id": "x", "path_prefix": "a"},
        {"id": "x", "methods": ["get"]},
        {"id": "bad id!"},
        {"id": "x", "credentials": ["anonymous"]},
        {"id": "x", "upstream": "http://h/path"},
        {"id": "x", "color": "red"},
    ],
    ids=[
        "two-matchers",
        "relative-path",
        "lower-method",
        "bad-id",
        "anonymous-credential",
        "upstream-with-path",
        "unknown-key",
    ],
)
def test_invalid_rules_are_refused(rule: dict[str, object]) -> None:
    """Rule mistakes are caught when the config is loaded."""
    with pytest.raises(ValueError, match="rules"):
        PolicySettings.model_validate({"rules": [rule]})
