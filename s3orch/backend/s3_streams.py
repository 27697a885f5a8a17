"""Object bodies to and from an S3 backend, never buffered whole.

* :class:`S3Stream`: a GET whose headers have arrived, its body delivered into an
  :class:`~s3orch.backend.interface.IBodyConsumer` with backpressure reaching the
  backend socket (the :class:`~s3orch.backend.interface.BackendStream` of this client);
* :class:`FileSliceProducer`: the ``IBodyProducer`` of an upload, sending a payload's
  bytes from its reader with progress reported to the stall watchdog.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any, BinaryIO, cast

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Cooperator, NotPaused, TaskFinished, TaskStopped
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH

from s3orch.backend.http11_response import BodyReader, LeanResponse
from s3orch.backend.interface import (
    BackendError,
    BackendUnavailable,
    IBodyConsumer,
    PushProducer,
    SpliceSource,
)
from s3orch.backend.s3_responses import Response
from s3orch.observe.metrics import BACKEND_BYTES

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

#: The ``in`` byte counter of each backend, bound once (a stream is opened per GET).
_bytes_in = lru_cache(maxsize=256)(lambda backend: BACKEND_BYTES.labels(backend, "in"))


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``bytes start-end/total`` as a tuple (None if absent or total unknown)."""
    if not value:
        return None
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None or match.group(3) == "*":
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


class _NullConsumer:
    """Consumer for a body nobody wants (a cancelled, undelivered stream)."""

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass


class _StreamProtocol(TwistedProtocol):
    """Forwards a GET body to an :class:`IBodyConsumer`; is also the producer
    the consumer pauses, proxying to the response transport
    (``TransportProxyProducer``) and remembering the pause, because
    ``Response.deliverBody`` resumes the transport right after
    ``connectionMade`` and would silently undo a pause made there.

    With a ``clock`` and an ``idle_timeout`` (``server.backend_timeout``), a backend that
    sends nothing for that long while we are ready to read is cut off and the body fails
    as a :class:`BackendUnavailable`, so the client's connection is aborted at once (a
    short 200 is never an option) instead of hanging until the client gives up. While the
    consumer has paused us the wait is the client's, not the backend's: no countdown.
    """

    def __init__(
        self,
        consumer: IBodyConsumer,
        done: Deferred[None],
        expected: int | None,
        backend: str,
        clock: IReactorTime | None = None,
        idle_timeout: float = 0.0,
    ) -> None:
        self._consumer = consumer
        self._done = done
        self._expected = expected
        self._backend = backend
        self._bytes_in = _bytes_in(backend)
        self._clock = clock
        self._idle_timeout = self.idle_timeout = idle_timeout
        self._idle: IDelayedCall | None = None
        self.received = 0
        self.stopped = False
        self.stalled = False
        self.finished = False
        self.paused = False
        #: Inside ``deliverBody``: what arrived with the headers is being handed over (often
        #: the whole body); the countdown starts after it (:meth:`reapply_pause`), if at all.
        self.delivering = True
        #: The rest of the body is read by the zero-copy relay (:class:`LentBody`): no reads,
        #: no countdown here; ``cut_reason`` is why it failed there, if it did.
        self.lent = False
        self.cut_reason: str | None = None

    def _arm(self) -> None:
        """(Re)start the countdown to a stall: called on each sign of life and on resume."""
        if (
            self.delivering
            or self.lent
            or self._clock is None
            or self._idle_timeout <= 0
            or self.paused
            or self.stopped
            or self.finished
        ):
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._idle_timeout)
        else:
            self._idle = self._clock.callLater(self._idle_timeout, self._stall)

    def _disarm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _stall(self) -> None:
        self._idle = None
        if self.stopped or self.finished:
            return
        self.stalled = True
        self.stop()

    def connectionMade(self) -> None:
        self._consumer.registerProducer(self, True)
        self._arm()

    def _transport(self) -> PushProducer | None:
        return cast(PushProducer | None, self.transport)

    def pauseProducing(self) -> None:
        self.paused = True
        self._disarm()
        transport = self._transport()
        if transport is not None and not self.finished:
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        if self.lent:
            return  # the socket is not ours to read until the body ends
        transport = self._transport()
        if transport is not None and not self.finished:
            transport.resumeProducing()
        self._arm()

    def stopProducing(self) -> None:
        self.stop()

    def reapply_pause(self) -> None:
        """Called after ``deliverBody`` returns: re-pause if the consumer asked to, else
        start the stall countdown (unless the body ended already)."""
        self.delivering = False
        if self.paused:
            self.pauseProducing()
        else:
            self._arm()

    def dataReceived(self, data: bytes) -> None:
        if self.stopped:
            return
        self.received += len(data)
        self._bytes_in.inc(len(data))
        self._arm()
        self._consumer.write(data)

    def lend(self) -> None:
        """The rest of the body is read around us (:class:`LentBody`)."""
        self.lent = True
        self._disarm()

    def moved(self, count: int) -> None:
        """``count`` body bytes were read around us: counted as if received."""
        self.received += count
        self._bytes_in.inc(count)

    def cut(self, reason: str) -> None:
        """The lent body failed: drop the connection, and fail with ``reason``."""
        if self.cut_reason is None:
            self.cut_reason = reason
        self.stop()

    def stop(self) -> None:
        """Drop the connection; the rest of the body is not drained."""
        if self.stopped or self.finished:
            return
        self.stopped = True
        self._disarm()
        transport = self._transport()
        if transport is not None:
            transport.stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished:
            return
        self.finished = True
        self._disarm()
        self._consumer.unregisterProducer()
        complete = isinstance(reason.value, ResponseDone) or (
            isinstance(reason.value, PotentialDataLoss)
            and self._expected is not None
            and self.received == self._expected
        )
        if complete:
            self._done.callback(None)
        elif self.cut_reason is not None:
            self._done.errback(
                BackendUnavailable(f"body cut after {self.received} bytes: {self.cut_reason}", backend=self._backend)
            )
        elif self.stalled:
            self._done.errback(
                BackendUnavailable(
                    f"body stalled after {self.received} bytes: nothing for {self._idle_timeout:g}s",
                    backend=self._backend,
                )
            )
        elif self.stopped:
            self._done.errback(CancelledError())
        else:
            self._done.errback(
                BackendUnavailable(
                    f"body cut after {self.received} bytes"
                    + (f" of {self._expected}" if self._expected is not None else "")
                    + f": {reason.getErrorMessage()}",
                    backend=self._backend,
                )
            )


