"""OpenTelemetry tracing through the real application: spans land in the SDK's in-memory
exporter; the doors, the sidecar (with a real upstream) and a real JWKS endpoint."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from authgate.crypto.keys import KeyRing, SigningKey
from authgate.errors import StoreUnavailable
from authgate.pipeline import Gate
from authgate.stores.memory import MemoryStores
from authgate.tracing import TracedGate
from authgate.web.app import create_app
from authgate.web.state import SERVICES
from tests.support import TokenFactory, echo_app, make_settings, serve_app

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACESTATE = "vendor=opaque"
EXTERNAL = "https://login.external.test"

Client = TestClient[web.Request, web.Application]


@dataclass
class Traced:
    """An authgate app under test and the spans it finished."""

    client: Client
    exporter: InMemorySpanExporter

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def one(self, name: str) -> ReadableSpan:
        spans = self.spans(name)
        assert len(spans) == 1, [s.name for s in self.exporter.get_finished_spans()]
        return spans[0]


def provider(ratio: float = 1.0) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


@contextlib.asynccontextmanager
async def traced_app(
    tokens: TokenFactory,
    *,
    enabled: bool = True,
    ratio: float = 1.0,
    trusted: tuple[str, ...] = ("127.0.0.1/32",),
    jwks_port: int | None = None,
    stores: MemoryStores | None = None,
) -> AsyncIterator[Traced]:
    """authgate with tracing (console exporter named, the in-memory provider injected), a
    real echo upstream behind the sidecar, rate limits on every rule (a store call)."""
    limit = [{"by": "client", "limit": 1000, "period_seconds": 60}]
    async with contextlib.AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(serve_app(echo_app()))
        jwt: dict[str, Any] = {}
        if jwks_port is not None:
            jwt["external_issuers"] = [
                {
                    "issuer": EXTERNAL,
                    "jwks_url": f"http://127.0.0.1:{jwks_port}/jwks",
                    "audiences": ["orders-api"],
                    "algorithms": ["ES256"],
                }
            ]
        settings = make_settings(
            server={"trusted_proxies": list(trusted)},
            jwt=jwt,
            tracing={"enabled": enabled, "exporter": "console", "sample_ratio": ratio},
            proxy={"upstream": f"http://127.0.0.1:{upstream}"},
            policy={
                "rules": [
                    {"id": "public", "path_prefix": "/public", "anonymous": True},
                    {"id": "api", "path_prefix": "/api", "rate_limits": limit},
                ]
            },
        )
        tracer_provider, exporter = provider(ratio)
        app = create_app(
            settings,
            stores=stores or MemoryStores(),
            key_ring=KeyRing([tokens.key]),
            tracer_provider=tracer_provider,
        )
        client = await stack.enter_async_context(TestClient(TestServer(app)))
        yield Traced(client, exporter)


def nginx(token: str | None, **extra: str) -> dict[str, str]:
    headers = {"X-Original-URI": "/api/items", "X-Original-Method": "GET", **extra}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def received(body: dict[str, Any], name: str) -> list[str]:
    """The values of header ``name`` the echo upstream received."""
    return [v for k, v in body["headers"] if k.lower() == name]


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


async def test_a_decision_is_one_span_with_rule_credential_outcome_reason(
    tokens: TokenFactory,
) -> None:
    """A granted forward-auth decision: one server span naming rule, credential, outcome."""
    async with traced_app(tokens) as t:
        resp = await t.client.get("/auth", headers=nginx(tokens.mint()))
        assert resp.status == 200
        span = t.one("authgate.decision")
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "authgate.request_id": resp.headers["X-Request-Id"],
        "authgate.outcome": "granted",
        "authgate.reason": "ok",
        "authgate.credential_type": "jwt",
        "authgate.rule_id": "api",
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_a_refusal_names_its_stable_reason(tokens: TokenFactory) -> None:
    """A denied decision carries outcome denied and the refusal's reason; not an error."""
    async with traced_app(tokens) as t:
        resp = await t.client.get("/auth", headers=nginx(None))
        assert resp.status == 401
        span = t.one("authgate.decision")
    assert span.attributes is not None
    assert span.attributes["authgate.outcome"] == "denied"
    assert span.attributes["authgate.reason"] == "credential_missing"
    assert span.attributes["authgate.rule_id"] == "api"
    assert span.status.status_code is StatusCode.UNSET


