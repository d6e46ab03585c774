"""Real Redis Sentinel sets and Redis Clusters, started from ``redis-server`` for the tests.

:class:`SentinelSet` is one master, its replicas and three sentinels (quorum 2, a node is
down after one second, so a failover completes in a few seconds). :class:`ClusterSet` is
three masters, each with its replicas (``--cluster-enabled yes``, created with
``redis-cli --cluster create``). Every process listens on 127.0.0.1 on a free port, keeps
its files in a temporary directory of its own, runs ``--save "" --appendonly no`` unless
asked otherwise, and is stopped by PID: by ``stop()``, by the fixtures' finalizers, and at
interpreter exit (``atexit``) if a test dies first. Every wait is bounded.

Fixtures (import them where they are used; the shared ones are one process set per test
session however many modules import them, through a reference-counted registry):

``sentinel_set`` / ``redis_cluster``
    Session-scoped, shared, never disturbed: each test uses a fresh random key prefix.
``sentinel_factory`` / ``cluster_factory``
    Function-scoped: ``factory(**options)`` starts a topology of the test's own, for tests
    that kill, freeze or fail over nodes; stopped when the test ends.

The shared Redis on 127.0.0.1:6379 is never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
import redis
from pydantic import SecretStr

from authgate.config.model import RedisSettings
from tests.support import free_port

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
CLUSTER_NODE_TIMEOUT_MS = 1000
START_TIMEOUT_SECONDS = 20.0
FAILOVER_BOUND_SECONDS = 20.0
TOTAL_SLOTS = 16384


# --- one process ---------------------------------------------------------------------------


_live_nodes: dict[int, RedisNode] = {}  # pid -> node, for the atexit sweep
_live_lock = threading.Lock()


def _sweep() -> None:
    """Kill every node still running when the interpreter exits (a test died first)."""
    with _live_lock:
        nodes = list(_live_nodes.values())
    for node in nodes:
        node.terminate(timeout=2.0)


atexit.register(_sweep)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: the Sentinel and Cluster suites need it")
    return found


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisNode:
    """One ``redis-server`` (or ``redis-server --sentinel``) process on 127.0.0.1."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        sentinel_config: str | None = None,
        persistence: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.directory = directory / str(self.port)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.sentinel_config = sentinel_config
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """Where the server logs."""
        return self.directory / "redis.log"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        """Whether the process is running (it may be frozen)."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, timeout: float = START_TIMEOUT_SECONDS) -> RedisNode:
        """Start and wait until it answers PING."""
        command = [_binary("redis-server")]
        if self.sentinel_config is not None:
            config = self.directory / "sentinel.conf"
            config.write_text(self.sentinel_config)
            command += [str(config), "--sentinel"]
        command += [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.sentinel_config is None:
            # Replicas sync at once (the default waits 5 s for more replicas to join).
            command += ["--repl-diskless-sync-delay", "0"]
            if not self.persistence:
                command += ["--save", "", "--appendonly", "no"]
        command += self.args
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with _live_lock:
            _live_nodes[self.proc.pid] = self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server on {self.port} exited with {self.proc.returncode}:\n"
                    + self.log_tail()
                )
            if self.ping():
                return self
            time.sleep(0.05)
        self.terminate()
        raise RuntimeError(f"redis-server on {self.port} did not answer PING:\n{self.log_tail()}")

    def ping(self) -> bool:
        """Whether the server answers PING within half a second."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def client(self, *, timeout: float = 2.0) -> redis.Redis:
        """A plain synchronous client of this node (close it after use)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )

    def command(self, *args: Any, timeout: float = 2.0) -> Any:
        """One command on this node."""
        client = self.client(timeout=timeout)
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py
        finally:
            client.close()

    def info(self, section: str) -> dict[str, Any]:
        """``INFO <section>`` as a dict."""
        client = self.client()
        try:
            return dict(client.info(section))
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the node dies at once, its unsaved data with it."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)
        self._forget()

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers."""
        assert self.alive and self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT."""
        if self.alive and self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def terminate(self, *, timeout: float = 10.0) -> None:
        """SIGTERM and wait (thawed first), SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            if self.frozen:
                self.thaw()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._forget()

    def _forget(self) -> None:
        if self.proc is not None:
            with _live_lock:
                _live_nodes.pop(self.proc.pid, None)


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` (exceptions count as "not yet") until true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last!r})")


# --- Sentinel ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failover:
    """A completed failover: the master before and after, and how long it took."""

    old_master: int
    new_master: int
    seconds: float


def in_process_settings(section: dict[str, Any]) -> RedisSettings:
    """A ``stores.redis`` section (plain data) as :class:`RedisSettings`, URL wrapped."""
    return RedisSettings.model_validate({**section, "url": SecretStr(section["url"])})


class SentinelSet:
    """One master, ``replicas`` replicas and three sentinels (quorum 2) monitoring it."""

    kind = "sentinel"

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = DOWN_AFTER_MS,
        failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
        persistence: bool = False,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="authgate-sentinel-"))
        self.service = SERVICE
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes = [RedisNode(self.directory, persistence=persistence)]
        self.nodes += [RedisNode(self.directory, persistence=persistence) for _ in range(replicas)]
        self.sentinels = [RedisNode(self.directory) for _ in range(sentinels)]

    # -- life cycle

    def start(self, *, timeout: float = START_TIMEOUT_SECONDS) -> SentinelSet:
        """Start every process; return once replication is up and the sentinels know every
        replica and each other (so a failover can be agreed on)."""
        try:
            master = self.nodes[0].start(timeout=timeout)
            for replica in self.nodes[1:]:
                replica.args = ["--replicaof", "127.0.0.1", str(master.port)]
                replica.start(timeout=timeout)
            wait_until(
                lambda: all(self._linked(r) for r in self.nodes[1:]),
                timeout=timeout,
                what="replicas linked to the master",
            )
            for sentinel in self.sentinels:
                sentinel.sentinel_config = self._sentinel_config(master.port)
                sentinel.start(timeout=timeout)
            wait_until(self._sentinels_converged, timeout=timeout, what="sentinels converged")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process and remove the directory."""
        for node in [*self.sentinels, *self.nodes]:
            node.terminate(timeout=5.0)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _sentinel_config(self, master_port: int) -> str:
        return "\n".join(
            [
                f"sentinel monitor {self.service} 127.0.0.1 {master_port} {self.quorum}",
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.service} 1",
                "",
            ]
        )

    @staticmethod
    def _linked(replica: RedisNode) -> bool:
        info = replica.info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinels_converged(self) -> bool:
        master = self.master_port()
        expected_replicas = sum(1 for n in self.nodes if n.alive and n.port != master)
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            others = sentinel.command("SENTINEL", "SENTINELS", self.service)
            replicas = sentinel.command("SENTINEL", "REPLICAS", self.service)
            healthy = [r for r in replicas if "down" not in _flags(r)]
            if len(others) < len(self.sentinels) - 1 or len(healthy) < expected_replicas:
                return False
        return True

    # -- settings

    def settings(self, key_prefix: str, **overrides: Any) -> dict[str, Any]:
        """The ``stores.redis`` config section for authgate (plain data, for a YAML file)."""
        return {
            # Behind Sentinel the URL's host is unused; port 1 fails loudly if it ever is not.
            "url": "redis://127.0.0.1:1/0",
            "mode": "sentinel",
            "sentinels": [s.address for s in self.sentinels],
            "sentinel_service": self.service,
            "key_prefix": key_prefix,
            **overrides,
        }

    def redis_settings(self, key_prefix: str, **overrides: Any) -> RedisSettings:
        """:class:`RedisSettings` for an in-process client."""
        return in_process_settings(self.settings(key_prefix, **overrides))

    # -- topology

    def node(self, port: int) -> RedisNode:
        """The data node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def master_port(self) -> int:
        """The master's port as the first answering sentinel reports it."""
        last: BaseException | None = None
        for sentinel in self.sentinels:
            if not sentinel.alive or sentinel.frozen:
                continue
            try:
                _, port = sentinel.command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service, timeout=1.0
                )
                return int(port)
            except (redis.RedisError, OSError) as exc:
                last = exc
        raise RuntimeError(f"no sentinel answered: {last!r}")

    def master(self) -> RedisNode:
        """The current master (according to the sentinels)."""
        return self.node(self.master_port())

    def replicas(self) -> list[RedisNode]:
        """Every running data node that is not the master."""
        master = self.master_port()
        return [n for n in self.nodes if n.alive and n.port != master]

    def admin(self) -> redis.Redis:
        """A plain synchronous client of the current master (close it after use)."""
        return self.master().client()

    # -- faults

    def kill_master(self) -> RedisNode:
        """SIGKILL the current master; returns it."""
        master = self.master()
        master.kill()
        return master

    def manual_failover(self) -> int:
        """``SENTINEL FAILOVER`` (the old master stays up); returns the old master's port."""
        old = self.master_port()
        self.sentinels[0].command("SENTINEL", "FAILOVER", self.service)
        return old

    def wait_for_failover(
        self, old_master: int, *, timeout: float = FAILOVER_BOUND_SECONDS, rejoined: bool = False
    ) -> Failover:
        """Block until every live sentinel names a new master that says it is one, and every
        live replica is linked to it. The old master, if alive, is left out unless
        ``rejoined``: Sentinel demotes it only some seconds later (a window in which it may
        still accept writes from clients that kept their connections)."""
        started = time.monotonic()

        def done() -> bool:
            ports = {
                int(s.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])
                for s in self.sentinels
                if s.alive and not s.frozen
            }
            if len(ports) != 1 or old_master in ports:
                return False
            new = self.node(ports.pop())
            if new.info("replication").get("role") != "master":
                return False
            for replica in self.nodes:
                if replica is new or not replica.alive or replica.frozen:
                    continue
                if replica.port == old_master and not rejoined:
                    continue
                info = replica.info("replication")
                if info.get("role") != "slave" or int(info.get("master_port", 0)) != new.port:
                    return False
                if info.get("master_link_status") != "up":
                    return False
            return True

        wait_until(done, timeout=timeout, what=f"failover away from master {old_master}")
        return Failover(old_master, self.master_port(), time.monotonic() - started)


def _flags(entry: Any) -> str:
    """The ``flags`` field of a SENTINEL REPLICAS entry (a dict or a flat list)."""
    if isinstance(entry, dict):
        return str(entry.get("flags", ""))
    fields = dict(zip(entry[::2], entry[1::2], strict=False))
    return str(fields.get("flags", ""))


# --- Cluster -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    connected: bool
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        """Flagged master (and not failed)."""
        return "master" in self.flags and "fail" not in self.flags


def parse_cluster_nodes(text: str) -> list[ClusterNodeView]:
    """``CLUSTER NODES`` output, one view per node."""
    views = []
    for line in text.strip().splitlines():
        fields = line.split()
        address = fields[1].split("@", 1)[0]
        slots = []
        for item in fields[8:]:
            if item.startswith("["):
                continue  # a slot being migrated
            low, _, high = item.partition("-")
            slots.append((int(low), int(high or low)))
        views.append(
            ClusterNodeView(
                node_id=fields[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(fields[2].replace("myself,", "").split(",")),
                master_id=fields[3],
                connected=fields[7] == "connected",
                slots=tuple(slots),
            )
        )
    return views


class ClusterSet:
    """Three masters, each with ``replicas_per_master`` replicas, as a Redis Cluster."""

    kind = "cluster"

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas_per_master: int = 1,
        node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS,
        persistence: bool = False,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="authgate-cluster-"))
        self.replicas_per_master = replicas_per_master
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            # A replica may always take over, however long its link was down.
            "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        self.nodes = [
            RedisNode(
                self.directory,
                port=cluster_port(),
                persistence=persistence,
                args=args,
            )
            for _ in range(masters * (1 + replicas_per_master))
        ]

    # -- life cycle

    def cli_flags(self) -> list[str]:
        """How ``redis-cli`` reaches the nodes (none for plain TCP)."""
        return []

    def start(self, *, timeout: float = START_TIMEOUT_SECONDS) -> Self:
        """Start every node, create the cluster, wait until every node reports
        ``cluster_state:ok`` with all slots and every replica is linked."""
        try:
            for node in self.nodes:
                node.start(timeout=timeout)
            command = [
                _binary("redis-cli"),
                *self.cli_flags(),
                "--cluster", "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas", str(self.replicas_per_master),
                "--cluster-yes",
            ]  # fmt: skip
            created = subprocess.run(
                command,
                capture_output=True,
                timeout=timeout * 2,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(
                    "redis-cli --cluster create failed:\n"
                    + created.stdout.decode(errors="replace")
                    + created.stderr.decode(errors="replace")
                )
            wait_until(self.healthy, timeout=timeout, what="cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node and remove the directory."""
        for node in self.nodes:
            node.terminate(timeout=5.0)
        shutil.rmtree(self.directory, ignore_errors=True)

    def healthy(self) -> bool:
        """Every live node says ``cluster_state:ok`` with all slots assigned and ok, knows every
        live node, and every live replica's link to its master is up."""
        live = [n for n in self.nodes if n.alive and not n.frozen]
        for node in live:
            info = node.command("CLUSTER", "INFO")
            fields = dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)
            if fields.get("cluster_state") != "ok":
                return False
            if int(fields.get("cluster_slots_ok", 0)) != TOTAL_SLOTS:
                return False
            if int(fields.get("cluster_known_nodes", 0)) < len(self.nodes):
                return False
            replication = node.info("replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    # -- settings

    @property
    def seed(self) -> RedisNode:
        """The first live node: authgate's seed URL points at it."""
        return next(n for n in self.nodes if n.alive)

    def settings(self, key_prefix: str, **overrides: Any) -> dict[str, Any]:
        """The ``stores.redis`` config section for authgate (plain data, for a YAML file)."""
        return {"url": self.seed.url, "mode": "cluster", "key_prefix": key_prefix, **overrides}

    def redis_settings(self, key_prefix: str, **overrides: Any) -> RedisSettings:
        """:class:`RedisSettings` for an in-process client."""
        return in_process_settings(self.settings(key_prefix, **overrides))

    # -- topology

    def node(self, port: int) -> RedisNode:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def views(self) -> list[ClusterNodeView]:
        """``CLUSTER NODES`` as the first answering live node sees it."""
        last: BaseException | None = None
        for node in self.nodes:
            if not node.alive or node.frozen:
                continue
            try:
                return parse_cluster_nodes(str(node.command("CLUSTER", "NODES")))
            except (redis.RedisError, OSError) as exc:
                last = exc
        raise RuntimeError(f"no cluster node answered: {last!r}")

    def masters(self) -> list[RedisNode]:
        """The nodes that currently serve slots as masters (not failed)."""
        return [self.node(v.port) for v in self.views() if v.is_master and v.slots]

    def master_for_slot(self, slot: int) -> RedisNode:
        """The master serving ``slot``."""
        for view in self.views():
            if view.is_master and any(low <= slot <= high for low, high in view.slots):
                return self.node(view.port)
        raise LookupError(f"no master serves slot {slot}")

    def master_for_key(self, key: str) -> RedisNode:
        """The master serving ``key``'s slot."""
        return self.master_for_slot(key_slot(key))

    # -- faults

    def kill(self, node: RedisNode) -> None:
        """SIGKILL ``node``."""
        node.kill()

    def manual_failover(self, master: RedisNode) -> RedisNode:
        """``CLUSTER FAILOVER`` on one of ``master``'s replicas; returns that replica."""
        views = self.views()
        master_id = next(v.node_id for v in views if v.port == master.port)
        replica = next(self.node(v.port) for v in views if v.master_id == master_id and v.connected)
        replica.command("CLUSTER", "FAILOVER")
        return replica

    def wait_for_failover(
        self, old_master: RedisNode, *, timeout: float = FAILOVER_BOUND_SECONDS
    ) -> Failover:
        """Block until ``old_master``'s slots are served by another master and every live node
        reports ``cluster_state:ok`` (all slots covered)."""
        started = time.monotonic()
        old_slots: tuple[tuple[int, int], ...] = ()
        with contextlib.suppress(StopIteration):
            old_slots = next(v.slots for v in self.views() if v.port == old_master.port)
        probe = old_slots[0][0] if old_slots else 0
        new_port = 0

        def done() -> bool:
            nonlocal new_port
            if not self.healthy():
                return False
            views = self.views()
            owner = next(
                (v for v in views if v.is_master and any(a <= probe <= b for a, b in v.slots)),
                None,
            )
            if owner is None or owner.port == old_master.port:
                return False
            new_port = owner.port
            return True

        wait_until(done, timeout=timeout, what=f"cluster failover away from {old_master.port}")
        return Failover(old_master.port, new_port, time.monotonic() - started)


def key_slot(key: str) -> int:
    """The Cluster hash slot of ``key`` (CRC16 of the hash tag, or of the key)."""
    from redis.crc import key_slot as crc_key_slot

    return int(crc_key_slot(key.encode()))


# --- fixtures ------------------------------------------------------------------------------

Topology = SentinelSet | ClusterSet


class _Shared:
    """A process set shared by every fixture that asks for it in a session, stopped when the
    last of them is torn down (fixtures imported into several modules are distinct fixture
    definitions; this keeps them one set of processes)."""

    def __init__(self, build: Callable[[], Topology]) -> None:
        self._build = build
        self._topology: Topology | None = None
        self._users = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def use(self) -> Iterator[Topology]:
        with self._lock:
            if self._topology is None:
                self._topology = self._build().start()
            self._users += 1
            topology = self._topology
        try:
            yield topology
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._topology is not None:
                    self._topology.stop()
                    self._topology = None


_SHARED_SENTINEL = _Shared(SentinelSet)
_SHARED_CLUSTER = _Shared(ClusterSet)


@pytest.fixture(scope="session")
def sentinel_set() -> Iterator[SentinelSet]:
    """A Sentinel set shared by the session; never fail it over: use ``sentinel_factory``."""
    with _SHARED_SENTINEL.use() as topology:
        assert isinstance(topology, SentinelSet)
        yield topology


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterSet]:
    """A Cluster shared by the session; never kill its nodes: use ``cluster_factory``."""
    with _SHARED_CLUSTER.use() as topology:
        assert isinstance(topology, ClusterSet)
        yield topology


def _factory(kind: type[SentinelSet] | type[ClusterSet]) -> Iterator[Callable[..., Any]]:
    started: list[SentinelSet | ClusterSet] = []

    def make(**options: Any) -> SentinelSet | ClusterSet:
        topology = kind(**options)
        started.append(topology)
        return topology.start()

    try:
        yield make
    finally:
        for topology in started:
            topology.stop()


@pytest.fixture
def sentinel_factory() -> Iterator[Callable[..., SentinelSet]]:
    """Starts Sentinel sets of the test's own (``SentinelSet`` options); stops them after."""
    yield from _factory(SentinelSet)


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., ClusterSet]]:
    """Starts Clusters of the test's own (``ClusterSet`` options); stops them after."""
    yield from _factory(ClusterSet)


def shared_topology(request: pytest.FixtureRequest, kind: str) -> Topology:
    """The session's shared topology of ``kind`` (``sentinel`` or ``cluster``), started lazily
    so that a run that selects neither starts no process."""
    name = {"sentinel": "sentinel_set", "cluster": "redis_cluster"}[kind]
    topology: Topology = request.getfixturevalue(name)
    return topology


__all__ = [
    "ClusterNodeView",
    "ClusterSet",
    "Failover",
    "RedisNode",
    "SentinelSet",
    "Topology",
    "cluster_factory",
    "cluster_port",
    "key_slot",
    "parse_cluster_nodes",
    "redis_cluster",
    "sentinel_factory",
    "sentinel_set",
    "shared_topology",
    "wait_until",
]
