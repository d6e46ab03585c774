"""Memory over a run (the issue's item 3): an RSS sampler and a streamed-upload client.

``bench/run.py`` drives the two runs; this module only samples and uploads:

* :class:`RssSampler`: a thread reading ``VmRSS`` of a process from ``/proc`` at a fixed
  interval for the length of a ``with`` block.
* :func:`stream_upload`: one ``POST`` with a chunked body of ``total`` bytes over a raw socket
  (the same 64 KiB chunk again and again, so the client holds nothing), and the response.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.targets import parse_vmrss


def rss_bytes(pid: int) -> int:
    """The process's resident set size now."""
    return parse_vmrss(Path(f"/proc/{pid}/status").read_text())


class RssSampler:
    """``(monotonic seconds, rss bytes)`` of ``pid`` every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            if self._stop.wait(self.interval):
                break
        with contextlib.suppress(OSError, ValueError):
            self.samples.append((time.monotonic(), rss_bytes(self.pid)))

    @contextlib.contextmanager
    def running(self) -> Iterator[RssSampler]:
        thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(10)


def stream_upload(
    port: int,
    path: str,
    headers: Sequence[str],
    total: int,
    *,
    chunk_size: int = 65536,
    timeout: float = 120.0,
) -> tuple[int, bytes, float]:
    """POST ``total`` bytes chunked to ``path``; returns (status, body, seconds)."""
    chunk = b"u" * chunk_size
    framed = b"%x\r\n" % chunk_size + chunk + b"\r\n"
    head = "\r\n".join(
        [
            f"POST {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Transfer-Encoding: chunked",
            "Content-Type: application/octet-stream",
            "Connection: close",
            *headers,
        ]
    )
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n")
        full, rest = divmod(total, chunk_size)
        for _ in range(full):
            sock.sendall(framed)
        if rest:
            sock.sendall(b"%x\r\n" % rest + chunk[:rest] + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        response = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    seconds = time.perf_counter() - started
    head_bytes, _, body = response.partition(b"\r\n\r\n")
    status = int(head_bytes[9:12]) if len(head_bytes) >= 12 else 0
    if b"transfer-encoding: chunked" in head_bytes.lower():
        body = _dechunk(body)
    return status, body, seconds


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out