async def test_store_calls_are_child_spans_of_the_decision(tokens: TokenFactory) -> None:
    """The rule's rate limit is a store call: a client span under the decision span."""
    async with traced_app(tokens) as t:
        assert (await t.client.get("/auth", headers=nginx(tokens.mint()))).status == 200
        decision = t.one("authgate.decision")
        stores = [s for s in t.spans() if s.name.startswith("authgate.store ")]
    assert stores, "no store span"
    assert decision.context is not None
    for span in stores:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == decision.context.span_id
        assert span.context is not None
        assert span.context.trace_id == decision.context.trace_id
    names = {s.name for s in stores}
    assert "authgate.store rate_limits.hit_many" in names
    hit = next(s for s in stores if s.name == "authgate.store rate_limits.hit_many")
    assert hit.attributes is not None
    assert dict(hit.attributes) == {
        "authgate.store": "rate_limits",
        "authgate.store.operation": "hit_many",
        "authgate.store.backend": "memory",
    }


async def test_a_trusted_proxys_traceparent_is_the_parent(tokens: TokenFactory) -> None:
    """From a trusted proxy, the decision joins the proxy's trace, tracestate kept."""
    async with traced_app(tokens) as t:
        headers = nginx(tokens.mint(), traceparent=TRACEPARENT, tracestate=TRACESTATE)
        assert (await t.client.get("/auth", headers=headers)).status == 200
        span = t.one("authgate.decision")
    assert span.context is not None
    assert span.parent is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote
    assert span.context.trace_state.to_header() == TRACESTATE


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        f"{TRACEPARENT}, {TRACEPARENT}",  # two lines joined: refused by the propagator
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ],
    ids=["zero-trace", "zero-parent", "bad-version", "no-flags", "repeated", "version-ff"],
)
async def test_a_malformed_traceparent_starts_a_new_trace(
    tokens: TokenFactory, traceparent: str
) -> None:
    """A malformed traceparent, even from a trusted proxy, is ignored: a new root, no error."""
    async with traced_app(tokens) as t:
        headers = nginx(tokens.mint(), traceparent=traceparent)
        assert (await t.client.get("/auth", headers=headers)).status == 200
        span = t.one("authgate.decision")
    assert span.parent is None
    assert span.context is not None
    assert format(span.context.trace_id, "032x") != TRACE_ID


async def test_sidecar_passes_its_own_traceparent_to_the_upstream(tokens: TokenFactory) -> None:
    """Sidecar, trusted peer: the proxy span joins the trace, the decision is its child, and
    the upstream's traceparent names the proxy span (never the client's span id)."""
    async with traced_app(tokens) as t:
        resp = await t.client.get(
            "/api/items",
            headers={
                "Authorization": f"Bearer {tokens.mint()}",
                "traceparent": TRACEPARENT,
                "tracestate": TRACESTATE,
            },
        )
        assert resp.status == 200
        body = json.loads(await resp.text())
        proxy = t.one("authgate.proxy")
        decision = t.one("authgate.decision")
    assert proxy.context is not None
    assert decision.parent is not None
    assert decision.parent.span_id == proxy.context.span_id
    assert decision.kind is SpanKind.INTERNAL
    assert proxy.kind is SpanKind.SERVER
    assert proxy.parent is not None
    assert format(proxy.parent.span_id, "016x") == PARENT_ID
    assert proxy.attributes is not None
    assert proxy.attributes["http.response.status_code"] == 200
    sent = received(body, "traceparent")
    assert sent == [f"00-{TRACE_ID}-{proxy.context.span_id:016x}-01"]
    assert received(body, "tracestate") == [TRACESTATE]


