"""Reloading a running application's configuration (``web/reload.py``): what a reload
changes, what it refuses (and how it says so), and requests in flight across one."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from authgate.config.live import config_hash
from authgate.crypto.keys import KeyRing
from authgate.preflight import load_checked_settings
from authgate.stores.memory import MemoryStores
from authgate.web.app import create_app
from authgate.web.reload import ConfigReloader, Outcome, ReloadSource
from authgate.web.state import RELOADER, SERVICES
from tests.support import AUDIENCE, ISSUER, TokenFactory, serve_app, wait_for

EXTERNAL_ISSUER = "https://idp.test"
KEK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
OTHER_KEK = "HxwdHhscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA="
OPEN = {"id": "open", "path_prefix": "/open", "anonymous": True}
API = {"id": "api", "path_prefix": "/api"}
BASE: dict[str, Any] = {
    "jwt": {"issuer": ISSUER, "audiences": [AUDIENCE]},
    "policy": {"rules": [OPEN, API]},
    "secrets": {"key_encryption_key": KEK},
}


def config(changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`BASE` with ``changes`` set at their dotted keys."""
    tree = copy.deepcopy(BASE)
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = value
    return tree


@dataclass
class Running:
    """An application built from a config file, and a client of it."""

    path: Path
    client: TestClient[web.Request, web.Application]

    @property
    def reloader(self) -> ConfigReloader:
        return self.client.app[RELOADER]

    def write(self, tree: Mapping[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(dict(tree)))

    async def reload(self, tree: Mapping[str, Any]) -> Outcome:
        self.write(tree)
        return (await self.reloader.reload("test")).outcome

    async def auth(
        self, uri: str, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> ClientResponse:
        """``/auth`` (the nginx door) for ``GET uri``."""
        sent = {"X-Original-URI": uri, "X-Original-Method": "GET", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return await self.client.get("/auth", headers=sent)

    async def status(self, uri: str, token: str | None = None) -> int:
        return (await self.auth(uri, token)).status


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


@contextlib.asynccontextmanager
async def start(
    tmp_path: Path, tokens: TokenFactory, tree: Mapping[str, Any]
) -> AsyncIterator[Running]:
    path = tmp_path / "authgate.yaml"
    path.write_text(yaml.safe_dump(dict(tree)))
    path.chmod(0o600)
    settings = load_checked_settings(path)
    app = create_app(
        settings,
        stores=MemoryStores(),
        key_ring=KeyRing([tokens.key]),
        reload_source=ReloadSource(str(path), sighup=False),
    )
    async with TestClient(TestServer(app)) as client:
        yield Running(path, client)


@pytest.fixture
async def running(tmp_path: Path, tokens: TokenFactory) -> AsyncIterator[Running]:
    async with start(tmp_path, tokens, BASE) as r:
        yield r


# --- what a reload applies --------------------------------------------------------------


async def test_a_reload_swaps_the_policy_and_the_next_request_sees_the_new_rule(
    running: Running, tokens: TokenFactory
) -> None:
    """/open is anonymous; after a reload that makes it need the admin scope, it refuses."""
    assert await running.status("/open/x") == 200
    closed = {"id": "open", "path_prefix": "/open", "scopes": ["admin"]}
    assert await running.reload(config({"policy.rules": [closed, API]})) is Outcome.APPLIED
    assert await running.status("/open/x") == 401
    assert await running.status("/open/x", tokens.mint(scope="read")) == 403
    assert await running.status("/open/x", tokens.mint(scope="admin")) == 200
    assert running.reloader.generation == 2


async def test_a_reload_changes_rate_limits(running: Running) -> None:
    """A rule's rate limit added by a reload applies to the next requests."""
    limited = {**OPEN, "rate_limits": [{"by": "client", "limit": 2, "period_seconds": 60}]}
    assert await running.reload(config({"policy.rules": [limited, API]})) is Outcome.APPLIED
    assert [await running.status("/open/x") for _ in range(3)] == [200, 200, 429]


async def test_a_reload_changes_the_identity_headers(
    running: Running, tokens: TokenFactory
) -> None:
    """A renamed subject header is set on the next answer, and a client's copy of the new
    name is refused as forged (the doors check the new names)."""
    token = tokens.mint(sub="alice")
    assert (await running.auth("/api/x", token)).headers["X-Authgate-Subject"] == "alice"
    new = config({"identity.subject_header": "X-User", "identity.strip_prefixes": ["X-Authgate-"]})
    assert await running.reload(new) is Outcome.APPLIED
    resp = await running.auth("/api/x", token)
    assert resp.headers["X-User"] == "alice"
    assert "X-Authgate-Subject" not in resp.headers
    forged = await running.auth("/api/x", token, {"X_User": "mallory"})
    assert (forged.status, (await forged.json())["error"]["code"]) == (
        400,
        "forged_identity_header",
    )


@dataclass
class Idp:
    """An external issuer: its tokens, its JWKS URL, ``answer`` (its JWKS requests wait
    until it is set; set at first) and ``asked`` (set once a JWKS request arrived)."""

    tokens: TokenFactory
    url: str
    answer: asyncio.Event
    asked: asyncio.Event


@pytest.fixture
async def idp() -> AsyncIterator[Idp]:
    tokens = TokenFactory(issuer=EXTERNAL_ISSUER)
    answer, asked = asyncio.Event(), asyncio.Event()
    answer.set()

    async def jwks(request: web.Request) -> web.Response:
        asked.set()
        await answer.wait()
        return web.json_response({"keys": [tokens.key.public_jwk()]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    async with serve_app(app) as port:
        yield Idp(tokens, f"http://127.0.0.1:{port}/jwks", answer, asked)


def issuer(url: str) -> dict[str, Any]:
    return {"issuer": EXTERNAL_ISSUER, "jwks_url": url, "audiences": [AUDIENCE]}


async def test_an_external_issuer_is_added_and_removed_by_reloads(
    running: Running, idp: Idp
) -> None:
    """Its tokens are refused, then accepted once a reload adds it, then refused again once
    a reload removes it."""
    external, url = idp.tokens, idp.url
    token = external.mint()
    assert await running.status("/api/x", token) == 401
    assert await running.reload(config({"jwt.external_issuers": [issuer(url)]})) is Outcome.APPLIED
    resp = await running.auth("/api/x", token)
    assert (resp.status, resp.headers["X-Authgate-Issuer"]) == (200, EXTERNAL_ISSUER)
    assert await running.reload(config()) is Outcome.APPLIED
    resp = await running.auth("/api/x", token)
    assert (resp.status, (await resp.json())["error"]["code"]) == (401, "token_issuer_invalid")


async def test_a_request_in_flight_during_a_reload_completes_under_the_settings_it_began_with(
    tmp_path: Path, tokens: TokenFactory, idp: Idp
) -> None:
    """A request waiting in the gate (on its issuer's JWKS) while a reload removes that
    issuer and closes its route still completes, with 200; the next one is refused."""
    external, url, answer = idp.tokens, idp.url, idp.answer
    async with start(tmp_path, tokens, config({"jwt.external_issuers": [issuer(url)]})) as r:
        answer.clear()
        in_flight = asyncio.ensure_future(r.auth("/api/x", external.mint(sub="early")))
        await asyncio.wait_for(idp.asked.wait(), 10)  # it waits on the JWKS fetch now
        assert not in_flight.done()
        closed = {"id": "api", "path_prefix": "/api", "scopes": ["admin"]}
        assert await r.reload(config({"policy.rules": [OPEN, closed]})) is Outcome.APPLIED
        answer.set()
        resp = await in_flight
        assert (resp.status, resp.headers["X-Authgate-Subject"]) == (200, "early")
        assert await r.status("/api/x", external.mint()) == 401
        assert await r.status("/api/x", tokens.mint(scope="read")) == 403


async def test_requests_keep_being_answered_while_reloads_run(
    running: Running, tokens: TokenFactory
) -> None:
    """Concurrent requests on a steady route all get 200 across ten applied reloads."""
    token = tokens.mint()
    statuses: list[int] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            statuses.append(await running.status("/api/x", token))

    clients = [asyncio.ensure_future(client()) for _ in range(4)]
    for i in range(10):
        rule = {"id": "open", "path_prefix": f"/open{i}", "anonymous": True}
        assert await running.reload(config({"policy.rules": [rule, API]})) is Outcome.APPLIED
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*clients)
    assert len(statuses) > 10
    assert set(statuses) == {200}
    assert running.reloader.generation == 11


# --- what a reload refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "key", "secret"),
    [
        ({"policy.rules": [{**OPEN, "methods": ["GETT"]}, API]}, "policy.rules[0].methods[0]", ""),
        ({"policy.rules": [OPEN, OPEN]}, "policy.rules[1].id", ""),
        ({"policy.nonsense": True}, "policy.nonsense", ""),
        (
            {"stores.redis.url": "http://user:hunter2-secret@redis.test:6379/0"},
            "stores.redis.url",
            "hunter2-secret",
        ),
        ({"secrets.key_encryption_key": "not-base64-sup3rsecret"}, "secrets", "sup3rsecret"),
    ],
    ids=["unknown-method", "duplicate-rule-id", "unknown-key", "redis-url", "malformed-kek"],
)
async def test_an_invalid_config_is_refused_logged_by_key_and_the_old_one_stays(
    running: Running,
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, Any],
    key: str,
    secret: str,
) -> None:
    """The reload is refused, the log names the failing key (and never the secret), and
    requests are still decided by the running config."""
    caplog.set_level(logging.INFO, logger="authgate")
    before = running.reloader.hash
    assert await running.reload(config(changes)) is Outcome.REFUSED
    refused = [r for r in caplog.records if getattr(r, "event", "") == "config_reload_refused"]
    assert len(refused) == 1
    assert key in refused[0].getMessage()
    assert any(k.startswith(key) for k in refused[0].__dict__["keys"])
    if secret:
        assert secret not in caplog.text
    assert (running.reloader.generation, running.reloader.hash) == (1, before)
    assert await running.status("/open/x") == 200


@pytest.mark.parametrize(
    ("changes", "keys"),
    [
        ({"server.port": 9999}, ["server.port"]),
        (
            {"server.host": "0.0.0.0", "server.request_id_header": "X-Trace"},
            ["server.host", "server.request_id_header"],
        ),
        ({"stores.backend": "redis"}, ["stores.backend"]),
        ({"secrets.key_encryption_key": OTHER_KEK}, ["secrets.key_encryption_key"]),
        ({"tokens.access_ttl_seconds": 600}, ["tokens.access_ttl_seconds"]),
        ({"jwt.issuer": "https://elsewhere.test"}, ["jwt.issuer"]),
        ({"logging.level": "DEBUG"}, ["logging.level"]),
        (
            {"policy.rules": [{**OPEN, "upstream": "http://127.0.0.1:9"}, API]},
            ["policy.rules"],
        ),
    ],
    ids=[
        "listen-port",
        "listen-host-and-request-id",
        "store-backend",
        "kek",
        "token-lifetime",
        "own-issuer",
        "log-level",
        "proxy-turned-on",
    ],
)
async def test_a_key_that_cannot_change_live_is_refused_naming_it(
    running: Running, caplog: pytest.LogCaptureFixture, changes: dict[str, Any], keys: list[str]
) -> None:
    """A reload changing a key outside the live set is refused whole, the log names every
    such key (no value: a KEK is a secret), and nothing of it applies."""
    caplog.set_level(logging.INFO, logger="authgate")
    closed = {"id": "open", "path_prefix": "/open", "scopes": ["admin"]}
    tree = config({"policy.rules": [closed, API], **changes})
    assert await running.reload(tree) is Outcome.REFUSED
    (refused,) = [r for r in caplog.records if getattr(r, "event", "") == "config_reload_refused"]
    assert refused.__dict__["keys"] == keys
    assert OTHER_KEK not in caplog.text
    assert await running.status("/open/x") == 200  # the live part was not applied either
    assert running.reloader.generation == 1


async def test_an_unchanged_config_changes_nothing(running: Running) -> None:
    """Reloading the same settings keeps the generation and hash."""
    before = running.reloader.hash
    assert await running.reload(config()) is Outcome.UNCHANGED
    assert (running.reloader.generation, running.reloader.hash) == (1, before)


# --- what operators see -------------------------------------------------------------------


def _metric(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


async def test_generation_and_hash_are_in_metrics_and_readyz(running: Running) -> None:
    """/metrics has the generation, one info series with the hash in force, and the reload
    outcomes; /readyz shows the same generation and hash."""
    first = running.reloader.hash
    assert first == config_hash(running.reloader.settings)
    assert (
        await running.reload(config({"policy.default_action": "authenticate"})) is Outcome.APPLIED
    )
    assert await running.reload(config({"server.port": 1})) is Outcome.REFUSED
    second = running.reloader.hash
    assert second != first and re.fullmatch(r"[0-9a-f]{16}", second)
    text = await (await running.client.get("/metrics")).text()
    assert _metric(text, "authgate_config_generation ") == ["authgate_config_generation 2.0"]
    assert _metric(text, "authgate_config_info{") == [
        f'authgate_config_info{{hash="{second}"}} 1.0'
    ]
    assert 'authgate_config_reloads_total{outcome="applied"} 1.0' in text
    assert 'authgate_config_reloads_total{outcome="refused"} 1.0' in text
    ready = await (await running.client.get("/readyz")).json()
    assert ready["config"] == {"generation": 2, "hash": second}


async def test_a_watched_config_file_reloads_on_change(
    tmp_path: Path, tokens: TokenFactory
) -> None:
    """With server.config_watch_interval_seconds, rewriting the file applies it (no
    signal), and a broken rewrite is refused once while the running config stays."""
    watched = config({"server.config_watch_interval_seconds": 0.05})
    async with start(tmp_path, tokens, watched) as r:
        closed = {"id": "open", "path_prefix": "/open", "scopes": ["admin"]}
        r.write({**watched, "policy": {"rules": [closed, API]}})
        await wait_for(lambda: r.reloader.generation == 2, timeout=5)
        assert await r.status("/open/x") == 401
        r.write({**watched, "policy": {"rules": "not a list"}})
        refused = r.client.app[SERVICES].metrics.config_reloads.labels("refused")
        await wait_for(lambda: refused.value == 1, timeout=5)
        await asyncio.sleep(0.2)  # unchanged content: not read again
        assert (refused.value, r.reloader.generation) == (1, 2)
        assert await r.status("/open/x") == 401


async def test_without_a_watch_setting_the_file_is_not_polled(running: Running) -> None:
    """The watch is off by default: a rewritten file changes nothing until a reload."""
    running.write(config({"policy.rules": [API]}))
    await asyncio.sleep(0.3)
    assert running.reloader.generation == 1
    assert await running.status("/open/x") == 200


async def test_an_unexpected_failure_is_logged_and_the_next_reload_works(
    running: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that fails unexpectedly (here: building the new gate) is logged by its
    error type, the old config stays in force, and the next reload applies."""
    services = running.client.app[SERVICES]

    def broken(settings: object) -> None:
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger="authgate")
    closed = {"id": "open", "path_prefix": "/open", "scopes": ["admin"]}
    running.write(config({"policy.rules": [closed, API]}))
    with monkeypatch.context() as patch:
        patch.setattr(services, "apply", broken)
        await running.reloader._reload_logged("SIGHUP")
    (failed,) = [r for r in caplog.records if getattr(r, "event", "") == "config_reload_failed"]
    assert failed.__dict__["error"] == "RuntimeError"
    assert (running.reloader.generation, await running.status("/open/x")) == (1, 200)
    assert (await running.reloader.reload("SIGHUP")).outcome is Outcome.APPLIED
    assert await running.status("/open/x") == 401
