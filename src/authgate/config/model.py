"""The typed, frozen configuration model.

Units are in key names (``ttl_seconds``, ``max_body_bytes``). Secrets are ``SecretStr`` so
they never print. ``docs/configuration.md`` is generated from this module
(``python -m authgate.config.reference``) and a test fails when the two drift.
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from authgate.models import CredentialType

HEADER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"

# Methods a rule may name: RFC 9110, PATCH (RFC 5789) and WebDAV's. A typo (GETT) would
# otherwise make the rule silently match nothing.
HTTP_METHODS = frozenset(
    {
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT",
        "SEARCH", "MKCALENDAR", "ACL", "BIND", "UNBIND", "REBIND", "MERGE", "LINK", "UNLINK",
    }
)  # fmt: skip
REDIS_SCHEMES = ("redis", "rediss", "unix")
# A protected resource's identifier (RFC 8707 §2, RFC 9728 §1.2): an http(s) URL without a
# query or fragment.
RESOURCE_URL_PATTERN = r"^https?://[^/?#\s]+(/[^?#\s]*)?$"


class Problems(ValueError):
    """Several problems one validator found, each ``(key, message)``.

    ``key`` is relative to the value validated: ``""`` for the value itself, ``"[0].id"``
    or ``"methods[1]"`` below it; a cross-section check gives full keys. The loader reports
    each problem on its own line under its full key.
    """

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{k}: {m}" if k else m for k, m in self.problems))


def _raise(problems: Sequence[tuple[str, str]]) -> None:
    if problems:
        raise Problems(problems)


def suggestion(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for a close match, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Section(BaseModel):
    """Base of every section: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"not a CIDR or IP address: {value!r}") from exc
    return value


CIDR = Annotated[str, AfterValidator(_check_cidr)]


class ServerSettings(Section):
    """The listening socket and process model."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    ops_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="A second TCP port for operations: /healthz, /readyz, /metrics and the "
        "admin API (tokens.admin_api) are served there and not on server.port (404 there; a "
        "sidecar proxies those paths to the app instead). Unset: everything on server.port.",
    )
    ops_host: str | None = Field(
        None, description="Address the ops port listens on (server.ops_port); unset: server.host."
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes sharing the port (SO_REUSEPORT). More than 1 needs Redis stores.",
    )
    drain_timeout_seconds: float = Field(
        15.0, gt=0, le=600, description="On SIGTERM, how long in-flight requests may finish."
    )
    shutdown_delay_seconds: float = Field(
        5.0,
        ge=0,
        le=600,
        description="On SIGTERM, how long /readyz answers 503 while requests are still served, "
        "so load balancers stop sending before the listener closes.",
    )
    trusted_proxies: tuple[CIDR, ...] = Field(
        ("127.0.0.0/8", "::1/128"),
        description="Peers whose X-Forwarded-* / X-Original-* headers are believed.",
    )
    max_header_bytes: int = Field(
        16384, ge=1024, le=1_048_576, description="Largest request header line accepted."
    )
    header_read_timeout_seconds: float = Field(
        15.0,
        gt=0,
        le=600,
        description="Longest time a client may take to send a request head (request line and "
        "headers), counted from the connection's start for its first request and from the "
        "first byte for later ones; then 408 request_timeout (or a silent close when nothing "
        "was sent) and the connection closes. Bounds slowloris clients trickling a head.",
    )
    body_read_timeout_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest pause between two reads of a request body that authgate reads or "
        "forwards; then 408 request_timeout and the connection closes.",
    )
    keepalive_timeout_seconds: float = Field(
        3630.0,
        gt=0,
        le=86400,
        description="How long an idle keep-alive connection stays open between requests "
        "(aiohttp's default, longer than proxies' idle timeouts so the proxy closes first).",
    )
    request_id_header: str = Field(
        "X-Request-Id",
        pattern=HEADER_NAME_PATTERN,
        description="Header carrying the request id (accepted from clients when well formed).",
    )
    config_watch_interval_seconds: float = Field(
        0,
        ge=0,
        le=3600,
        description="Poll the config file (serve --config or AUTHGATE_CONFIG) this often and "
        "reload when its content changes, as SIGHUP does; 0: off (reload with SIGHUP).",
    )

    @model_validator(mode="after")
    def _ops_port_is_its_own(self) -> ServerSettings:
        if self.ops_port is None and self.ops_host is not None:
            raise ValueError("server.ops_host needs server.ops_port")
        if self.ops_port is not None and self.ops_port == self.port:
            raise ValueError(
                f"server.ops_port and server.port are both {self.port}: the ops port is a "
                "second listener, give it another port"
            )
        return self


def _readable_file(value: str | None) -> str | None:
    """A path that names a readable regular file (checked when the config loads)."""
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"no such file: {value!r}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"not readable by this process: {value!r}")
    return value


ReadableFile = Annotated[str | None, AfterValidator(_readable_file)]


class RedisTLSSettings(Section):
    """TLS to Redis: used when `url` is `rediss://`, and to the sentinels with `sentinel_tls`."""

    ca_file: ReadableFile = Field(
        None,
        description="PEM file of the CA(s) that signed the Redis servers' certificates; "
        "unset: the system's trust store.",
    )
    cert_file: ReadableFile = Field(
        None, description="PEM client certificate (mutual TLS); needs key_file."
    )
    key_file: ReadableFile = Field(
        None, description="PEM private key of cert_file (not encrypted); needs cert_file."
    )
    verify: Literal["full", "ca-only", "none"] = Field(
        "full",
        description="full: the certificate chain and the server's hostname (or IP) are checked. "
        "ca-only: the chain only (servers announced by addresses their certificates do not "
        "name). none: nothing is checked, anyone on the path can read and change the traffic "
        "(tests only).",
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> RedisTLSSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "stores.redis.tls.cert_file and stores.redis.tls.key_file go together "
                "(mutual TLS needs both)"
            )
        return self

    @property
    def configured(self) -> bool:
        """Whether any TLS setting differs from its default."""
        return self != RedisTLSSettings()


def _seed_address(value: str) -> str:
    """A Cluster seed: ``host:port`` or a redis:// / rediss:// URL naming host and port."""
    if "://" in value:
        parsed = urlsplit(value)
        if parsed.scheme not in ("redis", "rediss") or not parsed.hostname or not parsed.port:
            raise ValueError(f"not a redis:// or rediss:// URL with host and port: {value!r}")
        if parsed.username or parsed.password:
            raise ValueError("a seed URL carries no credentials: they come from url or password")
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not host:port: {value!r}")
    return value


