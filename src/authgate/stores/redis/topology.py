"""Client construction for the three topologies: one server, Sentinel, and Cluster.

Clients are built with explicit connect and socket timeouts, at most one retry (on
connection errors only) and a bounded pool: redis-py's defaults would wait five seconds per
socket operation and retry ten times with back-off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

if TYPE_CHECKING:
    from authgate.config.model import RedisSettings

Client = Redis | RedisCluster

# Options a plain node client copies from the cluster client (credentials and TLS).
_NODE_OPTIONS = frozenset(
    ("username", "password", "ssl", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
)


def client_options(settings: RedisSettings) -> dict[str, Any]:
    """The options of every client: timeouts, retry, pool size, decoding, protocol."""
    return {
        "socket_connect_timeout": settings.connect_timeout_seconds,
        "socket_timeout": settings.socket_timeout_seconds,
        # Retry only on connection errors (a stale pooled connection): retrying after
        # a timeout would repeat a write whose outcome is unknown.
        "retry": Retry(NoBackoff(), settings.retries, (RedisConnectionError,)),
        "max_connections": settings.max_connections,
        "decode_responses": True,
        "protocol": settings.protocol,
    }


def build_client(
    settings: RedisSettings, options: Mapping[str, Any]
) -> tuple[Client, Sentinel | None]:
    """The client of the configured topology, and the Sentinel it came from (to close)."""
    url = settings.url.get_secret_value()
    options = dict(options)
    if settings.mode == "cluster":
        return RedisCluster.from_url(url, **options), None
    if settings.mode == "sentinel":
        return _build_sentinel(settings, url, options)
    pool = BlockingConnectionPool.from_url(url, timeout=settings.deadline_seconds, **options)
    return Redis.from_pool(pool), None


def _build_sentinel(
    settings: RedisSettings, url: str, options: dict[str, Any]
) -> tuple[Redis, Sentinel]:
    # The URL carries the master's credentials, database and scheme; its host is unused.
    parsed = parse_url(url)
    master_options = dict(options)
    for name in ("username", "password", "db"):
        if name in parsed:
            master_options[name] = parsed[name]
    if parsed.get("connection_class") is SSLConnection:
        master_options["ssl"] = True
    # redis-py leaves Sentinel.__init__ unannotated.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [_host_port(address) for address in settings.sentinels],
        sentinel_kwargs={
            "socket_connect_timeout": settings.connect_timeout_seconds,
            "socket_timeout": settings.socket_timeout_seconds,
            "retry": options["retry"],
            "decode_responses": True,
        },
    )
    master = sentinel.master_for(settings.sentinel_service, **master_options)
    return cast(Redis, master), sentinel


def node_client(cluster: RedisCluster, options: Mapping[str, Any], host: str, port: int) -> Redis:
    """A plain client of one Cluster node: ``options`` plus the cluster client's credentials
    and TLS settings."""
    node_options = dict(options)
    for name, value in cluster.get_connection_kwargs().items():
        if name in _NODE_OPTIONS and value is not None:
            node_options[name] = value
    return Redis(host=host, port=port, **node_options)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
