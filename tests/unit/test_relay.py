"""The response relay: backend body -> client, with backpressure and I2 (no torn reads).

A real ``twisted.web.http.Request`` on an ``HTTPChannel`` over a
``StringTransport``: bytes on the wire and ``producerState`` are asserted
directly; no sockets, threads or sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from s3orch.backend.interface import BackendUnavailable, IBodyConsumer
from s3orch.backend.memory import MemoryStream
from s3orch.http.relay import relay_body


class _CapturingRequest(Request):
    """A request whose handler is the test: process() only records it."""

    captured: list[Request] = []

    def process(self) -> None:
        _CapturingRequest.captured.append(self)


class Client:
    """One client connection with one GET in flight, ready for a response."""

    def __init__(self, length: int | None) -> None:
        self.transport = StringTransport()
        self.channel = HTTPChannel()
        self.channel.callLater = Clock().callLater  # no global-reactor timers
        self.channel.requestFactory = _CapturingRequest  # type: ignore[assignment]
        self.channel.makeConnection(self.transport)
        _CapturingRequest.captured.clear()
        self.channel.dataReceived(b"GET /bucket/key HTTP/1.1\r\nHost: s3\r\n\r\n")
        (self.request,) = _CapturingRequest.captured
        self.request.setResponseCode(200)
        if length is not None:
            self.request.setHeader(b"content-length", b"%d" % length)

    @property
    def body(self) -> bytes:
        """Bytes of the response body written so far (headers stripped)."""
        raw = self.transport.value()
        _, sep, body = raw.partition(b"\r\n\r\n")
        return body if sep else b""

    def disconnect(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone("client went away")))


class ManualStream:
    """A backend stream the test drives by hand; its 'socket' is a StringTransport
    so the backend-side ``producerState`` can be asserted like a real transport's."""

    def __init__(self, length: int | None, status: int = 200) -> None:
        self.status = status
        self.length = length
        self.content_range: tuple[int, int, int] | None = None
        self.headers: dict[str, str] = {}
        self.socket = StringTransport()
        self.consumer: IBodyConsumer | None = None
        self.done: Deferred[None] = Deferred()
        self.cancelled = 0

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        self.consumer = consumer
        consumer.registerProducer(self.socket, True)
        return self.done

    def cancel(self) -> None:
        self.cancelled += 1
        self.socket.stopProducing()

    def send(self, data: bytes) -> None:
        assert self.consumer is not None
        self.consumer.write(data)

    def end(self, error: Exception | None = None) -> None:
        assert self.consumer is not None
        self.consumer.unregisterProducer()
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(error)


def outcome(d: Deferred[int]) -> list[Any]:
    seen: list[Any] = []
    d.addBoth(seen.append)
    return seen


DATA = bytes(range(256)) * 40  # 10 KiB


def test_whole_body_is_relayed_and_the_request_finished() -> None:
    client = Client(len(DATA))
    stream = MemoryStream(DATA, chunk_size=1000)
    seen = outcome(relay_body(stream, client.request))
    assert seen == [len(DATA)]
    assert client.body == DATA
    assert client.request.finished
    assert client.channel._requestProducer is None  # unregistered
    assert not client.transport.disconnected


def test_chunked_response_without_content_length_is_terminated() -> None:
    client = Client(None)
    stream = MemoryStream(b"abc", chunk_size=2)
    assert outcome(relay_body(stream, client.request)) == [3]
    assert client.transport.value().endswith(b"0\r\n\r\n")
    assert client.request.finished


def test_client_backpressure_pauses_and_resumes_the_backend_socket() -> None:
    client = Client(len(DATA))
    stream = ManualStream(len(DATA))
    seen = outcome(relay_body(stream, client.request))
    stream.send(DATA[:4000])
    # the client's socket buffer is full: the transport pauses the channel
    client.channel.pauseProducing()
    assert stream.socket.producerState == "paused"
    client.channel.resumeProducing()
    assert stream.socket.producerState == "producing"
    stream.send(DATA[4000:])
    stream.end()
    assert seen == [len(DATA)]
    assert client.body == DATA


def test_pausing_stops_a_memory_stream_until_resumed() -> None:
    client = Client(len(DATA))
    stream = MemoryStream(DATA, chunk_size=1024)
    client.channel.pauseProducing()  # already full before the body starts
    seen = outcome(relay_body(stream, client.request))
    assert stream.producerState == "paused"
    assert stream.delivered == 0
    client.channel.resumeProducing()
    assert seen == [len(DATA)]
    assert client.body == DATA


def test_skip_and_limit_cut_a_full_body_down_to_the_range() -> None:
    """A quirky backend answered a ranged GET with 200 and the whole object."""
    client = Client(50)
    stream = MemoryStream(DATA, chunk_size=7)
    seen = outcome(relay_body(stream, client.request, skip=100, limit=50))
    assert seen == [50]
    assert client.body == DATA[100:150]
    assert stream.producerState == "stopped"  # the rest is not read
    assert stream.delivered < len(DATA)
    assert client.request.finished


def test_limit_reached_cancels_the_backend_transfer() -> None:
    client = Client(10)
    stream = ManualStream(None)
    seen = outcome(relay_body(stream, client.request, limit=10))
    stream.send(b"0123456789ABCDEF")
    assert seen == [10]
    assert client.body == b"0123456789"
    assert stream.cancelled == 1
    assert stream.socket.producerState == "stopped"
    stream.send(b"more")  # late bytes from the backend are dropped
    assert client.body == b"0123456789"


def test_skip_spanning_several_chunks() -> None:
    client = Client(len(DATA) - 2500)
    stream = MemoryStream(DATA, chunk_size=1000)
    assert outcome(relay_body(stream, client.request, skip=2500)) == [len(DATA) - 2500]
    assert client.body == DATA[2500:]


