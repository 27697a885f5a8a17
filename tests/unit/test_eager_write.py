"""Sending at once when nothing is queued (s3orch/http/eager_write.py), on both sides.

The transport is Twisted's real ``tcp.Connection`` (its buffers, ``doWrite``, producer pausing)
over a MemoryReactor, with only the socket's ``send()`` replaced: it takes as many bytes as the
test gives it room for.  So "sent now" is "taken by writeSomeData without the reactor being asked
for writability", and a partial send leaves the rest to Twisted's own buffer.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.internet import abstract, main, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock, Cooperator
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from zope.interface import implementer

from s3orch.backend.http11_connection import HTTP11Connection
from s3orch.backend.s3_streams import FileSliceProducer
from s3orch.http.eager_write import eager_write, eager_write_sequence, writes_eagerly
from s3orch.http.site import S3Channel, S3Site

KiB = 1024


class Socket(tcp.Connection):
    """A connected ``tcp.Connection`` whose ``send()`` takes at most ``room`` bytes in all."""

    def __init__(self, reactor: MemoryReactor, room: int = 1 << 30) -> None:
        abstract.FileDescriptor.__init__(self, reactor)  # no real socket: writeSomeData is ours
        self.connected = 1
        self.room = room
        self.sends: list[bytes] = []
        self.broken = False
        self.host_calls = 0

    def writeSomeData(self, data: Any) -> Any:
        if self.broken:
            return main.CONNECTION_LOST
        taken = min(len(data), self.room, self.SEND_LIMIT)
        self.room -= taken
        if taken:
            self.sends.append(bytes(data[:taken]))
        return taken

    @property
    def wire(self) -> bytes:
        return b"".join(self.sends)

    @property
    def waiting_to_write(self) -> bool:
        """Asked the reactor for writability (the extra epoll round trip eager writes avoid)."""
        return self in self.reactor.getWriters()

    def drain(self) -> None:
        """The peer reads everything: Twisted's doWrite runs until its buffer is empty."""
        self.room = 1 << 30
        while self.waiting_to_write:
            self.doWrite()

    def getHost(self) -> IPv4Address:
        self.host_calls += 1
        return IPv4Address("TCP", "127.0.0.1", 8000)

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 50000)

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.state = "producing"

    def pauseProducing(self) -> None:
        self.state = "paused"

    def resumeProducing(self) -> None:
        self.state = "producing"

    def stopProducing(self) -> None:
        self.state = "stopped"


# --- the function -------------------------------------------------------------


def test_an_idle_socket_sends_at_once_without_asking_the_reactor() -> None:
    sock = Socket(MemoryReactor())
    eager_write(sock, b"hello")
    assert sock.sends == [b"hello"]
    assert not sock.waiting_to_write
    assert sock.dataBuffer == b"" and sock._tempDataBuffer == []


def test_a_partial_send_leaves_the_rest_to_twisted_and_later_writes_queue_behind_it() -> None:
    sock = Socket(MemoryReactor(), room=10)
    eager_write(sock, b"0123456789abcdef")
    assert sock.wire == b"0123456789"
    assert sock.waiting_to_write  # the rest waits for writability, as a plain write would
    eager_write(sock, b"-tail")  # not idle any more: queued behind the rest, never sent ahead
    assert sock.wire == b"0123456789"
    sock.drain()
    assert sock.wire == b"0123456789abcdef-tail"
    assert not sock.waiting_to_write


def test_a_partial_send_past_the_high_water_mark_pauses_the_producer() -> None:
    sock = Socket(MemoryReactor(), room=1 * KiB)
    producer = Producer()
    sock.registerProducer(producer, True)
    eager_write(sock, b"x" * (sock.bufferSize + 2 * KiB))
    assert producer.state == "paused"
    sock.drain()
    assert producer.state == "producing"
    assert sock.wire == b"x" * (sock.bufferSize + 2 * KiB)


