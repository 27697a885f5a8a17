"""Per-request read deadlines: a slow client cannot hold a connection by dribbling bytes.

Byte-level over StringTransport with a MemoryReactorClock: no sockets, no sleeps.
"""

from __future__ import annotations

import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from s3orch.auth.registry import CredentialRegistry
from s3orch.config import load_config_from_string
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.frontend.s3 import S3Frontend
from s3orch.http.site import S3Site
from s3orch.s3 import sigv4

CONFIG = """
server:
  max_object_size: 100000
  read_header_timeout: 10s
  read_timeout: 60s
  idle_timeout: 120s
buckets:
  - name: photos
    credentials: [{access_key_id: photoskey, secret_access_key: photossecret}]
backends:
  - name: b1
    endpoint: http://127.0.0.1:1
    bucket: x
    access_key_id: a
    secret_access_key: s
"""


def _connect() -> tuple[object, StringTransport, MemoryReactorClock, S3Frontend]:
    config = load_config_from_string(CONFIG)
    clock = MemoryReactorClock()
    frontend = S3Frontend(
        config=config,
        registry=CredentialRegistry(config.buckets),
        objects=None,  # type: ignore[arg-type]  # never reached: no request completes its body
        clock=clock,
    )
    site = S3Site(
        RootResource(frontend, OpsApp(is_ready=lambda: True).resource()),
        early_handler=frontend,
        timeout=config.server.idle_timeout,
        read_header_timeout=config.server.read_header_timeout,
        read_timeout=config.server.read_timeout,
        reactor=clock,
    )
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
    transport = StringTransport()
    protocol.makeConnection(transport)  # type: ignore[union-attr]
    return protocol, transport, clock, frontend


def _put_headers(path: str, length: int) -> bytes:
    headers: dict[str, str] = {}
    signed = sigv4.sign_headers(
        "PUT", "http://gw.test" + path, headers, sigv4.UNSIGNED_PAYLOAD, "photoskey", "photossecret",
        "us-east-1", time.time(),
    )
    lines = [f"PUT {path} HTTP/1.1", "Host: gw.test", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in signed.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_dribbled_headers_get_408_at_read_header_timeout_despite_steady_bytes() -> None:
    protocol, transport, clock, _ = _connect()
    request = b"GET /photos/k HTTP/1.1\r\nHost: gw.test\r\nX-Slow: " + b"a" * 100
    for byte in request[:9]:  # one byte every 1 s: Twisted's idle timeout never fires
        protocol.dataReceived(bytes([byte]))  # type: ignore[attr-defined]
        clock.advance(1)
    assert not transport.disconnecting
    clock.advance(1.5)  # 10.5 s after the first byte
    sent = transport.value()
    assert sent.startswith(b"HTTP/1.1 408 ")
    assert b"<Code>RequestTimeout</Code>" in sent
    assert b"Connection: close" in sent
    assert transport.disconnecting


def test_connection_that_sends_nothing_is_closed_silently_at_read_header_timeout() -> None:
    _, transport, clock, _ = _connect()
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert transport.value() == b""


def test_headers_in_time_cancel_the_header_deadline() -> None:
    protocol, transport, clock, _ = _connect()
    protocol.dataReceived(_put_headers("/photos/k", 10))  # type: ignore[attr-defined]
    clock.advance(30)  # past read_header_timeout, body still due within read_timeout
    assert not transport.disconnecting
    assert transport.value() == b""


def test_slow_body_gets_408_at_read_timeout_and_is_accounted() -> None:
    protocol, transport, clock, frontend = _connect()
    protocol.dataReceived(_put_headers("/photos/k", 1000))  # type: ignore[attr-defined]
    pool = frontend.admission.global_pool
    assert pool is not None and pool.in_use == 1
    for _ in range(59):
        protocol.dataReceived(b"x")  # type: ignore[attr-defined]
        clock.advance(1)
    assert not transport.disconnecting
    clock.advance(1.5)
    sent = transport.value()
    assert sent.startswith(b"HTTP/1.1 408 ")
    assert b"<Code>RequestTimeout</Code>" in sent
    assert b"x-amz-request-id: " in sent
    assert transport.disconnecting
    assert pool.in_use == 0  # the admission slot went back


def test_read_timeout_counts_from_the_request_start_not_the_headers() -> None:
    protocol, transport, clock, _ = _connect()
    headers = _put_headers("/photos/k", 1000)
    protocol.dataReceived(headers[:5])  # type: ignore[attr-defined]
    clock.advance(9)
    protocol.dataReceived(headers[5:])  # type: ignore[attr-defined]
    clock.advance(51.5)  # 60.5 s after the first byte
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert transport.disconnecting


def test_keep_alive_rearms_the_header_deadline_for_the_next_request() -> None:
    protocol, transport, clock, _ = _connect()
    # /health is answered synchronously, so the connection is idle again right away.
    protocol.dataReceived(b"GET /health HTTP/1.1\r\nHost: gw.test\r\n\r\n")  # type: ignore[attr-defined]
    assert b"200 OK" in transport.value()
    transport.clear()
    clock.advance(100)  # idle between requests: only idle_timeout (120 s) applies
    assert not transport.disconnecting
    protocol.dataReceived(b"GET /health HTTP/1.1\r\n")  # type: ignore[attr-defined]
    clock.advance(10.5)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert transport.disconnecting