def test_backend_failure_mid_body_aborts_the_client_connection() -> None:
    big = DATA * 8  # past the small-body size: chunks are written as they come
    client = Client(len(big))
    stream = MemoryStream(big, chunk_size=1000, fail_after=3000)
    seen = outcome(relay_body(stream, client.request))
    assert client.transport.disconnected  # abortConnection, not a clean close
    assert not client.request.finished
    assert client.body == big[:3000]
    assert len(seen) == 1 and isinstance(seen[0], Failure)
    assert isinstance(seen[0].value, BackendUnavailable)


def test_a_small_body_failing_midway_writes_nothing_and_aborts() -> None:
    client = Client(len(DATA))
    stream = MemoryStream(DATA, chunk_size=1000, fail_after=3000)
    seen = outcome(relay_body(stream, client.request))
    assert client.transport.disconnected
    assert client.transport.value() == b""  # gathered, never sent: not even the headers
    assert isinstance(seen[0], Failure) and isinstance(seen[0].value, BackendUnavailable)


def test_answer_unsent_leaves_a_connection_that_got_nothing_to_the_caller() -> None:
    client = Client(len(DATA))
    stream = MemoryStream(DATA, chunk_size=1000, fail_after=3000)
    seen = outcome(relay_body(stream, client.request, answer_unsent=True))
    assert isinstance(seen[0], Failure) and isinstance(seen[0].value, BackendUnavailable)
    assert not client.transport.disconnected and client.transport.value() == b""
    assert stream.cancelled
    client.request.setResponseCode(503)  # the caller can still answer, with nothing of the body
    client.request.setHeader(b"content-length", b"2")
    client.request.write(b"no")
    client.request.finish()
    assert client.transport.value().startswith(b"HTTP/1.1 503 ") and client.body == b"no"


def test_answer_unsent_still_aborts_once_the_headers_went_out() -> None:
    big = DATA * 8
    client = Client(len(big))
    stream = MemoryStream(big, chunk_size=1000, fail_after=3000)
    seen = outcome(relay_body(stream, client.request, answer_unsent=True))
    assert isinstance(seen[0], Failure)
    assert client.transport.disconnected and client.body == big[:3000]


def test_a_small_body_in_several_chunks_leaves_in_one_write_with_its_headers() -> None:
    client = Client(len(DATA))
    writes: list[bytes] = []
    original = client.transport.write

    def record(data: bytes) -> None:
        writes.append(data)
        original(data)

    client.transport.write = record  # type: ignore[method-assign]
    client.transport.writeSequence = lambda seq: record(b"".join(seq))  # type: ignore[method-assign]
    stream = ManualStream(len(DATA))
    seen = outcome(relay_body(stream, client.request))
    stream.send(DATA[:4000])
    assert writes == []  # held until the body is whole
    stream.send(DATA[4000:])
    stream.end()
    assert seen == [len(DATA)]
    assert client.body == DATA
    assert len([w for w in writes if DATA[-100:] in w or DATA[:100] in w]) == 1
    assert any(DATA in w for w in writes)  # the whole body in one write


def test_short_body_ending_cleanly_still_aborts() -> None:
    client = Client(len(DATA))
    stream = ManualStream(len(DATA))
    seen = outcome(relay_body(stream, client.request))
    stream.send(DATA[:100])
    stream.end()  # the backend claims success but sent 100 of 10240 bytes
    assert client.transport.disconnected
    assert not client.request.finished
    assert isinstance(seen[0], Failure)
    assert "100 of 10240" in str(seen[0].value)


def test_short_body_under_a_limit_aborts() -> None:
    client = Client(None)
    stream = ManualStream(None)
    seen = outcome(relay_body(stream, client.request, limit=50))
    stream.send(b"x" * 20)
    stream.end()
    assert client.transport.disconnected
    assert isinstance(seen[0], Failure)


def test_body_longer_than_announced_aborts_instead_of_overrunning() -> None:
    client = Client(5)
    stream = ManualStream(None)
    seen = outcome(relay_body(stream, client.request))
    stream.send(b"abc")
    stream.send(b"defg")
    assert client.transport.disconnected
    assert client.body == b""  # a small body is gathered: nothing went out before the overrun
    assert isinstance(seen[0], Failure)
    assert stream.cancelled


def test_client_disconnect_stops_the_backend_and_writes_nothing_more() -> None:
    client = Client(len(DATA))
    stream = ManualStream(len(DATA))
    seen = outcome(relay_body(stream, client.request))
    stream.send(DATA[:1000])
    written = client.transport.value()
    client.disconnect()
    assert seen == [1000]
    assert stream.cancelled == 1
    assert stream.socket.producerState == "stopped"
    stream.send(DATA[1000:2000])
    stream.end(CancelledError())  # the cancelled backend transfer reports itself
    assert client.transport.value() == written


def test_client_gone_before_the_relay_starts() -> None:
    client = Client(len(DATA))
    client.disconnect()
    stream = ManualStream(len(DATA))
    assert outcome(relay_body(stream, client.request)) == [0]
    assert stream.cancelled == 1
    assert stream.consumer is None


def test_empty_limit_writes_nothing_and_finishes() -> None:
    client = Client(0)
    stream = ManualStream(None)
    assert outcome(relay_body(stream, client.request, limit=0)) == [0]
    assert stream.cancelled == 1
    assert client.request.finished


def test_negative_skip_is_rejected() -> None:
    client = Client(1)
    with pytest.raises(ValueError):
        relay_body(ManualStream(1), client.request, skip=-1)
