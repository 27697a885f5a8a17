"""OpenTelemetry tracing (``telemetry.tracing.*``): request, core and backend spans, W3C propagation.

One tracer per process, held here: :class:`TracingService` installs it when the gateway starts and
flushes and removes it when the gateway stops.  While none is installed (tracing off, the default)
every entry point returns at its first line: no span, no context, no OpenTelemetry call, so tracing
off costs a function call and a global read per call site (``tools/bench_tracing.py``).

Spans:

* a server span per S3 request, ``s3.<Operation>`` (:func:`server_span`, :func:`end_server_span`),
  child of the client's ``traceparent`` when it sent one;
* a span per core operation, ``core.<Operation>`` (the :func:`traced` decorator on ``core/``'s
  services);
* a client span per backend request, ``backend.<Operation>`` (:func:`backend_span`), whose
  ``traceparent`` goes to the backend.

Twisted runs an ``async def`` handler (``Deferred.fromCoroutine``) in a copy of the context it was
started in, and resumes it in that copy after every awaited Deferred: the span current when a
request's coroutine starts is the parent of everything it awaits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from s3orch.config.model import TracingConfig

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "FLUSH_TIMEOUT",
    "SERVICE_NAME",
    "TracingService",
    "active",
    "backend_span",
    "end_backend_span",
    "end_server_span",
    "exporter_for",
    "extract_parent",
    "http_traces_url",
    "install",
    "log_ids",
    "provider_for",
    "server_span",
    "traced",
    "uninstall",
    "using",
]

#: ``service.name`` of the exported resource.
SERVICE_NAME = "s3orch"
#: Seconds a stop waits for the spans still queued to be exported.
FLUSH_TIMEOUT = 5.0
#: The process's tracer; None while tracing is off (every entry point checks it first).
_tracer: Tracer | None = None
_PROPAGATOR = TraceContextTextMapPropagator()

P = ParamSpec("P")
R = TypeVar("R")


class _HeaderGetter(Getter[Mapping[str, Sequence[str]]]):
    """Read W3C headers from our lower-cased ``name -> [values]`` request headers."""

    def get(self, carrier: Mapping[str, Sequence[str]], key: str) -> list[str] | None:
        values = carrier.get(key.lower())
        return list(values) if values else None

    def keys(self, carrier: Mapping[str, Sequence[str]]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


# --- the process's tracer ----------------------------------------------------------------------


def install(provider: TracerProvider) -> None:
    """Trace from now on with ``provider`` (its sampler and processors)."""
    global _tracer
    _tracer = provider.get_tracer("s3orch")


def uninstall() -> None:
    """Tracing off: every entry point returns at once again."""
    global _tracer
    _tracer = None


def active() -> bool:
    return _tracer is not None


def provider_for(config: TracingConfig, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider sampling ``sample_rate`` of new traces (a client's sampled flag decides for its
    own), batching finished spans to ``exporter`` (default: the OTLP exporter of ``config``)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(config.sample_rate)),
        resource=Resource.create({"service.name": SERVICE_NAME}),
    )
    # The batch processor exports from its own thread; span.end() on the reactor only queues.
    provider.add_span_processor(BatchSpanProcessor(exporter or exporter_for(config)))
    return provider


def exporter_for(config: TracingConfig) -> SpanExporter:
    """The OTLP exporter of ``telemetry.tracing``: gRPC (s3-orchestrator's, whose config s3orch loads) or HTTP/protobuf."""
    if config.protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPExporter,
        )

        return HTTPExporter(endpoint=http_traces_url(config.endpoint, config.insecure))
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.endpoint, insecure=config.insecure)


def http_traces_url(endpoint: str, insecure: bool) -> str:
    """``host:port`` or a URL -> the OTLP/HTTP traces URL (``/v1/traces`` unless a path is given)."""
    if "://" not in endpoint:
        endpoint = ("http://" if insecure else "https://") + endpoint
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return endpoint


class TracingService(Service):
    """The ``tracing`` child of the gateway: builds and installs the tracer at start, and at stop
    flushes the spans still queued (in a thread: export is blocking network I/O) and removes it.

    The provider (its export thread, a gRPC channel) is made at start, not when the service tree
    is built: twistd forks to daemonize in between, and neither survives a fork.
    """

    name = "tracing"
    log = Logger(namespace="s3orch.tracing")

    def __init__(self, config: TracingConfig, reactor: Any, exporter: SpanExporter | None = None) -> None:
        self.config = config
        self.provider: TracerProvider | None = None
        self._reactor = reactor
        self._exporter = exporter

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        self.provider = provider_for(self.config, self._exporter)
        install(self.provider)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        uninstall()
        provider, self.provider = self.provider, None
        if provider is None:
            return succeed(None)
        d: Deferred[None] = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), _flush, provider)

        def failed(failure: Any) -> None:
            self.log.failure("flushing traces failed", failure, component="tracing")

        d.addErrback(failed)
        return d


