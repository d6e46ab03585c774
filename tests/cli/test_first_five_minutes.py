"""The first five minutes on the embedded default, as a newcomer runs them: ``authgate
serve`` with no configuration prints an operator token and commands; every operator command
then works through the admin API (``AUTHGATE_URL`` / ``AUTHGATE_TOKEN``) on in-memory stores,
and the published BPC client registers and signs against it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, raw_request

BPC = Path(sys.executable).with_name("bpc")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Newcomer:
    """A shell: the environment a newcomer's commands run in, and the server's URL."""

    url: str
    env: dict[str, str]
    home: Path

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, input=stdin, capture_output=True, text=True, env=self.env, timeout=60,
            check=False, cwd=self.home,
        )  # fmt: skip

    def authgate(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "authgate", *args, stdin=stdin)

    def ok(self, *args: str, stdin: str = "") -> Any:
        done = self.authgate(*args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def auth(self, token: str, uri: str = "/api/items") -> int:
        port = int(self.url.rsplit(":", 1)[1])
        request = (
            f"GET /auth HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            f"Authorization: Bearer {token}\r\nX-Original-Method: GET\r\n"
            f"X-Original-URI: {uri}\r\n\r\n"
        ).encode()
        status, _, _ = raw_request(port, request)
        return status


def clean_env(home: Path) -> dict[str, str]:
    """No AUTHGATE_* variable: the zero-config embedded default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newcomer]:
    home = tmp_path_factory.mktemp("newcomer")
    port = free_port()
    env = clean_env(home)
    err = (home / "serve.err").open("wb")
    # The port through development: true's neighbour setting; a flag or any other
    # AUTHGATE_* variable is a configuration and leaves development mode (the Docker image
    # passes --host 0.0.0.0: it must never print an operator token to container logs).
    env["AUTHGATE_DEVELOPMENT"] = "true"
    env["AUTHGATE_SERVER__PORT"] = str(port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "authgate", "serve"],
        stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=home,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            text = (home / "serve.err").read_text(errors="replace")
            if "export AUTHGATE_TOKEN=" in text:
                break
            assert proc.poll() is None, text
            time.sleep(0.1)
        token = re.search(r"export AUTHGATE_TOKEN=(\S+)", text)
        url = re.search(r"export AUTHGATE_URL=(\S+)", text)
        assert token and url, text
        assert url.group(1) == f"http://127.0.0.1:{port}"
        yield Newcomer(
            url.group(1),
            {**env, "AUTHGATE_URL": url.group(1), "AUTHGATE_TOKEN": token.group(1)},
            home,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        err.close()


def test_the_welcome_is_printed_once_and_never_logged(newcomer: Newcomer) -> None:
    text = (newcomer.home / "serve.err").read_text()
    assert text.count("export AUTHGATE_TOKEN=") == 1
    token = re.search(r"export AUTHGATE_TOKEN=(\S+)", text)
    assert token is not None
    log_lines = [line for line in text.splitlines() if line.startswith("{")]
    assert log_lines, "the JSON log is there"
    assert not any(token.group(1) in line for line in log_lines)


def test_the_welcome_says_where_the_bpc_command_comes_from(newcomer: Newcomer) -> None:
    """A plain ``pip install -e .`` has no ``bpc`` command: the welcome names the published
    client's install, at the version the suite tests (pyproject's test extra)."""
    text = (newcomer.home / "serve.err").read_text()
    pinned = re.search(r'"(bpc-client==[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned is not None
    install = text.index(f"pip install {pinned.group(1)}\n")
    assert install < text.index("bpc pair register")


def test_mint_then_auth(newcomer: Newcomer) -> None:
    issued = newcomer.ok("token", "mint", "--sub", "alice", "--scope", "read", "--ttl", "3600")
    assert newcomer.auth(issued["access_token"]) == 200
    assert newcomer.auth("not-a-token") == 401


def test_revoke_by_token_refuses_it_until_it_expires(newcomer: Newcomer) -> None:
    issued = newcomer.ok("token", "mint", "--sub", "bob", "--ttl", "600")
    revoked = newcomer.ok("token", "revoke", "--token", issued["access_token"])
    assert revoked["revoked"] == issued["jti"]
    # The revocation lasts until the token would have expired, not a year.
    assert revoked["until_ms"] <= (time.time() + 600 + 120) * 1000
    assert newcomer.auth(issued["access_token"]) == 401


def test_users_apikeys_and_keys_through_the_admin_api(newcomer: Newcomer) -> None:
    added = newcomer.ok("users", "add", "carol", "--password-stdin", stdin="a long passphrase\n")
    assert added["username"] == "carol"
    assert [u["username"] for u in newcomer.ok("users", "list")] == ["carol"]
    created = newcomer.ok("apikeys", "create", "--name", "ci", "--scope", "read")
    assert created["api_key"].startswith("agk_")
    assert created["key_id"] in {k["key_id"] for k in newcomer.ok("apikeys", "list")}
    assert newcomer.ok("apikeys", "revoke", created["key_id"])["key_id"] == created["key_id"]
    keys = newcomer.ok("keys", "list")
    assert keys["managed"] is False and keys["source"] == "ephemeral" and len(keys["keys"]) == 1
    missing = newcomer.authgate("users", "remove", "nobody")
    assert missing.returncode == 1
    assert "not_found" in missing.stderr


def test_a_bpc_pair_registered_by_the_published_client_is_managed_by_the_cli(
    newcomer: Newcomer,
) -> None:
    register = newcomer.run(
        str(BPC), "pair", "register", "--url", newcomer.url, "--name", "laptop",
        "--secret", "Dev-secret-1!", "--mode", "development",
    )  # fmt: skip
    assert register.returncode == 0, register.stdout + register.stderr
    signed = newcomer.run(str(BPC), "request", "--name", "laptop", "GET", "/bpc/audit?limit=5")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    (pair,) = [p for p in newcomer.ok("pairs", "list") if p["name"] == "laptop"]
    assert pair["status"] == "active"
    shown = newcomer.ok("pairs", "show", pair["pair_id"], "--audit", "5")
    assert any(e.get("path") == "/bpc/audit?limit=5" for e in shown["audit"])
    assert newcomer.ok("pairs", "revoke", pair["pair_id"])["status"] == "revoked"
    refused = newcomer.run(str(BPC), "request", "--name", "laptop", "GET", "/bpc/audit?limit=5")
    assert refused.returncode != 0
    assert "revoked" in refused.stdout + refused.stderr


def test_without_url_the_memory_backend_points_at_the_admin_api(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "authgate", "token", "mint", "--sub", "x"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--url" in done.stderr and "AUTHGATE_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_wrong_token_is_refused_by_the_admin_api(newcomer: Newcomer) -> None:
    env = {**newcomer.env, "AUTHGATE_TOKEN": "wrong"}
    done = subprocess.run(
        [sys.executable, "-m", "authgate", "users", "list"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("token_malformed:")


def test_any_configuration_leaves_development_mode_and_prints_no_token(tmp_path: Path) -> None:
    """The Docker image runs ``serve --host 0.0.0.0``: a flag is a configuration, so no
    operator token reaches the container's logs."""
    port = free_port()
    env = clean_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "authgate", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                status, _, _ = raw_request(
                    port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                )
            except OSError:
                time.sleep(0.1)
                continue
            if status == 200:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    text = out.decode(errors="replace")
    assert '"event":"listening"' in text.replace(" ", "")
    assert "AUTHGATE_TOKEN" not in text
    assert "ephemeral_signing_key" in text  # the warning instead