async def test_untrusted_peers_traceparent_is_never_believed_nor_relayed(
    tokens: TokenFactory,
) -> None:
    """Sidecar, untrusted peer: a new trace starts; the upstream gets one traceparent,
    authgate's (the client sent two), and no client tracestate."""
    async with traced_app(tokens, trusted=("10.0.0.0/8",)) as t:
        resp = await t.client.get(
            "/api/items",
            headers=CIMultiDict(
                [
                    ("Authorization", f"Bearer {tokens.mint()}"),
                    ("traceparent", TRACEPARENT),
                    ("Traceparent", TRACEPARENT.replace("-01", "-00")),
                    ("tracestate", TRACESTATE),
                ]
            ),
        )
        assert resp.status == 200
        body = json.loads(await resp.text())
        proxy = t.one("authgate.proxy")
    assert proxy.parent is None
    assert proxy.context is not None
    assert format(proxy.context.trace_id, "032x") != TRACE_ID
    [sent] = received(body, "traceparent")
    # Flags: sampled, and (a new trace of this SDK) the W3C level 2 "random trace id" bit.
    assert sent == f"00-{proxy.context.trace_id:032x}-{proxy.context.span_id:016x}-03"
    assert received(body, "tracestate") == []


async def test_a_refused_proxied_request_is_recorded_with_its_status(
    tokens: TokenFactory,
) -> None:
    """A sidecar refusal: the proxy span carries the status, the decision the reason."""
    async with traced_app(tokens) as t:
        resp = await t.client.get("/api/items", headers={"Authorization": "Bearer x.y.z"})
        assert resp.status == 401
        proxy = t.one("authgate.proxy")
        decision = t.one("authgate.decision")
    assert proxy.attributes is not None
    assert proxy.attributes["http.response.status_code"] == 401
    assert decision.attributes is not None
    assert decision.attributes["authgate.outcome"] == "denied"
    assert proxy.status.status_code is StatusCode.UNSET


# Every attribute a span of authgate may carry: none holds request data beyond these.
ALLOWED_ATTRIBUTES = frozenset(
    {
        "http.request.method",
        "http.response.status_code",
        "authgate.request_id",
        "authgate.outcome",
        "authgate.reason",
        "authgate.credential_type",
        "authgate.rule_id",
        "authgate.store",
        "authgate.store.operation",
        "authgate.store.backend",
        "server.address",
    }
)


def _all_text(spans: list[ReadableSpan]) -> Iterator[str]:
    """Every string a span exports: names, attribute keys and values, events, status, links."""
    for span in spans:
        yield span.name
        yield span.status.description or ""
        yield span.resource.to_json()
        for attributes in (span.attributes, *(e.attributes for e in span.events)):
            for key, value in (attributes or {}).items():
                yield key
                yield str(value)
        for event in span.events:
            yield event.name
        yield span.to_json()


@pytest.mark.parametrize("valid", [True, False], ids=["granted", "bad-signature"])
async def test_no_secret_appears_in_any_span(tokens: TokenFactory, valid: bool) -> None:
    """Neither the token nor any of its parts (header, claims, signature) reaches a span."""
    token = tokens.mint(sub="alice-secret-subject")
    if not valid:
        head, claims, _ = token.split(".")
        token = f"{head}.{claims}.{'A' * 86}"
    async with traced_app(tokens) as t:
        await t.client.get("/auth", headers=nginx(token))
        await t.client.get("/api/items", headers={"Authorization": f"Bearer {token}"})
        spans = t.spans()
    assert len(spans) >= 3
    keys = {k for span in spans for k in (span.attributes or {})}
    assert keys <= ALLOWED_ATTRIBUTES, keys - ALLOWED_ATTRIBUTES
    assert all(not span.events for span in spans)
    text = "\n".join(_all_text(spans))
    for part in (token, *token.split(".")):
        assert part not in text
    assert "alice-secret-subject" not in text
    assert "Bearer" not in text


async def test_a_jwks_fetch_is_a_span_naming_only_the_host(tokens: TokenFactory) -> None:
    """A JWKS fetch under a decision is its child span, naming the host, not the URL."""
    key = SigningKey.generate("ES256")
    jwks = web.Application()

    async def serve_jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [key.public_jwk()]})

    jwks.router.add_get("/jwks", serve_jwks)
    external = TokenFactory(key=key, issuer=EXTERNAL, audience="orders-api")
    async with serve_app(jwks) as port, traced_app(tokens, jwks_port=port) as t:
        resp = await t.client.get("/auth", headers=nginx(external.mint()))
        assert resp.status == 200
        fetch = t.one("authgate.jwks_fetch")
        decision = t.one("authgate.decision")
    assert fetch.kind is SpanKind.CLIENT
    assert fetch.attributes is not None
    assert dict(fetch.attributes) == {"server.address": "127.0.0.1"}
    assert fetch.status.status_code is StatusCode.UNSET
    assert decision.context is not None
    assert fetch.parent is not None
    assert fetch.parent.span_id == decision.context.span_id


