"""``stores.redis`` for production Redis: TLS files checked at load, Sentinel and Cluster
settings in their own modes only, secrets masked, redis-py options built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.config.loader import effective_config, load_settings
from authgate.config.model import RedisSettings
from authgate.errors import ConfigError
from authgate.stores.redis.topology import auth_options, build_client, client_options, tls_options


def load(tmp_path: Path, redis: dict[str, Any], **environ: str) -> RedisSettings:
    path = tmp_path / "authgate.yaml"
    path.write_text(yaml.safe_dump({"stores": {"backend": "redis", "redis": redis}}))
    path.chmod(0o600)
    return load_settings(path, environ=environ).stores.redis


def problems(tmp_path: Path, redis: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, redis)
    return dict(info.value.problems)


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A file standing in for a PEM file (only existence is checked at load)."""
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_tls_files_are_checked_when_the_config_loads(tmp_path: Path, pem: Path) -> None:
    """A missing file, or a directory, is refused naming the key."""
    found = problems(
        tmp_path,
        {
            "url": "rediss://r:6380/0",
            "tls": {"ca_file": str(tmp_path / "nope.pem"), "cert_file": str(tmp_path),
                    "key_file": str(pem)},
        },
    )  # fmt: skip
    assert "no such file" in found["stores.redis.tls.ca_file"]
    assert "no such file" in found["stores.redis.tls.cert_file"]
    assert "stores.redis.tls.key_file" not in found


def test_client_certificate_needs_its_key(tmp_path: Path, pem: Path) -> None:
    """cert_file without key_file (or the reverse) is refused."""
    found = problems(tmp_path, {"url": "rediss://r:6380/0", "tls": {"cert_file": str(pem)}})
    assert "go together" in found["stores.redis.tls"]


def test_tls_settings_with_a_plain_url_are_refused(tmp_path: Path, pem: Path) -> None:
    """A CA file with a redis:// URL would silently send everything in clear: refused."""
    found = problems(tmp_path, {"url": "redis://r:6379/0", "tls": {"ca_file": str(pem)}})
    assert "nothing uses TLS" in found["stores.redis"]


def test_sentinel_tls_alone_uses_the_tls_section(tmp_path: Path, pem: Path) -> None:
    """TLS to the sentinels only (a redis:// master) is allowed."""
    settings = load(
        tmp_path,
        {"url": "redis://x:1/0", "mode": "sentinel", "sentinels": ["s:26379"],
         "sentinel_tls": True, "tls": {"ca_file": str(pem)}},
    )  # fmt: skip
    assert settings.sentinel_tls and not settings.url_tls


@pytest.mark.parametrize(
    ("section", "key", "fragment"),
    [
        ({"sentinel_password": "x"}, "stores.redis", "for mode sentinel"),
        ({"sentinel_tls": True}, "stores.redis", "for mode sentinel"),
        ({"cluster_nodes": ["a:1"]}, "stores.redis", "for mode cluster"),
        ({"mode": "cluster", "cluster_nodes": ["a"]}, "stores.redis.cluster_nodes[0]", "host:port"),
        ({"mode": "cluster", "cluster_nodes": ["a:0"]}, "stores.redis.cluster_nodes[0]", "host:port"),
        ({"mode": "cluster", "cluster_nodes": ["http://a:1"]}, "stores.redis.cluster_nodes[0]", "URL"),
        ({"mode": "cluster", "cluster_nodes": ["redis://:pw@a:1"]}, "stores.redis.cluster_nodes[0]",
         "no credentials"),
        ({"mode": "cluster", "cluster_nodes": ["rediss://a:1"]}, "stores.redis", "like url"),
        ({"tls": {"verify": "loose"}}, "stores.redis.tls.verify", "full"),
    ],
    ids=["sentinel-password", "sentinel-tls", "cluster-nodes", "no-port", "port-zero",
         "http", "credentials", "scheme-mismatch", "verify-mode"],
)  # fmt: skip
def test_misplaced_or_malformed_settings_name_their_key(
    tmp_path: Path, section: dict[str, Any], key: str, fragment: str
) -> None:
    """Each mistake is reported under the key at fault."""
    found = problems(tmp_path, {"url": "redis://r:6379/0", **section})
    assert fragment in found[key], found


def test_passwords_are_secret_and_masked(tmp_path: Path) -> None:
    """password and sentinel_password never print; check-config masks them; a file holding
    one must not be readable by others."""
    settings = load(
        tmp_path,
        {"url": "redis://x:1/0", "mode": "sentinel", "sentinels": ["s:26379"]},
        AUTHGATE_STORES__REDIS__PASSWORD="hunter2",
        AUTHGATE_STORES__REDIS__SENTINEL_PASSWORD="swordfish",
    )
    assert "hunter2" not in repr(settings) and "swordfish" not in repr(settings)
    path = tmp_path / "effective.yaml"
    path.write_text(
        yaml.safe_dump({"stores": {"backend": "redis", "redis": {"password": "hunter2"}}})
    )
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        load_settings(path, environ={})
    path.chmod(0o600)
    text = effective_config(load_settings(path, environ={}))
    assert "hunter2" not in text
    assert "password: '**********'" in text
    assert "sentinel_password: ''" in text


@pytest.mark.parametrize(
    ("verify", "reqs", "hostname"),
    [("full", "required", True), ("ca-only", "required", False), ("none", "none", False)],
)
def test_verify_modes_map_to_redis_py_options(
    tmp_path: Path, pem: Path, verify: str, reqs: str, hostname: bool
) -> None:
    """Every TLS option is explicit (redis-py's defaults changed between releases)."""
    settings = load(
        tmp_path,
        {"url": "rediss://r:6380/0",
         "tls": {"ca_file": str(pem), "cert_file": str(pem), "key_file": str(pem),
                 "verify": verify}},
    )  # fmt: skip
    assert tls_options(settings) == {
        "ssl_cert_reqs": reqs,
        "ssl_check_hostname": hostname,
        "ssl_ca_certs": str(pem),
        "ssl_certfile": str(pem),
        "ssl_keyfile": str(pem),
    }


def test_password_setting_overrides_the_urls(tmp_path: Path) -> None:
    """username/password override those in the URL (keyword arguments of redis-py's
    from_url would lose to the URL's)."""
    settings = load(
        tmp_path, {"url": "redis://u:old@r:6379/0", "username": "authgate"},
        AUTHGATE_STORES__REDIS__PASSWORD="new",
    )  # fmt: skip
    assert auth_options(settings) == {"username": "authgate", "password": "new"}
    client, _ = build_client(settings, client_options(settings))
    kwargs = client.connection_pool.connection_kwargs  # type: ignore[union-attr]
    assert (kwargs["username"], kwargs["password"]) == ("authgate", "new")


async def test_cluster_seeds_are_url_then_cluster_nodes(tmp_path: Path, pem: Path) -> None:
    """RedisCluster gets every seed, url's node first, TLS on for each."""
    settings = load(
        tmp_path,
        {"url": "rediss://a:7000/0", "mode": "cluster",
         "cluster_nodes": ["b:7001", "rediss://c:7002", "a:7000"], "tls": {"ca_file": str(pem)}},
    )  # fmt: skip
    client, _ = build_client(settings, client_options(settings))
    try:
        seeds = list(client.nodes_manager.startup_nodes)  # type: ignore[union-attr]
        assert seeds == ["a:7000", "b:7001", "c:7002"]
        kwargs = client.get_connection_kwargs()
        assert kwargs["ssl_ca_certs"] == str(pem)
    finally:
        await client.aclose()
