"""OpenTelemetry tracing: the ``otel`` extra, imported only when ``tracing.enabled`` is true.

The composition root imports this module lazily, so without the extra, or with tracing
off, nothing imports ``opentelemetry`` and the request path is exactly what it was: the
gate is a plain :class:`~authgate.pipeline.Gate`, the stores carry no tracing wrapper,
the doors keep no trace headers. When on:

* :class:`TracedGate` opens one span per decision (``authgate.decision``) with the rule id,
  credential type, outcome and stable reason: the fields the access log carries, never a
  credential, token, signature or secret;
* :func:`trace_stores` opens a child span per store call, and :meth:`Tracing.traced_fetch`
  one per JWKS fetch;
* a request's parent is the W3C ``traceparent``/``tracestate`` of a trusted proxy (the
  doors keep them only from one, ``RequestContext.trace_carrier``), else a new trace;
* the sidecar opens a span per proxied request and writes *its* ``traceparent`` on the
  upstream request, never the client's (:meth:`Tracing.inject`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from multidict import CIMultiDict
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from authgate.access_log import DecisionLog
from authgate.config.model import TracingSettings
from authgate.crypto.jwks_cache import Fetcher
from authgate.decisions import RecentDecisions
from authgate.errors import AuthGateError, StoreUnavailable
from authgate.metrics import Metrics
from authgate.models import RequestContext
from authgate.pipeline import Gate, Verifier
from authgate.policy.rules import CompiledRule, Decision, Policy
from authgate.stores.base import NonceStore, RateLimitStore, Stores
from authgate.stores.instrumented import WrappedStores
from authgate.web.context import TRACE_HEADERS

_PROPAGATOR = TraceContextTextMapPropagator()
_NEW_TRACE = otel_context.Context()  # an empty context: the span starts a new trace


def build_provider(settings: TracingSettings) -> TracerProvider:
    """A tracer provider from the settings: the service name, a parent-based ratio sampler
    and a batching exporter (OTLP over HTTP, configured by the OTEL_EXPORTER_OTLP_*
    variables, or the console)."""
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    return provider


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout: the OTEL_EXPORTER_OTLP_* variables


class Tracing:
    """The tracer of one process and the W3C propagation rules.

    ``provider`` may be injected (tests use the SDK's in-memory exporter); otherwise one is
    built from the settings and shut down (flushing its spans) by :meth:`shutdown`.
    """

    def __init__(
        self, settings: TracingSettings, *, provider: TracerProvider | None = None
    ) -> None:
        self._owned = provider is None
        self.provider = provider if provider is not None else build_provider(settings)
        self.tracer = self.provider.get_tracer("authgate")

    def parent(self, context: RequestContext) -> tuple[otel_context.Context | None, SpanKind]:
        """Where a request's span hangs and its kind: under the span already open (the
        sidecar's), else under a trusted proxy's ``traceparent`` as the server span, else
        at the root of a new trace (whatever an untrusted peer sent)."""
        if trace.get_current_span().get_span_context().is_valid:
            return None, SpanKind.INTERNAL
        return self.extract(context), SpanKind.SERVER

    def extract(self, context: RequestContext) -> otel_context.Context:
        """The trusted proxy's trace context, or a new trace."""
        carrier = context.trace_carrier
        if not carrier:
            return _NEW_TRACE
        return _PROPAGATOR.extract(carrier, context=_NEW_TRACE)

    @contextlib.contextmanager
    def request_span(self, name: str, context: RequestContext) -> Iterator[Span]:
        """A server span for one request, under a trusted proxy's trace context or at the
        root of a new trace; a refusal is recorded by status code, an outage as an error."""
        with self.tracer.start_as_current_span(
            name,
            context=self.extract(context),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": context.method,
                "authgate.request_id": context.request_id,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except AuthGateError as exc:
                span.set_attribute("http.response.status_code", exc.status)
                if exc.status >= 500:
                    span.set_status(Status(StatusCode.ERROR, exc.reason))
                raise
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def inject(self, headers: CIMultiDict[str]) -> None:
        """Replace every ``traceparent``/``tracestate`` in ``headers`` (any case, any count)
        with the current span's."""
        for name in TRACE_HEADERS:
            if name in headers:
                del headers[name]  # every occurrence: a client may send several
        _PROPAGATOR.inject(headers)

    def traced_fetch(self, fetch: Fetcher) -> Fetcher:
        """``fetch`` (a JWKS fetcher) with a span per call, naming only the issuer's host."""
        tracer = self.tracer

        @functools.wraps(fetch)
        async def fetch_traced(url: str) -> bytes:
            with tracer.start_as_current_span(
                "authgate.jwks_fetch",
                kind=SpanKind.CLIENT,
                attributes={"server.address": urlsplit(url).hostname or ""},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return await fetch(url)
                except Exception as exc:
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise

        return fetch_traced

    def shutdown(self) -> None:
        """Flush and stop the provider this object built (an injected one is the caller's)."""
        if self._owned:
            self.provider.shutdown()


class TracedGate(Gate):
    """:class:`Gate` with a span per decision. Only built when tracing is on, so the plain
    gate's hot path carries no tracing branch at all."""

    def __init__(
        self,
        *,
        tracing: Tracing,
        policy: Policy,
        verifiers: Sequence[Verifier],
        metrics: Metrics,
        rate_limits: RateLimitStore,
        nonces: NonceStore,
        access_log: DecisionLog | None = None,
        recent: RecentDecisions | None = None,
    ) -> None:
        super().__init__(
            policy=policy,
            verifiers=verifiers,
            metrics=metrics,
            rate_limits=rate_limits,
            nonces=nonces,
            access_log=access_log,
            recent=recent,
        )
        self._tracing = tracing
        self._tracer = tracing.tracer

    async def evaluate(self, context: RequestContext, rule: CompiledRule | None = None) -> Decision:
        """:meth:`Gate.evaluate` inside an ``authgate.decision`` span."""
        parent, kind = self._tracing.parent(context)
        with self._tracer.start_as_current_span(
            "authgate.decision",
            context=parent,
            kind=kind,
            attributes={
                "http.request.method": context.method,
                "authgate.request_id": context.request_id,
            },
            # An exception event would carry the message and traceback: reasons only.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await super().evaluate(context, rule)
            except AuthGateError as exc:
                if exc.status >= 500:  # a refusal is an answer; a store outage is an error
                    span.set_status(Status(StatusCode.ERROR, exc.reason))
                raise
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def _record(
        self,
        outcome: str,
        reason: str,
        credential: str,
        rule_id: str,
        subject: str,
        context: RequestContext,
        started: float,
        *,
        detail: str = "",
    ) -> None:
        """Count and log the decision, and name it on the decision span."""
        super()._record(
            outcome, reason, credential, rule_id, subject, context, started, detail=detail
        )
        trace.get_current_span().set_attributes(
            {
                "authgate.outcome": outcome,
                "authgate.reason": reason,
                "authgate.credential_type": credential,
                "authgate.rule_id": rule_id,
            }
        )


class _TracedStore:
    """Every coroutine method of one store in a child span (only under an open span: the
    background work of the event bus and key maintenance starts no traces of its own)."""

    def __init__(self, inner: Any, name: str, backend: str, tracer: trace.Tracer) -> None:
        self._inner = inner
        self._name = name
        self._backend = backend
        self._tracer = tracer

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._inner, attr)
        if not callable(target) or attr.startswith("_"):
            return target
        call = cast(Callable[..., Awaitable[Any]], target)
        tracer = self._tracer
        span_name = f"authgate.store {self._name}.{attr}"
        attributes: Mapping[str, str] = {
            "authgate.store": self._name,
            "authgate.store.operation": attr,
            "authgate.store.backend": self._backend,
        }

        @functools.wraps(target)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            if not trace.get_current_span().is_recording():
                return await call(*args, **kwargs)
            with tracer.start_as_current_span(
                span_name,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                record_exception=False,  # arguments and messages may hold keys: never recorded
                set_status_on_exception=False,
            ) as span:
                try:
                    return await call(*args, **kwargs)
                except StoreUnavailable as exc:
                    span.set_status(Status(StatusCode.ERROR, exc.reason))
                    raise

        setattr(self, attr, traced)  # bind once: later calls skip __getattr__
        return traced


class TracedStores(WrappedStores):
    """A :class:`Stores` whose every call, under a request's span, has a child span (the
    event bus, ``ping`` for readiness and ``close`` are not traced)."""

    def __init__(self, inner: Stores, tracer: trace.Tracer) -> None:
        super().__init__(
            inner, lambda name, store: _TracedStore(store, name, inner.backend, tracer)
        )


def trace_stores(stores: Stores, tracing: Tracing) -> Stores:
    """``stores`` with a child span per call made while a span is open."""
    return cast(Stores, TracedStores(stores, tracing.tracer))
