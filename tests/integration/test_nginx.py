"""Through real nginx (examples/nginx/nginx.conf.template) -> authgate ``/auth`` -> echo upstream.

authgate runs as ``python -m authgate serve`` on Redis stores; the upstream records every
request it receives, so "never reached the upstream" is asserted, not assumed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from authgate.client.dpop import DPoPKey
from tests.integration.conftest import (
    BAD_CREDENTIALS,
    IDENTITY_HEADERS,
    Authgate,
    NginxProcess,
    RedisServer,
    Signing,
    Upstream,
    authgate_config,
    bearer,
    redis_stores_config,
    revoke,
    running,
    running_nginx,
)
from tests.support import (
    ISSUER,
    TokenFactory,
    alias_spellings,
    free_port,
    get,
    raw_request,
)

pytestmark = [pytest.mark.nginx, pytest.mark.redis]

AMBIGUOUS_TARGETS = [
    "/public/../admin/users",
    "/public/%2e%2e/admin/users",
    "/public/..%2Fadmin/users",
    "/public//admin",
    "/public/./page",
]
AMBIGUOUS_IDS = ["dot-dot", "encoded-dot-dot", "encoded-slash", "empty-segment", "dot"]


@pytest.fixture(scope="module")
def authgate(
    signing: Signing,
    redis_url: str,
    key_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Authgate]:
    """authgate in forward-auth mode (no proxy upstream) on the shared Redis."""
    config = authgate_config(signing, stores=redis_stores_config(redis_url, key_prefix))
    with running(config, tmp_path_factory.mktemp("authgate")) as proc:
        yield proc


@pytest.fixture(scope="module")
def nginx(
    nginx_binary: str, authgate: Authgate, upstream_server: Upstream
) -> Iterator[NginxProcess]:
    """nginx from the example template in front of authgate and the echo upstream."""
    with running_nginx(
        nginx_binary, authgate_port=authgate.port, upstream_port=upstream_server.port
    ) as proc:
        yield proc


def test_valid_token_reaches_upstream_with_identity_headers(
    nginx: NginxProcess, upstream: Upstream, signing: Signing
) -> None:
    """A valid token is let through and the upstream receives authgate's identity headers."""
    jti = "jti-valid-1"
    status, _, body = get(
        nginx.port, "/api/items?x=1", bearer(signing.tokens.mint(sub="alice", jti=jti))
    )
    assert status == 200, body
    assert json.loads(body)["target"] == "/api/items?x=1"
    (seen,) = upstream.seen
    assert seen.header("X-Authgate-Subject") == ["alice"]
    assert seen.header("X-Authgate-Credential") == ["jwt"]
    assert seen.header("X-Authgate-Scopes") == ["read write"]
    assert seen.header("X-Authgate-Credential-Id") == [jti]
    assert seen.header("X-Authgate-Issuer") == [ISSUER]
    assert seen.header("X-Authgate-Identity") == []
    assert len(seen.header("X-Request-Id")) == 1


@pytest.mark.parametrize("anonymous", [False, True], ids=["valid-token", "anonymous-route"])
@pytest.mark.parametrize("forged", [*IDENTITY_HEADERS, "X-Authgate-Role"])
def test_client_identity_headers_are_refused(
    nginx: NginxProcess, upstream: Upstream, signing: Signing, forged: str, anonymous: bool
) -> None:
    """A client's ``X-Authgate-*`` reaches authgate with the subrequest and is refused (400,
    which the template relays): nginx cannot remove headers by prefix, authgate can refuse."""
    headers = {forged: "admin"}
    if not anonymous:
        headers.update(bearer(signing.tokens.mint(sub="bob")))
    status, _, body = get(nginx.port, "/public/page" if anonymous else "/api/items", headers)
    assert status == 400, body
    assert upstream.seen == []


