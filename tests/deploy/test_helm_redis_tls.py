"""The chart's production Redis values: TLS files mounted from a Secret and named in the
config, passwords from Secrets only, Sentinel and Cluster settings checked by the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.config.loader import load_settings
from tests.deploy.test_helm_values import REDIS, _render, coalesce, errors

TLS_SECRET = {
    "redisTLS": {
        "existingSecret": "redis-tls",
        "caKey": "ca.crt",
        "certKey": "tls.crt",
        "keyKey": "tls.key",
    }
}
SENTINEL = {
    "config": {
        "stores": {
            "redis": {
                "mode": "sentinel",
                "sentinels": ["sentinel-0:26379", "sentinel-1:26379"],
                "sentinel_username": "authgate",
                "sentinel_tls": True,
                "tls": {"verify": "ca-only"},
            }
        }
    },
    "secrets": {
        "redisSentinelPassword": {"existingSecret": "redis", "key": "sentinel-password"},
        "redisPassword": {"existingSecret": "redis", "key": "password"},
    },
}
CLUSTER = {
    "config": {
        "stores": {
            "redis": {
                "mode": "cluster",
                "cluster_nodes": ["redis-1:6379", "rediss://redis-2.example:6380", "[::1]:7000"],
            }
        }
    }
}


@pytest.mark.parametrize(
    "values",
    [
        coalesce(coalesce(REDIS, TLS_SECRET), SENTINEL),
        coalesce(coalesce(REDIS, TLS_SECRET), CLUSTER),
    ],
    ids=["sentinel", "cluster"],
)
def test_production_redis_values_are_valid(values: dict[str, Any]) -> None:
    """Sentinel with its password and TLS, Cluster with several seeds: the schema passes."""
    assert errors(values) == []


@pytest.mark.parametrize(
    ("overrides", "path", "fragment"),
    [
        ({"config": {"stores": {"redis": {"password": "pw"}}}}, "config.stores.redis.password",
         "secrets.redisPassword"),
        ({"config": {"stores": {"redis": {"sentinel_password": "pw"}}}},
         "config.stores.redis.sentinel_password", "secrets.redisSentinelPassword"),
        ({"config": {"stores": {"redis": {"cluster_nodes": ["redis-1"]}}}},
         "config.stores.redis.cluster_nodes.0", "does not match"),
        ({"config": {"stores": {"redis": {"tls": {"verify": "off"}}}}},
         "config.stores.redis.tls.verify", "is not one of"),
        ({"config": {"stores": {"redis": {"tls": {"ca_file": "ca.pem"}}}}},
         "config.stores.redis.tls.ca_file", "does not match"),
        ({"config": {"stores": {"redis": {"tls": {"cafile": "/ca.pem"}}}}},
         "config.stores.redis.tls", "('cafile' was unexpected)"),
        ({"redisTLS": {"secret": "x"}}, "redisTLS", "('secret' was unexpected)"),
        ({"redisTLS": {"caKey": "../ca"}}, "redisTLS.caKey", "does not match"),
    ],
    ids=["password", "sentinel-password", "seed-without-port", "verify-mode", "relative-ca",
         "tls-typo", "redistls-typo", "key-path"],
)  # fmt: skip
def test_bad_production_redis_values_are_refused(
    overrides: dict[str, Any], path: str, fragment: str
) -> None:
    """A secret in the ConfigMap, a malformed seed or TLS key: refused at the key."""
    found = errors(overrides)
    assert any(p == path and fragment in m for p, m in found), found


@pytest.fixture(scope="module")
def helm() -> Any:
    """``helm_python`` (Helm's Go SDK), or skip."""
    return pytest.importorskip("helm_python", reason="helm-python-sdk is in the test extra")


def test_tls_files_are_mounted_and_named_in_the_config(helm: Any, tmp_path: Path) -> None:
    """redisTLS mounts the Secret's keys read-only and points stores.redis.tls at them; the
    passwords arrive as variables from Secrets; authgate accepts the rendered config."""
    values = coalesce(coalesce(REDIS, TLS_SECRET), SENTINEL)
    rendered = _render(helm, values)
    config = yaml.safe_load(
        yaml.safe_load(rendered["authgate/templates/configmap.yaml"])["data"]["authgate.yaml"]
    )
    mount = "/etc/authgate/redis-tls"
    assert config["stores"]["redis"]["tls"] == {
        "ca_file": f"{mount}/ca.crt",
        "cert_file": f"{mount}/tls.crt",
        "key_file": f"{mount}/tls.key",
        "verify": "ca-only",
    }
    pod = yaml.safe_load(rendered["authgate/templates/deployment.yaml"])["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "redis-tls", "mountPath": mount, "readOnly": True} in container["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == "redis-tls")
    assert volume["secret"]["secretName"] == "redis-tls"
    assert volume["secret"]["defaultMode"] == 0o400
    assert [i["key"] for i in volume["secret"]["items"]] == ["ca.crt", "tls.crt", "tls.key"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AUTHGATE_STORES__REDIS__SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis",
        "key": "sentinel-password",
    }
    assert "AUTHGATE_STORES__REDIS__PASSWORD" in env
    # authgate loads it once the files exist where the chart mounts them.
    for key in ("ca_file", "cert_file", "key_file"):
        local = tmp_path / Path(config["stores"]["redis"]["tls"][key]).name
        local.write_text("pem")
        config["stores"]["redis"]["tls"][key] = str(local)
    path = tmp_path / "authgate.yaml"
    path.write_text(yaml.safe_dump(config))
    environ = {"AUTHGATE_STORES__REDIS__URL": "rediss://:pw@x:1/0"}
    assert load_settings(path, environ=environ).stores.redis.sentinel_tls


def test_no_tls_secret_no_tls_mount(helm: Any) -> None:
    """Without redisTLS.existingSecret nothing is mounted and the config has no tls."""
    rendered = _render(helm, REDIS)
    assert "redis-tls" not in rendered["authgate/templates/deployment.yaml"]
    assert "tls" not in rendered["authgate/templates/configmap.yaml"]


def test_client_certificate_needs_its_key_in_the_chart(helm: Any) -> None:
    """certKey without keyKey: the template refuses, saying why."""
    values = coalesce(REDIS, {"redisTLS": {"existingSecret": "redis-tls", "certKey": "tls.crt"}})
    with pytest.raises(helm.HelmError, match=r"certKey and redisTLS\.keyKey go together"):
        _render(helm, values)