class LentBody:
    """The :class:`SpliceSource` of an :class:`S3Stream`: its connection lends the socket,
    its body protocol counts the bytes and ends the delivery as if it had read them."""

    __slots__ = ("_protocol", "_connection", "stall_timeout")

    def __init__(self, protocol: _StreamProtocol, connection: BodyReader) -> None:
        self._protocol = protocol
        self._connection = connection
        self.stall_timeout = protocol.idle_timeout

    def remaining(self) -> int:
        return self._connection.body_left()

    def lend(self) -> int:
        fd = self._connection.body_fd()
        if fd is None:
            raise RuntimeError("the body's socket can no longer be lent")
        self._protocol.lend()
        self._connection.lend_body()
        return fd

    def moved(self, count: int) -> None:
        self._protocol.moved(count)

    def finish(self) -> None:
        self._connection.lent_body_done()

    def fail(self, reason: str) -> None:
        self._protocol.cut(reason)


class S3Stream:
    """A backend GET whose headers have arrived; see ``BackendStream``."""

    def __init__(
        self,
        response: Response,
        headers: dict[str, str],
        backend: str,
        clock: IReactorTime | None = None,
        idle_timeout: float = 0.0,
    ) -> None:
        self.status: int = response.code
        self.headers = headers
        self.length: int | None = None if response.length is UNKNOWN_LENGTH else int(response.length)
        self.content_range = parse_content_range(headers.get("content-range"))
        self._response = response
        self._backend = backend
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._protocol: _StreamProtocol | None = None

    def _expected(self) -> int | None:
        if self.length is not None:
            return self.length
        if self.content_range is not None:
            return self.content_range[1] - self.content_range[0] + 1
        return None

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        """Stream the body into ``consumer`` (see ``BackendStream.deliver``)."""
        if self._protocol is not None:
            raise RuntimeError("body already delivered or cancelled")
        done: Deferred[None] = Deferred()
        protocol = _StreamProtocol(
            consumer, done, self._expected(), self._backend, self._clock, self._idle_timeout
        )
        self._protocol = protocol
        self._response.deliverBody(protocol)
        protocol.reapply_pause()
        return done

    def splice_source(self) -> SpliceSource | None:
        """The rest of the body as a :class:`SpliceSource`, while it is being delivered over
        a lean plain-TCP connection with a known length (see ``BodyReader.body_fd``)."""
        protocol = self._protocol
        response = self._response
        if (
            protocol is None
            or protocol.delivering
            or protocol.stopped
            or protocol.finished
            or protocol.lent
            or not isinstance(response, LeanResponse)
        ):
            return None
        connection = response.body_socket()
        return LentBody(protocol, connection) if connection is not None else None

    def cancel(self) -> None:
        """Abandon the body: the connection is dropped, never drained."""
        if self._protocol is None:
            ignored: Deferred[None] = Deferred()
            ignored.addErrback(lambda _: None)
            self._protocol = _StreamProtocol(_NullConsumer(), ignored, self._expected(), self._backend)
            self._response.deliverBody(self._protocol)
        self._protocol.stop()


