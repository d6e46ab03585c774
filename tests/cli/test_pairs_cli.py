"""authgate pairs: operator commands on the shared Redis store."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from authgate.client import BPCSigner

KEK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Iterator[Path]:
    prefix = f"authgate-cli:{uuid.uuid4().hex}:"
    path = tmp_path / "authgate.yaml"
    path.write_text(
        f"stores: {{backend: redis, redis: {{url: '{redis_url}', key_prefix: '{prefix}'}}}}\n"
        f"secrets: {{key_encryption_key: '{KEK}'}}\n"
    )
    path.chmod(0o600)
    yield path
    client = Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authgate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def bpc_server_record(pair_id: str, status: str = "active") -> dict[str, object]:
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


@pytest.mark.redis
def test_import_reports_device_key_only_and_lifecycle_commands_work(config: Path) -> None:
    """Imported bpc-server pairs are marked device-key-only; list, show, revoke act on them."""
    imported = cli(
        "pairs",
        "--config",
        str(config),
        "import",
        "-",
        stdin=json.dumps([bpc_server_record("pair_legacy1")]),
    )
    assert imported.returncode == 0, imported.stderr
    out = json.loads(imported.stdout)
    assert out["imported"][0]["device_key_only"] is True
    assert "device-key-only" in out["note"]
    listed = json.loads(cli("pairs", "--config", str(config), "list").stdout)
    assert [p["pair_id"] for p in listed] == ["pair_legacy1"]
    assert "secret_hash" not in listed[0]
    revoked = json.loads(cli("pairs", "--config", str(config), "revoke", "pair_legacy1").stdout)
    assert revoked["status"] == "revoked"
    shown = json.loads(cli("pairs", "--config", str(config), "show", "pair_legacy1").stdout)
    assert [e["event"] for e in shown["audit"]] == ["revoked", "imported"]
    assert shown["audit"][0]["operator"] == "cli"  # the act names who made it


@pytest.mark.redis
def test_errors_name_the_problem(config: Path) -> None:
    """Unknown pairs and malformed imports are reported, with non-zero exits."""
    missing = cli("pairs", "--config", str(config), "show", "pair_nope")
    assert missing.returncode == 1
    assert "not found" in missing.stderr
    bad = cli(
        "pairs",
        "--config",
        str(config),
        "import",
        "-",
        stdin=json.dumps({"pair_id": "x", "scope": "root"}),
    )
    assert bad.returncode == 2
    assert "scope" in bad.stderr


def test_memory_backend_is_refused(tmp_path: Path) -> None:
    """With in-memory stores there is nothing for an outside process to manage."""
    result = cli("pairs", "list")
    assert result.returncode == 2
    assert "stores.backend: redis" in result.stderr
