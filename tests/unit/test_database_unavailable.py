"""A metadata database that cannot answer makes 503 ServiceUnavailable with Retry-After,
never a 500, and is counted; the same holds for a worker tick (logged without a traceback).

Byte-level over StringTransport with a store that raises StoreUnavailable: no sockets.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher

from s3orch.auth.registry import CredentialRegistry
from s3orch.backend.memory import MemoryBackend
from s3orch.config import load_config_from_string
from s3orch.config.model import UsageFlushConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.objects import ObjectService
from s3orch.core.spool import Spooler
from s3orch.frontend.assembly import build_frontend
from s3orch.frontend.envelope import DATABASE_RETRY_AFTER
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.http.site import S3Site
from s3orch.observe.metrics import REGISTRY
from s3orch.s3 import sigv4
from s3orch.store.interface import StoreUnavailable
from s3orch.workers.quota_metrics import QuotaMetricsWorker

CONFIG = """
buckets:
  - name: photos
    credentials: [{access_key_id: photoskey, secret_access_key: photossecret}]
backends:
  - {name: b1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: a, secret_access_key: s, quota_bytes: 1000}
"""


class DownStore:
    """Every call fails the way an engine reports a database that is away."""

    def __getattr__(self, name: str) -> Any:
        async def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("PostgreSQL db:5432/meta: connection refused")

        return unavailable


class _Clock:
    def seconds(self) -> float:
        return time.time()


def _connect() -> tuple[Any, StringTransport]:
    config = load_config_from_string(CONFIG)
    store: Any = DownStore()
    fleet = BackendFleet(config.backends, {"b1": MemoryBackend("b1")})
    objects = ObjectService(
        store=store,
        fleet=fleet,
        cleanups=Cleanups(store=store, fleet=fleet, clock=_Clock(), concurrency=4),  # type: ignore[arg-type]
        spooler=Spooler(),
        routing_strategy="pack",
        clock=_Clock(),  # type: ignore[arg-type]
    )
    frontend = build_frontend(
        server=config.server,
        registry=CredentialRegistry(config.buckets),
        objects=objects,
        clock=_Clock(),  # type: ignore[arg-type]
    )
    site = S3Site(RootResource(frontend, OpsApp(is_ready=lambda: True).resource()), early_handler=frontend)
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
    transport = StringTransport()
    protocol.makeConnection(transport)  # type: ignore[union-attr]
    return protocol, transport


def _request(method: str, path: str, body: bytes = b"") -> bytes:
    url = "http://gw.test" + path
    headers: dict[str, str] = {}
    signed = sigv4.sign_headers(
        method, url, headers, sigv4.UNSIGNED_PAYLOAD, "photoskey", "photossecret", "us-east-1", time.time()
    )
    lines = [f"{method} {path} HTTP/1.1", "Host: gw.test", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in signed.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _count(operation: str) -> float:
    return REGISTRY.get_sample_value("s3o_database_errors_total", {"operation": operation}) or 0.0


@pytest.mark.parametrize(
    ("method", "path", "body", "operation"),
    [
        ("GET", "/photos/k", b"", "GetObject"),
        ("HEAD", "/photos/k", b"", "HeadObject"),
        ("PUT", "/photos/k", b"0123456789", "PutObject"),
        ("GET", "/photos?list-type=2", b"", "ListObjectsV2"),
        ("DELETE", "/photos/k", b"", "DeleteObject"),
    ],
)
def test_an_unavailable_database_is_a_503_with_retry_after_never_a_500(
    method: str, path: str, body: bytes, operation: str
) -> None:
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("log_level") == LogLevel.critical:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        before = _count(operation)
        protocol, transport = _connect()
        protocol.dataReceived(_request(method, path, body))
    finally:
        globalLogPublisher.removeObserver(observe)
    sent = transport.value()
    assert sent.startswith(b"HTTP/1.1 503 "), sent[:300]
    assert f"Retry-After: {DATABASE_RETRY_AFTER}\r\n".encode() in sent
    if method != "HEAD":
        assert b"<Code>ServiceUnavailable</Code>" in sent
        assert b"The metadata database is unavailable; please retry." in sent
    assert _count(operation) == before + 1
    assert failures == []  # a warning at most, never a logged traceback


def test_a_worker_tick_without_a_database_is_a_failed_tick_and_a_warning() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        worker = QuotaMetricsWorker(DownStore(), Clock(), UsageFlushConfig())  # type: ignore[arg-type]
        d = Deferred.fromCoroutine(worker.run_once())
        results: list[bool] = []
        d.addCallback(results.append)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert results == [False]
    assert worker._failures == 1
    warned = [e for e in events if e.get("component") == "usage_flush"]
    assert [e["log_level"] for e in warned] == [LogLevel.warn]
    assert "log_failure" not in warned[0]
    assert "connection refused" in warned[0]["error"]
