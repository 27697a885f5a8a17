"""The database circuit breaker and degraded mode (``s3orch.core.degraded``, BEHAVIOURS §1.26),
byte-level over StringTransport with a store that can be switched down, on a task.Clock."""

from __future__ import annotations

import time
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from s3orch.auth.registry import CredentialRegistry
from s3orch.backend.breaker import CLOSED, HALF_OPEN, OPEN
from s3orch.backend.memory import MemoryBackend
from s3orch.config import load_config_from_string
from s3orch.config.model import CircuitBreakerConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.degraded import DatabaseBreaker, DatabaseDegraded, counts_as_outage
from s3orch.core.fleet import BackendFleet
from s3orch.core.objects import ObjectService
from s3orch.core.spool import Spooler
from s3orch.frontend.assembly import build_frontend
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.http.site import S3Site
from s3orch.observe.metrics import REGISTRY
from s3orch.s3 import sigv4
from s3orch.store.errors import PreconditionConflict
from s3orch.store.interface import StoreUnavailable

CONFIG = """
buckets:
  - name: photos
    credentials: [{access_key_id: photoskey, secret_access_key: photossecret}]
backends:
  - {name: b1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: a, secret_access_key: s, quota_bytes: 1000}
"""


class SwitchableStore:
    """Down: every call raises StoreUnavailable.  Up: no object exists.  Counts the calls."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def start(self) -> None:
        pass

    async def get_object(self, bucket: str, key: str) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("PostgreSQL db:5432/meta: connection refused")
        return None

    def __getattr__(self, name: str) -> Any:
        async def other(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise StoreUnavailable("PostgreSQL db:5432/meta: connection refused")

        return other


class Gateway:
    def __init__(self, store: SwitchableStore) -> None:
        config = load_config_from_string(CONFIG)
        self.clock = Clock()
        self.clock.advance(time.time())  # SigV4 dates are checked against this clock
        self.db = DatabaseBreaker(CircuitBreakerConfig(), self.clock)
        guarded: Any = self.db.guard(store)  # type: ignore[arg-type]
        fleet = BackendFleet(config.backends, {"b1": MemoryBackend("b1")})
        objects = ObjectService(
            store=guarded,
            fleet=fleet,
            cleanups=Cleanups(store=guarded, fleet=fleet, clock=self.clock, concurrency=4),
            spooler=Spooler(),
            routing_strategy="pack",
            clock=self.clock,
        )
        frontend = build_frontend(
            server=config.server,
            registry=CredentialRegistry(config.buckets),
            objects=objects,
            clock=self.clock,
            write_gate=self.db.write_refusal,
        )
        ops = OpsApp(is_ready=lambda: True, is_degraded=self.db.degraded)
        self.site = S3Site(RootResource(frontend, ops.resource()), early_handler=frontend)

    def send(self, data: bytes) -> bytes:
        protocol: Any = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        sent: bytes = transport.value()
        return sent

    def s3(self, method: str, path: str, length: int = 0, body: bytes = b"") -> bytes:
        signed = sigv4.sign_headers(
            method, "http://gw.test" + path, {}, sigv4.UNSIGNED_PAYLOAD,
            "photoskey", "photossecret", "us-east-1", self.clock.seconds(),
        )
        lines = [f"{method} {path} HTTP/1.1", "Host: gw.test", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in signed.items()]
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def health(self) -> bytes:
        return self.send(b"GET /health HTTP/1.1\r\nHost: gw.test\r\n\r\n")


def _rejections(operation: str) -> float:
    return REGISTRY.get_sample_value("s3o_degraded_write_rejections_total", {"operation": operation}) or 0.0


def _opened(store: SwitchableStore) -> Gateway:
    gateway = Gateway(store)
    for _ in range(3):  # circuit_breaker.failure_threshold: 3
        assert gateway.s3("GET", "/photos/k").startswith(b"HTTP/1.1 503 ")
    assert gateway.db.breaker.state == OPEN
    return gateway


def test_failure_threshold_outage_errors_open_it_and_then_the_database_is_not_called() -> None:
    store = SwitchableStore()
    gateway = Gateway(store)
    assert b'{"status": "ok"}' in gateway.health()
    for _ in range(3):
        assert gateway.s3("GET", "/photos/k").startswith(b"HTTP/1.1 503 ")
    assert store.calls == 3 and gateway.db.breaker.state == OPEN
    for method, path in (("GET", "/photos/k"), ("HEAD", "/photos/k"), ("GET", "/photos?list-type=2")):
        sent = gateway.s3(method, path)
        assert sent.startswith(b"HTTP/1.1 503 "), sent[:200]
        assert b"Retry-After: " in sent
    assert store.calls == 3  # the open breaker answered for the database
    health = gateway.health()
    assert health.startswith(b"HTTP/1.1 200 ") and b'{"status": "degraded"}' in health


@pytest.mark.parametrize(("method", "path", "operation"), [
    ("PUT", "/photos/k", "PutObject"),
    ("DELETE", "/photos/k", "DeleteObject"),
    ("POST", "/photos/k?uploads", "CreateMultipartUpload"),
])
def test_writes_while_degraded_are_refused_before_their_body_with_retry_after(
    method: str, path: str, operation: str
) -> None:
    gateway = _opened(SwitchableStore())
    gateway.clock.advance(5)
    before = _rejections(operation)
    # Only the headers are sent: the answer must not wait for the announced body.
    sent = gateway.s3(method, path, length=1_000_000 if method == "PUT" else 0)
    assert sent.startswith(b"HTTP/1.1 503 "), sent[:300]
    assert b"Retry-After: 10\r\n" in sent  # the probe is due 15 s after the opening
    assert b"<Code>ServiceUnavailable</Code>" in sent
    assert b"database unavailable, writes are temporarily rejected" in sent
    assert _rejections(operation) == before + 1


def test_the_probe_after_open_timeout_closes_it_and_writes_go_on() -> None:
    store = SwitchableStore()
    gateway = _opened(store)
    gateway.clock.advance(14.9)
    assert gateway.db.write_refusal("PUT", "PutObject") is not None
    gateway.clock.advance(0.1)
    # The probe is due: a write would go on (its first store call would be the probe).
    assert gateway.db.write_refusal("PUT", "PutObject") is None
    store.down = False
    sent = gateway.s3("GET", "/photos/k")  # the probe reaches the database: no such key
    assert sent.startswith(b"HTTP/1.1 404 "), sent[:200]
    assert gateway.db.breaker.state == CLOSED
    assert b'{"status": "ok"}' in gateway.health()
    assert gateway.db.write_refusal("PUT", "PutObject") is None


def test_a_failed_probe_opens_it_again_for_open_timeout_without_jitter() -> None:
    store = SwitchableStore()
    gateway = _opened(store)
    gateway.clock.advance(15)
    assert gateway.s3("GET", "/photos/k").startswith(b"HTTP/1.1 503 ")
    assert store.calls == 4 and gateway.db.breaker.state == OPEN
    assert gateway.db.breaker.retry_at == gateway.clock.seconds() + 15


def test_reads_and_lists_are_not_write_refused() -> None:
    gateway = _opened(SwitchableStore())
    for method in ("GET", "HEAD"):
        assert gateway.db.write_refusal(method, "GetObject") is None


def test_only_genuine_outages_count() -> None:
    assert counts_as_outage(StoreUnavailable("PostgreSQL: connection refused"))
    assert not counts_as_outage(StoreUnavailable("SQLite meta.db: database or disk is full"))
    full = StoreUnavailable("PostgreSQL db: could not extend file")
    full.__cause__ = OSError("No space left on device")
    assert not counts_as_outage(full)
    assert not counts_as_outage(DatabaseDegraded("open"))
    assert not counts_as_outage(PreconditionConflict("If-Match failed", "If-Match"))


def test_answers_reset_the_count_and_a_cancelled_call_has_no_verdict() -> None:
    clock = Clock()
    db = DatabaseBreaker(CircuitBreakerConfig(), clock)
    answers: list[BaseException] = [
        StoreUnavailable("down"), StoreUnavailable("down"), PreconditionConflict("no", "If-Match"),
        StoreUnavailable("down"), StoreUnavailable("down"),
    ]

    async def call() -> None:
        raise answers.pop(0)

    for _ in range(5):
        d = ensureDeferred(db.call(call))
        d.addErrback(lambda f: None)
    assert db.breaker.state == CLOSED and db.breaker.failures == 2  # the answer broke the run
    db.breaker.failed(db.breaker.admit())
    clock.advance(15)
    pending: Deferred[None] = Deferred()

    async def hang() -> None:
        await pending

    probe = ensureDeferred(db.call(hang))
    assert db.breaker.state == HALF_OPEN
    probe.cancel()
    probe.addErrback(lambda f: f.trap(CancelledError))
    assert db.breaker.state == HALF_OPEN and db.breaker.would_admit()  # the next call probes