def test_a_full_socket_buffers_everything() -> None:
    sock = Socket(MemoryReactor(), room=0)
    eager_write(sock, b"abc")
    assert sock.sends == [] and sock.waiting_to_write
    sock.drain()
    assert sock.wire == b"abc"


def test_a_lost_connection_falls_back_to_twisteds_write_which_reports_it() -> None:
    sock = Socket(MemoryReactor())
    sock.broken = True
    eager_write(sock, b"abc")
    assert sock._tempDataBuffer == [b"abc"] and sock.waiting_to_write
    assert sock.doWrite() is main.CONNECTION_LOST  # the reactor closes the connection on this


def test_a_send_that_raises_falls_back_to_twisteds_write() -> None:
    sock = Socket(MemoryReactor())

    def boom(data: Any) -> int:
        raise OSError("unexpected")

    sock.writeSomeData = boom  # type: ignore[method-assign]
    eager_write(sock, b"abc")
    assert sock._tempDataBuffer == [b"abc"] and sock.waiting_to_write


def test_tls_and_other_transports_get_a_plain_write() -> None:
    double = StringTransport()
    eager_write(double, b"abc")
    eager_write_sequence(double, [b"d", b"e"])
    assert double.value() == b"abcde"

    tls_writes: list[bytes] = []

    class TLSLayer:
        def write(self, data: bytes) -> None:
            tls_writes.append(data)

    sock = Socket(MemoryReactor())
    sock.TLS = True  # startTLS on a TCP connection: bytes go through the TLS protocol
    sock.protocol = TLSLayer()  # type: ignore[assignment]
    eager_write(sock, b"secret")
    assert tls_writes == [b"secret"] and sock.sends == []


def test_a_busy_or_closing_transport_is_not_written_to_directly() -> None:
    for state in ("disconnecting", "producerPaused", "_writeDisconnecting", "_aborting"):
        sock = Socket(MemoryReactor())
        setattr(sock, state, True)
        assert not writes_eagerly(sock), state
        eager_write(sock, b"abc")
        assert sock.sends == [], state
    queued = Socket(MemoryReactor(), room=0)
    queued.write(b"first")
    assert not writes_eagerly(queued)
    assert writes_eagerly(Socket(MemoryReactor()))


def test_a_sequence_goes_out_as_one_send() -> None:
    sock = Socket(MemoryReactor())
    eager_write_sequence(sock, [b"a", b"b", b"c"])
    assert sock.sends == [b"abc"]


# --- the front door's channel ----------------------------------------------------


class Body(Resource):
    isLeaf = True

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self.chunks = chunks

    def render_GET(self, request: Any) -> int:
        request.setHeader(b"content-length", b"%d" % sum(map(len, self.chunks)))
        for chunk in self.chunks:
            request.write(chunk)
        request.finish()
        return 1  # NOT_DONE_YET's value: the response is already finished

    def render_HEAD(self, request: Any) -> int:
        request.setHeader(b"content-length", b"5")
        request.finish()
        return 1


def _channel(chunks: list[bytes], room: int = 1 << 30) -> tuple[S3Channel, Socket]:
    site = S3Site(Body(chunks), early_handler=None, reactor=Clock())
    channel: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    sock = Socket(MemoryReactor(), room)
    sock.protocol = channel
    channel.makeConnection(sock)
    return channel, sock


def test_a_small_response_leaves_as_one_send_in_the_same_turn() -> None:
    channel, sock = _channel([b"hello"])
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(sock.sends) == 1, sock.sends  # status line, headers and body together
    assert sock.sends[0].startswith(b"HTTP/1.1 200 OK\r\n") and sock.sends[0].endswith(b"\r\n\r\nhello")
    assert not sock.waiting_to_write


