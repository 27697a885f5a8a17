"""Body-sized socket buffers (s3orch/http/socket_buffers.py) and the relay's write window.

The client socket is Twisted's own ``FileDescriptor`` write path (its buffer, its
``bufferSize`` high-water mark, its producer pausing) over a MemoryReactor, with a
``writeSomeData`` that takes only what the test lets through: backpressure is Twisted's
real logic, not a double's.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import abstract
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from s3orch.backend.http11_connection import HTTP11Connection
from s3orch.backend.interface import BackendUnavailable, IBodyConsumer
from s3orch.backend.twisted_agent import _BulkReadProtocol
from s3orch.http.relay import relay_body
from s3orch.http.socket_buffers import (
    BODY_READ_SIZE,
    MAX_WIDE_WINDOWS,
    RELAY_WRITE_WINDOW,
    WriteWindow,
    set_read_size,
    socket_transport,
)

KiB = 1024
DEFAULT_BUFFER = abstract.FileDescriptor.bufferSize
DEFAULT_SEND_LIMIT = abstract.FileDescriptor.SEND_LIMIT


class SocketTransport(abstract.FileDescriptor):
    """A connected socket whose peer takes ``room`` bytes per write opportunity."""

    def __init__(self) -> None:
        super().__init__(reactor=MemoryReactor())
        self.connected = 1
        self.room = 0
        self.sent = b""
        self.send_sizes: list[int] = []

    def writeSomeData(self, data: bytes) -> int:
        taken = bytes(data[: min(self.room, self.SEND_LIMIT)])
        self.room -= len(taken)
        self.sent += taken
        self.send_sizes.append(len(taken))
        return len(taken)

    def drain(self) -> None:
        """The peer reads everything: the reactor calls doWrite while there is data."""
        self.room = 1 << 30
        while self.pending():
            self.doWrite()

    def pending(self) -> int:
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    def abortConnection(self) -> None:
        self.connectionLost(Failure(Exception("aborted")))

    def getPeer(self) -> Any:
        return None

    def getHost(self) -> Any:
        return None


class _Captured(Request):
    captured: list[Request] = []

    def process(self) -> None:
        _Captured.captured.append(self)


def client(length: int | None) -> tuple[HTTPChannel, Request, SocketTransport]:
    transport = SocketTransport()
    channel = HTTPChannel()
    channel.callLater = Clock().callLater
    channel.requestFactory = _Captured  # type: ignore[assignment]
    channel.makeConnection(transport)
    _Captured.captured.clear()
    channel.dataReceived(b"GET /b/k HTTP/1.1\r\nHost: s3\r\n\r\n")
    (request,) = _Captured.captured
    request.setResponseCode(200)
    if length is not None:
        request.setHeader(b"content-length", b"%d" % length)
    return channel, request, transport


class Stream:
    """A backend stream driven by hand; its socket's producerState is the backpressure."""

    def __init__(self, length: int | None) -> None:
        self.status = 200
        self.length = length
        self.content_range: tuple[int, int, int] | None = None
        self.headers: dict[str, str] = {}
        self.socket = StringTransport()
        self.consumer: IBodyConsumer | None = None
        self.done: Deferred[None] = Deferred()

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        self.consumer = consumer
        consumer.registerProducer(self.socket, True)
        return self.done

    def cancel(self) -> None:
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


CHUNK = bytes(range(256)) * 256  # 64 KiB


