"""Malformed traffic over raw sockets against a running authgate: the campaign that
``bench/hostile_traffic.py`` runs in full and ``tests/integration/test_malformed_traffic.py``
runs bounded.

A *case* is a family of hostile exchanges (broken request lines, header floods, slowloris
trickles, malformed chunked bodies, invalid UTF-8 and control bytes, pipelined garbage,
HTTP/1.0 and absolute-form targets, odd methods, client disconnects), built for one
*target*: the sidecar or one forward-auth door (``/auth``, ``/auth/forward``,
``/auth/envoy/...``). Each exchange is bytes sent (in steps, with pauses), then the answer
read with a bound. The outcome of every exchange is counted:

* a status (every status >= 400 must be authgate's JSON problem, ``{"error": {"code"}}``);
* ``closed``: the connection closed without an answer (allowed only where HTTP allows
  nothing else: a client that left, a head never finished, bytes after a refusal);
* ``hang``: neither an answer nor a close within the bound (never allowed).

After every case a healthy request must answer 200 within a generous bound: a hung
worker would not. Everything stays on 127.0.0.1, with bounded counts and durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import web

from tests.support import echo_app

HOST = "127.0.0.1"
# The bound on one answer: far above any honest answer, far below "hung".
ANSWER_SECONDS = 10.0

Expect = Literal["answer", "answer-or-close", "none"]


@dataclass(frozen=True)
class Target:
    """One way into authgate: the request line and headers of a healthy request there."""

    name: str
    path: bytes  # the request target of the healthy request
    headers: tuple[bytes, ...]  # its header lines (no CRLF), Host first

    def request(
        self,
        *,
        method: bytes = b"GET",
        target: bytes | None = None,
        version: bytes = b"HTTP/1.1",
        extra: tuple[bytes, ...] = (),
        body: bytes = b"",
        close: bool = True,
    ) -> bytes:
        """The healthy request with changes; ``extra`` lines go after the door's own."""
        lines = [b"%s %s %s" % (method, self.path if target is None else target, version)]
        lines += self.headers
        lines += extra
        if close:
            lines.append(b"Connection: close")
        if body:
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def head(self, *, method: bytes = b"GET", extra: tuple[bytes, ...] = ()) -> bytes:
        """The healthy request's head without its blank line (to be finished by the caller)."""
        lines = [b"%s %s HTTP/1.1" % (method, self.path), *self.headers, *extra]
        return b"\r\n".join(lines) + b"\r\n"


PUBLIC = b"/public/items"
TARGETS = (
    Target("sidecar", PUBLIC, (b"Host: app.test",)),
    Target(
        "nginx",
        b"/auth",
        (b"Host: authgate", b"X-Original-Method: GET", b"X-Original-URI: " + PUBLIC),
    ),
    Target(
        "traefik",
        b"/auth/forward",
        (
            b"Host: authgate",
            b"X-Forwarded-Method: GET",
            b"X-Forwarded-Uri: " + PUBLIC,
            b"X-Forwarded-Host: app.test",
            b"X-Forwarded-Proto: http",
        ),
    ),
    Target("envoy", b"/auth/envoy" + PUBLIC, (b"Host: app.test",)),
)


@dataclass(frozen=True)
class Exchange:
    """Bytes sent in ``steps`` (each followed by its pause), then the answer read."""

    steps: tuple[tuple[bytes, float], ...]
    expect: Expect = "answer"
    read_bound: float = ANSWER_SECONDS
    reset: bool = False  # leave with a TCP RST (SO_LINGER 0) instead of reading
    responses: int = 1  # answers to read (pipelined requests)

    @classmethod
    def of(
        cls,
        data: bytes,
        expect: Expect = "answer",
        *,
        read_bound: float = ANSWER_SECONDS,
        responses: int = 1,
    ) -> Exchange:
        """One write."""
        return cls(((data, 0.0),), expect, read_bound=read_bound, responses=responses)


@dataclass
class Outcome:
    """What one case did, over every exchange."""

    case: str
    target: str
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    hangs: int = 0
    healthy_after: bool = False
    seconds: float = 0.0

    @property
    def fivexx(self) -> int:
        """Answers with a 5xx status."""
        return sum(n for s, n in self.statuses.items() if s.isdigit() and int(s) >= 500)

    @property
    def ok(self) -> bool:
        """Every invariant held."""
        return not self.violations and not self.hangs and not self.fivexx and self.healthy_after


@dataclass(frozen=True)
class Scale:
    """How hard to push: repetitions per variant and concurrent slow connections."""

    repeat: int = 1
    slow_connections: int = 20
    trickle_seconds: float = 0.02  # between the bytes of a trickled head
    header_deadline: float = 2.0  # the server's server.header_read_timeout_seconds
    concurrency: int = 32


