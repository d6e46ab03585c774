"""authgate as a sidecar reverse proxy (``proxy.upstream``), in its own process, in front of
a recording echo upstream: what reaches the upstream, what never does, streaming, WebSockets
and upstream failures.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import (
    BAD_CREDENTIALS,
    IDENTITY_HEADERS,
    Authgate,
    Signing,
    Upstream,
    authgate_config,
    bearer,
    redis_stores_config,
    revoke,
    running,
)
from tests.support import ISSUER, TokenFactory, free_port, get, raw_request

pytestmark = pytest.mark.redis

# The sidecar faces clients directly: no peer is a trusted proxy.
UNTRUSTED_ONLY = {"trusted_proxies": ["192.0.2.0/24"]}
UPLOAD_BYTES = 50 * 1024 * 1024
UPLOAD_CHUNK = 256 * 1024
MAX_RSS_GROWTH = 30 * 1024 * 1024


@pytest.fixture(scope="module")
def sidecar(
    signing: Signing,
    redis_url: str,
    key_prefix: str,
    upstream_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Authgate]:
    """authgate proxying to the echo upstream, on the shared Redis."""
    config = authgate_config(
        signing,
        server=UNTRUSTED_ONLY,
        stores=redis_stores_config(redis_url, key_prefix),
        proxy={"upstream": f"http://127.0.0.1:{upstream_server.port}"},
    )
    with running(config, tmp_path_factory.mktemp("sidecar")) as proc:
        yield proc


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        ("/api/items", "/api/items"),
        ("/api/%61bc?x=%2F", "/api/abc?x=%2F"),
        ("/api/a%2db%5Fc", "/api/a-b_c"),
        ("/api/caf%c3%a9", "/api/caf%C3%A9"),
        ("/api/x?next=%2e%2e%2fadmin&a=1&a=2", "/api/x?next=%2e%2e%2fadmin&a=1&a=2"),
        ("/api/dir/", "/api/dir/"),
    ],
    ids=["plain", "unreserved-decoded", "dash-underscore", "utf8-upper-hex", "query-raw", "slash"],
)
def test_valid_token_reaches_upstream_with_canonical_target(
    sidecar: Authgate, upstream: Upstream, signing: Signing, sent: str, received: str
) -> None:
    """The upstream gets the canonical path, the query as sent, and authgate's identity."""
    jti = "jti-sidecar-1"
    status, _, body = get(sidecar.port, sent, bearer(signing.tokens.mint(sub="alice", jti=jti)))
    assert status == 200, body
    (seen,) = upstream.seen
    assert seen.target == received
    assert seen.header("X-Authgate-Subject") == ["alice"]
    assert seen.header("X-Authgate-Credential") == ["jwt"]
    assert seen.header("X-Authgate-Scopes") == ["read write"]
    assert seen.header("X-Authgate-Credential-Id") == [jti]
    assert seen.header("X-Authgate-Issuer") == [ISSUER]


def test_client_identity_headers_are_stripped(
    sidecar: Authgate, upstream: Upstream, signing: Signing
) -> None:
    """Every client header under X-Authgate- (or an underscore alias) is removed."""
    forged = {
        "X-Authgate-Subject": "admin",
        "x-authgate-scopes": "admin",
        "X-AUTHGATE-CREDENTIAL": "bpc",
        "X-Authgate-Credential-Id": "forged-id",
        "X-Authgate-Issuer": "https://evil.test",
        "X-Authgate-Identity": "forged.identity.jwt",
        "X-Authgate-Role": "superuser",
        "X_Authgate_Subject": "admin",
        "x-authgate_scopes": "admin",
        "X_AUTHGATE_ROLE": "superuser",
    }
    status, _, _ = get(sidecar.port, "/api/items", {**forged, **bearer(signing.tokens.mint())})
    assert status == 200
    (seen,) = upstream.seen
    assert seen.header("X-Authgate-Subject") == ["user-1"]
    assert seen.header("X-Authgate-Scopes") == ["read write"]
    assert seen.header("X-Authgate-Credential") == ["jwt"]
    assert seen.header("X-Authgate-Issuer") == [ISSUER]
    assert seen.header("X-Authgate-Identity") == []
    assert seen.header("X-Authgate-Role") == []
    # CGI-style upstreams read `_` as `-`: underscore aliases are identity headers too.
    assert [k for k, _ in seen.headers if "_" in k] == []
    assert "forged-id" not in seen.header("X-Authgate-Credential-Id")


def test_client_identity_headers_are_stripped_on_an_anonymous_route(
    sidecar: Authgate, upstream: Upstream
) -> None:
    """Without a credential on an anonymous route, forged identity still never passes."""
    forged = dict.fromkeys(IDENTITY_HEADERS, "forged")
    status, _, _ = get(sidecar.port, "/public/page", forged)
    assert status == 200
    (seen,) = upstream.seen
    assert seen.header("X-Authgate-Credential") == ["anonymous"]
    for name in IDENTITY_HEADERS:
        if name != "X-Authgate-Credential":
            assert seen.header(name) == [], name