def test_a_large_body_pauses_the_backend_only_past_the_window_and_resumes_once_drained() -> None:
    chunks = RELAY_WRITE_WINDOW // len(CHUNK) + 2
    channel, request, transport = client(chunks * len(CHUNK))
    stream = Stream(chunks * len(CHUNK))
    seen = outcome(relay_body(stream, request))
    assert transport.bufferSize == RELAY_WRITE_WINDOW
    for _ in range(RELAY_WRITE_WINDOW // len(CHUNK) - 1):  # the window less one chunk (and the headers)
        stream.send(CHUNK)
    assert stream.socket.producerState == "producing"  # Twisted's 64 KiB would have paused at once
    stream.send(CHUNK)
    stream.send(CHUNK)
    assert stream.socket.producerState == "paused"  # backpressure still reaches the backend
    assert transport.pending() <= RELAY_WRITE_WINDOW + len(CHUNK) + 1024  # bounded: window + a read
    transport.drain()
    assert transport.pending() == 0
    assert max(transport.send_sizes) > DEFAULT_SEND_LIMIT  # bigger sends while relaying
    assert stream.socket.producerState == "producing"
    stream.send(CHUNK)
    stream.end()
    assert seen == [chunks * len(CHUNK)]
    transport.drain()
    assert transport.sent.endswith(CHUNK * chunks)
    assert (transport.bufferSize, transport.SEND_LIMIT) == (DEFAULT_BUFFER, DEFAULT_SEND_LIMIT)


def test_the_window_is_narrowed_before_finish_starts_the_next_response() -> None:
    channel, request, transport = client(2 * len(CHUNK))
    sizes: list[int] = []
    finish = request.finish

    def recording_finish() -> None:
        sizes.append(transport.bufferSize)
        finish()

    request.finish = recording_finish  # type: ignore[method-assign]
    stream = Stream(2 * len(CHUNK))
    relay_body(stream, request)
    stream.send(CHUNK)
    stream.send(CHUNK)
    stream.end()
    assert sizes == [DEFAULT_BUFFER]


def test_a_small_body_keeps_the_socket_sizes() -> None:
    channel, request, transport = client(1000)
    stream = Stream(1000)
    relay_body(stream, request)
    assert transport.bufferSize == DEFAULT_BUFFER
    stream.send(b"x" * 1000)
    stream.end()


def test_the_window_is_narrowed_when_the_backend_fails_or_the_client_leaves() -> None:
    channel, request, transport = client(4 * len(CHUNK))
    stream = Stream(4 * len(CHUNK))
    seen = outcome(relay_body(stream, request))
    stream.send(CHUNK)
    assert transport.bufferSize == RELAY_WRITE_WINDOW
    stream.end(BackendUnavailable("cut"))
    assert isinstance(seen[0], Failure)
    assert transport.bufferSize == DEFAULT_BUFFER

    channel, request, transport = client(4 * len(CHUNK))
    stream = Stream(4 * len(CHUNK))
    seen = outcome(relay_body(stream, request))
    stream.send(CHUNK)
    channel.connectionLost(Failure(Exception("gone")))
    assert seen == [len(CHUNK)]
    assert transport.bufferSize == DEFAULT_BUFFER


class _Wrapper:
    """A TLS-like transport: the socket is underneath."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport


def test_sizes_reach_the_socket_under_a_wrapper_and_leave_doubles_alone() -> None:
    sock = SocketTransport()
    assert socket_transport(_Wrapper(sock)) is sock
    set_read_size(_Wrapper(sock))
    assert sock.bufferSize == BODY_READ_SIZE
    double = StringTransport()
    set_read_size(double)
    assert not hasattr(double, "bufferSize")
    window = WriteWindow(double)
    assert not window.widened
    window.restore()


def test_a_window_restores_once_and_never_shrinks_a_bigger_socket() -> None:
    sock = SocketTransport()
    window = WriteWindow(_Wrapper(sock))
    assert window.widened and sock.bufferSize == RELAY_WRITE_WINDOW
    window.restore()
    sock.bufferSize = 123  # changed by someone else since: a second restore must not undo it
    window.restore()
    assert sock.bufferSize == 123
    sock.bufferSize = 4 * RELAY_WRITE_WINDOW
    assert not WriteWindow(sock).widened
    assert sock.bufferSize == 4 * RELAY_WRITE_WINDOW


def test_backend_connections_read_body_sized_chunks() -> None:
    sock = SocketTransport()
    protocol = _BulkReadProtocol(lambda _: None)
    protocol.makeConnection(sock)
    assert sock.bufferSize == BODY_READ_SIZE


def test_lean_backend_connections_read_body_sized_chunks() -> None:
    sock = SocketTransport()
    HTTP11Connection().makeConnection(sock)
    assert sock.bufferSize == BODY_READ_SIZE


def test_only_a_few_responses_hold_a_wide_window_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays flat under many concurrent large GETs: past MAX_WIDE_WINDOWS the relay keeps
    the socket's own sizes, and a restored window frees its place."""
    monkeypatch.setattr(WriteWindow, "active", 0)
    socks = [SocketTransport() for _ in range(MAX_WIDE_WINDOWS + 1)]
    windows = [WriteWindow(sock) for sock in socks]
    assert [w.widened for w in windows] == [True] * MAX_WIDE_WINDOWS + [False]
    assert socks[-1].bufferSize != RELAY_WRITE_WINDOW
    windows[0].restore()
    windows[0].restore()  # idempotent: frees its place once
    assert WriteWindow.active == MAX_WIDE_WINDOWS - 1
    late = WriteWindow(SocketTransport())
    assert late.widened and WriteWindow.active == MAX_WIDE_WINDOWS
    for window in [*windows, late]:
        window.restore()
    assert WriteWindow.active == 0
