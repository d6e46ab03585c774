"""What ``serve`` would die on is found when the configuration loads: every problem at once,
each under its key, in plain words with the fix (issue 12, item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from authgate.config.loader import PATTERN_WORDS, load_settings
from authgate.config.model import Settings
from authgate.crypto.keys import SigningKey
from authgate.errors import ConfigError
from authgate.preflight import load_checked_settings

JARGON = ("Input should be", "type=", "For further information visit", "should match pattern")


def write(tmp_path: Path, tree: dict[str, Any], mode: int = 0o600) -> Path:
    path = tmp_path / "authgate.yaml"
    path.write_text(yaml.safe_dump(tree))
    path.chmod(mode)
    return path


def key_file(tmp_path: Path, mode: int = 0o600, alg: str = "ES256", name: str = "k.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(SigningKey.generate(alg).to_pem())
    path.chmod(mode)
    return path


def problems(tree: dict[str, Any], tmp_path: Path, **env: str) -> dict[str, str]:
    """Every problem of ``tree`` (plus ``env``), key -> messages joined, as serve sees them."""
    with pytest.raises(ConfigError) as info:
        load_checked_settings(write(tmp_path, tree), environ=env)
    found: dict[str, str] = {}
    for key, message in info.value.problems:
        found[key] = f"{found[key]} | {message}" if key in found else message
    return found


def test_a_missing_signing_key_file_is_reported_by_key_and_path(tmp_path: Path) -> None:
    """The new user's case: check-config used to pass it, serve then died with a traceback."""
    missing = tmp_path / "nope.pem"
    found = problems({"jwt": {"signing_key_files": [str(missing)]}}, tmp_path)
    assert list(found) == ["jwt.signing_key_files[0]"]
    assert str(missing) in found["jwt.signing_key_files[0]"]
    assert "file not found" in found["jwt.signing_key_files[0]"]


def test_a_key_file_mode_and_other_problems_are_reported_together(tmp_path: Path) -> None:
    """The first problem found no longer hides the others."""
    loose = key_file(tmp_path, mode=0o644)
    found = problems(
        {
            "jwt": {"signing_key_files": [str(loose)]},
            "server": {"port": 0},
            "logging": {"format": "xml"},
        },
        tmp_path,
    )
    assert set(found) == {"jwt.signing_key_files[0]", "server.port", "logging.format"}
    assert "0644" in found["jwt.signing_key_files[0]"]
    assert "chmod 600" in found["jwt.signing_key_files[0]"]


