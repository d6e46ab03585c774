"""``authgate serve`` and ``check-config`` as processes: a config, file or port problem is
reported on stderr in plain words naming the key, without a traceback, exit code 2; and
``listening`` is logged only once the socket is bound."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.crypto.keys import SigningKey

REPO = Path(__file__).resolve().parents[2]
JARGON = ("Traceback", "Input should be", "type=", "For further information visit")


def authgate(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m authgate ARGS`` from this checkout, to completion (bounded)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
    base["PYTHONPATH"] = str(REPO / "src")
    return subprocess.run(
        [sys.executable, "-m", "authgate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )


def config(tmp_path: Path, tree: dict[str, Any]) -> Path:
    path = tmp_path / "authgate.yaml"
    path.write_text(yaml.safe_dump(tree))
    path.chmod(0o600)
    return path


def key_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "signing.pem"
    path.write_bytes(SigningKey.generate().to_pem())
    path.chmod(mode)
    return path


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another socket listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_one_plain_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert not any(j in result.stderr for j in JARGON), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "listening" not in result.stdout + result.stderr


def test_serve_with_a_missing_key_file_says_so_in_one_line(tmp_path: Path) -> None:
    """The new user's case: no `listening`, no 58-line traceback."""
    missing = tmp_path / "nope.pem"
    path = config(tmp_path, {"jwt": {"signing_key_files": [str(missing)]}})
    result = authgate("serve", "--config", str(path), "--port", str(free_port()))
    assert_one_plain_line(result, "jwt.signing_key_files[0]", str(missing), "file not found")


def test_check_config_fails_the_same_way(tmp_path: Path) -> None:
    """check-config no longer passes what serve would die on."""
    missing = tmp_path / "nope.pem"
    result = authgate(
        "check-config", str(config(tmp_path, {"jwt": {"signing_key_files": [str(missing)]}}))
    )
    assert_one_plain_line(result, "jwt.signing_key_files[0]", "file not found")
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_key_file_mode_and_another_problem_come_together(tmp_path: Path, command: str) -> None:
    """Both problems, each under its key, at once."""
    tree = {
        "jwt": {"signing_key_files": [str(key_file(tmp_path, mode=0o644))]},
        "policy": {"rules": [{"id": "api", "path_prefix": "/api", "methods": ["GETT"]}]},
    }
    path = config(tmp_path, tree)
    args = [str(path)] if command == "check-config" else ["--config", str(path)]
    result = authgate(command, *args)
    assert result.returncode == 2
    assert not any(j in result.stderr for j in JARGON), result.stderr
    assert "jwt.signing_key_files[0]" in result.stderr and "0644" in result.stderr
    assert "policy.rules[0].methods[0]: unknown HTTP method 'GETT'" in result.stderr


def test_serve_on_a_port_in_use_says_so_in_one_line(taken_port: int) -> None:
    """EADDRINUSE: one line naming server.port, exit code 2, nothing started."""
    result = authgate("serve", "--port", str(taken_port))
    assert_one_plain_line(result, "server.port", f"127.0.0.1:{taken_port}", "already in use")


def test_check_config_accepts_a_lower_case_log_level(tmp_path: Path) -> None:
    """logging.level: debug is accepted and printed upper-case."""
    result = authgate("check-config", str(config(tmp_path, {"logging": {"level": "debug"}})))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["logging"]["level"] == "DEBUG"


def test_listening_is_logged_once_the_socket_is_bound(tmp_path: Path) -> None:
    """When `listening` appears, a connection to the port is accepted at once."""
    port = free_port()
    path = config(
        tmp_path,
        {
            "jwt": {"signing_key_files": [str(key_file(tmp_path))]},
            "server": {"port": port, "shutdown_delay_seconds": 0, "drain_timeout_seconds": 1},
        },
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
    with subprocess.Popen(
        [sys.executable, "-m", "authgate", "serve", "--config", str(path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**base, "PYTHONPATH": str(REPO / "src")},
    ) as proc:
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                record = json.loads(line)
                if record.get("event") == "listening":
                    where = (record["host"], record["port"], record["backend"])
                    assert where == ("127.0.0.1", port, "memory")
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                    break
            else:
                pytest.fail(f"no listening line; exit code {proc.wait(timeout=10)}")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
