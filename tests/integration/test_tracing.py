"""A running gateway (``twistd s3orch``) with tracing on exports a PUT's trace to a real OTLP receiver.

The backend is an in-memory S3 on a real port of the test's reactor (it records each request's
headers); the receiver decodes what the gateway's exporter sends, over OTLP/HTTP or gRPC.  One PUT,
sent with a client ``traceparent``, must arrive as one trace: the server span continues the
client's, the core span is its child, the backend span the core span's; the backend request
carried the backend span's ``traceparent``; the gateway's log lines of that request carry the
trace id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.server import Site

from s3orch.testing.s3server import InMemoryS3
from tests.conftest import PHOTOS, s3_client
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.otlp import OTLPGrpcReceiver, OTLPHTTPReceiver, ReceivedSpan

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
BACKEND_KEY, BACKEND_SECRET = "backendkey", "backendsecret"


@pytest.fixture
def backend() -> Iterator[tuple[InMemoryS3, int]]:
    """An in-memory S3 server on a real port of the test reactor."""
    server = InMemoryS3({BACKEND_KEY: BACKEND_SECRET}, buckets=["store"])
    site = Site(server)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield server, port.getHost().port
    port.stopListening()


def gateway_config(backend_port: int, tracing: dict[str, Any]) -> str:
    config = GatewayConfig(
        backends=[
            BackendSpec("mem", f"http://127.0.0.1:{backend_port}", "store", BACKEND_KEY, BACKEND_SECRET)
        ],
        extra={"telemetry": {"tracing": {"enabled": True, "insecure": True, **tracing}}},
    )
    return config.render()


def put_with_traceparent(endpoint: str) -> None:
    s3: Any = s3_client(endpoint, PHOTOS.access_key, PHOTOS.secret_key)

    def add_traceparent(request: Any, **_: Any) -> None:
        request.headers["traceparent"] = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"

    s3.meta.events.register("before-send.s3.PutObject", add_traceparent)
    s3.put_object(Bucket="photos", Key="traced.txt", Body=b"follow me")


async def until(predicate: Any, timeout: float = 20.0) -> None:
    """Poll ``predicate`` on the reactor (the backend is served meanwhile)."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError("timed out")
        await deferLater(reactor, 0.1, lambda: None)
        waited += 0.1


def assert_linked_trace(spans: list[ReceivedSpan], backend: InMemoryS3, log_text: str) -> None:
    mine = {span.name: span for span in spans if span.trace_id == TRACE_ID}
    server, core, call = mine["s3.PutObject"], mine["core.PutObject"], mine["backend.PutObject"]
    assert server.parent_id == CLIENT_SPAN
    assert core.parent_id == server.span_id
    assert call.parent_id == core.span_id
    assert mine["core.Commit"].parent_id == core.span_id
    assert server.service == "s3orch"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["s3o.bucket"] == "photos"
    assert call.attributes["s3o.backend"] == "mem"
    assert call.attributes["s3o.operation"] == "PutObject"
    assert call.attributes["s3o.status"] == "200"
    # The backend request carried the backend span's context, unsigned.
    (put,) = [r for r in backend.received if r.method == "PUT"]
    traceparent = put.header("traceparent")
    assert traceparent is not None and traceparent.startswith(f"00-{TRACE_ID}-{call.span_id}-")
    assert "traceparent" not in put.signed_headers
    # The request's log lines (its audit and storage events) carry the trace id.
    records = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    events = {r["event"]: r for r in records if r.get("audit") and r.get("key") == "traced.txt"}
    assert events["s3.PutObject"]["trace_id"] == TRACE_ID
    assert events["s3.PutObject"]["span_id"] == server.span_id
    assert events["storage.PutObject"]["trace_id"] == TRACE_ID
    assert events["storage.PutObject"]["span_id"] == mine["core.Commit"].span_id
    (ready,) = [r for r in records if r.get("msg") == "s3orch is ready"]
    assert "trace_id" not in ready  # written outside any span


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_put_trace_reaches_an_otlp_http_receiver_linked(
    tmp_path: Path, backend: tuple[InMemoryS3, int]
) -> None:
    server, port = backend
    with OTLPHTTPReceiver() as receiver:
        gateway = GatewayProcess(
            tmp_path / "gw", gateway_config(port, {"protocol": "http", "endpoint": receiver.endpoint})
        )
        await deferToThread(gateway.start)
        try:
            await deferToThread(put_with_traceparent, gateway.endpoint)
            # Exported by the batch processor while the gateway runs (no stop needed).
            names = ("s3.PutObject", "core.PutObject", "backend.PutObject")
            await until(lambda: {s.name for s in receiver.spans()} >= set(names))
            await until(lambda: '"storage.PutObject"' in gateway.log_text())
        finally:
            await deferToThread(gateway.stop)
        assert_linked_trace(receiver.spans(), server, gateway.log_text())


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_put_trace_reaches_an_otlp_grpc_receiver_and_stop_flushes_it(
    tmp_path: Path, backend: tuple[InMemoryS3, int]
) -> None:
    server, port = backend
    with OTLPGrpcReceiver() as receiver:
        # The original's form: protocol unset (gRPC), endpoint host:port.
        gateway = GatewayProcess(tmp_path / "gw", gateway_config(port, {"endpoint": receiver.endpoint}))
        await deferToThread(gateway.start)
        try:
            await deferToThread(put_with_traceparent, gateway.endpoint)
        finally:
            # Right after the PUT, before the batch processor's 5 s schedule: the stop flushes.
            await deferToThread(gateway.stop)
        assert receiver.requests >= 1
        assert_linked_trace(receiver.spans(), server, gateway.log_text())
