"""authgate keys|users|token and the admin API, on the shared Redis store."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis import Redis

from tests.support import ISSUER, running, wait_for

KEK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Iterator[dict[str, Any]]:
    prefix = f"authgate-tok:{uuid.uuid4().hex}:"
    tree = {
        "stores": {"backend": "redis", "redis": {"url": redis_url, "key_prefix": prefix}},
        "secrets": {"key_encryption_key": KEK},
        "jwt": {"issuer": ISSUER, "audiences": ["api"]},
        "tokens": {"key_publish_lead_seconds": 3600, "mint_audit_min_ttl_seconds": 60},
        "policy": {"rules": [{"id": "api", "path_prefix": "/api"}]},
    }
    yield tree
    client = Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _raw(value: bytes | str | None) -> bytes:
    """A value from a client that does not decode responses (the stubs allow ``str``)."""
    assert not isinstance(value, str)
    return value or b""


def cli(path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authgate", args[0], "--config", str(path), *args[1:]],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, tree: dict[str, Any]) -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(json.dumps(tree))
    path.chmod(0o600)
    return path


@pytest.mark.redis
async def test_minted_token_is_accepted_listed_and_revocable(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    """token mint signs with the replicas' key; the admin API lists it and revokes it."""
    path = write(tmp_path, config)
    with running(config, tmp_path) as gw:
        minted = cli(
            path, "token", "mint", "--sub", "ops-bot", "--scope", "authgate:admin", "--ttl", "3600"
        )
        assert minted.returncode == 0, minted.stderr
        token = json.loads(minted.stdout)["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{gw.url}/auth",
                headers={**bearer, "X-Original-URI": "/api/x", "X-Original-Method": "GET"},
            ) as resp:
                assert resp.status == 200
            async with session.get(f"{gw.url}/admin/mints", headers=bearer) as resp:
                assert resp.status == 200
                items = (await resp.json())["items"]
            assert [i["sub"] for i in items] == ["ops-bot"]
            assert items[0]["revoked"] is False
            async with session.post(
                f"{gw.url}/admin/revoke", json={"jti": items[0]["jti"]}, headers=bearer
            ) as resp:
                assert resp.status == 200
            async with session.get(f"{gw.url}/admin/mints", headers=bearer) as resp:
                assert resp.status == 401, "the admin's own (now revoked) token stops working"


@pytest.mark.redis
async def test_token_revoke_reaches_a_running_replica(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    """authgate token revoke JTI is seen by a running gateway (Redis plus pub/sub)."""
    path = write(tmp_path, config)
    with running(config, tmp_path) as gw:
        minted = json.loads(cli(path, "token", "mint", "--sub", "svc", "--ttl", "600").stdout)
        headers = {
            "Authorization": f"Bearer {minted['access_token']}",
            "X-Original-URI": "/api/x",
            "X-Original-Method": "GET",
        }
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gw.url}/auth", headers=headers) as resp:
                assert resp.status == 200
            revoked = cli(path, "token", "revoke", minted["jti"])
            assert revoked.returncode == 0, revoked.stderr
            async with session.get(f"{gw.url}/auth", headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "token_revoked"


@pytest.mark.redis
async def test_key_rotation_refuses_early_and_forced_rotation_keeps_old_tokens_valid(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    """keys rotate waits for the publication lead; --force rotates and old tokens still verify."""
    path = write(tmp_path, config)
    with running(config, tmp_path) as gw:
        old = json.loads(cli(path, "token", "mint", "--sub", "svc", "--ttl", "600").stdout)[
            "access_token"
        ]
        early = cli(path, "keys", "rotate")
        assert early.returncode == 2
        assert "published for" in early.stderr
        forced = cli(path, "keys", "rotate", "--force")
        assert forced.returncode == 0, forced.stderr
        listed = json.loads(cli(path, "keys", "list").stdout)
        assert listed["managed"] is True
        states = {k["kid"]: k["state"] for k in listed["keys"]}
        assert sorted(states.values()) == ["current", "next", "retired"]
        new = json.loads(cli(path, "token", "mint", "--sub", "svc", "--ttl", "600").stdout)[
            "access_token"
        ]
        async with aiohttp.ClientSession() as session:

            async def published() -> set[str]:
                async with session.get(f"{gw.url}/.well-known/jwks.json") as resp:
                    return {k["kid"] for k in (await resp.json())["keys"]}

            async def reloaded() -> bool:
                return await published() == set(states)

            # The replica reloads on the change announcement, within its 1 s key tick.
            await wait_for(reloaded, timeout=5)
            for token in (old, new):
                headers = {
                    "Authorization": f"Bearer {token}",
                    "X-Original-URI": "/api/x",
                    "X-Original-Method": "GET",
                }
                async with session.get(f"{gw.url}/auth", headers=headers) as resp:
                    assert resp.status == 200


@pytest.mark.redis
def test_users_are_stored_as_argon2_hashes(
    tmp_path: Path, config: dict[str, Any], redis_url: str
) -> None:
    """users add never stores the password; passwd and remove work; short passwords are refused."""
    path = write(tmp_path, config)
    added = cli(
        path,
        "users",
        "add",
        "alice",
        "--scope",
        "read",
        "--password-stdin",
        stdin="a long password 1\n",
    )
    assert added.returncode == 0, added.stderr
    client = Redis.from_url(redis_url)
    stored = b"".join(
        _raw(client.get(k))
        for k in client.scan_iter(match=f"{config['stores']['redis']['key_prefix']}user:*")
        if client.type(k) == b"string"
    )
    client.close()
    assert b"a long password 1" not in stored
    assert b"$argon2id$" in stored
    assert cli(path, "users", "add", "bob", "--password-stdin", stdin="short\n").returncode == 2
    assert (
        cli(
            path, "users", "passwd", "alice", "--password-stdin", stdin="another long pass\n"
        ).returncode
        == 0
    )
    assert json.loads(cli(path, "users", "list").stdout)[0]["username"] == "alice"
    assert cli(path, "users", "remove", "alice").returncode == 0
    assert cli(path, "users", "remove", "alice").returncode == 1