def test_a_head_answer_is_sent_at_once() -> None:
    channel, sock = _channel([])
    channel.dataReceived(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(sock.sends) == 1, sock.sends
    assert b"\r\nContent-Length: 5\r\n" in sock.sends[0] and sock.sends[0].endswith(b"\r\n\r\n")
    assert not sock.waiting_to_write


def test_headers_sent_at_once_and_a_body_left_to_the_buffer_arrive_in_order() -> None:
    chunks = [b"a" * (300 * KiB), b"b" * (200 * KiB), b"c" * 10]
    channel, sock = _channel(chunks, room=4 * KiB)  # a small socket buffer: most goes to Twisted's
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(sock.wire) == 4 * KiB and sock.waiting_to_write
    sock.drain()
    head, _, body = sock.wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 512010" in head
    assert body == b"".join(chunks)


def test_responses_on_a_kept_alive_connection_ask_the_socket_for_its_address_once() -> None:
    channel, sock = _channel([b"hi"])
    for _ in range(3):
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert sock.wire.count(b"HTTP/1.1 200 OK") == 3
    assert sock.host_calls == 1


def test_100_continue_is_sent_at_once() -> None:
    site = S3Site(Resource(), early_handler=None, reactor=Clock())
    channel: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    sock = Socket(MemoryReactor())
    channel.makeConnection(sock)
    channel.dataReceived(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert sock.sends == [b"HTTP/1.1 100 Continue\r\n\r\n"] and not sock.waiting_to_write


# --- the backend client --------------------------------------------------------------


def _backend(room: int = 1 << 30) -> tuple[HTTP11Connection, Socket]:
    connection = HTTP11Connection()
    sock = Socket(MemoryReactor(), room)
    sock.protocol = connection
    connection.makeConnection(sock)
    return connection, sock


def _head_block() -> bytes:
    return b"Host: backend\r\n"


def test_a_bodyless_backend_request_is_sent_at_once() -> None:
    connection, sock = _backend()
    connection.request(b"GET", b"/b/k", _head_block(), None)
    assert sock.sends == [b"GET /b/k HTTP/1.1\r\nHost: backend\r\n\r\n"] and not sock.waiting_to_write


def test_a_small_upload_leaves_with_its_head_in_one_send() -> None:
    connection, sock = _backend()
    producer = FileSliceProducer(io.BytesIO(b"payload"), 7, Cooperator(), 64 * KiB, lambda n: None)
    connection.request(b"PUT", b"/b/k", _head_block(), producer)
    assert sock.sends == [b"PUT /b/k HTTP/1.1\r\nHost: backend\r\nContent-Length: 7\r\n\r\npayload"]
    assert not sock.waiting_to_write


class BurstProducer:
    """Writes ``chunks`` at once from startProducing, and records being paused."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.length = sum(map(len, chunks))
        self.paused = False

    def startProducing(self, consumer: Any) -> Deferred[None]:
        for chunk in self.chunks:
            consumer.write(chunk)
        return succeed(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


def test_a_burst_past_the_gather_limit_reaches_twisteds_buffer_and_backpressure_in_order() -> None:
    connection, sock = _backend(room=1 * KiB)
    chunks = [bytes([65 + i]) * (40 * KiB) for i in range(sock.bufferSize // (40 * KiB) + 2)]
    producer = BurstProducer(chunks)
    # Keep the producer registered after its burst to see the transport's pause.
    connection._body_written = lambda consumer: None  # type: ignore[method-assign]
    connection.request(b"PUT", b"/b/k", _head_block(), producer)
    assert producer.paused  # the transport saw the bytes past its high-water mark
    sock.drain()
    head, _, body = sock.wire.partition(b"\r\n\r\n")
    assert head.startswith(b"PUT /b/k HTTP/1.1") and body == b"".join(chunks)


def test_headers_are_sent_to_a_string_transport_unchanged() -> None:
    connection = HTTP11Connection()
    transport = StringTransport()
    connection.makeConnection(transport)
    headers = Headers({b"host": [b"backend"]})
    connection.request(b"HEAD", b"/b/k", b"".join(b"%s: %s\r\n" % (n, v[0]) for n, v in headers.getAllRawHeaders()),
                       None)
    assert transport.value() == b"HEAD /b/k HTTP/1.1\r\nHost: backend\r\n\r\n"
