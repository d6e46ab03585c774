"""Graceful shutdown of one ``serve`` process: nothing is lost in a rolling restart.

On the first SIGTERM (or SIGINT):

1. **Delay** (``server.shutdown_delay_seconds``): ``/readyz`` answers 503 ``draining`` at
   once, while the listener stays open and every request is still served, so the load
   balancer (a Kubernetes Service's endpoints, an ingress controller) takes the pod out
   before it stops accepting. Every response now carries ``Connection: close``, so
   keep-alive clients reconnect, to another replica.
2. **Drain** (``server.drain_timeout_seconds``): the listener closes, idle keep-alive
   connections are closed, in-flight requests may finish. At the drain deadline each
   proxied exchange still running is cut: the upstream call is cancelled and the client
   gets 504 ``upstream_timeout`` (or, once the response has started, a truncated one).
3. **Exit** within the drain timeout plus 1 s, whatever the upstream does: a watchdog
   thread ends the process if clean-up overruns (exit status 1, logged).

A second SIGTERM or SIGINT ends the process at once. With ``server.workers`` > 1 the
parent forwards each signal to every worker, and each worker runs this sequence on its
own; they share the port (SO_REUSEPORT), so every one answers ``draining`` during the delay.

aiohttp's own graceful stop (``run_app``'s ``shutdown_timeout``) closes the listener and
idle connections first, so no one ever sees ``draining``; and it waits up to the timeout
twice (once for handlers, once more after cancelling only the request's *body*), while a
proxy handler awaiting its upstream notices neither, hence the explicit cut here.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import threading
from types import TracebackType

from aiohttp import web

from authgate.errors import ConfigError
from authgate.web.protocol import Runner
from authgate.web.state import OPS_APP, SETTINGS

log = logging.getLogger("authgate")

# Clean-up after the drain deadline (cancelled exchanges, closing the upstream pool and the
# stores) gets this long before the watchdog ends the process.
EXIT_MARGIN_SECONDS = 1.0


class Drain:
    """One process's shutdown state: whether it drains, and when proxied exchanges are cut."""

    def __init__(self, flag: list[bool]) -> None:
        self._flag = flag  # shared with /readyz (``DRAINING``)
        self._deadline: float | None = None
        self._bounds: set[asyncio.Timeout] = set()

    @property
    def draining(self) -> bool:
        """Whether shutdown has begun (``/readyz`` answers 503)."""
        return self._flag[0]

    def begin(self) -> None:
        """Report ``draining`` and ask every client to close its connection."""
        self._flag[0] = True

    def cut_at(self, deadline: float) -> None:
        """Cancel every :meth:`bounded` block still running at ``deadline`` (loop time)."""
        self._deadline = deadline
        for bound in self._bounds:
            bound.reschedule(deadline)

    def bounded(self) -> Bounded:
        """A block that runs unbounded until shutdown, then until the drain deadline.

        Raises ``TimeoutError`` when the deadline cut it (the block sees a cancellation).
        """
        return Bounded(self._bounds, self._deadline)

    async def close_connections(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare``: while draining, each response ends its connection."""
        if self._flag[0] and not isinstance(response, web.WebSocketResponse):
            response.force_close()
            response.headers["Connection"] = "close"


class Bounded:
    """:meth:`Drain.bounded`'s block: an ``asyncio.timeout_at`` that :meth:`Drain.cut_at`
    can move, known to the drain while it runs. A class, not a generator-based context
    manager: it is entered on every proxied request."""

    __slots__ = ("_bounds", "_timeout")

    def __init__(self, bounds: set[asyncio.Timeout], deadline: float | None) -> None:
        self._bounds = bounds
        self._timeout = asyncio.timeout_at(deadline)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()
        self._bounds.add(self._timeout)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bounds.discard(self._timeout)
        await self._timeout.__aexit__(exc_type, exc, tb)


DRAIN = web.AppKey("drain", Drain)


def _watchdog(seconds: float) -> threading.Timer:
    """End the process in ``seconds`` unless cancelled: the bound no clean-up may break."""

    def overrun() -> None:
        log.error(
            "shutdown overran the drain timeout; exiting",
            extra={"event": "shutdown_overrun"},
        )
        os._exit(1)

    timer = threading.Timer(seconds, overrun)
    timer.daemon = True
    timer.start()
    return timer


def listen_problem(
    exc: OSError, host: str, port: int, *, keys: tuple[str, str] = ("server.host", "server.port")
) -> ConfigError:
    """The one-line report of a listening address that cannot be bound, naming the key
    (``keys``: the host's and the port's, ``server.ops_host`` and ``server.ops_port`` for
    the ops listener)."""
    host_key, port_key = keys
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        problem = (
            host_key,
            f"cannot resolve {host!r} ({exc.strerror}); give an IP address or a name this "
            "machine resolves",
        )
    elif exc.errno == errno.EADDRINUSE:
        problem = (
            port_key,
            f"{where} is already in use by another process; stop that process or set "
            f"another {port_key}" + (" (or --port)" if port_key == "server.port" else ""),
        )
    elif exc.errno == errno.EACCES:
        problem = (
            port_key,
            f"no permission to listen on {where} (ports below 1024 need privileges); set "
            f"{port_key} to 1024 or more, or grant CAP_NET_BIND_SERVICE",
        )
    elif exc.errno == errno.EADDRNOTAVAIL:
        problem = (
            host_key,
            f"{host} is not an address of this machine; use one of its addresses, "
            "0.0.0.0 (all) or 127.0.0.1",
        )
    else:
        problem = (port_key, f"cannot listen on {where}: {exc.strerror or exc}")
    return ConfigError([problem], heading="cannot listen")


def check_listen_address(
    host: str,
    port: int,
    *,
    reuse_port: bool,
    keys: tuple[str, str] = ("server.host", "server.port"),
) -> None:
    """Bind ``host:port`` once and let it go, as the server will: raises
    :class:`ConfigError` (see :func:`listen_problem`) before anything starts when it cannot
    be bound. The server's own bind still reports a port taken in between."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except OSError as exc:
        raise listen_problem(exc, host, port, keys=keys) from None


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def on_signal(signum: int) -> None:
        if not stop.is_set():
            log.info(
                "shutdown requested",
                extra={"event": "shutdown_requested", "signal": signal.Signals(signum).name},
            )
            stop.set()
            return
        # The second signal: whoever sent it wants the process gone now.
        log.warning("second signal: exiting at once", extra={"event": "shutdown_forced"})
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool,
    shutdown_delay_seconds: float,
    drain_timeout_seconds: float,
    backend: str = "memory",
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down as the module describes.

    ``listening`` is logged once the socket is bound; an address that cannot be bound
    raises :class:`ConfigError` (one line, naming ``server.host`` or ``server.port``).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _install_signals(loop, stop)
    # aiohttp's shutdown_timeout is the drain: it waits that long for in-flight handlers
    # after the listener closed; the cut below ends proxied ones at the same deadline.
    server = app[SETTINGS].server
    runner = Runner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=drain_timeout_seconds,
        header_read_timeout=server.header_read_timeout_seconds,
        body_read_timeout=server.body_read_timeout_seconds,
    )
    await runner.setup()
    # The ops listener (server.ops_port): /healthz, /readyz, /metrics and the admin API. It
    # stays open through the delay and the drain, so probes keep seeing `draining`.
    ops_app = app.get(OPS_APP)
    ops_runner = None
    try:
        await _listen(runner, host, port, reuse_port=reuse_port)
        if ops_app is not None and server.ops_port is not None:
            ops_runner = Runner(
                ops_app,
                handle_signals=False,
                access_log=None,
                shutdown_timeout=EXIT_MARGIN_SECONDS,
                header_read_timeout=server.header_read_timeout_seconds,
                body_read_timeout=server.body_read_timeout_seconds,
            )
            await ops_runner.setup()
            await _listen(
                ops_runner,
                server.ops_host or host,
                server.ops_port,
                reuse_port=reuse_port,
                keys=("server.ops_host", "server.ops_port"),
            )
        log.info(
            "listening",
            extra={
                "event": "listening",
                "host": host,
                "port": port,
                "ops_port": server.ops_port,
                "backend": backend,
            },
        )
        await stop.wait()
        drain = app[DRAIN]
        drain.begin()
        log.info(
            "draining: readiness reports 503, still serving",
            extra={"event": "shutdown_delay", "seconds": shutdown_delay_seconds},
        )
        await asyncio.sleep(shutdown_delay_seconds)
        drain.cut_at(loop.time() + drain_timeout_seconds)
        # Left running when this returns: it bounds the event loop's own teardown too.
        _watchdog(drain_timeout_seconds + EXIT_MARGIN_SECONDS)
        log.info(
            "listener closing; waiting for in-flight requests",
            extra={"event": "shutdown_drain", "seconds": drain_timeout_seconds},
        )
    finally:
        # Closes the listener, then idle connections, runs on_shutdown, waits for in-flight
        # handlers (at most the drain timeout), then the cleanup_ctx (pools, stores).
        await runner.cleanup()
        if ops_runner is not None:
            await ops_runner.cleanup()
    log.info("stopped", extra={"event": "stopped"})


async def _listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    reuse_port: bool,
    keys: tuple[str, str] = ("server.host", "server.port"),
) -> None:
    """Open a listener for ``runner``; :class:`ConfigError` naming ``keys`` when it cannot."""
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
    try:
        await site.start()
    except OSError as exc:
        raise listen_problem(exc, host, port, keys=keys) from None