@pytest.mark.parametrize("anonymous", [False, True], ids=["valid-token", "anonymous-route"])
def test_alias_spellings_of_identity_headers_never_reach_the_upstream(
    nginx: NginxProcess, upstream: Upstream, signing: Signing, anonymous: bool
) -> None:
    """``X_Authgate_Subject``, ``X.Authgate.Subject``, ... are dropped by nginx itself
    (``ignore_invalid_headers``, ``underscores_in_headers off``): the app sees authgate's."""
    for name in IDENTITY_HEADERS:
        upstream.reset()
        headers = dict.fromkeys(alias_spellings(name), "forged")
        if not anonymous:
            headers.update(bearer(signing.tokens.mint(sub="bob")))
        status, _, body = get(nginx.port, "/public/page" if anonymous else "/api/items", headers)
        assert status == 200, body
        (seen,) = upstream.seen
        assert [(k, v) for k, v in seen.headers if v == "forged"] == [], name
        assert seen.header("X-Authgate-Credential") == ["anonymous" if anonymous else "jwt"]


@pytest.mark.parametrize(
    "credential", [c for _, c in BAD_CREDENTIALS], ids=[i for i, _ in BAD_CREDENTIALS]
)
def test_bad_credentials_get_401_and_never_reach_upstream(
    nginx: NginxProcess,
    upstream: Upstream,
    signing: Signing,
    credential: Callable[[TokenFactory], dict[str, str]],
) -> None:
    """Each bad or missing credential is a 401 with authgate's challenge; the upstream sees nothing."""
    status, headers, _ = get(nginx.port, "/api/items", credential(signing.tokens))
    assert status == 401
    assert headers["www-authenticate"].startswith('Bearer realm="authgate"')
    assert upstream.seen == []


def test_revoked_token_gets_401_even_after_it_was_cached(
    nginx: NginxProcess, upstream: Upstream, signing: Signing, redis_url: str, key_prefix: str
) -> None:
    """A token revoked in Redis is refused at once, though authgate had verified and cached it."""
    claims = signing.tokens.claims()
    token = signing.tokens.key.sign(claims)
    assert get(nginx.port, "/api/items", bearer(token))[0] == 200
    revoke(redis_url, key_prefix, claims["jti"], expires_at_ms=claims["exp"] * 1000)
    status, headers, _ = get(nginx.port, "/api/items", bearer(token))
    assert status == 401
    assert "revoked" in headers["www-authenticate"]
    assert len(upstream.seen) == 1


def test_missing_scope_gets_403(nginx: NginxProcess, upstream: Upstream, signing: Signing) -> None:
    """A valid token without the route's scope is a 403 from nginx."""
    status, _, _ = get(nginx.port, "/admin/users", bearer(signing.tokens.mint(scope="read")))
    assert status == 403
    assert upstream.seen == []


@pytest.mark.parametrize("target", AMBIGUOUS_TARGETS, ids=AMBIGUOUS_IDS)
def test_ambiguous_targets_get_400(
    nginx: NginxProcess, upstream: Upstream, signing: Signing, target: str
) -> None:
    """Targets nginx would normalise are refused by authgate (400), even with a valid token."""
    status, headers, body = get(nginx.port, target, bearer(signing.tokens.mint(scope="admin")))
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert headers["cache-control"] == "no-store"
    assert upstream.seen == []


@pytest.mark.parametrize("target", AMBIGUOUS_TARGETS, ids=AMBIGUOUS_IDS)
def test_nginx_sends_the_raw_target_to_authgate_and_upstream(
    nginx_binary: str, upstream: Upstream, target: str
) -> None:
    """nginx sends authgate the raw target, the very bytes the upstream would get."""
    # The auth subrequest goes to the recording upstream (which allows everything), so both
    # requests nginx makes can be inspected.
    with running_nginx(
        nginx_binary, authgate_port=upstream.port, upstream_port=upstream.port
    ) as proxy:
        status, _, _ = get(proxy.port, target)
    assert status == 200
    auth, forwarded = upstream.seen
    assert auth.target == "/auth"
    assert auth.header("X-Original-URI") == [target]
    assert auth.header("X-Original-Method") == ["GET"]
    assert auth.header("X-Forwarded-Host") == ["app.test"]
    assert auth.header("Content-Length") == []
    assert forwarded.target == target


def test_post_body_is_not_sent_to_authgate(nginx_binary: str, upstream: Upstream) -> None:
    """auth_request cannot forward bodies: the subrequest carries none, the upstream gets it."""
    with running_nginx(
        nginx_binary, authgate_port=upstream.port, upstream_port=upstream.port
    ) as proxy:
        status, _, body = raw_request(
            proxy.port,
            b"POST /api/items HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n"
            b"Content-Length: 5\r\n\r\nhello",
        )
    assert status == 200
    auth, forwarded = upstream.seen
    assert auth.header("X-Original-Method") == ["POST"]
    assert auth.header("Content-Length") == []
    assert forwarded.method == "POST"
    assert json.loads(body)["body_size"] == 5