# --- the cases -----------------------------------------------------------------------


def broken_request_lines(t: Target, s: Scale) -> list[Exchange]:
    """Request lines that are not HTTP, or nearly."""
    rest = b"\r\n".join(t.headers) + b"\r\nConnection: close\r\n\r\n"
    lines = [
        b"GARBAGE",
        b"GET",
        b"GET " + t.path,
        b"GET " + t.path + b" HTTP/9.9",
        b"GET " + t.path + b" HTTP/1.1 extra",
        b"GET " + t.path + b" HTTP/1.",
        b"GET " + t.path + b" FTP/1.1",
        b"GET  " + t.path + b"  HTTP/1.1",
        b"GET\t" + t.path + b"\tHTTP/1.1",
        b"G\x00ET " + t.path + b" HTTP/1.1",
        b" GET " + t.path + b" HTTP/1.1",
        b"GET " + t.path + b"#frag HTTP/1.1",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1",
        b"GET " + t.path + b"?" + b"q=" * 40_000 + b" HTTP/1.1",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
        b"",
    ]
    out = [Exchange.of(line + b"\r\n" + rest) for line in lines]
    out.append(Exchange.of(b"\r\n" * 200, "answer-or-close"))
    out.append(Exchange.of(t.request().replace(b"\r\n", b"\n")))  # bare LF line ends
    out.append(Exchange.of(t.request().replace(b"\r\n", b"\r")))  # bare CR line ends
    return out * s.repeat


def header_floods(t: Target, s: Scale) -> list[Exchange]:
    """Many headers, huge headers, many repeated headers."""
    variants: list[tuple[bytes, ...]] = [
        tuple(b"X-Flood-%d: v" % i for i in range(100)),
        tuple(b"X-Flood-%d: v" % i for i in range(500)),
        tuple(b"X-Flood-%d: v" % i for i in range(5000)),
        (b"X-Huge: " + b"a" * 16_000,),
        (b"X-Huge: " + b"a" * 70_000,),
        (b"X-" + b"N" * 20_000 + b": v",),
        tuple(b"X-Big-%d: " % i + b"b" * 8000 for i in range(100)),
        (b"Authorization: Bearer " + b"A" * 60_000,),
        tuple(b"X-Original-URI: /public/%d" % i for i in range(100)),
        tuple(b"X-Forwarded-For: 10.0.0.%d" % (i % 250) for i in range(100)),
        tuple(b"Authorization: Bearer x%d" % i for i in range(100)),
        tuple(b"Host: h%d.test" % i for i in range(50)),
        tuple(b"Cookie: c%d=%d" % (i, i) for i in range(120)),
        tuple(b"Content-Length: 0" for _ in range(20)),
        (b"X-Continued: a", b" folded continuation", b"\tand another"),
    ]
    return [Exchange.of(t.request(extra=v)) for v in variants] * s.repeat