def _flush(provider: TracerProvider) -> None:
    """Export what is queued, waiting at most FLUSH_TIMEOUT for a slow collector, then close."""
    provider.force_flush(int(FLUSH_TIMEOUT * 1000))
    provider.shutdown()


# --- spans -------------------------------------------------------------------------------------


def extract_parent(headers: Mapping[str, Sequence[str]]) -> Context | None:
    """The remote parent a client's ``traceparent`` names (None: absent or malformed)."""
    context = _PROPAGATOR.extract(headers, getter=_GETTER)
    span_context = trace.get_current_span(context).get_span_context()
    return context if span_context.is_valid else None


def server_span(method: str, path: bytes, headers: Mapping[str, Sequence[str]]) -> Span | None:
    """Start the server span of one S3 request (named once its operation is known)."""
    if _tracer is None:
        return None
    return _tracer.start_span(
        f"HTTP {method}",
        context=extract_parent(headers),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path.decode("utf-8", "replace")},
    )


def end_server_span(span: Span, operation: str | None, status: int, attributes: Mapping[str, Any]) -> None:
    """Name, annotate and end a server span; 5xx is an error (OTel's rule for server spans)."""
    if operation:
        span.update_name(f"s3.{operation}")
        span.set_attribute("s3o.operation", operation)
    span.set_attribute("http.response.status_code", status)
    for name, value in attributes.items():
        if value is not None:
            span.set_attribute(name, value)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def using(span: Span | None) -> AbstractContextManager[object]:
    """Make ``span`` current inside the block (a shared do-nothing block when it is None)."""
    if span is None:
        return _NOTHING
    return trace.use_span(span, end_on_exit=False)


_NOTHING: AbstractContextManager[object] = nullcontext()


def traced(name: str) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Run an ``async`` method in a child span ``name`` of the current span (when tracing is on).

    Off, the wrapper hands back the method's own coroutine: no extra frame per await.
    """

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
            if _tracer is None or _unsampled():
                return fn(*args, **kwargs)
            return _in_span(_tracer, name, fn(*args, **kwargs))

        return wrapper

    return decorate


async def _in_span(tracer: Tracer, name: str, coroutine: Coroutine[Any, Any, R]) -> R:
    with tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False) as span:
        try:
            return await coroutine
        except BaseException as exc:
            _record_failure(span, exc)
            raise


def _unsampled() -> bool:
    """Inside a trace that is not sampled: its children would be dropped, so none is made."""
    context = trace.get_current_span().get_span_context()
    return context.is_valid and not context.trace_flags.sampled


def _record_failure(span: Span, exc: BaseException) -> None:
    """An exception ends the span as an error, except a client's fault (an S3 4xx answer)."""
    status = getattr(exc, "status", None)
    span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
    if isinstance(status, int) and 400 <= status < 500:
        return
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))


def backend_span(backend: str, operation: str, method: str, carrier: dict[str, str]) -> Span | None:
    """Start the client span of one backend request; put its ``traceparent`` in ``carrier``.

    In a trace that is not sampled, no span: the current context goes to the backend as it is.
    """
    if _tracer is None:
        return None
    if _unsampled():
        _PROPAGATOR.inject(carrier)
        return None
    span = _tracer.start_span(
        f"backend.{operation}",
        kind=SpanKind.CLIENT,
        attributes={"s3o.backend": backend, "s3o.operation": operation, "http.request.method": method},
    )
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return span


def end_backend_span(span: Span, status: str, exc: BaseException | None = None) -> None:
    """End a backend span with its status: an HTTP code, ``error``, ``timeout`` or ``cancelled``."""
    span.set_attribute("s3o.status", status)
    if status.isdigit():
        span.set_attribute("http.response.status_code", int(status))
        if int(status) >= 500:
            span.set_status(Status(StatusCode.ERROR))
    elif exc is not None:
        _record_failure(span, exc)
    else:
        span.set_status(Status(StatusCode.ERROR, status))
    span.end()


# --- logs --------------------------------------------------------------------------------------


def log_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the span current where a log line is written, if any."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