def test_store_outage_is_503_through_nginx(
    nginx_binary: str,
    upstream: Upstream,
    signing: Signing,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """With Redis down authgate answers 503 and nginx passes a 503 on: fail closed."""
    config = authgate_config(signing, stores=redis_stores_config(redis_server.url, "it:"))
    token = signing.tokens.mint()
    with (
        running(config, tmp_path) as gate,
        running_nginx(nginx_binary, authgate_port=gate.port, upstream_port=upstream.port) as proxy,
    ):
        assert get(proxy.port, "/api/items", bearer(token))[0] == 200
        redis_server.terminate()
        status, headers, body = get(proxy.port, "/api/items", bearer(token))
    assert status == 503, body
    assert headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "dependency_unavailable"
    assert len(upstream.seen) == 1


def test_authgate_unreachable_is_503(
    nginx_binary: str, upstream: Upstream, signing: Signing
) -> None:
    """When nginx cannot reach authgate at all, the request is refused, not let through."""
    with running_nginx(
        nginx_binary, authgate_port=free_port(), upstream_port=upstream.port
    ) as proxy:
        status, _, _ = get(proxy.port, "/api/items", bearer(signing.tokens.mint()))
    assert status == 503
    assert upstream.seen == []


async def test_websocket_through_nginx(
    nginx: NginxProcess, upstream: Upstream, signing: Signing
) -> None:
    """A WebSocket upgrade with a valid token is authenticated, then passed through."""
    url = f"http://127.0.0.1:{nginx.port}/ws"
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(url, headers=bearer(signing.tokens.mint(sub="ws-user"))) as ws,
    ):
        await ws.send_str("hello")
        assert (await ws.receive_str(timeout=5)) == "echo:hello"
    (seen,) = upstream.requests_to("/ws")
    assert seen.header("X-Authgate-Subject") == ["ws-user"]


async def test_websocket_without_token_is_never_upgraded(
    nginx: NginxProcess, upstream: Upstream
) -> None:
    """A WebSocket upgrade without a token gets 401 and never reaches the upstream."""
    url = f"http://127.0.0.1:{nginx.port}/ws"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(url)
    assert caught.value.status == 401
    assert upstream.seen == []


def test_a_dpop_bound_token_with_its_proof_passes_once(
    nginx: NginxProcess, upstream: Upstream, signing: Signing
) -> None:
    """RFC 9449 through real nginx: the door rebuilds htu from X-Forwarded-Proto/Host and
    X-Original-URI (query dropped); the proof passes once, its replay never reaches the app."""
    key = DPoPKey.generate()
    token = signing.tokens.mint(sub="carol", cnf={"jkt": key.jkt})

    def send(proof: str) -> tuple[int, dict[str, str], bytes]:
        return get(nginx.port, "/api/items?x=1", {"Authorization": f"DPoP {token}", "DPoP": proof})

    for _ in range(3):  # a proof from the store epoch's own second is refused: retry
        proof = key.proof("GET", "http://app.test/api/items", access_token=token)
        status, headers, body = send(proof)
        if status == 200:
            break
        assert headers["www-authenticate"].startswith("DPoP "), body
        time.sleep(1.0)
    assert status == 200, body
    assert [seen.header("X-Authgate-Subject") for seen in upstream.seen][-1] == ["carol"]
    upstream.reset()
    status, headers, _ = send(proof)
    assert status == 401
    assert headers["www-authenticate"].startswith(
        'DPoP realm="authgate", error="invalid_dpop_proof"'
    )
    assert upstream.seen == []


def test_a_dpop_bound_token_presented_as_bearer_never_reaches_the_app(
    nginx: NginxProcess, upstream: Upstream, signing: Signing
) -> None:
    """A leaked bound token replayed as Bearer: 401 with a DPoP challenge, app untouched."""
    token = signing.tokens.mint(cnf={"jkt": DPoPKey.generate().jkt})
    status, headers, _ = get(nginx.port, "/api/items", bearer(token))
    assert status == 401
    assert headers["www-authenticate"].startswith("DPoP ")
    assert upstream.seen == []