def slowloris(t: Target, s: Scale) -> list[Exchange]:
    """Heads sent a byte at a time; heads never finished; many at once."""
    full = t.request()
    # A byte at a time, finishing well inside the deadline: an answer is due.
    pause = min(s.trickle_seconds, s.header_deadline * 0.4 / len(full))
    trickled = Exchange(tuple((full[i : i + 1], pause) for i in range(len(full))))
    # A head never finished: authgate must close it by its header deadline (a 408, or a close
    # when nothing at all was sent), so the read bound is the deadline plus a margin.
    bound = s.header_deadline + 8.0
    unfinished = Exchange(((t.head(), 0.0),), "answer-or-close", read_bound=bound)
    # A header line every 0.2 s, for longer than the deadline: each byte is progress, but the
    # head is never done in time.
    lines = int(s.header_deadline / 0.2) + 10
    dribble = Exchange(
        ((t.head(), 0.0), *((b"X-Slow-%d: v\r\n" % i, 0.2) for i in range(lines))),
        "answer-or-close",
        read_bound=bound,
    )
    silent = Exchange(((b"", 0.0),), "answer-or-close", read_bound=bound)
    one_byte = Exchange(((b"G", 0.0),), "answer-or-close", read_bound=bound)
    many = [unfinished, one_byte, silent] * (s.slow_connections // 3 + 1)
    return [trickled, dribble, *many[: s.slow_connections]]


def chunked_bodies(t: Target, s: Scale) -> list[Exchange]:
    """Bad chunk sizes, size overflow, missing terminators, a chunk over the body limit."""
    te = (b"Transfer-Encoding: chunked",)
    head = t.request(method=b"POST", extra=te)[:-2]  # up to the blank line's CRLF
    head += b"\r\n"
    bodies = [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"-1\r\nhello\r\n0\r\n\r\n",
        b"FFFFFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5;" + b"e" * 20_000 + b"\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"5\nhello\n0\n\n",
        b"5\r\nhello\r\n0\r\n" + b"X-Trailer: " + b"t" * 20_000 + b"\r\n\r\n",
        b"\r\n\r\n",
    ]
    out = [Exchange.of(head + b, "answer-or-close") for b in bodies]
    # Missing terminators: the body never ends; the client gives up after a while.
    out.append(Exchange(((head + b"5\r\nhello\r\n", 1.0),), "none"))
    # A chunk bigger than any body limit, declared and partly sent, then the client leaves.
    big = head + b"%x\r\n" % (64 * 1024 * 1024) + b"x" * (2 * 1024 * 1024)
    out.append(Exchange(((big, 0.5),), "none", reset=True))
    # A complete chunked body of 2 MiB (over the 1 MiB own-endpoint and BPC body limits).
    whole = b"".join(b"%x\r\n" % 65536 + b"y" * 65536 + b"\r\n" for _ in range(32))
    out.append(Exchange.of(head + whole + b"0\r\n\r\n", "answer-or-close"))
    # Framing that HTTP forbids.
    for extra in [
        (b"Transfer-Encoding: chunked", b"Content-Length: 5"),
        (b"Transfer-Encoding: gzip, chunked",),
        (b"Transfer-Encoding: chunked, identity",),
        (b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
        (b"Transfer-Encoding: xchunked",),
        (b"Content-Length: -1",),
        (b"Content-Length: 1e3",),
        (b"Content-Length: 99999999999999999999999999",),
        (b"Content-Length: 5", b"Content-Length: 6"),
    ]:
        out.append(
            Exchange.of(
                t.request(method=b"POST", extra=extra)[:-2] + b"\r\n5\r\nhello\r\n0\r\n\r\n"
            )
        )
    return out * s.repeat


def invalid_bytes(t: Target, s: Scale) -> list[Exchange]:
    """Invalid UTF-8 and control bytes in the target, header names, header values, bodies."""
    bad = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\x01", b"\x1b[31m", b"\x7f", b"\r"]
    out: list[Exchange] = []
    for b in bad:
        out.append(Exchange.of(t.request(target=t.path + b"/" + b)))
        out.append(Exchange.of(t.request(extra=(b"X-N" + b + b"ame: v",))))
        out.append(Exchange.of(t.request(extra=(b"X-Value: a" + b + b"z",))))
        out.append(Exchange.of(t.request(extra=(b"Authorization: Bearer " + b + b"tok",))))
        out.append(Exchange.of(t.request(method=b"POST", body=b"{" + b * 50 + b"}")))
    # The values the doors read, with non-ASCII bytes.
    out += [
        Exchange.of(t.request(extra=(b"X-Original-URI: /p\xc3\xa9",))),
        Exchange.of(t.request(extra=(b"X-Forwarded-Host: h\xff.test",))),
        Exchange.of(t.request(extra=(b"X-Forwarded-For: \xff\xfe",))),
        Exchange.of(t.request(extra=(b"X-Request-Id: \xff\xfe\x01",))),
        Exchange.of(t.request(extra=(b"Content-Type: application/json; charset=\xff",))),
        Exchange.of(t.request(extra=(b"X-BPC-Version: \xff",))),
    ]
    return out * s.repeat


def pipelined_garbage(t: Target, s: Scale) -> list[Exchange]:
    """A valid request, then garbage on the same connection."""
    ok = t.request(close=False)
    tails = [
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"\xff" * 5000,
        t.request(target=t.path + b"/\x01"),
    ]
    out = [Exchange.of(ok + tail, "answer", responses=2) for tail in tails]
    # Then a request whose body stops short: its reader stalls until the body pause bound.
    short = t.head(method=b"POST", extra=(b"Content-Length: 100000",)) + b"\r\nshort"
    out.append(Exchange.of(ok + short, "answer", responses=2, read_bound=s.header_deadline + 8.0))
    out.append(Exchange.of(ok * 20 + t.request(), "answer", responses=21))
    return out * s.repeat


def old_and_absolute(t: Target, s: Scale) -> list[Exchange]:
    """HTTP/1.0, HTTP/0.9, absolute-form, authority-form and asterisk targets."""
    variants = [
        t.request(version=b"HTTP/1.0", close=False),
        b"GET " + t.path + b" HTTP/1.0\r\n\r\n",
        b"GET " + t.path + b"\r\n",
        t.request(target=b"http://app.test" + t.path),
        t.request(target=b"http://evil.test" + t.path),
        t.request(target=b"https://user:pw@evil.test:8443" + t.path + b"?x=1"),
        t.request(target=b"http://app.test/admin/../" + t.path.lstrip(b"/")),
        t.request(target=b"app.test:80"),
        t.request(target=b"*"),
        t.request(method=b"OPTIONS", target=b"*"),
        t.request(target=b"//evil.test" + t.path),
    ]
    return [Exchange.of(v, "answer-or-close") for v in variants] * s.repeat


def odd_methods(t: Target, s: Scale) -> list[Exchange]:
    """CONNECT and methods no one uses."""
    out = [
        Exchange.of(t.request(method=b"CONNECT", target=b"app.test:443")),
        Exchange.of(t.request(method=b"CONNECT", target=t.path)),
        Exchange.of(t.request(method=b"CONNECT", target=b"127.0.0.1:6379")),
        Exchange.of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "answer-or-close"),
    ]
    for method in [
        b"TRACE",
        b"TRACK",
        b"FOO",
        b"M-SEARCH",
        b"get",
        b"PROPFIND",
        b"X" * 5000,
        b"GET\x7f",
        b"G(T",
        b"QUERY",
    ]:
        out.append(Exchange.of(t.request(method=method)))
    return out * s.repeat


def disconnects(t: Target, s: Scale) -> list[Exchange]:
    """Clients that leave mid-request: in the head, in the body, before reading the answer."""
    body_head = t.request(method=b"POST", close=True)[:-4] + b"\r\nContent-Length: 100000\r\n\r\n"
    out = [
        Exchange(((t.head(), 0.05),), "none"),
        Exchange(((t.head(), 0.05),), "none", reset=True),
        Exchange(((body_head + b"x" * 1000, 0.05),), "none"),
        Exchange(((body_head + b"x" * 1000, 0.05),), "none", reset=True),
        Exchange(((t.request(), 0.0),), "none", reset=True),
        Exchange(((t.request(close=False) * 50, 0.0),), "none", reset=True),
    ]
    return out * (3 * s.repeat)


CASES: dict[str, Callable[[Target, Scale], list[Exchange]]] = {
    "broken-request-line": broken_request_lines,
    "header-flood": header_floods,
    "slowloris": slowloris,
    "chunked-body": chunked_bodies,
    "invalid-bytes": invalid_bytes,
    "pipelined-garbage": pipelined_garbage,
    "http10-absolute-form": old_and_absolute,
    "odd-methods": odd_methods,
    "client-disconnect": disconnects,
}


# --- running them ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One parsed HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes


def _parse_answers(raw: bytes) -> tuple[list[Answer], bytes]:
    """Complete answers (Content-Length framed, or to the close) and what is left over."""
    answers: list[Answer] = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            answers.append(Answer(-1, {}, raw))  # not HTTP at all: counted as a violation
            return answers, b""
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        if length is None:
            answers.append(Answer(int(parts[1]), headers, rest))
            return answers, b""
        if len(rest) < int(length):
            break
        answers.append(Answer(int(parts[1]), headers, rest[: int(length)]))
        raw = rest[int(length) :]
    return answers, raw


def problem_violation(answer: Answer) -> str | None:
    """Why an answer breaks the rules, or None: no 5xx; a refusal is a JSON problem."""
    if answer.status < 0:
        return "an answer that is not HTTP"
    if answer.status >= 500:
        return f"a {answer.status} answer"
    if answer.status < 400:
        return None
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return f"a {answer.status} that is not JSON: {answer.body[:80]!r}"
    try:
        code = json.loads(answer.body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"a {answer.status} that is not authgate's problem: {answer.body[:80]!r}"
    if not isinstance(code, str) or not code:
        return f"a {answer.status} without an error code"
    return None


async def _exchange(port: int, ex: Exchange) -> tuple[list[str], list[str], bool]:
    """Run one exchange: (outcomes, violations, hung)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
    except (OSError, TimeoutError):
        return ["connect-failed"], ["could not connect"], False
    outcomes: list[str] = []
    violations: list[str] = []
    hung = False
    try:
        for data, pause in ex.steps:
            if data:
                writer.write(data)
                await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        if ex.expect == "none":
            outcomes.append("left")
            if ex.reset:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return outcomes, violations, hung
        raw = b""
        deadline = time.monotonic() + ex.read_bound
        answers: list[Answer] = []
        while len(answers) < ex.responses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                hung = True
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), remaining)
            except TimeoutError:
                hung = True
                break
            if not chunk:
                break
            raw += chunk
            answers, _ = _parse_answers(raw)
        for answer in answers[: ex.responses]:
            outcomes.append(str(answer.status))
            problem = problem_violation(answer)
            if problem:
                violations.append(problem)
        if hung:
            outcomes.append("hang")
        elif not answers:
            outcomes.append("closed")
            if ex.expect == "answer":
                violations.append("closed without an answer")
    except (ConnectionError, OSError):
        outcomes.append("reset")
        if ex.expect == "answer":
            violations.append("connection reset without an answer")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return outcomes, violations, hung


async def healthy(port: int, target: Target, *, bound: float = ANSWER_SECONDS) -> bool:
    """Whether the target's healthy request answers 200 within ``bound``."""
    outcomes, _, _ = await _exchange(port, Exchange.of(target.request(), read_bound=bound))
    return outcomes == ["200"]


async def run_case(
    port: int, case: str, target: Target, scale: Scale, *, shuffle_seed: int = 0
) -> Outcome:
    """Every exchange of ``case`` at ``target``, ``scale.concurrency`` at a time (slow
    connections all at once), then the healthy request."""
    exchanges = CASES[case](target, scale)
    outcome = Outcome(case, target.name)
    started = time.monotonic()
    limit = len(exchanges) if case == "slowloris" else scale.concurrency
    gate = asyncio.Semaphore(limit)

    async def one(ex: Exchange) -> None:
        async with gate:
            outcomes, violations, hung = await _exchange(port, ex)
        outcome.statuses.update(outcomes)
        outcome.violations.extend(violations)
        outcome.hangs += hung
        outcome.sent += ex.responses

    await asyncio.gather(*(one(ex) for ex in exchanges))
    outcome.healthy_after = await healthy(port, target)
    outcome.seconds = time.monotonic() - started
    return outcome


# --- the upstream and the server process's resources ---------------------------------------------------


class EchoUpstream:
    """``echo_app`` on its own event loop in a thread, taking header lines up to 64 KiB (so
    every refusal of a long header is authgate's, never the upstream's)."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # client resets
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(echo_app(max_field_size=65536), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> EchoUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("upstream did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def rss_bytes(pid: int) -> int:
    """Resident set size from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def client_connections(pid: int, port: int) -> int:
    """TCP connections ``pid`` holds on its listening ``port`` (clients, not the listener and
    not its upstream pool), from ``/proc/<pid>/fd`` and ``/proc/<pid>/net/tcp``."""
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{name}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    count = 0
    for table_name in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table_name}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            listening = fields[3] == "0A"
            if local_port == port and not listening and fields[9] in inodes:
                count += 1
    return count


def settle_connections(pid: int, port: int, *, timeout: float) -> int:
    """Poll until ``pid`` holds no client connection, or ``timeout``; the last count."""
    deadline = time.monotonic() + timeout
    count = client_connections(pid, port)
    while count and time.monotonic() < deadline:
        time.sleep(0.1)
        count = client_connections(pid, port)
    return count


def config(upstream_port: int, *, header_deadline: float | None) -> dict[str, object]:
    """The authgate config of a campaign: the sidecar in front of ``upstream_port``, the
    doors trusting loopback, memory stores, a public route and an authenticated one."""
    return {
        "jwt": {"issuer": "https://authgate.test", "audiences": ["authgate-tests"]},
        "stores": {"backend": "memory"},
        "server": {}
        if header_deadline is None
        else {
            "header_read_timeout_seconds": header_deadline,
            "body_read_timeout_seconds": header_deadline,
            # Idle keep-alive connections are closed soon after the campaign.
            "keepalive_timeout_seconds": header_deadline * 2,
        },
        "proxy": {"upstream": f"http://127.0.0.1:{upstream_port}"},
        "policy": {
            "rules": [
                {"id": "public", "path_prefix": "/public", "anonymous": True},
                {"id": "authenticated", "path_prefix": "/"},
            ]
        },
        "tokens": {"admin_prefix": "/_authgate/admin"},
        "logging": {"level": "WARNING"},
    }


def table(outcomes: list[Outcome]) -> Iterator[str]:
    """Markdown rows: case, target, requests, statuses, 5xx, hangs, healthy after."""
    yield "| case | target | requests | outcomes | 5xx | hangs | violations | healthy after |"
    yield "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |"
    for o in outcomes:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(o.statuses.items()))
        yield (
            f"| {o.case} | {o.target} | {o.sent} | {statuses} | {o.fivexx} | {o.hangs} | "
            f"{len(o.violations)} | {'200' if o.healthy_after else 'NO'} |"
        )
