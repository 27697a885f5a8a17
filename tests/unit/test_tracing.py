"""Tracing (``s3orch.observe.tracing``): traceparent parsing, sampling, context across Deferreds,
trace ids in log lines, the spans of one request through the in-process gateway, and tracing off."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher

from s3orch.config import ConfigError
from s3orch.config.model import TracingConfig
from s3orch.observe import tracing
from s3orch.observe.logging import TextLineObserver, event_to_dict
from s3orch.testing.config import config_from_string
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def traceparent(flags: str = "01", trace_id: str = TRACE_ID, parent: str = PARENT_ID, version: str = "00") -> str:
    return f"{version}-{trace_id}-{parent}-{flags}"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span sampled and exported at once to memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()
    provider.shutdown()


def ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def parent_id(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


# --- traceparent ----------------------------------------------------------------------------------


def test_a_valid_traceparent_becomes_the_remote_parent() -> None:
    context = tracing.extract_parent({"traceparent": [traceparent()]})
    assert context is not None
    span_context = trace.get_current_span(context).get_span_context()
    assert format(span_context.trace_id, "032x") == TRACE_ID
    assert format(span_context.span_id, "016x") == PARENT_ID
    assert span_context.is_remote and span_context.trace_flags.sampled


@pytest.mark.parametrize(
    "value",
    [
        traceparent(trace_id="0" * 32),  # all-zero trace id
        traceparent(parent="0" * 16),  # all-zero parent id
        traceparent(version="ff"),  # forbidden version
        traceparent(trace_id=TRACE_ID[:-1]),  # short
        traceparent(trace_id=TRACE_ID.upper()),  # upper-case hex
        "garbage",
        "",
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str) -> None:
    assert tracing.extract_parent({"traceparent": [value]}) is None


def test_no_traceparent_no_parent() -> None:
    assert tracing.extract_parent({"host": ["example"]}) is None


def test_server_span_continues_the_clients_trace(exported: InMemorySpanExporter) -> None:
    span = tracing.server_span("GET", b"/b/k", {"traceparent": [traceparent()]})
    assert span is not None
    tracing.end_server_span(span, "GetObject", 200, {"s3o.bucket": "b", "s3o.error_code": None})
    (done,) = exported.get_finished_spans()
    assert done.name == "s3.GetObject"
    assert done.kind == SpanKind.SERVER
    assert ids(done)[0] == TRACE_ID and parent_id(done) == PARENT_ID
    assert done.attributes is not None
    assert done.attributes["http.response.status_code"] == 200
    assert done.attributes["s3o.bucket"] == "b"
    assert "s3o.error_code" not in done.attributes


def test_backend_span_sends_its_own_id_as_traceparent(exported: InMemorySpanExporter) -> None:
    carrier: dict[str, str] = {}
    span = tracing.backend_span("b1", "PutObject", "PUT", carrier)
    assert span is not None
    tracing.end_backend_span(span, "503")
    (done,) = exported.get_finished_spans()
    trace_id, span_id = ids(done)
    version, sent_trace, sent_parent, flags = carrier["traceparent"].split("-")
    assert (version, sent_trace, sent_parent) == ("00", trace_id, span_id)
    assert int(flags, 16) & 1  # sampled (newer SDKs also set W3C level 2's "random" bit)
    assert done.attributes is not None
    assert done.attributes["s3o.backend"] == "b1"
    assert done.attributes["s3o.operation"] == "PutObject"
    assert done.attributes["s3o.status"] == "503"
    assert not done.status.is_ok


# --- sampling -------------------------------------------------------------------------------------


def sampled_provider(rate: float) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = tracing.provider_for(TracingConfig(enabled=True, endpoint="unused:4317", sample_rate=rate), exporter)
    return provider, exporter


def names_exported(provider: TracerProvider, exporter: InMemorySpanExporter) -> list[str]:
    provider.force_flush()
    return sorted(span.name for span in exporter.get_finished_spans())


def test_provider_samples_parent_based_trace_id_ratio() -> None:
    provider, _ = sampled_provider(0.25)
    sampler = provider.sampler
    assert isinstance(sampler, ParentBased)
    assert isinstance(sampler._root, TraceIdRatioBased)  # noqa: SLF001  # no public accessor
    assert sampler._root.rate == 0.25  # noqa: SLF001


def test_rate_zero_drops_new_traces_but_a_sampled_client_trace_is_kept() -> None:
    provider, exporter = sampled_provider(0.0)
    tracing.install(provider)
    try:
        for name, headers in (
            ("root", {}),
            ("client-sampled", {"traceparent": [traceparent("01")]}),
        ):
            span = tracing.server_span("GET", b"/", headers)
            assert span is not None
            tracing.end_server_span(span, name, 200, {})
    finally:
        tracing.uninstall()
    assert names_exported(provider, exporter) == ["s3.client-sampled"]
    provider.shutdown()


def test_rate_one_keeps_new_traces_but_an_unsampled_client_trace_is_dropped() -> None:
    provider, exporter = sampled_provider(1.0)
    tracing.install(provider)
    try:
        for name, headers in (
            ("root", {}),
            ("client-unsampled", {"traceparent": [traceparent("00")]}),
        ):
            span = tracing.server_span("GET", b"/", headers)
            assert span is not None
            tracing.end_server_span(span, name, 200, {})
    finally:
        tracing.uninstall()
    assert names_exported(provider, exporter) == ["s3.root"]
    provider.shutdown()


def test_http_endpoint_becomes_the_otlp_traces_url() -> None:
    assert tracing.http_traces_url("collector:4318", insecure=True) == "http://collector:4318/v1/traces"
    assert tracing.http_traces_url("collector:4318", insecure=False) == "https://collector:4318/v1/traces"
    assert tracing.http_traces_url("https://c.example/otlp/v1/traces", insecure=True) == (
        "https://c.example/otlp/v1/traces"
    )


def test_protocol_chooses_the_otlp_exporter() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    grpc_exporter = tracing.exporter_for(TracingConfig(enabled=True, endpoint="127.0.0.1:4317", insecure=True))
    http_exporter = tracing.exporter_for(
        TracingConfig(enabled=True, endpoint="127.0.0.1:4318", insecure=True, protocol="http")
    )
    try:
        assert isinstance(grpc_exporter, GrpcExporter)
        assert isinstance(http_exporter, HttpExporter)
    finally:
        grpc_exporter.shutdown()
        http_exporter.shutdown()


def test_protocol_must_be_grpc_or_http() -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_string(
            DEFAULT_CONFIG.replace("{workdir}", "/tmp")
            + "telemetry:\n  tracing:\n    enabled: true\n    endpoint: c:4317\n    protocol: thrift\n"
        )
    assert "telemetry.tracing.protocol: must be 'grpc' or 'http'" in str(raised.value)


def test_an_unsampled_trace_makes_no_child_spans_and_passes_its_context_on(exported: InMemorySpanExporter) -> None:
    @tracing.traced("core.Step")
    async def step() -> dict[str, str]:
        carrier: dict[str, str] = {}
        assert tracing.backend_span("b1", "GetObject", "GET", carrier) is None
        return carrier

    span = tracing.server_span("GET", b"/", {"traceparent": [traceparent("00")]})
    assert span is not None and not span.is_recording()
    with tracing.using(span):
        carrier = Deferred.fromCoroutine(step()).result
    server_id = format(span.get_span_context().span_id, "016x")
    assert carrier == {"traceparent": traceparent("00", parent=server_id)}  # same trace, unsampled
    assert exported.get_finished_spans() == ()


# --- context across Deferreds ---------------------------------------------------------------------


def test_the_current_span_survives_awaits_of_deferreds_fired_later(exported: InMemorySpanExporter) -> None:
    """A coroutine started inside a span (as the envelope starts each request's) keeps it across
    awaits of Deferreds the reactor fires later, from another context; its children link to it."""
    clock = Clock()
    seen: list[str] = []

    @tracing.traced("core.Step")
    async def step() -> str:
        waiting: Deferred[None] = Deferred()
        clock.callLater(1, waiting.callback, None)
        await waiting
        return ids_now()

    def ids_now() -> str:
        found = tracing.log_ids()
        return found[1] if found else "-"

    async def handler() -> None:
        seen.append(ids_now())
        waiting: Deferred[None] = Deferred()
        clock.callLater(1, waiting.callback, None)
        await waiting
        seen.append(ids_now())
        seen.append(await step())
        seen.append(ids_now())

    span = tracing.server_span("PUT", b"/b/k", {})
    assert span is not None
    with tracing.using(span):
        done = Deferred.fromCoroutine(handler())
    assert tracing.log_ids() is None  # the caller's context is untouched
    clock.advance(1)
    clock.advance(1)
    assert done.called
    tracing.end_server_span(span, "PutObject", 200, {})
    server_id = format(span.get_span_context().span_id, "016x")
    (child,) = [s for s in exported.get_finished_spans() if s.name == "core.Step"]
    assert seen == [server_id, server_id, ids(child)[1], server_id]
    assert parent_id(child) == server_id


def test_a_failing_core_step_is_an_error_unless_it_is_the_clients_fault(exported: InMemorySpanExporter) -> None:
    class ClientFault(Exception):
        status = 404
        code = "NoSuchKey"

    @tracing.traced("core.Fails")
    async def fails(exc: Exception) -> None:
        raise exc

    for exc in (ClientFault(), RuntimeError("backend gone")):
        failure = Deferred.fromCoroutine(fails(exc))
        failure.addErrback(lambda f: None)
    client, server = exported.get_finished_spans()
    assert client.status.is_unset and client.attributes is not None
    assert client.attributes["error.type"] == "NoSuchKey"
    assert not server.status.is_ok and not server.status.is_unset


# --- log lines ------------------------------------------------------------------------------------


def test_log_lines_inside_a_span_carry_its_ids_in_json_and_text(exported: InMemorySpanExporter) -> None:
    log = Logger(namespace="test")
    records: list[dict[str, Any]] = []
    text = io.StringIO()
    text_observer = TextLineObserver(text)

    def observe(event: dict[str, Any]) -> None:
        records.append(event_to_dict(event))
        text_observer(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observe))
    try:
        log.info("outside", component="t")
        span = tracing.server_span("GET", b"/", {})
        assert span is not None
        with tracing.using(span):
            log.info("inside", component="t")
        tracing.end_server_span(span, "GetObject", 200, {})
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, observe))
    trace_id = format(span.get_span_context().trace_id, "032x")
    span_id = format(span.get_span_context().span_id, "016x")
    outside, inside = [r for r in records if r.get("component") == "t"]
    assert "trace_id" not in outside and "span_id" not in outside
    assert (inside["trace_id"], inside["span_id"]) == (trace_id, span_id)
    json.dumps(inside)
    lines = [line for line in text.getvalue().splitlines() if "[t]" in line]
    assert "trace_id" not in lines[0]
    assert f"trace_id={trace_id} span_id={span_id}" in lines[1]


# --- tracing off ------------------------------------------------------------------------------------


def test_tracing_off_creates_nothing() -> None:
    assert not tracing.active()
    carrier: dict[str, str] = {}
    assert tracing.server_span("GET", b"/", {"traceparent": [traceparent()]}) is None
    assert tracing.backend_span("b1", "GetObject", "GET", carrier) is None
    assert carrier == {}
    assert tracing.log_ids() is None

    async def work() -> int:
        return 7

    wrapped = tracing.traced("core.Work")(work)
    coroutine = wrapped()
    # Off, the wrapper hands back the function's own coroutine: no span, no extra frame.
    assert cast(Any, coroutine).cr_code is work.__code__
    assert Deferred.fromCoroutine(coroutine).result == 7
    record = event_to_dict({"log_level": LogLevel.info, "log_format": "x", "log_time": 0.0})
    assert "trace_id" not in record


# --- one request through the in-process gateway -------------------------------------------------


def test_a_put_through_the_gateway_makes_linked_server_core_and_backend_spans(
    tmp_path: Path, exported: InMemorySpanExporter
) -> None:
    records: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        records.append(event_to_dict(event))  # as the gateway's observer: where the line is written

    with GatewayHarness(tmp_path) as gateway:
        globalLogPublisher.addObserver(cast(ILogObserver, observe))
        try:
            response = gateway.put("photos", "cat.jpg", b"meow", {"traceparent": traceparent()})
            assert response.status == 200
            # Refused while its headers are prepared (photos' keys on documents): still in its span.
            refused = gateway.put("documents", "x", b"", credentials=gateway.credentials("photos"))
            assert refused.status == 403
        finally:
            globalLogPublisher.removeObserver(cast(ILogObserver, observe))
    spans = {span.name: span for span in exported.get_finished_spans() if ids(span)[0] == TRACE_ID}
    server = spans["s3.PutObject"]
    core = spans["core.PutObject"]
    backend = spans["backend.PutObject"]
    assert {ids(s)[0] for s in (server, core, backend)} == {TRACE_ID}
    assert parent_id(server) == PARENT_ID
    assert parent_id(core) == ids(server)[1]
    assert parent_id(backend) == ids(core)[1]
    assert parent_id(spans["core.Commit"]) == ids(core)[1]
    assert backend.attributes is not None
    assert backend.attributes["s3o.backend"] == "backend-1"
    assert backend.attributes["s3o.status"] == "200"
    (put,) = [r for r in gateway.backends["backend-1"].received if r.method == "PUT"]
    assert put.header("traceparent") == f"00-{TRACE_ID}-{ids(backend)[1]}-01"
    assert "traceparent" not in put.signed_headers
    audits = {r["event"]: r for r in records if r.get("audit") and r.get("key") in ("cat.jpg", "x")}
    assert (audits["s3.PutObject"]["trace_id"], audits["s3.PutObject"]["span_id"]) == ids(server)
    assert (audits["storage.PutObject"]["trace_id"], audits["storage.PutObject"]["span_id"]) == ids(spans["core.Commit"])
    mismatch = audits["s3.BucketMismatch"]
    (refused_span,) = [s for s in exported.get_finished_spans() if ids(s)[1] == mismatch["span_id"]]
    assert refused_span.name == "s3.PutObject" and refused_span.attributes is not None
    assert refused_span.attributes["http.response.status_code"] == 403


# --- the service ------------------------------------------------------------------------------------


class _InlineThreads:
    """A reactor whose thread pool runs work at once, on the caller's thread."""

    def getThreadPool(self) -> _InlineThreads:  # noqa: N802  # IReactorThreads' naming
        return self

    def callInThreadWithCallback(self, on_result: Any, fn: Any, *args: Any) -> None:  # noqa: N802
        on_result(True, fn(*args))

    def callFromThread(self, fn: Any, *args: Any) -> None:  # noqa: N802
        fn(*args)


def test_the_service_traces_while_running_and_its_stop_flushes_the_queue() -> None:
    exporter = InMemorySpanExporter()
    service = tracing.TracingService(
        TracingConfig(enabled=True, endpoint="-", sample_rate=1.0), _InlineThreads(), exporter
    )
    assert not tracing.active()
    service.startService()
    assert tracing.active()
    span = tracing.server_span("PUT", b"/b/k", {})
    assert span is not None
    tracing.end_server_span(span, "PutObject", 200, {})
    assert exporter.get_finished_spans() == ()  # queued for the batch processor's next run
    stopped = service.stopService()
    assert stopped.called and stopped.result is None
    assert not tracing.active()
    assert [s.name for s in exporter.get_finished_spans()] == ["s3.PutObject"]


def test_the_gateway_gets_the_tracing_service_first_only_when_enabled() -> None:
    from twisted.internet.testing import MemoryReactorClock

    from s3orch.tap import build

    base = DEFAULT_CONFIG.replace("{workdir}", "/nonexistent")
    on = build(
        config_from_string(base + "telemetry:\n  tracing:\n    enabled: true\n    endpoint: c:4317\n"),
        MemoryReactorClock(),
    )
    assert on.workers[0].name == "tracing"
    assert on.getServiceNamed("tracing").config.endpoint == "c:4317"
    off = build(config_from_string(base), MemoryReactorClock())
    assert "tracing" not in [worker.name for worker in off.workers]
