"""Which keys a reload may change (``config/live.py``), and the configuration hash."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from authgate.config.live import (
    LIVE_KEYS,
    changed_keys,
    config_hash,
    fixed_changes,
    is_live,
)
from authgate.config.loader import effective_config
from authgate.config.model import Settings
from tests.support import make_settings

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
KEK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
OTHER_KEK = "HxwdHhscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA="


def _model_has(model: type[BaseModel], dotted: str) -> bool:
    name, _, rest = dotted.partition(".")
    field = model.model_fields.get(name)
    if field is None:
        return False
    if not rest:
        return True
    inner = field.annotation
    return isinstance(inner, type) and issubclass(inner, BaseModel) and _model_has(inner, rest)


@pytest.mark.parametrize("key", sorted(LIVE_KEYS))
def test_every_live_key_is_a_key_of_the_model(key: str) -> None:
    """A typo in LIVE_KEYS would silently make a key fixed (or a section live)."""
    assert _model_has(Settings, key)


def test_the_runbook_table_lists_exactly_the_live_keys() -> None:
    """docs/runbook.md's table of what a reload may change agrees with LIVE_KEYS."""
    text = RUNBOOK.read_text()
    section = text.split("## Changing configuration without a restart", 1)[1]
    live = {
        m.group(1)
        for m in re.finditer(r"^\| `([a-z_.]+)`[^|]*\| yes \|", section, flags=re.MULTILINE)
    }
    assert live == set(LIVE_KEYS)


def test_changed_keys_names_nested_keys_and_secrets_without_values() -> None:
    """Nested sections are compared key by key; a changed secret is seen and named."""
    old = make_settings(secrets={"key_encryption_key": KEK})
    new = make_settings(
        secrets={"key_encryption_key": OTHER_KEK},
        identity={"identity_jwt": {"enabled": True}},
        policy={"default_action": "authenticate"},
    )
    assert changed_keys(old, new) == [
        "identity.identity_jwt.enabled",
        "policy.default_action",
        "secrets.key_encryption_key",
    ]
    assert changed_keys(old, make_settings(secrets={"key_encryption_key": KEK})) == []


@pytest.mark.parametrize(
    ("key", "live"),
    [
        ("policy.rules", True),
        ("identity.identity_jwt.ttl_seconds", True),
        ("jwt.external_issuers", True),
        ("jwt.issuer", False),
        ("jwt.external_issuers_extra", False),
        ("proxy.upstream", False),
        ("server.port", False),
        ("stores.redis.url", False),
    ],
)
def test_is_live_matches_whole_keys_and_their_sub_keys(key: str, live: bool) -> None:
    """A live key covers its own sub-keys, never a longer name sharing its prefix."""
    assert is_live(key) is live


def test_a_rule_upstream_that_would_turn_the_proxy_on_is_fixed() -> None:
    """The sidecar proxy's route exists or not from the start: a rule gaining the first
    upstream is refused under policy.rules; one more upstream while it is on is live."""
    plain = make_settings(policy={"rules": [{"id": "a", "path_prefix": "/"}]})
    proxied = make_settings(
        policy={"rules": [{"id": "a", "path_prefix": "/", "upstream": "http://app:80"}]}
    )
    assert [k for k, _ in fixed_changes(plain, proxied)] == ["policy.rules"]
    assert [k for k, _ in fixed_changes(proxied, plain)] == ["policy.rules"]
    on = make_settings(proxy={"upstream": "http://app:80"})
    on_too = make_settings(
        proxy={"upstream": "http://app:80"},
        policy={"rules": [{"id": "a", "path_prefix": "/", "upstream": "http://b:80"}]},
    )
    assert fixed_changes(on, on_too) == []


def test_the_hash_is_that_of_the_effective_config_and_hides_secrets() -> None:
    """16 hex digits of the SHA-256 of check-config's output: a live change moves it, a
    secret (masked there) does not, so it can be published."""
    settings = make_settings(secrets={"key_encryption_key": KEK})
    digest = hashlib.sha256(effective_config(settings).encode()).hexdigest()[:16]
    assert config_hash(settings) == digest
    assert config_hash(make_settings(secrets={"key_encryption_key": OTHER_KEK})) == digest
    assert config_hash(make_settings(policy={"default_action": "authenticate"})) != digest


def test_a_change_to_a_rules_resource_is_fixed() -> None:
    """The protected-resource metadata and the audiences authgate issues are built at
    start: a new resource, or a new scope its metadata lists, is refused; a rule without
    a resource still changes live."""
    resource = {"identifier": "https://api.example/mcp"}
    plain = make_settings(policy={"rules": [{"id": "a", "path_prefix": "/"}]})
    guarded = make_settings(
        policy={"rules": [{"id": "a", "path_prefix": "/", "resource": resource}]}
    )
    scoped = make_settings(
        policy={"rules": [{"id": "a", "path_prefix": "/", "resource": resource, "scopes": ["x"]}]}
    )
    assert [k for k, _ in fixed_changes(plain, guarded)] == ["policy.rules"]
    assert [k for k, _ in fixed_changes(guarded, scoped)] == ["policy.rules"]
    other = make_settings(
        policy={"rules": [{"id": "a", "path_prefix": "/"}, {"id": "b", "path_prefix": "/b"}]}
    )
    assert fixed_changes(plain, other) == []
