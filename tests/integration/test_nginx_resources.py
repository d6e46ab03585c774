"""Protected resources through real nginx (examples/nginx/nginx.conf.template): the
metadata route, the 401 challenge that names it, and the 403 insufficient_scope challenge."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.conftest import (
    Authgate,
    NginxProcess,
    Signing,
    Upstream,
    authgate_config,
    bearer,
    running,
    running_nginx,
)
from tests.support import get

pytestmark = [pytest.mark.nginx]

MCP = "https://app.test/mcp"
METADATA = "https://app.test/.well-known/oauth-protected-resource/mcp"
RULES = [
    {"id": "mcp", "path_prefix": "/mcp", "scopes": ["mcp:tools"], "resource": {"identifier": MCP}}
]


@pytest.fixture(scope="module")
def authgate(signing: Signing, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authgate]:
    """authgate in forward-auth mode with one protected resource (memory stores)."""
    config = authgate_config(signing, policy={"rules": RULES})
    with running(config, tmp_path_factory.mktemp("authgate")) as proc:
        yield proc


@pytest.fixture(scope="module")
def nginx(
    nginx_binary: str, authgate: Authgate, upstream_server: Upstream
) -> Iterator[NginxProcess]:
    """nginx from the example template."""
    with running_nginx(
        nginx_binary, authgate_port=authgate.port, upstream_port=upstream_server.port
    ) as proc:
        yield proc


def test_the_metadata_is_served_on_the_apps_origin(nginx: NginxProcess, upstream: Upstream) -> None:
    """GET /.well-known/oauth-protected-resource/mcp through nginx is authgate's document."""
    status, _, body = get(nginx.port, "/.well-known/oauth-protected-resource/mcp")
    assert status == 200
    assert json.loads(body)["resource"] == MCP
    assert upstream.seen == []


def test_a_401_names_the_metadata_through_nginx(nginx: NginxProcess, upstream: Upstream) -> None:
    """No token: nginx passes authgate's challenge with resource_metadata."""
    status, headers, _ = get(nginx.port, "/mcp/x")
    assert status == 401
    assert f'resource_metadata="{METADATA}"' in headers["www-authenticate"]
    assert upstream.seen == []


def test_a_403_carries_the_insufficient_scope_challenge(
    nginx: NginxProcess, upstream: Upstream, signing: Signing
) -> None:
    """A token for the resource without its scope: 403 with error="insufficient_scope"."""
    token = signing.tokens.mint(aud=MCP, scope="other")
    status, headers, _ = get(nginx.port, "/mcp/x", bearer(token))
    assert status == 403
    assert 'error="insufficient_scope"' in headers["www-authenticate"]
    assert 'scope="mcp:tools"' in headers["www-authenticate"]
    assert upstream.seen == []


def test_a_token_for_the_resource_reaches_the_app(
    nginx: NginxProcess, upstream: Upstream, signing: Signing
) -> None:
    """aud names the resource and the scope is held: the request reaches the upstream."""
    status, _, _ = get(
        nginx.port, "/mcp/x", bearer(signing.tokens.mint(aud=MCP, scope="mcp:tools"))
    )
    assert status == 200
    assert len(upstream.seen) == 1
