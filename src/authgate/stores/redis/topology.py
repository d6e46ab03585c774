"""Client construction for the three topologies: one server, Sentinel, and Cluster.

Clients are built with explicit connect and socket timeouts, at most one retry (on
connection errors only) and a bounded pool: redis-py's defaults would wait five seconds per
socket operation and retry ten times with back-off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

if TYPE_CHECKING:
    from authgate.config.model import RedisSettings

Client = Redis | RedisCluster


def client_options(settings: RedisSettings) -> dict[str, Any]:
    """The options of every client: timeouts, retry, pool size, decoding, protocol."""
    return {
        "socket_connect_timeout": settings.connect_timeout_seconds,
        "socket_timeout": settings.socket_timeout_seconds,
        # Retry only on connection errors (a stale pooled connection): retrying after
        # a timeout would repeat a write whose outcome is unknown.
        "retry": Retry(NoBackoff(), settings.retries, (RedisConnectionError,)),
        # redis-py 5 keeps ``retry`` only when the errors are listed here too (without it a
        # connection retries nothing); 6 and later merge the two lists.
        "retry_on_error": [RedisConnectionError],
        "max_connections": settings.max_connections,
        "decode_responses": True,
        "protocol": settings.protocol,
    }


def tls_options(settings: RedisSettings) -> dict[str, Any]:
    """redis-py's TLS options from ``stores.redis.tls`` (all exist since redis-py 5.1).

    Every one is explicit: redis-py's own defaults changed between releases (hostname
    checking was off before 6.0).
    """
    tls = settings.tls
    options: dict[str, Any] = {
        "ssl_cert_reqs": "none" if tls.verify == "none" else "required",
        "ssl_check_hostname": tls.verify == "full",
        "ssl_ca_certs": tls.ca_file,
    }
    if tls.cert_file is not None:
        options["ssl_certfile"] = tls.cert_file
        options["ssl_keyfile"] = tls.key_file
    return options


def auth_options(settings: RedisSettings) -> dict[str, Any]:
    """The servers' credentials: ``username``/``password`` of the settings, else the URL's."""
    parsed = parse_url(settings.url.get_secret_value())
    options = {name: parsed[name] for name in ("username", "password") if parsed.get(name)}
    if settings.username:
        options["username"] = settings.username
    if settings.password.get_secret_value():
        options["password"] = settings.password.get_secret_value()
    return options


def build_client(
    settings: RedisSettings, options: Mapping[str, Any]
) -> tuple[Client, Sentinel | None]:
    """The client of the configured topology, and the Sentinel it came from (to close)."""
    url = settings.url.get_secret_value()
    options = {**options, **auth_options(settings)}
    if settings.mode == "cluster":
        return _build_cluster(settings, url, options), None
    if settings.mode == "sentinel":
        return _build_sentinel(settings, url, options)
    # Keyword arguments of from_url lose to the URL's own; credentials are resolved above.
    parsed = parse_url(url)
    if parsed.get("connection_class") is SSLConnection:
        options.update(tls_options(settings))
    pool = BlockingConnectionPool(timeout=settings.deadline_seconds, **{**parsed, **options})
    return Redis.from_pool(pool), None


def _build_cluster(settings: RedisSettings, url: str, options: dict[str, Any]) -> RedisCluster:
    # The seeds: url's node, then cluster_nodes, tried in order until one answers.
    parsed = parse_url(url)
    seeds = [(str(parsed.get("host", "localhost")), int(parsed.get("port", 6379)))]
    seeds += [_seed_host_port(seed) for seed in settings.cluster_nodes]
    if settings.url_tls:
        options.update(ssl=True, **tls_options(settings))
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in dict.fromkeys(seeds)],
        **options,
    )


def _build_sentinel(
    settings: RedisSettings, url: str, options: dict[str, Any]
) -> tuple[Redis, Sentinel]:
    # The URL carries the master's database and scheme; its host is unused.
    parsed = parse_url(url)
    master_options = dict(options)
    if "db" in parsed:
        master_options["db"] = parsed["db"]
    if settings.url_tls:
        master_options.update(ssl=True, **tls_options(settings))
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout_seconds,
        "socket_timeout": settings.socket_timeout_seconds,
        "retry": options["retry"],
        "decode_responses": True,
    }
    if settings.sentinel_username:
        sentinel_options["username"] = settings.sentinel_username
    if settings.sentinel_password.get_secret_value():
        sentinel_options["password"] = settings.sentinel_password.get_secret_value()
    if settings.sentinel_tls:
        sentinel_options.update(ssl=True, **tls_options(settings))
    # redis-py left Sentinel.__init__ unannotated before 8.2: called untyped on every release.
    sentinel = cast(Any, Sentinel)(
        [_host_port(address) for address in settings.sentinels],
        sentinel_kwargs=sentinel_options,
    )
    master = sentinel.master_for(settings.sentinel_service, **master_options)
    return cast(Redis, master), sentinel


def node_options(settings: RedisSettings) -> dict[str, Any]:
    """The options of a plain client of one Cluster node: those of every client, the
    servers' credentials and, with a ``rediss://`` URL, TLS."""
    options = {**client_options(settings), **auth_options(settings)}
    if settings.url_tls:
        options.update(ssl=True, **tls_options(settings))
    return options


def node_client(options: Mapping[str, Any], host: str, port: int) -> Redis:
    """A plain client of one Cluster node (``options`` from :func:`node_options`)."""
    return Redis(host=host, port=port, **options)


def _seed_host_port(seed: str) -> tuple[str, int]:
    if "://" in seed:
        parsed = urlsplit(seed)
        return str(parsed.hostname), int(parsed.port or 6379)
    return _host_port(seed)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
