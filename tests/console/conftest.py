"""A real ``authgate serve`` with the console on, and what the console suites share.

The process runs on memory stores with a signing key file the tests also hold (so a test
can mint the admin token that creates the operator users), BPC pairs needing approval, and
one forward-auth rule (``/app``) that admits JWT and BPC credentials: ``/auth`` (nginx's
door) then shows whether a pair or a token is let through.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authgate.client.bpc import BPCSigner
from tests.support import AUDIENCE, ISSUER, AuthgateProcess, TokenFactory

OPERATOR = "ops-alice"
OPERATOR_PASSWORD = "correct horse battery staple"
VIEWER = "viewer-bob"
VIEWER_PASSWORD = "not an operator at all"
PAIR_SECRET = "pair-secret-for-console"
PREFIX = "/admin/console"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Reply:
    """An HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    json_body: Any = None,
) -> Reply:
    """One request with urllib, never following redirects."""
    data = body
    all_headers = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        all_headers["Content-Type"] = "application/json"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
    try:
        with opener.open(request, timeout=30) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


@dataclass
class Gate:
    """The running authgate and how to reach it."""

    process: AuthgateProcess
    tokens: TokenFactory

    @property
    def url(self) -> str:
        """Base URL."""
        return self.process.url

    @property
    def console(self) -> str:
        """The console's base URL."""
        return self.url + PREFIX

    def admin_token(self) -> str:
        """A token with the admin scope, signed with authgate's own key."""
        return self.tokens.mint(
            sub="test-admin", scope="authgate:admin", exp=int(time.time()) + 900
        )

    def auth(self, target: str, headers: dict[str, str]) -> Reply:
        """Ask nginx's door whether ``GET target`` may pass."""
        forwarded = {"X-Original-Method": "GET", "X-Original-URI": target, **headers}
        return http("GET", self.url + "/auth", headers=forwarded)

    def register_pair(self, name: str) -> tuple[BPCSigner, str, str]:
        """Register a production pair (pending): its signer, fingerprint and approval token."""
        key, jwk, fingerprint = BPCSigner.generate_key()
        reply = http(
            "POST",
            self.url + "/bpc/register",
            json_body={
                "name": name,
                "scope": "read",
                "mode": "production",
                "secret": PAIR_SECRET,
                "pubJwk": jwk,
            },
        )
        assert reply.status == 201, reply.body
        token = reply.json()["approvalToken"]
        return BPCSigner(token.partition(".")[0], PAIR_SECRET, key), fingerprint, token

    def signed_auth(self, signer: BPCSigner, target: str = "/app/items") -> Reply:
        """``/auth`` for a request the pair signed (signed anew if the store epoch was just
        written: a request signed before it is refused as timestamp_expired)."""
        reply = self.auth(target, signer.headers("GET", target))
        if reply.status == 401 and b"timestamp_expired" in reply.body:
            reply = self.auth(target, signer.headers("GET", target))
        return reply


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    """authgate with the console on, an operator user and a user who is not an operator."""
    directory: Path = tmp_path_factory.mktemp("console")
    tokens = TokenFactory()
    config = {
        "jwt": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "signing_key_files": [str(tokens.write_key(directory))],
        },
        "bpc": {"auto_approve_development_pairs": False},
        "policy": {"rules": [{"id": "app", "path_prefix": "/app", "credentials": ["jwt", "bpc"]}]},
        "console": {"enabled": True},
        # Every test signs in afresh from one address: keep the password budget out of the way.
        "tokens": {"password_attempts_per_minute": 1000},
        "logging": {"level": "INFO"},
    }
    process = AuthgateProcess(config, directory).start()
    running = Gate(process, tokens)
    try:
        bearer = {"Authorization": f"Bearer {running.admin_token()}"}
        for username, password, scopes in (
            (OPERATOR, OPERATOR_PASSWORD, ["authgate:admin"]),
            (VIEWER, VIEWER_PASSWORD, ["read"]),
        ):
            reply = http(
                "POST",
                running.url + "/admin/users",
                headers=bearer,
                json_body={"username": username, "password": password, "scopes": scopes},
            )
            assert reply.status == 201, reply.body
        yield running
    finally:
        process.stop()
