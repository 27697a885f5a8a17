"""Per-request read deadlines: a slow client cannot hold a connection by dribbling bytes.

Byte-level over StringTransport with a MemoryReactorClock: no sockets, no sleeps.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from s3orch.auth.registry import CredentialRegistry
from s3orch.backend.memory import MemoryStream
from s3orch.config import load_config_from_string
from s3orch.frontend.assembly import build_frontend
from s3orch.frontend.envelope import S3Envelope
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.http.site import S3Site
from s3orch.observe.metrics import WRITE_TIMEOUTS
from s3orch.s3 import sigv4
from s3orch.store.interface import ObjectRecord
from tests.unit.frontdoor_fakes import START, AbortingTransport, FrontDoor, signed_request, status_of

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


def _connect() -> tuple[object, StringTransport, MemoryReactorClock, S3Envelope]:
    config = load_config_from_string(CONFIG)
    clock = MemoryReactorClock()
    clock.advance(START)
    frontend = build_frontend(
        server=config.server,
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
        "us-east-1", START,
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


# -- write_timeout: a response must make progress --------------------------------------

WRITE_SERVER = "  max_concurrent_requests: 8\n  write_timeout: 30s\n  backend_timeout: 10s"


def _stalled_get(door: FrontDoor, key: str = "big", access_key: str = "photoskey") -> tuple[Any, AbortingTransport, MemoryStream]:
    """A GET whose client stops reading after the first chunk (its TCP window is zero)."""
    protocol, transport = door.connect()
    transport.window = 100_000  # the send buffer fills after ~100 KB
    protocol.dataReceived(signed_request("GET", f"/photos/{key}", access_key=access_key))
    door.clock.advance(0)  # the backend pushes one chunk per reactor turn
    stream = door.objects.streams[-1]
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    assert transport.full
    assert stream.producerState == "paused"  # backpressure reached the backend
    assert stream.delivered < (1 << 20)
    return protocol, transport, stream


def _door_with_object(size: int = 1 << 20) -> FrontDoor:
    door = FrontDoor(server=WRITE_SERVER)
    door.objects.stream_kwargs = {"clock": door.clock, "chunk_size": 65536}
    for key in ("big", "other"):
        door.objects.store(ObjectRecord("photos", key, "w", size, "e" * 32, 1_700_000_000.0), b"z" * size)
    return door


def test_a_client_that_stops_reading_is_aborted_at_write_timeout_and_releases_everything() -> None:
    door = _door_with_object()
    before = WRITE_TIMEOUTS._value.get()
    _, transport, stream = _stalled_get(door)
    assert door.slots_in_use() == 1
    door.clock.advance(29)
    assert not transport.aborted
    door.clock.advance(1.5)
    assert transport.aborted
    assert stream.cancelled  # the pooled backend connection is let go
    assert door.slots_in_use() == 0
    assert door.frontend.admission.by_credential == {}
    assert WRITE_TIMEOUTS._value.get() == before + 1


def test_progress_resets_the_write_deadline() -> None:
    door = _door_with_object()
    protocol, transport, stream = _stalled_get(door)
    door.clock.advance(25)
    transport.drain(100_000)  # the client read: the buffer drained, and filled up again
    door.clock.advance(0)
    assert transport.full and stream.producerState == "paused"
    door.clock.advance(25)  # 50 s after the first stall, 25 s after the last progress
    assert not transport.aborted
    door.clock.advance(6)
    assert transport.aborted
    assert stream.cancelled and door.slots_in_use() == 0


def test_bytes_taken_by_the_kernel_count_as_progress_while_paused() -> None:
    door = _door_with_object()
    protocol, transport, _ = _stalled_get(door)
    # A socket transport's own buffer: 100 bytes we wrote, none yet taken by the kernel.
    transport.dataBuffer = b"x" * 100  # type: ignore[attr-defined]
    transport.offset = 0  # type: ignore[attr-defined]
    transport._tempDataLen = 0  # type: ignore[attr-defined]
    protocol.resumeProducing()
    protocol.pauseProducing()  # re-armed with 100 bytes pending (the socket stays full)
    door.clock.advance(20)
    transport.offset = 60  # type: ignore[attr-defined]  # a slow reader took 60 bytes
    door.clock.advance(11)  # deadline: progress seen, wait another 30 s
    assert not transport.aborted
    door.clock.advance(30)  # nothing more taken
    assert transport.aborted
    assert door.slots_in_use() == 0


def test_a_stalled_client_does_not_lock_out_another_credential() -> None:
    door = _door_with_object()
    # Two stalled GETs: the per-credential share of an 8-slot pool is 2.
    _stalled_get(door, "big")
    _stalled_get(door, "other")
    _, refused = door.send(signed_request("GET", "/photos/big"))
    assert status_of(refused) == 503 and b"<Code>SlowDown</Code>" in refused.value()
    assert b"Retry-After: 1\r\n" in refused.value()
    _, transport = door.send(signed_request("HEAD", "/photos/big", access_key="otherkey"))
    assert status_of(transport) == 200  # another tenant is served meanwhile
    door.clock.advance(31)  # both stalled responses hit write_timeout
    assert door.slots_in_use() == 0
    assert all(stream.cancelled for stream in door.objects.streams)
    _, transport = door.send(signed_request("HEAD", "/photos/big"))
    assert status_of(transport) == 200  # the first tenant is admitted again


def test_a_rejection_the_client_never_reads_is_aborted_at_write_timeout() -> None:
    door = FrontDoor(server="  max_concurrent_requests: 8\n  write_timeout: 30s\n  max_object_size: 10\n  backend_timeout: 10s")
    protocol, transport = door.send(signed_request("PUT", "/photos/k", b"x" * 100))
    assert status_of(transport) == 400 and transport.disconnecting
    transport.protocol = protocol  # still connected: the answer sits in the send buffer
    door.clock.advance(31)
    assert transport.aborted


def test_no_write_deadline_without_a_full_buffer() -> None:
    door = _door_with_object(size=3 * 65536)
    _, transport = door.send(signed_request("GET", "/photos/big"))
    door.clock.advance(0)
    door.clock.advance(0)
    door.clock.advance(0)
    door.clock.advance(0)
    assert transport.value().endswith(b"z" * 65536)
    door.clock.advance(3600)
    assert not transport.aborted
    assert door.slots_in_use() == 0