SeedAddress = Annotated[str, AfterValidator(_seed_address)]


class RedisSettings(Section):
    """Redis connection; every call has a deadline."""

    url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="redis://, rediss:// (TLS) or unix:// URL (may carry a password, hence "
        "secret).",
    )
    mode: Literal["standalone", "sentinel", "cluster"] = Field(
        "standalone", description="Topology: one server, Sentinel-managed, or Cluster."
    )
    sentinels: tuple[str, ...] = Field(
        (), description="Sentinel addresses as host:port, not URLs (mode sentinel)."
    )
    sentinel_service: str = Field("mymaster", description="Sentinel master name.")
    sentinel_username: str | None = Field(
        None, description="ACL user authgate authenticates as to the sentinels (mode sentinel)."
    )
    sentinel_password: SecretStr = Field(
        SecretStr(""),
        description="Password of the sentinels themselves (their requirepass), not the "
        "master's; empty: none. Secret: AUTHGATE_STORES__REDIS__SENTINEL_PASSWORD.",
    )
    sentinel_tls: bool = Field(
        False,
        description="Talk TLS to the sentinels, with the settings of stores.redis.tls; the "
        "master and replicas use TLS when url is rediss://.",
    )
    cluster_nodes: tuple[SeedAddress, ...] = Field(
        (),
        description="More Cluster seed nodes (host:port, or redis:// / rediss:// URLs of the "
        "same scheme as url), tried after url's node until one answers (mode cluster). Only "
        "host and port are read from them: credentials and TLS come from url and tls.",
    )
    username: str | None = Field(
        None, description="ACL user for the Redis servers; overrides the one in url."
    )
    password: SecretStr = Field(
        SecretStr(""),
        description="Password for the Redis servers; overrides the one in url; empty: url's. "
        "Secret: AUTHGATE_STORES__REDIS__PASSWORD.",
    )
    tls: RedisTLSSettings = Field(default_factory=RedisTLSSettings)
    key_prefix: str = Field(
        "authgate:",
        pattern=r"^[A-Za-z0-9:_.-]{0,64}$",
        description="Prefix of every key authgate writes.",
    )
    connect_timeout_seconds: float = Field(
        0.5, gt=0, le=30, description="TCP connect timeout (with the TLS handshake, if TLS)."
    )
    socket_timeout_seconds: float = Field(0.5, gt=0, le=30, description="Socket read timeout.")
    deadline_seconds: float = Field(
        0.25, gt=0, le=30, description="Deadline for one security-relevant store call."
    )
    retries: int = Field(1, ge=0, le=1, description="Retries on a connection error (0 or 1).")
    max_connections: int = Field(64, ge=1, le=10_000, description="Connection pool size.")
    event_heartbeat_seconds: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Heartbeat interval on the event subscription; three missed heartbeats "
        "mark it lost, and replicas then check revocations and pairs in Redis per request.",
    )
    protocol: Literal[2, 3] = Field(
        2, description="RESP protocol version spoken to Redis (3 needs Redis 6 or newer)."
    )
    auto_pipeline: bool = Field(
        True,
        description="Send the commands of concurrent requests as one pipeline per event-loop "
        "turn (one round trip; each command keeps its own atomic reply). Not in cluster mode, "
        "nor for nonce writes that wait for replica acknowledgements.",
    )
    replica_acks: int | None = Field(
        None,
        ge=0,
        le=16,
        description="Replicas that must acknowledge a nonce write (WAIT) before it counts as "
        "spent; unset: 1 in sentinel and cluster mode, 0 standalone. 0 turns the check off.",
    )
    replica_ack_timeout_seconds: float = Field(
        0.1,
        gt=0,
        le=30,
        description="How long a nonce write waits for its replica acknowledgements; must be "
        "below deadline_seconds. Too few acknowledgements in time: 503, nonce not accepted.",
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        # Never echo the URL: it may carry a password.
        url = value.get_secret_value()
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        fix = "use redis://HOST:6379/0, rediss://HOST:6380/0 (TLS) or unix:///path/redis.sock"
        if scheme not in REDIS_SCHEMES:
            what = f"scheme {scheme + '://'!r} is not Redis's" if scheme else "not a URL"
            raise ValueError(f"{what}; {fix}")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            raise ValueError(f"not a valid Redis URL (check the host and port); {fix}") from None
        if scheme != "unix" and not parts.hostname:
            raise ValueError(f"the URL names no host; {fix}")
        return value

    @field_validator("sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems = []
        for i, address in enumerate(value):
            host, _, port = address.rpartition(":")
            if "://" in address or not host.strip("[]") or not port.isdigit():
                problems.append((f"[{i}]", f"{address!r} is not host:port (e.g. 10.0.0.5:26379)"))
            elif not 1 <= int(port) <= 65535:
                problems.append((f"[{i}]", f"port {port} is out of range (1 to 65535)"))
        _raise(problems)
        return value

    @model_validator(mode="after")
    def _sentinels_needed(self) -> RedisSettings:
        if self.mode != "standalone" and self.url.get_secret_value().lower().startswith("unix:"):
            raise ValueError(
                f"stores.redis.url: a unix:// socket serves standalone mode only, not "
                f"{self.mode}; use a redis:// or rediss:// URL"
            )
        if self.mode == "sentinel" and not self.sentinels:
            raise ValueError("mode sentinel needs stores.redis.sentinels")
        if self.mode != "sentinel" and (
            self.sentinel_tls or self.sentinel_username or self.sentinel_password.get_secret_value()
        ):
            raise ValueError(
                "stores.redis.sentinel_tls, sentinel_username and sentinel_password are for "
                "mode sentinel"
            )
        if self.mode != "cluster" and self.cluster_nodes:
            raise ValueError("stores.redis.cluster_nodes is for mode cluster")
        for seed in self.cluster_nodes:
            if "://" in seed and urlsplit(seed).scheme != self.url_scheme:
                raise ValueError(
                    f"stores.redis.cluster_nodes: {seed!r} is not {self.url_scheme}:// like url"
                )
        if self.tls.configured and not (self.url_tls or self.sentinel_tls):
            raise ValueError(
                "stores.redis.tls is set but nothing uses TLS: make url rediss:// (or set "
                "sentinel_tls); a redis:// URL would send everything in clear"
            )
        if self.required_replica_acks and self.replica_ack_timeout_seconds >= self.deadline_seconds:
            raise ValueError(
                "stores.redis.replica_ack_timeout_seconds must be below deadline_seconds"
            )
        return self

    @property
    def url_scheme(self) -> str:
        """The scheme of ``url`` (``redis``, ``rediss`` or ``unix``), lower-cased."""
        return urlsplit(self.url.get_secret_value()).scheme.lower()

    @property
    def url_tls(self) -> bool:
        """Whether the Redis servers are reached over TLS (a ``rediss://`` URL)."""
        return self.url_scheme == "rediss"

    @property
    def required_replica_acks(self) -> int:
        """Replica acknowledgements a nonce write needs (``replica_acks`` or its default)."""
        if self.replica_acks is not None:
            return self.replica_acks
        return 0 if self.mode == "standalone" else 1


class StoreSettings(Section):
    """Where state lives."""

    backend: Literal["memory", "redis"] = Field(
        "memory", description="memory (one process only) or redis (shared by replicas)."
    )
    redis: RedisSettings = Field(default_factory=RedisSettings)


class ExternalIssuer(Section):
    """A third-party issuer whose tokens are accepted, keys fetched from its JWKS URL."""

    issuer: str = Field(..., min_length=1, description="Exact `iss` value.")
    jwks_url: str = Field(..., pattern=r"^https?://", description="Where its JWKS lives.")
    audiences: tuple[str, ...] = Field(
        ..., min_length=1, description="Accepted `aud` values (at least one)."
    )
    algorithms: tuple[str, ...] = Field(
        ("RS256", "ES256"), min_length=1, description="Allowed `alg` values (asymmetric only)."
    )
    jwks_ttl_seconds: float = Field(300, gt=0, le=86400, description="How long a JWKS is fresh.")
    min_refresh_interval_seconds: float = Field(
        30,
        ge=1,
        le=3600,
        description="At most one refetch per interval on an unknown kid (>= 1, so a flood "
        "of unknown kids cannot turn into a flood of fetches).",
    )
    require_jti: bool = Field(False, description="Refuse this issuer's tokens without `jti`.")
    max_lifetime_seconds: int = Field(
        86_400,
        ge=60,
        le=315_360_000,
        description="Longest lifetime accepted: `exp - iat`, or `exp - now` without `iat` "
        "(401 token_lifetime_too_long beyond).",
    )

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alg in value:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(
                    f"algorithm {alg!r} not allowed; choose from {ASYMMETRIC_ALGORITHMS}"
                )
        return value


ASYMMETRIC_ALGORITHMS = ("ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "EdDSA")
# Algorithms a DPoP proof may use (RFC 9449 §4.3: asymmetric only, never none or HS*).
DPOP_ALGORITHMS = ("ES256", "ES384", "EdDSA", "RS256", "PS256")


class DPoPSettings(Section):
    """DPoP (RFC 9449): proof-of-possession for access tokens, verified and issued."""

    enabled: bool = Field(
        True,
        description="Accept `Authorization: DPoP` with a `DPoP` proof (per rule: `dpop`), and "
        "issue DPoP-bound tokens at /token when the client sends a proof.",
    )
    algorithms: tuple[str, ...] = Field(
        DPOP_ALGORITHMS,
        min_length=1,
        description="Algorithms a proof may be signed with (asymmetric only).",
    )
    proof_window_seconds: int = Field(
        60,
        ge=1,
        le=600,
        description="A proof's `iat` may be this far in the past or the future; its `jti` "
        "is kept spent until the proof could no longer be accepted.",
    )
    max_proof_bytes: int = Field(
        4096, ge=512, le=8192, description="Longest `DPoP` header accepted."
    )
    require_nonce: bool = Field(
        False,
        description="Require a server nonce in every proof (RFC 9449 §8): a proof without "
        "a current one is refused (401 dpop_nonce_required, 400 use_dpop_nonce at /token) "
        "with a fresh nonce in `DPoP-Nonce`.",
    )
    nonce_secret: SecretStr | None = Field(
        None,
        description="Signs server nonces; every replica must share it (at least 32 "
        "characters). Unset: random per process, so replicas refuse each other's nonces.",
    )
    nonce_ttl_seconds: int = Field(
        300, ge=10, le=86_400, description="How long a server nonce stays valid."
    )

    @field_validator("algorithms")
    @classmethod
    def _proof_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alg in value:
            if alg not in DPOP_ALGORITHMS:
                raise ValueError(f"algorithm {alg!r} not allowed; choose from {DPOP_ALGORITHMS}")
        return value

    @field_validator("nonce_secret")
    @classmethod
    def _nonce_secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("jwt.dpop.nonce_secret must be at least 32 characters")
        return value


class JWTSettings(Section):
    """Bearer JWT verification, and authgate's own issuer identity."""

    issuer: str = Field("http://127.0.0.1:8080", min_length=1, description="authgate's own `iss`.")
    audiences: tuple[str, ...] = Field(
        ("authgate",), min_length=1, description="`aud` values accepted on authgate's own tokens."
    )
    algorithms: tuple[str, ...] = Field(
        ("ES256", "RS256", "EdDSA"), min_length=1, description="Algorithms for own tokens."
    )
    signing_key_files: tuple[str, ...] = Field(
        (),
        description="PEM private keys (first signs). Empty: an ephemeral ES256 key (development).",
    )
    leeway_seconds: int = Field(30, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat.")
    max_token_bytes: int = Field(8192, ge=256, le=65536, description="Largest token accepted.")
    max_token_lifetime_seconds: int | None = Field(
        None,
        ge=60,
        le=315_360_000,
        description="Longest lifetime accepted on authgate's own tokens: `exp - iat`, or `exp - "
        "now` without `iat` (401 token_lifetime_too_long beyond). Null: the longest lifetime "
        "authgate issues (tokens.access_ttl_seconds, bpc_exchange_ttl_seconds, "
        "max_mint_ttl_seconds, whichever is longest).",
    )
    cache_size: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="Verified-token cache entries (0: no cache).",
    )
    external_issuers: tuple[ExternalIssuer, ...] = Field(
        (), description="Third-party issuers (see below)."
    )
    jwks_fetch_timeout_seconds: float = Field(
        3.0, gt=0, le=60, description="Timeout of one JWKS fetch."
    )
    jwks_max_bytes: int = Field(
        1_048_576, ge=1024, le=16_777_216, description="Largest JWKS document accepted."
    )
    dpop: DPoPSettings = Field(default_factory=DPoPSettings)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return ExternalIssuer._asymmetric_only(value)


class IdentityJWTSettings(Section):
    """An optional short-lived JWT, signed by authgate, that tells the upstream who called."""

    enabled: bool = Field(False, description="Send the identity JWT upstream.")
    header: str = Field("X-Authgate-Identity", pattern=HEADER_NAME_PATTERN, description="Header.")
    audience: str = Field("upstream", min_length=1, description="`aud` of the identity JWT.")
    ttl_seconds: int = Field(60, ge=5, le=3600, description="Lifetime of the identity JWT.")


class IdentitySettings(Section):
    """Names of the identity headers set for the upstream (a client's copy, in any spelling,
    is removed by the sidecar and refused by the forward-auth doors)."""

    subject_header: str = Field(
        "X-Authgate-Subject", pattern=HEADER_NAME_PATTERN, description="Who is calling."
    )
    credential_header: str = Field(
        "X-Authgate-Credential",
        pattern=HEADER_NAME_PATTERN,
        description="Credential type: jwt, bpc, hmac or anonymous.",
    )
    scopes_header: str = Field(
        "X-Authgate-Scopes", pattern=HEADER_NAME_PATTERN, description="Space-separated scopes."
    )
    credential_id_header: str = Field(
        "X-Authgate-Credential-Id",
        pattern=HEADER_NAME_PATTERN,
        description="Token id (jti), pair id or API key id.",
    )
    issuer_header: str = Field(
        "X-Authgate-Issuer", pattern=HEADER_NAME_PATTERN, description="Token issuer (JWT)."
    )
    strip_prefixes: tuple[str, ...] = Field(
        ("X-Authgate-",),
        description="Client headers under these prefixes, in any spelling (matched word by "
        "word: `X.Authgate.Role` is under `X-Authgate-`), are identity headers too: removed "
        "by the sidecar, refused (400 forged_identity_header) by the forward-auth doors.",
    )
    identity_jwt: IdentityJWTSettings = Field(default_factory=IdentityJWTSettings)

    def header_names(self) -> tuple[str, ...]:
        """Every identity header authgate itself sets."""
        return (
            self.subject_header,
            self.credential_header,
            self.scopes_header,
            self.credential_id_header,
            self.issuer_header,
            self.identity_jwt.header,
        )


class RateLimit(Section):
    """One GCRA limit: ``limit`` requests per ``period_seconds`` (bursts up to ``limit``)."""

    by: Literal["client", "credential"] = Field(
        ..., description="client: per client address; credential: per key, pair or subject."
    )
    limit: int = Field(..., ge=1, le=1_000_000, description="Requests per period.")
    period_seconds: float = Field(..., ge=0.001, le=86_400, description="The period.")


class ResourceSettings(Section):
    """The protected resource a rule guards (RFC 9728 metadata, RFC 8707 audience)."""

    identifier: str = Field(
        ...,
        pattern=RESOURCE_URL_PATTERN,
        description="Resource identifier URL (no query, no fragment): the `resource` of the "
        "metadata, the `resource` a client asks /token for, and the `aud` a token must carry "
        "on this rule.",
    )
    authorization_servers: tuple[str, ...] = Field(
        (),
        description="Issuer URLs of the authorization servers. Empty: authgate's own "
        "(`jwt.issuer`).",
    )
    scopes_supported: tuple[str, ...] | None = Field(
        None, description="Scopes the metadata lists. Null: the rule's `scopes`."
    )
    resource_name: str | None = Field(
        None, max_length=200, description="Human-readable name in the metadata."
    )


class Rule(Section):
    """One route rule; the first rule that matches decides."""

    id: str = Field(
        ..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Stable id (logs, metrics)."
    )
    hosts: tuple[str, ...] = Field(
        (), description="Host names (`*.example.com` allowed); empty matches any."
    )
    path_prefix: str | None = Field(
        None, description="Segment-aware prefix: `/api` matches `/api` and `/api/x`, not `/apix`."
    )
    path_glob: str | None = Field(
        None, description="Glob: `*` within a segment, `**` across segments."
    )
    methods: tuple[str, ...] = Field(
        (), description="Upper-case HTTP methods (GET, POST, ...); empty matches any."
    )
    credentials: tuple[CredentialType, ...] = Field(
        (CredentialType.JWT, CredentialType.BPC, CredentialType.HMAC),
        description="Credential types accepted.",
    )
    scopes: tuple[str, ...] = Field((), description="Scopes the principal must all hold.")
    anonymous: bool = Field(False, description="Allow requests that carry no credential.")
    upstream: str | None = Field(
        None, pattern=r"^https?://[^/?#]+/?$", description="Upstream origin for this route."
    )
    allow_unsigned_query: bool = Field(
        False,
        description="BPC: accept a signed path without the request's query (the query is "
        "then unauthenticated).",
    )
    allow_unverified_body: bool = Field(
        False,
        description="BPC in forward-auth without the body (nginx): accept a non-empty signed "
        "body hash unchecked.",
    )
    hmac_bind_body: bool = Field(
        False, description="HMAC proofs on this route must also cover the body hash."
    )
    rate_limits: tuple[RateLimit, ...] = Field(
        (), description="Limits applied on this route (all must admit the request)."
    )
    dpop: Literal["required", "allowed", "off"] = Field(
        "allowed",
        description="DPoP (RFC 9449) on this route: required (a bearer token is refused, "
        "401 dpop_required), allowed (DPoP-bound tokens need their proof; plain bearer tokens "
        "pass) or off (the DPoP scheme is refused, 401 dpop_not_allowed).",
    )
    resource: ResourceSettings | None = Field(
        None,
        description="The protected resource this rule guards: serves its RFC 9728 metadata, "
        "names it in every 401 challenge, and requires JWTs to carry its identifier in `aud`.",
    )

    @model_validator(mode="after")
    def _one_path_matcher(self) -> Rule:
        problems: list[tuple[str, str]] = []
        if self.path_prefix is not None and self.path_glob is not None:
            problems.append(("", "give path_prefix or path_glob, not both"))
        for name in ("path_prefix", "path_glob"):
            p = getattr(self, name)
            if p is not None and not p.startswith("/"):
                problems.append((name, f"path must start with '/': {p!r}"))
        for i, m in enumerate(self.methods):
            if m != m.upper() or not m.isalpha():
                problems.append(
                    (
                        f"methods[{i}]",
                        f"method must be upper-case letters: {m!r}; write {m.upper()!r}",
                    )
                )
            elif m not in HTTP_METHODS:
                hint = (
                    suggestion(m, HTTP_METHODS)
                    or "; use GET, HEAD, POST, PUT, DELETE, PATCH or OPTIONS"
                )
                problems.append((f"methods[{i}]", f"unknown HTTP method {m!r}{hint}"))
        if CredentialType.ANONYMOUS in self.credentials:
            problems.append(
                ("credentials", "use anonymous: true rather than credential type 'anonymous'")
            )
        if self.dpop == "required" and CredentialType.JWT not in self.credentials:
            problems.append(("dpop", "dpop: required needs credential type 'jwt' on the rule"))
        _raise(problems)
        return self

    def literal_path(self) -> str | None:
        """The part of the rule's path with no wildcard: ``/api`` for ``/api/**`` or
        ``path_prefix: /api``; ``None`` without a path matcher."""
        if self.path_prefix is not None:
            return self.path_prefix
        if self.path_glob is None:
            return None
        literal = []
        for segment in self.path_glob.split("/")[1:]:
            if any(c in segment for c in "*?["):
                break
            literal.append(segment)
        return "/" + "/".join(literal)


def duplicate_rule_ids(rules: Sequence[Any]) -> list[tuple[str, str]]:
    """``("[i].id", message)`` for each rule whose id an earlier rule already has; works on
    :class:`Rule` objects and on the raw mappings of a config file alike."""
    problems = []
    first: dict[str, int] = {}
    for i, rule in enumerate(rules):
        rule_id = rule.get("id") if isinstance(rule, dict) else getattr(rule, "id", None)
        if not isinstance(rule_id, str):
            continue
        if rule_id in first:
            problems.append(
                (
                    f"[{i}].id",
                    f"rule id {rule_id!r} is already used by policy.rules[{first[rule_id]}]; "
                    "give each rule its own id",
                )
            )
        else:
            first[rule_id] = i
    return problems


def _default_rules() -> tuple[Rule, ...]:
    return (Rule(id="authenticated", path_prefix="/"),)


class PolicySettings(Section):
    """Route rules."""

    rules: tuple[Rule, ...] = Field(
        default_factory=_default_rules,
        description="Ordered rules. Default: one rule requiring any valid credential.",
    )
    default_action: Literal["deny", "authenticate"] = Field(
        "deny", description="When no rule matches: deny (403), or require any valid credential."
    )

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        _raise(duplicate_rule_ids(rules))
        return rules


# Identity headers of other authenticating proxies (oauth2-proxy, Authelia, Apache, ...).
FOREIGN_IDENTITY_HEADERS = (
    "Remote-User",
    "Remote-Email",
    "Remote-Groups",
    "Remote-Name",
    "X-Remote-User",
    "X-Remote-Email",
    "X-Remote-Groups",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Groups",
    "X-Forwarded-Access-Token",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Preferred-Username",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Access-Token",
    "X-WebAuth-User",
)


class ProxySettings(Section):
    """Sidecar reverse proxy."""

    upstream: str | None = Field(
        None,
        pattern=r"^https?://[^/?#]+/?$",
        description="Default upstream origin; unset disables the proxy (forward-auth only).",
    )
    connect_timeout_seconds: float = Field(5, gt=0, le=300, description="Upstream connect timeout.")
    read_timeout_seconds: float = Field(
        60, gt=0, le=3600, description="Longest wait for upstream bytes."
    )
    pool_size: int = Field(100, ge=1, le=10_000, description="Pooled upstream connections.")
    preserve_host: bool = Field(True, description="Send the client's Host upstream.")
    websockets: bool = Field(True, description="Pass WebSocket upgrades after authentication.")
    foreign_identity_headers: tuple[Annotated[str, Field(pattern=HEADER_NAME_PATTERN)], ...] = (
        Field(
            FOREIGN_IDENTITY_HEADERS,
            description="Other gateways' identity headers, removed from every proxied request "
            "in any spelling (case, `_` or other punctuation for `-`), so an app that also "
            "sits behind oauth2-proxy, Authelia or Apache never believes a client's copy.",
        )
    )


class SecretsSettings(Section):
    """Key material that protects secrets at rest."""

    key_encryption_key: SecretStr | None = Field(
        None,
        description="Base64 of 32 random bytes (`openssl rand -base64 32`); seals BPC pair "
        "secrets and generated signing keys. Unset: a random key per process (development).",
    )
    previous_key_encryption_keys: tuple[SecretStr, ...] = Field(
        (), description="Older KEKs, still accepted for opening (KEK rotation)."
    )

    @field_validator("key_encryption_key", "previous_key_encryption_keys")
    @classmethod
    def _kek_shape(cls, value: SecretStr | tuple[SecretStr, ...] | None) -> object:
        from authgate.crypto.envelope import parse_kek

        items = value if isinstance(value, tuple) else (value,) if value is not None else ()
        for item in items:
            parse_kek(item.get_secret_value())
        return value


class BPCSettings(Section):
    """BPC signed requests and the pair lifecycle."""

    enabled: bool = Field(True, description="Verify X-BPC-* requests and serve /bpc/*.")
    window_ms: int = Field(60_000, ge=1_000, le=600_000, description="Timestamp window (+/-).")
    lockout_threshold: int = Field(
        10, ge=1, le=1000, description="Wrong-secret requests (valid device key) before lock-out."
    )
    lockout_window_seconds: int = Field(
        3600,
        ge=60,
        le=31_536_000,
        description="Wrong-secret requests count toward lock-out only within this window "
        "(older ones are forgotten), so occasional mistakes never add up to a lock-out.",
    )
    registration: Literal["open", "operator_token", "disabled"] = Field(
        "open",
        description="Who may call POST /bpc/register: anyone, holders of the operator token, "
        "or nobody.",
    )
    operator_token: SecretStr | None = Field(
        None,
        description="Bearer token for operator actions (approve, revoke any pair, "
        "registration when required). Unset: those actions are CLI-only.",
    )
    auto_approve_development_pairs: bool | None = Field(
        None,
        description="Approve pairs registered with mode development at once. Null: only "
        "while authgate itself runs in development mode.",
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=0,
        le=268_435_456,
        description="Largest body buffered to check a BPC body hash (413 beyond).",
    )
    pair_cache_size: int = Field(
        10_000, ge=0, le=1_000_000, description="Pairs cached per replica."
    )
    pair_cache_ttl_seconds: float = Field(
        60, gt=0, le=3600, description="Longest a cached pair is trusted without a refetch."
    )
    audit_cap: int = Field(200, ge=1, le=100_000, description="Audit entries kept per pair.")
    failures_per_minute: int = Field(
        60,
        ge=1,
        le=100_000,
        description="Failed BPC requests allowed per client address per minute (then 429).",
    )
    registrations_per_hour: int = Field(
        30,
        ge=1,
        le=100_000,
        description="POST /bpc/register calls allowed per client address per hour.",
    )
    approval_ttl_seconds: int = Field(
        86_400, ge=60, le=2_592_000, description="How long a pending pair waits for approval."
    )

    @model_validator(mode="after")
    def _token_for_operator_registration(self) -> BPCSettings:
        if self.registration == "operator_token" and self.operator_token is None:
            raise ValueError("bpc.registration operator_token needs bpc.operator_token")
        return self


class HMACSettings(Section):
    """HMAC challenge proofs with API keys."""

    enabled: bool = Field(True, description="Verify AGProof requests and serve GET /challenge.")
    challenge_secret: SecretStr | None = Field(
        None,
        description="Signs challenges; every replica must share it (at least 32 characters). "
        "Unset: random per process, so replicas reject each other's challenges.",
    )
    previous_challenge_secrets: tuple[SecretStr, ...] = Field(
        (), description="Older secrets still accepted (rotation)."
    )
    ttl_seconds: int = Field(60, ge=5, le=3600, description="How long a challenge is valid.")
    clock_skew_seconds: int = Field(
        5, ge=0, le=300, description="How far in the future an issue_ts may be."
    )
    prefix: str = Field(
        "authgate", pattern=r"^[a-z0-9-]{1,32}$", description="Domain-separation prefix."
    )

    @field_validator("challenge_secret", "previous_challenge_secrets")
    @classmethod
    def _long_enough(cls, value: SecretStr | tuple[SecretStr, ...] | None) -> object:
        items = value if isinstance(value, tuple) else (value,) if value is not None else ()
        for item in items:
            if len(item.get_secret_value()) < 32:
                raise ValueError("challenge secrets must be at least 32 characters")
        return value


# The role every pico wallet sign-in token carries; no privileged role may equal it.
WALLET_ROLE = "user"


class TokenExchangePolicy(Section):
    """Who may exchange tokens at ``/token`` (RFC 8693), and for which audiences."""

    client_id: str = Field(
        ..., min_length=1, description="The API key id of the client allowed to exchange."
    )
    audiences: tuple[str, ...] = Field(
        ...,
        min_length=1,
        description="Audiences (`jwt.audiences` values or resource identifiers) it may "
        "exchange for.",
    )
    subject_issuers: tuple[str, ...] = Field(
        (),
        description="Issuers whose subject tokens it may exchange. Empty: authgate's own "
        "(`jwt.issuer`) only; an external issuer must also be in `jwt.external_issuers`.",
    )


class TokenSettings(Section):
    """The token service: issuance, refresh, revocation, keys."""

    enabled: bool = Field(True, description="Serve /token, /revoke, /introspect and discovery.")
    algorithm: Literal["ES256", "RS256", "EdDSA"] = Field(
        "ES256", description="Algorithm of generated signing keys (RS256 for pico clients)."
    )
    access_ttl_seconds: int = Field(900, ge=30, le=86_400, description="Access token lifetime.")
    refresh_ttl_seconds: int = Field(
        2_592_000, ge=300, le=31_536_000, description="Refresh token (family) lifetime."
    )
    bpc_exchange_ttl_seconds: int = Field(
        300, ge=30, le=3600, description="Lifetime of tokens minted by the BPC exchange grant."
    )
    max_mint_ttl_seconds: int = Field(
        31_536_000, ge=60, le=315_360_000, description="Longest token `authgate token mint` makes."
    )
    password_grant: bool = Field(
        False, description="Allow grant_type=password (operator bootstrap against users)."
    )
    certificate_binding: Literal["off", "requested", "always"] = Field(
        "requested",
        description="Certificate-bound access tokens at /token (RFC 8705 §3), from the client "
        "certificate a trusted proxy forwards (`Client-Cert` or `X-Forwarded-Client-Cert`): "
        "`requested` binds when the client sends `tls_client_certificate_bound_access_tokens="
        "true`, `always` binds whenever a certificate is presented, `off` never binds.",
    )
    password_attempts_per_minute: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Password logins (/token and pico /login together) per client address.",
    )
    admin_scope: str = Field(
        "authgate:admin", min_length=1, description="Scope that opens /admin/ and operator actions."
    )
    introspect_scope: str = Field(
        "authgate:introspect", min_length=1, description="Scope a client needs to introspect."
    )
    rotation_interval_days: float = Field(
        0, ge=0, le=3650, description="Rotate store-managed signing keys this often (0: never)."
    )
    key_publish_lead_seconds: int = Field(
        600,
        ge=0,
        le=604_800,
        description="A next key is published at least this long before it may sign "
        "(longer than verifiers' JWKS cache).",
    )
    mint_audit_min_ttl_seconds: int = Field(
        300, ge=0, le=31_536_000, description="Tokens living at least this long are audited."
    )
    mint_audit_cap: int = Field(1000, ge=1, le=1_000_000, description="Mint audit entries kept.")
    operator_audit_cap: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Operator audit entries kept (every change made through the admin API, "
        "the CLI or the console).",
    )
    admin_prefix: str = Field(
        "/admin",
        pattern=r"^/[A-Za-z0-9_.~-]+(?:/[A-Za-z0-9_.~-]+)*$",
        description="Path prefix of the admin API (needs the admin scope); move it when a "
        "sidecar's app owns /admin.",
    )
    admin_api: bool = Field(True, description="Serve the admin API.")
    pico_enabled: bool = Field(True, description="Serve the pico-compatible /api/v1/auth/ surface.")
    pico_operator_role: str = Field("operator", description="Role of password-login tokens.")
    pico_service_role: str = Field("service", description="Role allowed to read revoked-jtis.")
    pico_wallet_algorithms: tuple[Literal["Ed25519", "secp256k1", "ML-DSA-65"], ...] = Field(
        ("Ed25519", "secp256k1", "ML-DSA-65"), description="Wallet sign-in algorithms."
    )
    pico_fleet_secret: SecretStr | None = Field(
        None,
        description="Shared secret a fleet runtime sends in X-Fleet-Secret to mint session "
        "tokens at POST /api/v1/auth/fleet/sessions (at least 32 characters). Unset: that "
        "endpoint answers 404.",
    )
    pico_fleet_ttl_seconds: int = Field(
        86_400, ge=60, le=31_536_000, description="Fleet session token lifetime when none is asked."
    )
    pico_fleet_max_ttl_seconds: int = Field(
        86_400,
        ge=60,
        le=31_536_000,
        description="Longest fleet session token; a longer ttl asked for is shortened to it "
        "(at most tokens.max_mint_ttl_seconds).",
    )
    pico_fleet_roles: tuple[str, ...] = Field(
        ("agent",),
        min_length=1,
        description="Roles a fleet session token may carry; the first is the default. Never "
        "the operator, service or wallet role.",
    )
    pico_fleet_scopes: tuple[str, ...] = Field(
        (),
        description="Scopes a fleet session token may carry (none by default; never the "
        "admin or introspect scope).",
    )
    exchange: tuple[TokenExchangePolicy, ...] = Field(
        (),
        description="Token exchange (RFC 8693) at /token: the clients allowed, each with its "
        "audiences. Empty: the grant is refused (unauthorized_client).",
    )

    @field_validator("pico_fleet_secret")
    @classmethod
    def _fleet_secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("tokens.pico_fleet_secret must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def _fleet_tokens_are_unprivileged(self) -> TokenSettings:
        if self.pico_fleet_ttl_seconds > self.pico_fleet_max_ttl_seconds:
            raise ValueError("tokens.pico_fleet_ttl_seconds exceeds pico_fleet_max_ttl_seconds")
        if self.pico_fleet_max_ttl_seconds > self.max_mint_ttl_seconds:
            raise ValueError("tokens.pico_fleet_max_ttl_seconds exceeds max_mint_ttl_seconds")
        privileged = {self.pico_operator_role, self.pico_service_role, WALLET_ROLE}
        if privileged & set(self.pico_fleet_roles):
            raise ValueError(
                "tokens.pico_fleet_roles must not hold the operator, service or wallet role"
            )
        for value in (*self.pico_fleet_roles, *self.pico_fleet_scopes):
            if not value or not value.isascii() or not value.isprintable() or " " in value:
                raise ValueError("fleet roles and scopes are visible ASCII without spaces")
        if {self.admin_scope, self.introspect_scope} & set(self.pico_fleet_scopes):
            raise ValueError("tokens.pico_fleet_scopes must not hold the admin or introspect scope")
        return self

    @model_validator(mode="after")
    def _privileged_roles_are_not_the_wallet_role(self) -> TokenSettings:
        for name in ("pico_operator_role", "pico_service_role"):
            if getattr(self, name) == WALLET_ROLE:
                raise ValueError(
                    f"tokens.{name} must not be {WALLET_ROLE!r}: every wallet token carries it"
                )
        return self


class ConsoleSettings(Section):
    """The operator console: web pages under ``tokens.admin_prefix`` + ``/console/``."""

    enabled: bool = Field(
        False,
        description="Serve the operator console at <tokens.admin_prefix>/console/ (on "
        "server.ops_port when set: recommended in sidecar mode). Operators sign in with a "
        "password user holding tokens.admin_scope or with a token carrying it.",
    )
    session_ttl_seconds: int = Field(
        3600,
        ge=60,
        le=86_400,
        description="Console session lifetime (a signed cookie; never longer than the token "
        "an operator signed in with).",
    )
    recent_decisions: int = Field(
        500,
        ge=10,
        le=100_000,
        description="Decisions kept in memory (per process) for the console's decision view.",
    )


class LoggingSettings(Section):
    """Structured logs."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level (any case: debug is DEBUG)."
    )
    format: Literal["json", "text"] = Field("json", description="json (one object a line) or text.")
    access_log: bool = Field(
        True,
        description=(
            "One JSON line per decision (level INFO), written in batches off the request path; "
            "flushed on shutdown, drops counted in authgate_access_log_dropped_total."
        ),
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class TracingSettings(Section):
    """OpenTelemetry tracing (the ``otel`` extra; see docs/observability.md)."""

    enabled: bool = Field(
        False,
        description=(
            "A span per decision, child spans for store calls and JWKS fetches, W3C "
            "traceparent from trusted proxies and to the upstream. Needs the otel extra "
            "(pip install 'authgate[otel]'); off, opentelemetry is never imported."
        ),
    )
    service_name: str = Field(
        "authgate",
        min_length=1,
        max_length=128,
        description="The service.name resource attribute (others from OTEL_RESOURCE_ATTRIBUTES).",
    )
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of new traces sampled (0 to 1); a trusted proxy's sampled flag is followed."
        ),
    )
    exporter: Literal["otlp", "console"] = Field(
        "otlp",
        description=(
            "otlp: OTLP over HTTP (in the otel extra), endpoint and headers from the standard "
            "OTEL_EXPORTER_OTLP_* variables; console: spans printed to stdout (debugging)."
        ),
    )

    @model_validator(mode="after")
    def _extra_installed(self) -> TracingSettings:
        # Looked up only when on: off, nothing so much as searches for opentelemetry.
        if self.enabled:
            needed = [("enabled", "opentelemetry.sdk.trace")]
            if self.exporter == "otlp":
                needed.append(("exporter", "opentelemetry.exporter.otlp.proto.http.trace_exporter"))
            _raise(
                [
                    (
                        key,
                        f"needs the otel extra ({module} is not installed): "
                        "pip install 'authgate[otel]'",
                    )
                    for key, module in needed
                    if not _importable(module)
                ]
            )
        return self


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported (its parent packages are imported to find it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


# "Authorization: " and the scheme with slack (web/context.py AUTHORIZATION_OVERHEAD is 32).
AUTHORIZATION_LINE_OVERHEAD = 64


class Settings(Section):
    """The whole configuration."""

    development: bool = Field(
        False,
        description="Development mode: ephemeral keys allowed silently, development pairs "
        "auto-approved, a warning at start. Default: true only with no config file and no "
        "AUTHGATE_* variable.",
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    stores: StoreSettings = Field(default_factory=StoreSettings)
    jwt: JWTSettings = Field(default_factory=JWTSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    bpc: BPCSettings = Field(default_factory=BPCSettings)
    hmac: HMACSettings = Field(default_factory=HMACSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @model_validator(mode="after")
    def _own_tokens_fit_their_lifetime(self) -> Settings:
        limit = self.jwt.max_token_lifetime_seconds
        issued = max(self.tokens.access_ttl_seconds, self.tokens.bpc_exchange_ttl_seconds)
        if limit is not None and limit < issued:
            raise ValueError(
                f"jwt.max_token_lifetime_seconds ({limit}) is below the lifetime of tokens "
                f"authgate issues itself (tokens.access_ttl_seconds, bpc_exchange_ttl_seconds: "
                f"{issued}); they would be refused"
            )
        return self

    @model_validator(mode="after")
    def _header_cap_holds_the_largest_token(self) -> Settings:
        # The Authorization line: its name, ": ", the scheme and spaces (web/context.py's
        # AUTHORIZATION_OVERHEAD), then the token.
        needed = self.jwt.max_token_bytes + AUTHORIZATION_LINE_OVERHEAD
        if self.server.max_header_bytes < needed:
            raise ValueError(
                f"server.max_header_bytes ({self.server.max_header_bytes}) must be at least "
                f"jwt.max_token_bytes + {AUTHORIZATION_LINE_OVERHEAD} ({needed}), or a token "
                "jwt.max_token_bytes allows is refused by the HTTP parser before authgate "
                "reads it"
            )
        return self

    @model_validator(mode="after")
    def _replay_needs_shared_store(self) -> Settings:
        if self.server.workers > 1 and self.stores.backend == "memory":
            raise ValueError(
                "server.workers > 1 needs stores.backend: redis "
                "(in-memory replay protection cannot span processes)"
            )
        _raise(self._rules_under_the_admin_api())
        return self

    @model_validator(mode="after")
    def _exchange_audiences_are_served(self) -> Settings:
        """Each ``tokens.exchange`` audience must be one authgate issues tokens for, and each
        subject issuer one whose tokens it verifies (else the entry could never be used)."""
        served = set(self.jwt.audiences) | {
            r.resource.identifier for r in self.policy.rules if r.resource is not None
        }
        issuers = {self.jwt.issuer} | {i.issuer for i in self.jwt.external_issuers}
        problems = []
        for i, entry in enumerate(self.tokens.exchange):
            for j, audience in enumerate(entry.audiences):
                if audience not in served:
                    problems.append(
                        (
                            f"tokens.exchange[{i}].audiences[{j}]",
                            f"{audience!r} is neither in jwt.audiences nor the identifier of "
                            "a policy rule's resource",
                        )
                    )
            for j, issuer in enumerate(entry.subject_issuers):
                if issuer not in issuers:
                    problems.append(
                        (
                            f"tokens.exchange[{i}].subject_issuers[{j}]",
                            f"{issuer!r} is neither jwt.issuer nor in jwt.external_issuers",
                        )
                    )
        _raise(problems)
        return self

    def _rules_under_the_admin_api(self) -> list[tuple[str, str]]:
        """Proxied rules whose path lies under ``tokens.admin_prefix`` while the admin API is
        on: authgate answers the admin API's paths itself instead of proxying them, so an
        app's rule there is a mistake. (A forward-auth rule there is fine: it guards the
        app's own path, on the app's host, not authgate's.)"""
        if not self.tokens.admin_api or self.server.ops_port is not None:
            return []  # no admin API on the traffic port: its paths are the app's
        prefix = self.tokens.admin_prefix
        problems = []
        for i, rule in enumerate(self.policy.rules):
            if not (rule.upstream or self.proxy.upstream):
                continue  # forward-auth only: authgate never answers the app's paths
            path = rule.literal_path()
            if path is None or not (path == prefix or path.startswith(prefix + "/")):
                continue
            name = "path_prefix" if rule.path_prefix is not None else "path_glob"
            problems.append(
                (
                    f"policy.rules[{i}].{name}",
                    f"{getattr(rule, name)!r} is under tokens.admin_prefix {prefix!r}, whose "
                    "paths authgate's admin API answers itself instead of proxying them; move "
                    "the rule to another path, "
                    "or move the admin API (tokens.admin_prefix) or turn it off "
                    "(tokens.admin_api: false)",
                )
            )
        return problems
