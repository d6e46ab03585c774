"""Changing the configuration of a running authgate: ``SIGHUP``, or a watched config file.

A reload reads the settings exactly as ``serve`` read them at start
(:func:`~authgate.preflight.load_checked_settings`: the file, the environment, the files
the settings name) and then:

* refuses them, logging every problem under its key, when they do not load;
* refuses them, naming each key, when a key outside ``config/live.py``'s
  :data:`~authgate.config.live.LIVE_KEYS` changed (the listening address, the stores, key
  material, ...): a restart applies those;
* does nothing when nothing changed;
* otherwise applies them: the gate's policy and verifiers (``Services.apply``) and the
  identity headers (``IdentityHeaders.reconfigure``) are rebuilt, then swapped in without
  an ``await`` between the swaps, so every request is decided under the old settings or
  the new ones. A request already in the gate keeps the policy and verifiers it took.

A refused reload leaves the running settings in force. Each applied one increments
``authgate_config_generation`` and relabels ``authgate_config_info{hash}``; ``/readyz``
shows both. With ``server.workers`` > 1 the parent forwards ``SIGHUP`` to every worker
(``cli.py``) and each reloads itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from authgate.compose import Services
from authgate.config.live import changed_keys, config_hash, fixed_changes
from authgate.config.model import Settings
from authgate.errors import ConfigError
from authgate.metrics import Metrics
from authgate.preflight import load_checked_settings
from authgate.web.identity import IdentityHeaders

log = logging.getLogger("authgate")


@dataclass(frozen=True)
class ReloadSource:
    """Where the settings are read again: ``path`` (or ``$AUTHGATE_CONFIG``, or none) and
    the environment, as at start; ``sighup``: reload on ``SIGHUP`` (``serve`` only: a
    signal handler is process-wide)."""

    path: str | None
    sighup: bool = True

    def load(self) -> Settings:
        """The settings as ``serve`` loads them; raises :class:`ConfigError`."""
        return load_checked_settings(self.path)

    def watched_path(self) -> str | None:
        """The config file a watch polls, if there is one."""
        return self.path or os.environ.get("AUTHGATE_CONFIG") or None


class Outcome(enum.StrEnum):
    """What a reload did (the ``outcome`` label of ``authgate_config_reloads_total``)."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True)
class ReloadResult:
    """One reload: its outcome, the problems that refused it, the generation and hash in
    force afterwards."""

    outcome: Outcome
    generation: int
    hash: str
    problems: tuple[tuple[str, str], ...] = ()


