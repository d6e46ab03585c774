"""DPoP settings (``jwt.dpop``, ``policy.rules[].dpop``): mistakes refused at load, by key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from authgate.config.loader import load_settings
from authgate.errors import ConfigError


def refused(tmp_path: Path, text: str, **env: str) -> dict[str, str]:
    path = tmp_path / "authgate.yaml"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=env)
    return dict(info.value.problems)


def test_a_required_rule_without_jwt_credentials_is_refused(tmp_path: Path) -> None:
    """``dpop: required`` on a rule that takes no JWT could never admit anyone."""
    rule = {"id": "r", "path_prefix": "/", "credentials": ["bpc"], "dpop": "required"}
    found = refused(tmp_path, yaml.safe_dump({"policy": {"rules": [rule]}}))
    assert "needs credential type 'jwt'" in found["policy.rules[0].dpop"]


def test_a_mode_that_is_not_one_of_the_three_is_refused(tmp_path: Path) -> None:
    """required, allowed or off: ``mandatory`` is a typo, not a mode."""
    rule = {"id": "r", "path_prefix": "/", "dpop": "mandatory"}
    assert "policy.rules[0].dpop" in refused(
        tmp_path, yaml.safe_dump({"policy": {"rules": [rule]}})
    )


@pytest.mark.parametrize("alg", ["none", "HS256", "RS384"])
def test_proof_algorithms_are_the_asymmetric_allow_list(tmp_path: Path, alg: str) -> None:
    """``jwt.dpop.algorithms`` takes ES256, ES384, EdDSA, RS256 and PS256 only."""
    found = refused(tmp_path, yaml.safe_dump({"jwt": {"dpop": {"algorithms": [alg]}}}))
    assert "not allowed" in found["jwt.dpop.algorithms"]


def test_a_short_nonce_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """At least 32 characters; the value never appears in the problem."""
    found = refused(tmp_path, "", AUTHGATE_JWT__DPOP__NONCE_SECRET="short-secret-123")
    assert "at least 32 characters" in found["jwt.dpop.nonce_secret"]
    assert "short-secret-123" not in str(found)


def test_the_defaults_allow_dpop_on_every_rule() -> None:
    """By default DPoP is on, without server nonces, and every rule allows it."""
    settings = load_settings(None, environ={})
    assert settings.jwt.dpop.enabled and not settings.jwt.dpop.require_nonce
    assert {rule.dpop for rule in settings.policy.rules} == {"allowed"}