def test_key_files_are_checked_even_when_the_list_is_malformed(tmp_path: Path) -> None:
    """A bare path instead of a list: both the shape and the file are reported."""
    found = problems({"jwt": {"signing_key_files": str(tmp_path / "nope.pem")}}, tmp_path)
    assert "must be a list" in found["jwt.signing_key_files"]
    assert "file not found" in found["jwt.signing_key_files"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"hello\n", "not a PEM file"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a readable"),
    ],
    ids=["not-pem", "truncated"],
)
def test_a_key_file_that_is_not_a_key_is_reported(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    """Content problems come in words, never as a cryptography exception."""
    path = tmp_path / "k.pem"
    path.write_bytes(content)
    path.chmod(0o600)
    found = problems({"jwt": {"signing_key_files": [str(path)]}}, tmp_path)
    assert fragment in found["jwt.signing_key_files[0]"]


def test_a_group_readable_key_file_is_accepted(tmp_path: Path) -> None:
    """0640: a Kubernetes secret mounted with fsGroup."""
    path = key_file(tmp_path, mode=0o640)
    settings = load_checked_settings(
        write(tmp_path, {"jwt": {"signing_key_files": [str(path)]}}), environ={}
    )
    assert settings.jwt.signing_key_files == (str(path),)


def test_a_key_whose_algorithm_is_not_allowed_is_reported(tmp_path: Path) -> None:
    """An RS256 key while jwt.algorithms lists ES256 only: its own tokens would be refused."""
    path = key_file(tmp_path, alg="RS256")
    found = problems({"jwt": {"signing_key_files": [str(path)], "algorithms": ["ES256"]}}, tmp_path)
    assert "add RS256 to jwt.algorithms" in found["jwt.signing_key_files[0]"]


def test_the_config_file_mode_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    """A world-readable file holding a secret no longer stops at that one problem."""
    path = write(
        tmp_path,
        {"stores": {"redis": {"url": "redis://:pw@127.0.0.1:6379/0"}}, "server": {"port": 0}},
        mode=0o644,
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    keys = [key for key, _ in info.value.problems]
    assert keys == [str(path), "server.port"]


def test_an_unknown_http_method_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    """methods: [GETT] would make the rule silently match nothing."""
    rule = {"id": "api", "path_prefix": "/api", "methods": ["GET", "GETT"]}
    found = problems({"policy": {"rules": [rule]}}, tmp_path)
    assert found == {
        "policy.rules[0].methods[1]": "unknown HTTP method 'GETT'; did you mean 'GET'?"
    }


def test_duplicate_rule_ids_are_reported_even_beside_an_invalid_rule(tmp_path: Path) -> None:
    """The model sees duplicates only once every rule is valid; the raw check does not wait."""
    rules = [
        {"id": "api", "path_prefix": "/api"},
        {"id": "api", "path_prefix": "/v2"},
        {"id": "bad", "path_prefix": "no-slash"},
    ]
    found = problems({"policy": {"rules": rules}}, tmp_path)
    assert "already used by policy.rules[0]" in found["policy.rules[1].id"]
    assert "must start with '/'" in found["policy.rules[2].path_prefix"]
    # Valid rules only: the model's own check gives the same single problem.
    found = problems({"policy": {"rules": rules[:2]}}, tmp_path)
    assert list(found) == ["policy.rules[1].id"]


@pytest.mark.parametrize(
    "url",
    ["http://:hunter2@127.0.0.1:6379/0", "127.0.0.1:6379", "redis://:hunter2@h:port/0"],
    ids=["http", "no-scheme", "bad-port"],
)
def test_a_redis_url_that_is_not_redis_is_refused_without_echoing_it(
    tmp_path: Path, url: str
) -> None:
    """stores.redis.url must be redis://, rediss:// or unix://; the URL may carry a password."""
    found = problems({"stores": {"backend": "redis", "redis": {"url": url}}}, tmp_path)
    assert list(found) == ["stores.redis.url"]
    assert "redis://" in found["stores.redis.url"]
    assert "hunter2" not in found["stores.redis.url"]


def test_redis_urls_from_the_environment_are_checked_too(tmp_path: Path) -> None:
    """AUTHGATE_STORES__REDIS__URL goes through the same check."""
    found = problems({}, tmp_path, AUTHGATE_STORES__REDIS__URL="https://127.0.0.1:6379")
    assert "'https://' is not Redis's" in found["stores.redis.url"]


def test_sentinel_addresses_are_host_and_port(tmp_path: Path) -> None:
    """A URL among stores.redis.sentinels would crash the connection set-up."""
    redis = {"mode": "sentinel", "sentinels": ["10.0.0.1:26379", "redis://10.0.0.2:26379"]}
    found = problems({"stores": {"backend": "redis", "redis": redis}}, tmp_path)
    assert list(found) == ["stores.redis.sentinels[1]"]
    assert "host:port" in found["stores.redis.sentinels[1]"]


@pytest.mark.parametrize(
    ("rule", "key"),
    [
        ({"id": "admin", "path_prefix": "/admin", "scopes": ["admin"]}, "path_prefix"),
        ({"id": "admin", "path_prefix": "/admin/reports"}, "path_prefix"),
        ({"id": "admin", "path_glob": "/admin/**"}, "path_glob"),
    ],
    ids=["prefix", "below", "glob"],
)
def test_a_rule_under_the_admin_prefix_is_refused(
    tmp_path: Path, rule: dict[str, Any], key: str
) -> None:
    """In sidecar mode authgate answers the admin API's paths itself instead of proxying
    them: an app's rule there does not do what it says."""
    proxy = {"upstream": "http://127.0.0.1:3000"}
    found = problems({"policy": {"rules": [rule]}, "proxy": proxy}, tmp_path)
    message = found[f"policy.rules[0].{key}"]
    assert "tokens.admin_prefix" in message and "move the rule" in message


def test_a_rule_with_its_own_upstream_under_the_admin_prefix_is_refused(tmp_path: Path) -> None:
    """A rule's own upstream makes it proxied too."""
    rule = {"id": "admin", "path_prefix": "/admin", "upstream": "http://127.0.0.1:3000"}
    assert "policy.rules[0].path_prefix" in problems({"policy": {"rules": [rule]}}, tmp_path)


SIDECAR = {"upstream": "http://127.0.0.1:3000"}


@pytest.mark.parametrize(
    ("rules", "tokens", "proxy"),
    [
        ([{"id": "admin", "path_prefix": "/admin"}], {"admin_api": False}, SIDECAR),
        ([{"id": "admin", "path_prefix": "/admin"}], {"admin_prefix": "/_authgate"}, SIDECAR),
        (
            [{"id": "x", "path_prefix": "/administrator"}, {"id": "all", "path_glob": "/**"}],
            {},
            SIDECAR,
        ),
        ([{"id": "admin", "path_prefix": "/admin"}], {}, {}),
    ],
    ids=["admin-api-off", "prefix-moved", "neighbours", "forward-auth"],
)
def test_rules_beside_the_admin_api_are_accepted(
    tmp_path: Path, rules: list[dict[str, Any]], tokens: dict[str, Any], proxy: dict[str, Any]
) -> None:
    """Turning the admin API off or moving it frees the path; a longer name is not under it;
    a forward-auth rule guards the app's own /admin, on the app's host."""
    tree = {"policy": {"rules": rules}, "tokens": tokens, "proxy": proxy}
    load_checked_settings(write(tmp_path, tree), environ={})


@pytest.mark.parametrize("level", ["debug", "Debug", "DEBUG"])
def test_the_log_level_is_accepted_in_any_case(tmp_path: Path, level: str) -> None:
    """logging.level: debug is DEBUG."""
    path = write(tmp_path, {"logging": {"level": level}})
    assert load_checked_settings(path, environ={}).logging.level == "DEBUG"


def test_messages_carry_no_pydantic_jargon(tmp_path: Path) -> None:
    """Wrong types, patterns, choices, bounds and shapes all come out in plain words."""
    tree = {
        "server": {"port": "http", "workers": 1.5, "request_id_header": "X Id", "host": []},
        "stores": {"backend": "mongo", "redis": {"key_prefix": "a b", "retries": 5}},
        "jwt": {"signing_key_files": "k.pem", "audiences": [], "issuer": ""},
        "policy": {"rules": [{"id": "a b", "upstream": "ftp://x", "anonymous": "maybe"}]},
        "proxy": 5,
        "tokens": {"admin_prefix": "admin/"},
        "logging": {"level": "loud", "colour": "red"},
        "hmac": {"prefix": "UPPER"},
    }
    found = problems(tree, tmp_path)
    for key, message in found.items():
        assert not any(j in message for j in JARGON), (key, message)
    assert found["server.port"] == "must be a whole number"
    assert found["stores.backend"] == "must be one of 'memory' or 'redis'"
    assert found["stores.redis.retries"] == "must be at most 1"
    assert "must be a list" in found["jwt.signing_key_files"]
    assert found["jwt.audiences"] == "must list at least 1 item"
    assert found["jwt.issuer"] == "must not be empty"
    assert "HTTP header name" in found["server.request_id_header"]
    assert "must be a mapping" in found["proxy"]
    assert found["logging.colour"].startswith("unknown key")
    assert found["policy.rules[0].anonymous"] == "must be true or false"


def test_a_misspelt_key_gets_a_suggestion(tmp_path: Path) -> None:
    """unknown key; did you mean ...?"""
    found = problems({"server": {"prot": 8080}, "stores": {"redis": {"pasword": "x"}}}, tmp_path)
    assert found["server.prot"] == "unknown key; did you mean 'port'?"
    assert found["stores.redis.pasword"].startswith("unknown key")


def _patterns(model: type[BaseModel]) -> set[str]:
    found: set[str] = set()
    for field in model.model_fields.values():
        for meta in field.metadata:
            pattern = getattr(meta, "pattern", None)
            if isinstance(pattern, str):
                found.add(pattern)
        for sub in _submodels(field.annotation):
            found |= _patterns(sub)
    return found


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _submodels(arg)]


def test_every_pattern_in_the_model_has_words() -> None:
    """A new pattern without words would reach the user as a regex."""
    patterns = _patterns(Settings)
    assert patterns, "no patterns found: the walk is broken"
    assert patterns <= set(PATTERN_WORDS), patterns - set(PATTERN_WORDS)