class ConfigReloader:
    """Applies new settings to one application's services and identity headers."""

    def __init__(
        self,
        *,
        services: Services,
        identity: IdentityHeaders,
        metrics: Metrics,
        source: ReloadSource | None = None,
    ) -> None:
        self.settings = services.settings
        self.generation = 1
        self.hash = config_hash(self.settings)
        self.source = source
        self._services = services
        self._identity = identity
        self._metrics = metrics
        self._lock = asyncio.Lock()  # one reload at a time (a second SIGHUP waits)
        self._tasks: set[asyncio.Task[Any]] = set()
        metrics.config_generation.set(self.generation)
        metrics.config_info.labels(self.hash).set(1)

    async def reload(self, trigger: str = "request") -> ReloadResult:
        """Read the settings from :attr:`source` (off the event loop) and :meth:`apply`
        them; refused, with the loader's problems, when they do not load."""
        if self.source is None:
            raise RuntimeError("no reload source: the application was built without one")
        async with self._lock:
            try:
                settings = await asyncio.to_thread(self.source.load)
            except ConfigError as exc:
                return self._refuse(exc.problems, trigger)
            return self.apply(settings, trigger=trigger)

    def apply(self, settings: Settings, *, trigger: str = "request") -> ReloadResult:
        """Apply ``settings`` (already loaded and checked), or refuse them when a key that
        cannot change live differs. Nothing here awaits: the swap is one step."""
        problems = fixed_changes(self.settings, settings)
        if problems:
            return self._refuse(problems, trigger)
        if settings == self.settings:
            self._metrics.config_reloads.labels(Outcome.UNCHANGED).inc()
            log.info(
                f"config reload ({trigger}): nothing changed",
                extra={"event": "config_unchanged", "generation": self.generation},
            )
            return ReloadResult(Outcome.UNCHANGED, self.generation, self.hash)
        changed = changed_keys(self.settings, settings)
        self._services.apply(settings)
        self._identity.reconfigure(
            settings.identity, foreign=settings.proxy.foreign_identity_headers
        )
        old_hash, self.hash = self.hash, config_hash(settings)
        self.settings = settings
        self.generation += 1
        self._metrics.config_generation.set(self.generation)
        self._metrics.config_info.remove(old_hash)
        self._metrics.config_info.labels(self.hash).set(1)
        self._metrics.config_reloads.labels(Outcome.APPLIED).inc()
        log.info(
            f"config reloaded ({trigger}): generation {self.generation}, changed "
            + ", ".join(changed),
            extra={
                "event": "config_reloaded",
                "keys": changed,
                "generation": self.generation,
                "config_hash": self.hash,
            },
        )
        return ReloadResult(Outcome.APPLIED, self.generation, self.hash)

    def _refuse(self, problems: list[tuple[str, str]], trigger: str) -> ReloadResult:
        # The problems are the loader's and config/live.py's phrases: keys and fixed
        # messages, never a value of a secret (the model never echoes one).
        self._metrics.config_reloads.labels(Outcome.REFUSED).inc()
        log.warning(
            f"config reload ({trigger}) refused, the running config stays: "
            + "; ".join(f"{key}: {msg}" for key, msg in problems),
            extra={
                "event": "config_reload_refused",
                "keys": [key for key, _ in problems],
                "generation": self.generation,
                "config_hash": self.hash,
            },
        )
        return ReloadResult(Outcome.REFUSED, self.generation, self.hash, tuple(problems))

    # --- a serving process -------------------------------------------------------------

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: the ``SIGHUP`` handler and the file watch, while serving."""
        loop = asyncio.get_running_loop()
        source = self.source
        hup = source is not None and source.sighup
        previous = signal.getsignal(signal.SIGHUP)
        if hup:
            loop.add_signal_handler(signal.SIGHUP, self._spawn, self._reload_logged, "SIGHUP")
        interval = self.settings.server.config_watch_interval_seconds
        path = source.watched_path() if source is not None else None
        if interval > 0 and path is not None:
            self._spawn(self._watch, path, interval)
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
                # What it was before (``serve`` ignores SIGHUP outside the application, so
                # a late one never ends the process mid-drain).
                signal.signal(signal.SIGHUP, previous)
            for task in list(self._tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _reload_logged(self, trigger: str) -> None:
        """:meth:`reload` from a signal or the watch: an unexpected failure is logged (its
        type only: a message could quote the file) and the next reload is tried afresh."""
        try:
            await self.reload(trigger)
        except Exception as exc:  # noqa: BLE001 - nobody awaits this task to see it
            self._metrics.config_reloads.labels(Outcome.REFUSED).inc()
            log.error(  # noqa: TRY400 - no traceback: in text format it could quote values
                f"config reload ({trigger}) failed, the running config stays",
                extra={"event": "config_reload_failed", "error": type(exc).__name__},
            )

    def _spawn(self, run: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        task = asyncio.get_running_loop().create_task(run(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, path: str, interval: float) -> None:
        """Poll ``path``: a change of its inode, size or modification time, then of its
        content's hash, reloads (each new content once, applied or refused)."""
        seen = _stat(path)
        digest = _digest(path)
        while True:
            await asyncio.sleep(interval)
            now = _stat(path)
            if now == seen:
                continue
            seen = now
            content = _digest(path)
            if content == digest:
                continue  # touched, or rewritten with the same bytes
            digest = content
            await self._reload_logged("file change")


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _digest(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    except OSError:
        return None
