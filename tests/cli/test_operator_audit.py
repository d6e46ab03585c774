"""The operator audit: one entry per change, the same whichever front made it.

Every act is made through the admin API, the CLI acting directly on the shared Redis (a
unique key prefix) and, where the console offers it, the console, all on one store; the
entries each front wrote to the ``operator`` stream must agree on the action, the fields and
the shape of ``by``, and no secret (an API key, a password, a token) may be in the raw JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis import Redis

from authgate.client import BPCSigner
from authgate.web.app import create_app
from authgate.web.state import SERVICES
from tests.console.conftest import CSRF_FIELD, PREFIX
from tests.support import AUDIENCE, ISSUER, make_settings

KEK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
OPERATOR = "ops-carol"
PASSWORD = "a long operator passphrase"
ADMIN = "/admin"
# Values that name the one thing an act changed: each front's own.
OWN = {"jti", "until_ms", "key_id", "kid", "pair_id", "ids"}

pytestmark = pytest.mark.redis


@pytest.fixture
def tree(redis_url: str) -> Iterator[dict[str, Any]]:
    """Settings on the shared Redis under a unique prefix (removed afterwards)."""
    prefix = f"authgate-opaudit:{uuid.uuid4().hex}:"
    yield {
        "stores": {"backend": "redis", "redis": {"url": redis_url, "key_prefix": prefix}},
        "secrets": {"key_encryption_key": KEK},
        "jwt": {"issuer": ISSUER, "audiences": [AUDIENCE]},
        "console": {"enabled": True},
        "tokens": {"password_attempts_per_minute": 1000, "mint_audit_min_ttl_seconds": 60},
    }
    client = Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


class Fronts:
    """The three fronts on one store: the admin API and the console in process, the CLI in
    a subprocess; and the raw operator stream."""

    def __init__(
        self, client: TestClient[Any, Any], config: Path, admin: str, raw: Redis, prefix: str
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.config = config
        self.bearer = {"Authorization": f"Bearer {admin}"}
        self.raw = raw
        self.csrf = ""
        self.secrets: list[str] = [admin, PASSWORD]

    def stream(self) -> list[str]:
        """The operator stream as stored: raw JSON, newest first."""
        keys = list(self.raw.scan_iter(match=f"{self.prefix}audit:*operator*"))
        assert len(keys) == 1, keys
        return [v.decode() if isinstance(v, bytes) else v for v in self.raw.lrange(keys[0], 0, -1)]

    def newest(self) -> dict[str, Any]:
        """The newest entry."""
        entry: dict[str, Any] = json.loads(self.stream()[0])
        return entry

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        """An admin API call; its JSON answer."""
        async with self.client.request(
            method, ADMIN + path, json=body, headers=self.bearer
        ) as resp:
            assert resp.status < 300, await resp.text()
            return await resp.json()

    def cli(self, *args: str, stdin: str = "") -> Any:
        """An operator command acting directly on the stores; its JSON output."""
        done = subprocess.run(
            [sys.executable, "-m", "authgate", args[0], "--config", str(self.config), *args[1:]],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    async def console(self, path: str, form: dict[str, str], status: int = 303) -> str:
        """A console form posted by the signed-in operator; the page answered."""
        async with self.client.post(
            PREFIX + path, data={"csrf": self.csrf, **form}, allow_redirects=False
        ) as resp:
            assert resp.status == status, await resp.text()
            return await resp.text()


@pytest.fixture
async def fronts(tree: dict[str, Any], tmp_path: Path, redis_url: str) -> AsyncIterator[Fronts]:
    """authgate in process on the shared Redis, an operator signed in to its console."""
    config = tmp_path / "authgate.yaml"
    config.write_text(json.dumps(tree))
    config.chmod(0o600)
    app = create_app(make_settings(**tree))
    raw = Redis.from_url(redis_url)
    async with TestClient(TestServer(app)) as client:
        services = app[SERVICES]
        await services.users.add(OPERATOR, PASSWORD, scopes=["authgate:admin"], role="operator")
        admin = await services.issuer.issue(
            subject="token-operator",
            scopes=["authgate:admin"],
            audience=None,
            ttl_seconds=600,
            minted_by="test",
        )
        prefix = tree["stores"]["redis"]["key_prefix"]
        front = Fronts(client, config, admin.access_token, raw, prefix)
        async with client.get(PREFIX + "/signin") as resp:
            found = CSRF_FIELD.search(await resp.text())
        assert found is not None
        form = {"csrf": found.group(1), "username": OPERATOR, "password": PASSWORD}
        async with client.post(PREFIX + "/signin", data=form, allow_redirects=False) as resp:
            assert resp.status == 303
        async with client.get(PREFIX + "/tokens") as resp:
            found = CSRF_FIELD.search(await resp.text())
        assert found is not None
        front.csrf = found.group(1)
        yield front
    raw.close()


def _same(entries: dict[str, dict[str, Any]], action: str) -> None:
    """The entries of one act made through each front agree: action, fields, ``by``."""
    by = {"api": "admin:token-operator", "cli": "cli", "console": f"admin:{OPERATOR}"}
    shapes = {}
    for front, entry in entries.items():
        assert entry["action"] == action, (front, entry)
        assert entry["by"] == by[front], (front, entry)
        assert isinstance(entry["ts"], int)
        shapes[front] = {k: v for k, v in entry.items() if k not in OWN | {"ts", "by"}}
        assert set(entry) >= {"ts", "action", "by"}
    first = next(iter(shapes.values()))
    assert all(shape == first for shape in shapes.values()), shapes
    keys = {front: set(entry) for front, entry in entries.items()}
    assert len({frozenset(k) for k in keys.values()}) == 1, keys


async def test_tokens_and_api_keys_are_audited_alike_from_every_front(fronts: Fronts) -> None:
    """token mint / revoke, apikey create / revoke: one entry each, equal across fronts."""
    minted: dict[str, dict[str, Any]] = {}
    issued = await fronts.api(
        "POST", "/tokens", {"sub": "svc-a", "scope": "read write", "ttl_seconds": 600}
    )
    minted["api"] = fronts.newest()
    out = fronts.cli("token", "mint", "--sub", "svc-a", "--scope", "read", "--scope", "write",
                     "--ttl", "600")  # fmt: skip
    minted["cli"] = fronts.newest()
    page = await fronts.console(
        "/tokens/mint", {"sub": "svc-a", "scope": "read write", "ttl_seconds": "600"}, 201
    )
    minted["console"] = fronts.newest()
    _same(minted, "token.mint")
    assert minted["api"]["jti"] == issued["jti"]
    assert minted["cli"]["jti"] == out["jti"]
    assert minted["api"]["scopes"] == ["read", "write"]
    assert minted["api"]["ttl_seconds"] == 600
    console_token = re.search(r'data-test="secret">([^<]+)<', page)
    assert console_token is not None
    fronts.secrets += [issued["access_token"], out["access_token"], console_token.group(1)]

    revoked = {}
    await fronts.api("POST", "/revoke", {"jti": minted["api"]["jti"]})
    revoked["api"] = fronts.newest()
    fronts.cli("token", "revoke", minted["cli"]["jti"])
    revoked["cli"] = fronts.newest()
    await fronts.console("/tokens/revoke", {"jti": minted["console"]["jti"]})
    revoked["console"] = fronts.newest()
    _same(revoked, "token.revoke")
    assert [revoked[f]["jti"] for f in ("api", "cli", "console")] == [
        minted[f]["jti"] for f in ("api", "cli", "console")
    ]

    created = {}
    key = await fronts.api("POST", "/apikeys", {"name": "ci", "scopes": ["read"]})
    created["api"] = fronts.newest()
    cli_key = fronts.cli("apikeys", "create", "--name", "ci", "--scope", "read")
    created["cli"] = fronts.newest()
    page = await fronts.console("/apikeys", {"name": "ci", "scopes": "read"}, 201)
    created["console"] = fronts.newest()
    _same(created, "apikey.create")
    assert created["api"]["key_id"] == key["key_id"]
    assert created["api"]["scopes"] == ["read"]
    console_key = re.search(r'data-test="secret">([^<]+)<', page)
    assert console_key is not None
    fronts.secrets += [key["api_key"], cli_key["api_key"], console_key.group(1)]

    gone = {}
    await fronts.api("DELETE", f"/apikeys/{created['api']['key_id']}")
    gone["api"] = fronts.newest()
    fronts.cli("apikeys", "revoke", created["cli"]["key_id"])
    gone["cli"] = fronts.newest()
    await fronts.console(f"/apikeys/{created['console']['key_id']}/revoke", {})
    gone["console"] = fronts.newest()
    _same(gone, "apikey.revoke")

    _no_secret_in(fronts)


async def test_key_rotation_and_pair_acts_are_audited_alike_from_every_front(
    fronts: Fronts, tmp_path: Path
) -> None:
    """keys rotate, pairs import / approve / revoke / unlock: one entry each, equal across
    fronts (the console imports no pairs: API and CLI there)."""

    def record(pair_id: str, status: str) -> dict[str, object]:
        _, jwk, _ = BPCSigner.generate_key()
        return {
            "pair_id": pair_id,
            "name": "legacy",
            "scope": "read-write",
            "mode": "production",
            "public_key_jwk": jwk,
            "secret_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
            "status": status,
            "lockout_count": 5,
        }

    imported = {}
    await fronts.api("POST", "/pairs/import", {"records": [record("p-api", "pending")]})
    imported["api"] = fronts.newest()
    file = tmp_path / "pairs.json"
    file.write_text(json.dumps([record("p-cli", "pending")]))
    fronts.cli("pairs", "import", str(file))
    imported["cli"] = fronts.newest()
    _same(imported, "pairs.import")
    assert imported["api"]["ids"] == ["p-api"]
    assert imported["api"]["count"] == 1
    # The console's pairs come in over the API.
    await fronts.api("POST", "/pairs/import", {"records": [record("p-console", "pending")]})

    for act in ("approve", "unlock", "revoke"):
        if act == "unlock":  # lock each pair out, the way wrong secrets do
            await _lock_out(fronts, "p-api", "p-cli", "p-console")
        done = {}
        await fronts.api("POST", f"/pairs/p-api/{act}")
        done["api"] = fronts.newest()
        fronts.cli("pairs", act, "p-cli")
        done["cli"] = fronts.newest()
        await fronts.console(f"/pairs/p-console/{act}", {})
        done["console"] = fronts.newest()
        _same(done, f"pair.{act}")
        assert [done[f]["pair_id"] for f in ("api", "cli", "console")] == [
            "p-api",
            "p-cli",
            "p-console",
        ]

    # Last: the admin token's key is retired by the rotations.
    rotated = {}
    answer = await fronts.api("POST", "/keys/rotate", {"force": True})
    rotated["api"] = fronts.newest()
    fronts.cli("keys", "rotate", "--force")
    rotated["cli"] = fronts.newest()
    await fronts.console("/keys/rotate", {"force": "1"})
    rotated["console"] = fronts.newest()
    _same(rotated, "keys.rotate")
    assert rotated["api"]["kid"] == answer["current"]
    assert len({e["kid"] for e in rotated.values()}) == 3

    _no_secret_in(fronts)


async def test_user_acts_are_audited_alike_and_no_password_is_kept(fronts: Fronts) -> None:
    """users add / passwd / remove through the admin API and the CLI (the console manages
    no users): the same entries, with the username and never the password."""
    new_password = "another long passphrase"
    fronts.secrets.append(new_password)
    for act, action in (
        ("add", "user.add"),
        ("passwd", "user.password"),
        ("remove", "user.remove"),
    ):
        done = {}
        if act == "add":
            await fronts.api(
                "POST", "/users", {"username": "dave-api", "password": PASSWORD, "scopes": ["r"]}
            )
        elif act == "passwd":
            await fronts.api("POST", "/users/dave-api/password", {"password": new_password})
        else:
            await fronts.api("DELETE", "/users/dave-api")
        done["api"] = fronts.newest()
        extra = ["--scope", "r", "--password-stdin"] if act == "add" else []
        if act == "passwd":
            extra = ["--password-stdin"]
        stdin = (PASSWORD if act == "add" else new_password) + "\n"
        fronts.cli("users", act, "dave-cli", *extra, stdin=stdin)
        done["cli"] = fronts.newest()
        assert done["api"]["username"] == "dave-api"
        assert done["cli"]["username"] == "dave-cli"
        done["api"]["username"] = done["cli"]["username"] = "dave"
        _same(done, action)
    _no_secret_in(fronts)


async def test_the_audit_is_read_newest_first_from_every_front(fronts: Fronts) -> None:
    """GET /admin/audit, ``authgate audit`` and the console's Audit page show the stream."""
    await fronts.api("POST", "/revoke", {"jti": "first-jti"})
    fronts.cli("token", "revoke", "second-jti")
    items = (await fronts.api("GET", "/audit?limit=2"))["items"]
    assert [i["jti"] for i in items] == ["second-jti", "first-jti"]
    assert fronts.cli("audit", "--limit", "1") == items[:1]
    async with fronts.client.get(PREFIX + "/audit") as resp:
        page = await resp.text()
    assert resp.status == 200
    assert page.index("jti=second-jti") < page.index("jti=first-jti")
    assert page.count('data-test="action">token.revoke<') == 2
    bad = {"Authorization": "Bearer not-a-token"}
    async with fronts.client.get(ADMIN + "/audit", headers=bad) as resp:
        assert resp.status == 401


async def _lock_out(fronts: Fronts, *pair_ids: str) -> None:
    """Lock pairs out by their lock-out threshold of wrong secrets."""
    app = fronts.client.app
    pairs = app[SERVICES].pairs
    for pair_id in pair_ids:
        record = await pairs.get(pair_id)
        while not await pairs.record_wrong_secret(record):
            pass
        assert (await pairs.get(pair_id)).status.value == "locked"


def _no_secret_in(fronts: Fronts) -> None:
    """No secret the tests handled is anywhere in the stored stream."""
    stored = "\n".join(fronts.stream())
    assert fronts.secrets
    for secret in fronts.secrets:
        assert secret not in stored
    for name in ("password", "api_key", "access_token", "secret"):
        assert f'"{name}"' not in stored