class FileSliceProducer:
    """``IBodyProducer`` sending exactly ``length`` bytes of a seekable file.

    Unlike ``FileBodyProducer`` it does not close the file (the caller's spool
    may serve a retry on another backend) and it reports progress, which keeps
    the stall watchdog quiet and feeds the bytes-out counter.
    """

    def __init__(
        self,
        body: BinaryIO,
        length: int,
        cooperator: Cooperator,
        read_size: int,
        count_bytes: Callable[[int], None],
    ) -> None:
        self.length = length
        self._body = body
        self._cooperator = cooperator
        self._read_size = read_size
        self._count_bytes = count_bytes
        #: Called after each chunk is handed to the transport (stall watchdog).
        self.on_chunk: Callable[[], None] = lambda: None
        self._task: Any = None

    def startProducing(self, consumer: Any) -> Deferred[None]:
        if self.length <= self._read_size:
            # One read's worth (most small objects): written at once, behind the request's
            # headers, rather than from a cooperator task on the next reactor turn.
            try:
                for _ in self._write_loop(consumer):
                    pass
            except Exception:
                return fail()
            return succeed(None)
        self._task = self._cooperator.cooperate(self._write_loop(consumer))
        done: Deferred[None] = Deferred()

        def finished(_: object) -> None:
            done.callback(None)

        def failed(reason: Failure) -> None:
            if isinstance(reason.value, TaskStopped):
                return  # stopProducing: IBodyProducer's Deferred must not fire
            done.errback(reason)

        self._task.whenDone().addCallbacks(finished, failed)
        return done

    def _write_loop(self, consumer: Any) -> Iterator[None]:
        remaining = self.length
        while remaining > 0:
            chunk = self._body.read(min(self._read_size, remaining))
            if not chunk:
                raise BackendError(f"upload source ended {remaining} bytes early")
            remaining -= len(chunk)
            consumer.write(chunk)
            self._count_bytes(len(chunk))
            self.on_chunk()
            yield None

    def pauseProducing(self) -> None:
        if self._task is None:  # written at once (or not started): nothing to pause
            return
        with contextlib.suppress(TaskFinished):  # the transport may lag behind the end
            self._task.pause()

    def resumeProducing(self) -> None:
        if self._task is None:
            return
        with contextlib.suppress(NotPaused):
            self._task.resume()

    def stopProducing(self) -> None:
        if self._task is not None:
            try:
                self._task.stop()
            except TaskFinished:
                pass