def test_hop_by_hop_headers_are_stripped(
    sidecar: Authgate, upstream: Upstream, signing: Signing
) -> None:
    """Hop-by-hop headers, and headers the client's Connection names, stay on the first hop."""
    headers = {
        **bearer(signing.tokens.mint()),
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic c2VjcmV0OnNlY3JldA==",
        "Proxy-Connection": "keep-alive",
        "X-Hop-Secret": "only-for-the-first-hop",
        "X-End-To-End": "kept",
    }
    raw = "\r\n".join(
        [
            "GET /api/items HTTP/1.1",
            "Host: app.test",
            "Connection: close, X-Hop-Secret",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
    )
    status, _, _ = raw_request(sidecar.port, (raw + "\r\n\r\n").encode())
    assert status == 200
    (seen,) = upstream.seen
    for name in ("Keep-Alive", "TE", "Proxy-Authorization", "Proxy-Connection", "X-Hop-Secret"):
        assert seen.header(name) == [], name
    assert "X-Hop-Secret" not in ",".join(seen.header("Connection"))
    assert seen.header("X-End-To-End") == ["kept"]


def test_forwarded_headers_are_set_and_client_copies_dropped(
    sidecar: Authgate, upstream: Upstream, signing: Signing
) -> None:
    """From an untrusted peer, X-Forwarded-* are authgate's own, never the client's."""
    headers = {
        **bearer(signing.tokens.mint()),
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Host": "evil.test",
        "X-Forwarded-Proto": "https",
        "X-Real-Ip": "203.0.113.7",
        "Forwarded": "for=203.0.113.7",
    }
    status, _, _ = get(sidecar.port, "/api/items", headers)
    assert status == 200
    (seen,) = upstream.seen
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header("X-Forwarded-Host") == ["app.test"]
    assert seen.header("X-Forwarded-Proto") == ["http"]
    assert seen.header("X-Real-Ip") == ["127.0.0.1"]  # authgate's, the address it decided with
    assert seen.header("Forwarded") == []
    assert seen.header("Host") == ["app.test"]


def test_forwarded_for_from_a_trusted_proxy_is_extended(
    signing: Signing, upstream: Upstream, tmp_path: Path
) -> None:
    """Behind a trusted proxy, the client's X-Forwarded-* are kept and the peer is appended."""
    config = authgate_config(signing, proxy={"upstream": f"http://127.0.0.1:{upstream.port}"})
    headers = {
        **bearer(signing.tokens.mint()),
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "public.example",
    }
    with running(config, tmp_path) as gate:
        status, _, _ = get(gate.port, "/api/items", headers)
    assert status == 200
    (seen,) = upstream.seen
    assert seen.header("X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert seen.header("X-Real-Ip") == ["203.0.113.7"]
    assert seen.header("X-Forwarded-Proto") == ["https"]
    assert seen.header("X-Forwarded-Host") == ["public.example"]


@pytest.mark.parametrize(
    "credential", [c for _, c in BAD_CREDENTIALS], ids=[i for i, _ in BAD_CREDENTIALS]
)
def test_bad_credentials_get_401_and_never_reach_upstream(
    sidecar: Authgate,
    upstream: Upstream,
    signing: Signing,
    credential: Callable[[TokenFactory], dict[str, str]],
) -> None:
    """Each bad or missing credential is a 401 with a JSON reason; the upstream sees nothing."""
    status, headers, body = get(sidecar.port, "/api/items", credential(signing.tokens))
    assert status == 401
    assert headers["www-authenticate"].startswith('Bearer realm="authgate"')
    assert json.loads(body)["error"]["code"].startswith(("token_", "credential_"))
    assert upstream.seen == []


def test_revoked_token_gets_401(
    sidecar: Authgate, upstream: Upstream, signing: Signing, redis_url: str, key_prefix: str
) -> None:
    """Revoking a token in Redis refuses it at once, though it was verified and cached."""
    claims = signing.tokens.claims()
    token = signing.tokens.key.sign(claims)
    assert get(sidecar.port, "/api/items", bearer(token))[0] == 200
    revoke(redis_url, key_prefix, claims["jti"], expires_at_ms=claims["exp"] * 1000)
    status, _, body = get(sidecar.port, "/api/items", bearer(token))
    assert status == 401
    assert json.loads(body)["error"]["code"] == "token_revoked"
    assert len(upstream.seen) == 1


@pytest.mark.parametrize(
    "target",
    [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/api/a%2fb",
        "/api//x",
        "/api/a;b",
        "/api/%00",
        "/api/%0a",
        "/public/%0d%0a",
        "/api/\x01",
    ],
    ids=[
        "dot-dot",
        "encoded-dot-dot",
        "encoded-slash",
        "empty-segment",
        "semicolon",
        "nul",
        "encoded-lf",
        "encoded-crlf",
        "raw-control",
    ],
)
def test_ambiguous_targets_get_400(
    sidecar: Authgate, upstream: Upstream, signing: Signing, target: str
) -> None:
    """Targets two parsers could read differently are refused, never normalised."""
    status, _, body = get(sidecar.port, target, bearer(signing.tokens.mint(scope="admin")))
    assert status == 400
    assert json.loads(body)["error"]["code"] == "invalid_target"
    assert upstream.seen == []


# --- streaming --------------------------------------------------------------------------


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            out[name] = int(value.split()[0]) * 1024
    return out


def _reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture
def fresh_sidecar(
    signing: Signing, upstream_server: Upstream, tmp_path: Path
) -> Iterator[Authgate]:
    """A sidecar of its own (memory stores), so memory readings are this test's alone."""
    config = authgate_config(
        signing, proxy={"upstream": f"http://127.0.0.1:{upstream_server.port}"}
    )
    with running(config, tmp_path) as proc:
        yield proc


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_streamed_upload_keeps_gateway_memory_flat(
    fresh_sidecar: Authgate, upstream: Upstream, signing: Signing, framing: str
) -> None:
    """A 50 MB upload arrives intact while the gateway's RSS grows by far less than 50 MB."""
    digest = hashlib.sha256()

    async def body(size: int) -> AsyncIterator[bytes]:
        block = 0
        sent = 0
        while sent < size:
            chunk = hashlib.sha256(block.to_bytes(8, "big")).digest() * (UPLOAD_CHUNK // 32)
            chunk = chunk[: size - sent]
            digest.update(chunk)
            sent += len(chunk)
            block += 1
            yield chunk

    url = f"{fresh_sidecar.url}/api/upload"
    headers = bearer(signing.tokens.mint())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        # Warm up the code paths (imports, pools) with a small upload first.
        async with session.post(url, data=body(UPLOAD_CHUNK * 4), headers=headers) as resp:
            assert resp.status == 200
        digest = hashlib.sha256()
        before = _memory(fresh_sidecar.pid)
        _reset_peak(fresh_sidecar.pid)
        sized = {"Content-Length": str(UPLOAD_BYTES)} if framing == "content-length" else {}
        async with session.post(url, data=body(UPLOAD_BYTES), headers={**headers, **sized}) as resp:
            assert resp.status == 200, await resp.text()
            echoed = await resp.json()
    after = _memory(fresh_sidecar.pid)
    assert echoed["body_size"] == UPLOAD_BYTES
    assert echoed["body_sha256"] == digest.hexdigest()
    (seen,) = [s for s in upstream.seen if s.target == "/api/upload"][1:]
    if framing == "content-length":
        assert seen.header("Content-Length") == [str(UPLOAD_BYTES)]
    else:
        assert seen.header("Transfer-Encoding") == ["chunked"]
    peak_growth = after["VmHWM"] - before["VmRSS"]
    print(  # reported with -s; the numbers go in the change description
        f"\n[{framing}] VmRSS before {before['VmRSS'] / 2**20:.1f} MiB, after "
        f"{after['VmRSS'] / 2**20:.1f} MiB, peak growth {peak_growth / 2**20:.1f} MiB"
    )
    assert peak_growth < MAX_RSS_GROWTH


# --- WebSockets -------------------------------------------------------------------------


async def test_websocket_echo_through_the_proxy(
    sidecar: Authgate, upstream: Upstream, signing: Signing
) -> None:
    """A WebSocket with a valid token is proxied both ways, text and binary."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(
            f"{sidecar.url}/ws", headers=bearer(signing.tokens.mint(sub="ws-user"))
        ) as ws,
    ):
        await ws.send_str("hello")
        assert (await ws.receive_str(timeout=5)) == "echo:hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert (await ws.receive_bytes(timeout=5)) == b"\x00\x01binary"
    (seen,) = upstream.requests_to("/ws")
    assert seen.header("X-Authgate-Subject") == ["ws-user"]


async def test_websocket_without_token_is_never_upgraded(
    sidecar: Authgate, upstream: Upstream
) -> None:
    """A WebSocket upgrade without a token gets 401 and never reaches the upstream."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(f"{sidecar.url}/ws")
    assert caught.value.status == 401
    assert upstream.seen == []


# --- upstream failures ------------------------------------------------------------------


def test_upstream_down_is_502(signing: Signing, tmp_path: Path) -> None:
    """Nothing listening upstream: 502 with ``upstream_unreachable``."""
    config = authgate_config(signing, proxy={"upstream": f"http://127.0.0.1:{free_port()}"})
    with running(config, tmp_path) as gate:
        status, headers, body = get(gate.port, "/api/items", bearer(signing.tokens.mint()))
    assert status == 502
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "upstream_unreachable"


def test_slow_upstream_is_504(signing: Signing, upstream: Upstream, tmp_path: Path) -> None:
    """An upstream slower than ``proxy.read_timeout_seconds``: 504 with ``upstream_timeout``."""
    config = authgate_config(
        signing,
        proxy={"upstream": f"http://127.0.0.1:{upstream.port}", "read_timeout_seconds": 0.5},
    )
    with running(config, tmp_path) as gate:
        status, _, body = get(gate.port, "/slow?s=2", bearer(signing.tokens.mint()))
    assert status == 504
    assert json.loads(body)["error"]["code"] == "upstream_timeout"
    assert len(upstream.requests_to("/slow")) == 1