async def test_sample_ratio_zero_records_nothing_unless_the_proxy_sampled(
    tokens: TokenFactory,
) -> None:
    """sample_ratio 0: a new trace is not recorded; a trusted proxy's sampled flag is."""
    async with traced_app(tokens, ratio=0.0) as t:
        assert (await t.client.get("/auth", headers=nginx(tokens.mint()))).status == 200
        assert t.spans() == []
        headers = nginx(tokens.mint(), traceparent=TRACEPARENT)
        assert (await t.client.get("/auth", headers=headers)).status == 200
        span = t.one("authgate.decision")
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID


async def test_tracing_off_with_the_extra_installed_records_nothing(tokens: TokenFactory) -> None:
    """tracing.enabled false: no span, the plain gate, and the sidecar relays as before."""
    async with traced_app(tokens, enabled=False) as t:
        services = t.client.app[SERVICES]
        assert type(services.gate) is Gate
        assert services.tracing is None
        assert (await t.client.get("/auth", headers=nginx(tokens.mint()))).status == 200
        resp = await t.client.get(
            "/api/items",
            headers={"Authorization": f"Bearer {tokens.mint()}", "traceparent": TRACEPARENT},
        )
        body = json.loads(await resp.text())
        assert t.spans() == []
    assert received(body, "traceparent") == [TRACEPARENT]


async def test_tracing_on_builds_the_traced_gate(tokens: TokenFactory) -> None:
    """tracing.enabled true: the composition root builds the traced gate (the switch)."""
    async with traced_app(tokens) as t:
        assert isinstance(t.client.app[SERVICES].gate, TracedGate)


async def test_spans_reach_an_otlp_collector_named_by_the_standard_variables(
    tokens: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exporter otlp (no injected provider): OTEL_EXPORTER_OTLP_ENDPOINT and _HEADERS
    decide where spans go; a real HTTP receiver gets the protobuf export on shutdown."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    exports: list[tuple[str, bytes, str]] = []

    async def collect(request: web.Request) -> web.Response:
        exports.append((request.path, await request.read(), request.headers["x-tenant"]))
        return web.Response(status=200)

    collector = web.Application()
    collector.router.add_post("/{tail:.*}", collect)
    async with serve_app(collector) as port:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue")
        settings = make_settings(
            tracing={"enabled": True, "service_name": "edge-gate"},
            policy={"rules": [{"id": "api", "path_prefix": "/api"}]},
        )
        app = create_app(settings, stores=MemoryStores(), key_ring=KeyRing([tokens.key]))
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/auth", headers=nginx(tokens.mint()))).status == 200
        # The client closed the app: shutdown flushed the batch to the collector.
    assert exports, "nothing exported"
    path, body, tenant = exports[0]
    assert (path, tenant) == ("/v1/traces", "blue")
    export = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = export.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "edge-gate"
    names = [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert "authgate.decision" in names


async def test_a_store_outage_is_an_error_on_the_store_and_decision_spans(
    tokens: TokenFactory,
) -> None:
    """503 store_unavailable: both spans' status is error, described by the reason only."""
    stores = MemoryStores()

    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("redis timed out talking to 10.0.0.7:6379 (secret-ish detail)")

    stores.rate_limits.hit_many = unavailable  # type: ignore[method-assign]
    async with traced_app(tokens, stores=stores) as t:
        assert (await t.client.get("/auth", headers=nginx(tokens.mint()))).status == 503
        decision = t.one("authgate.decision")
        store = t.one("authgate.store rate_limits.hit_many")
    for span in (decision, store):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "store_unavailable"
        assert not span.events
    assert decision.attributes is not None
    assert decision.attributes["authgate.reason"] == "store_unavailable"
