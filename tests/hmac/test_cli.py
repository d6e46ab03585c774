"""``authgate apikeys create|list|revoke`` and ``authgate proof`` against the real Redis and a
real gateway process: the raw key is printed once and stored nowhere in clear, a header from
``authgate proof`` is accepted as curl would send it, and ``revoke`` stops the key.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from redis import Redis

from authgate.client.hmac_proof import fetch_proof_header
from tests.hmac import CHALLENGE_SECRET, random_kek
from tests.support import echo_app, running, serve_app

RAW_KEY = re.compile(r"agk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
HEADER_LINE = re.compile(r"Authorization: (AGProof v1\.[a-z0-9]{12}\.[^\s]+)\n")
RULES = [
    {"id": "bound", "path_prefix": "/bound", "hmac_bind_body": True},
    {"id": "api", "path_prefix": "/api", "scopes": ["read"]},
]
REVOCATION_BOUND_SECONDS = 5.0


@pytest.fixture
def config(redis_url: str) -> Iterator[dict[str, Any]]:
    """A Redis-backed config on a key prefix of the test's own, deleted afterwards."""
    prefix = f"authgate-hmac-cli:{uuid.uuid4().hex[:12]}:"
    yield {
        "stores": {"backend": "redis", "redis": {"url": redis_url, "key_prefix": prefix}},
        "secrets": {"key_encryption_key": random_kek()},
        "hmac": {"challenge_secret": CHALLENGE_SECRET},
        "policy": {"rules": RULES},
        "logging": {"level": "WARNING", "access_log": False},
    }
    client = Redis.from_url(redis_url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def write_config(config: dict[str, Any], directory: Path) -> Path:
    """The config as a 0600 YAML file."""
    path = directory / "authgate.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def cli(*args: str, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m authgate ...`` with no AUTHGATE_* variable but the API key when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
    if api_key is not None:
        env["AUTHGATE_API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, "-m", "authgate", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def create_key(config_path: Path, name: str = "ci") -> dict[str, Any]:
    """``authgate apikeys create``; the parsed JSON it prints."""
    result = cli(
        "apikeys", "--config", str(config_path), "create", "--name", name, "--scope", "read"
    )
    assert result.returncode == 0, result.stderr
    created: dict[str, Any] = json.loads(result.stdout)
    return created


def stored_values(redis_url: str, prefix: str) -> dict[str, str]:
    """Every key under ``prefix`` with its whole value rendered as text, whatever its type."""
    client = Redis.from_url(redis_url, socket_timeout=2, decode_responses=True)
    out: dict[str, str] = {}
    try:
        for key in client.scan_iter(match=f"{prefix}*"):
            kind = client.type(key)
            if kind == "string":
                value: Any = client.get(key)
            elif kind == "set":
                value = sorted(client.smembers(key))
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            else:
                raise AssertionError(f"unexpected Redis type {kind!r} at {key!r}")
            out[key] = json.dumps(value)
    finally:
        client.close()
    return out


@pytest.mark.redis
def test_create_prints_the_key_once_and_nothing_keeps_it_in_clear(
    config: dict[str, Any], redis_url: str, tmp_path: Path
) -> None:
    """create shows ``agk_<id>_<secret>`` once; list shows the id only; Redis holds a hash
    and a sealed copy, never the key or its secret part."""
    path = write_config(config, tmp_path)
    created = create_key(path, name="billing")
    match = RAW_KEY.fullmatch(created["api_key"])
    assert match is not None
    key_id, secret = match.groups()
    assert (created["key_id"], created["name"], created["scopes"]) == (key_id, "billing", ["read"])
    assert created["revoked_at"] is None

    listed = cli("apikeys", "--config", str(path), "list")
    assert listed.returncode == 0, listed.stderr
    assert [k["key_id"] for k in json.loads(listed.stdout)] == [key_id]
    assert "api_key" not in listed.stdout
    assert secret not in listed.stdout

    values = stored_values(redis_url, config["stores"]["redis"]["key_prefix"])
    record_keys = [k for k in values if k.endswith(f"apikey:{{{key_id}}}")]
    assert len(record_keys) == 1, sorted(values)
    for key, value in values.items():
        assert secret not in value, key
        assert created["api_key"] not in value, key
    record = json.loads(json.loads(values[record_keys[0]]))
    assert {"sha256", "sealed"} <= set(record)


@pytest.mark.redis
async def test_proof_header_is_accepted_and_revoke_stops_the_key(
    config: dict[str, Any], tmp_path: Path
) -> None:
    """``authgate proof URL`` prints a header the gateway accepts once for exactly that
    request (query and bound body included); after ``apikeys revoke`` the key is refused."""
    async with serve_app(echo_app()) as upstream_port:
        config = {**config, "proxy": {"upstream": f"http://127.0.0.1:{upstream_port}"}}
        with running(config, tmp_path) as gateway:
            path = gateway.config_path  # the CLI reads the gateway's own config file
            created = create_key(path)
            api_key, key_id = created["api_key"], created["key_id"]
            url = f"{gateway.url}/api/items?page=2"

            printed = cli("proof", url, api_key=api_key)
            assert printed.returncode == 0, printed.stderr
            line = HEADER_LINE.fullmatch(printed.stdout)
            assert line is not None, printed.stdout
            header = {"Authorization": line.group(1)}
            assert api_key not in printed.stdout

            body = b'{"amount":100}'
            bound = cli(
                "proof",
                f"{gateway.url}/bound/pay",
                "--method",
                "post",
                "--bind-body",
                "--data",
                body.decode(),
                api_key=api_key,
            )
            assert bound.returncode == 0, bound.stderr
            bound_match = HEADER_LINE.fullmatch(bound.stdout)
            assert bound_match is not None, bound.stdout
            bound_header = {"Authorization": bound_match.group(1)}

            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout) as session:

                async def status(
                    method: str, target: str, headers: dict[str, str], data: bytes | None = None
                ) -> int:
                    async with session.request(
                        method, gateway.url + target, headers=headers, data=data
                    ) as resp:
                        await resp.read()
                        return resp.status

                assert await status("GET", "/api/items?page=3", header) == 401
                assert await status("GET", "/api/items?page=2", header) == 200
                assert await status("GET", "/api/items?page=2", header) == 401  # single use
                assert await status("POST", "/bound/pay", bound_header, b'{"amount":9}') == 401
                assert await status("POST", "/bound/pay", bound_header, body) == 200

                revoked = cli("apikeys", "--config", str(path), "revoke", key_id)
                assert revoked.returncode == 0, revoked.stderr
                assert json.loads(revoked.stdout)["revoked_at"] is not None
                deadline = time.monotonic() + REVOCATION_BOUND_SECONDS
                while True:
                    fresh = await fetch_proof_header(
                        session, gateway.url, api_key, "GET", "/api/items"
                    )
                    code = await status("GET", "/api/items", {"Authorization": fresh})
                    if code == 401:
                        break
                    assert code == 200
                    assert time.monotonic() < deadline, "the revoked key is still accepted"

                late = cli("proof", url, api_key=api_key)
                late_match = HEADER_LINE.fullmatch(late.stdout)
                assert late_match is not None, late.stdout
                late_header = {"Authorization": late_match.group(1)}
                assert await status("GET", "/api/items?page=2", late_header) == 401

            listed = json.loads(cli("apikeys", "--config", str(path), "list").stdout)
            assert [(k["key_id"], k["revoked_at"] is not None) for k in listed] == [(key_id, True)]


@pytest.mark.parametrize(
    ("args", "api_key", "message"),
    [
        (("apikeys", "create", "--name", "x"), None, "stores.backend: redis"),
        (("proof", "http://127.0.0.1:9/api"), None, "AUTHGATE_API_KEY"),
        (("proof", "http://127.0.0.1:9/api"), "not-an-agk-key", "cannot build proof"),
    ],
    ids=["memory-backend", "no-key", "malformed-key"],
)
def test_cli_refusals_name_the_problem(
    args: tuple[str, ...], api_key: str | None, message: str
) -> None:
    """Without Redis, without a key, or with a malformed key: a non-zero exit saying why."""
    result = cli(*args, api_key=api_key)
    assert result.returncode != 0
    assert message in result.stderr
    assert "agk_" not in result.stdout
