"""Real OTLP trace receivers for tests: what a collector would get from a gateway, decoded.

:class:`OTLPHTTPReceiver` answers ``POST /v1/traces`` (OTLP/HTTP, protobuf, optionally gzip) with
``http.server`` in a daemon thread; :class:`OTLPGrpcReceiver` implements the collector's
``TraceService/Export`` with a gRPC server (its own threads).  Neither needs a reactor, so either
runs beside pytest-twisted's.  Both decode ``ExportTraceServiceRequest`` messages into
:class:`ReceivedSpan` values, in arrival order.
"""

from __future__ import annotations

import gzip
import threading
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import grpc  # type: ignore[import-untyped]  # no stubs (types-grpcio is not a dependency)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span; ids in lower-case hex (``parent_id`` empty for a root span)."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    service: str


def _value(any_value: Any) -> Any:
    field = any_value.WhichOneof("value")
    return getattr(any_value, field) if field else None


def decode(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """The spans of one export request."""
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        service=str(resource.get("service.name", "")),
                    )
                )
    return spans


class _Receiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        #: Export requests received (each may carry many spans).
        self.requests = 0

    def _add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = decode(request)
        with self._lock:
            self.requests += 1
            self._spans.extend(received)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        raise NotImplementedError


class OTLPHTTPReceiver(_Receiver):
    """``POST http://127.0.0.1:<port>/v1/traces``; anything else is 404."""

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  # http.server's naming
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if (self.headers.get("content-encoding") or "").lower() == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)  # noqa: SLF001  # the enclosing receiver
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """What ``telemetry.tracing.endpoint`` names with ``protocol: http``."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class OTLPGrpcReceiver(_Receiver):
    """The collector's gRPC ``TraceService`` on ``127.0.0.1:<port>`` (plaintext)."""

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(  # noqa: N802  # the gRPC method's name
                self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
            ) -> trace_service_pb2.ExportTraceServiceResponse:
                receiver._add(request)  # noqa: SLF001
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        # generated gRPC code is unannotated
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        """What ``telemetry.tracing.endpoint`` names (``host:port``, s3-orchestrator's form)."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=None)
