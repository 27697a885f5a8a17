"""A backend that stops sending mid-body is cut off after ``backend_timeout`` of silence.

Driven by ``task.Clock``: the body's protocol is fed by hand, the way ``Response.deliverBody``
feeds it, so the countdown, its reset on progress and its pause under client backpressure are
seen exactly.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionAborted
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from s3orch.backend.interface import BackendUnavailable
from s3orch.backend.s3_streams import _StreamProtocol

TIMEOUT = 10.0


class Consumer:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.data.append(data)


class Transport:
    """The response transport: stopProducing drops the connection, as Twisted's does."""

    def __init__(self) -> None:
        self.stopped = False
        self.paused = False
        self.protocol: _StreamProtocol | None = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(ConnectionAborted()))


def started(expected: int | None = 100) -> tuple[_StreamProtocol, Deferred[None], Clock, Transport, list[Failure]]:
    clock = Clock()
    done: Deferred[None] = Deferred()
    failures: list[Failure] = []
    done.addErrback(failures.append)
    protocol = _StreamProtocol(Consumer(), done, expected, "b1", clock, TIMEOUT)
    transport = Transport()
    transport.protocol = protocol
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    protocol.reapply_pause()  # what S3Stream.deliver does once deliverBody returned
    return protocol, done, clock, transport, failures


def test_silence_for_the_timeout_cuts_the_body_as_backend_unavailable() -> None:
    protocol, _, clock, transport, failures = started()
    protocol.dataReceived(b"x" * 40)
    clock.advance(TIMEOUT - 0.1)
    assert not transport.stopped
    clock.advance(0.2)
    assert transport.stopped and protocol.stalled
    (failure,) = failures
    assert isinstance(failure.value, BackendUnavailable)
    assert "stalled after 40 bytes" in str(failure.value)


def test_each_chunk_restarts_the_countdown() -> None:
    protocol, _, clock, transport, failures = started(expected=None)
    for _ in range(5):
        clock.advance(TIMEOUT * 0.9)
        protocol.dataReceived(b"x")
    assert not transport.stopped and failures == []
    protocol.connectionLost(Failure(ResponseDone()))
    assert failures == [] and clock.getDelayedCalls() == []


def test_no_countdown_while_the_client_holds_us_paused() -> None:
    protocol, _, clock, transport, failures = started()
    protocol.pauseProducing()
    clock.advance(TIMEOUT * 10)  # a slow client is write_timeout's business, not the backend's
    assert not transport.stopped and failures == []
    protocol.resumeProducing()
    clock.advance(TIMEOUT + 0.1)
    assert transport.stopped and isinstance(failures[0].value, BackendUnavailable)


def test_a_cancel_is_still_a_cancel_and_leaves_no_timer() -> None:
    protocol, _, clock, transport, failures = started()
    protocol.stop()
    assert transport.stopped and isinstance(failures[0].value, CancelledError)
    assert clock.getDelayedCalls() == []


def test_without_a_clock_nothing_is_timed() -> None:
    done: Deferred[None] = Deferred()
    protocol = _StreamProtocol(Consumer(), done, 10, "b1")
    transport = Transport()
    transport.protocol = protocol
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    protocol.dataReceived(b"x" * 10)
    protocol.connectionLost(Failure(ResponseDone()))
    assert done.called


def test_no_countdown_while_delivering_what_came_with_the_headers() -> None:
    clock = Clock()
    done: Deferred[None] = Deferred()
    protocol = _StreamProtocol(Consumer(), done, 40, "b1", clock, TIMEOUT)
    transport = Transport()
    transport.protocol = protocol
    protocol.makeConnection(transport)  # type: ignore[no-untyped-call]
    protocol.dataReceived(b"x" * 40)  # the whole body, buffered with the headers
    protocol.connectionLost(Failure(ResponseDone()))
    assert not clock.getDelayedCalls()  # never armed, nothing to cancel
    protocol.reapply_pause()
    assert not clock.getDelayedCalls() and done.called
