"""``web/drain.py``'s bind: a listening address that cannot be bound is one plain problem
naming its key, checked before start-up and again where the site binds."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator

import pytest

from authgate.errors import ConfigError
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.drain import check_listen_address, listen_problem, serve
from tests.support import make_settings


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another socket listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_is_found_before_start_up(taken_port: int) -> None:
    """The pre-start check names server.port in one line."""
    with pytest.raises(ConfigError) as info:
        check_listen_address("127.0.0.1", taken_port, reuse_port=False)
    ((key, message),) = info.value.problems
    assert key == "server.port"
    assert f"127.0.0.1:{taken_port} is already in use" in message
    assert "\n" not in str(info.value)


def test_a_free_port_passes_and_stays_free() -> None:
    """The check binds and lets go: the port can be bound again at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check_listen_address("127.0.0.1", port, reuse_port=False)
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("code", "key", "fragment"),
    [
        (errno.EACCES, "server.port", "no permission"),
        (errno.EADDRNOTAVAIL, "server.host", "not an address of this machine"),
    ],
    ids=["eacces", "eaddrnotavail"],
)
def test_other_bind_errors_name_their_key(code: int, key: str, fragment: str) -> None:
    """Privileged ports and foreign addresses are said in words, with the key to change."""
    ((found_key, message),) = listen_problem(OSError(code, "x"), "10.9.8.7", 80).problems
    assert found_key == key
    assert fragment in message


async def test_serve_reports_a_port_taken_after_the_check_without_listening(
    taken_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The site's own bind raises the same one-line problem; `listening` is never logged."""
    app = create_app(make_settings(), stores=MemoryStores())
    with caplog.at_level(logging.INFO, logger="authgate"), pytest.raises(ConfigError) as info:
        await serve(
            app,
            host="127.0.0.1",
            port=taken_port,
            reuse_port=False,
            shutdown_delay_seconds=0,
            drain_timeout_seconds=1,
        )
    assert info.value.problems[0][0] == "server.port"
    assert "listening" not in [r.getMessage() for r in caplog.records]
