"""Reading an object made of several extents as one backend stream.

A completed multipart upload is stored as one backend object per part, each
placed on its own backend (see :class:`~s3orch.store.interface.Extent`).  A GET
of it, or of a range of it, must still look like one
:class:`~s3orch.backend.interface.BackendStream` to the relay, and keep the
relay's guarantees:

* the first extent the range touches is opened, failing over between its
  copies, before the caller sets any response header, so an unreachable only
  holder is a 503 and never a 404 or a short 200 (an acknowledged write never
  reads as missing);
* each following extent is opened while the previous one streams (one ahead),
  so the seams cost no round trip;
* client backpressure reaches the backend socket of the extent being read;
  cancelling stops the extent being read and the one opened ahead;
* a failure after the first byte of the body errbacks the delivery (the relay
  then aborts the client connection: never a short 200, no torn read).  An extent whose
  stream fails before its first byte is opened once more (on any copy) first.

Backends that ignore a Range and send a whole extent are cut to the range here,
so the stream delivers exactly :attr:`ExtentStream.length` bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orch.backend.interface import (
    BackendError,
    BackendStream,
    BackendUnavailable,
    IBodyConsumer,
    PushProducer,
)
from s3orch.payload import Payload
from s3orch.store.interface import Extent, Location

#: Opens (a range of) one extent on one of its copies, failing over between copies.
Opener = Callable[
    [Extent, tuple[int, int] | None], Coroutine[Any, Any, tuple[BackendStream, Location]]
]

_log = Logger(namespace="s3orch.core.extents")


@dataclass(frozen=True)
class Piece:
    """The bytes ``start``..``end`` (inclusive, within the extent) read from one extent."""

    extent: Extent
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def sub_range(self) -> tuple[int, int] | None:
        """The Range to ask the extent's backend for (None: the whole extent)."""
        if self.start == 0 and self.end == self.extent.size - 1:
            return None
        return self.start, self.end


def plan_reads(
    extents: Sequence[Extent], size: int, byte_range: tuple[int, int] | None
) -> list[Piece]:
    """The pieces of ``extents`` that hold ``byte_range`` (inclusive; None: all ``size``
    bytes), in order; empty extents and those outside the range are skipped."""
    first, last = byte_range if byte_range is not None else (0, size - 1)
    pieces: list[Piece] = []
    for extent in extents:
        if extent.size <= 0:
            continue
        low = max(first, extent.offset)
        high = min(last, extent.offset + extent.size - 1)
        if low <= high:
            pieces.append(Piece(extent, low - extent.offset, high - extent.offset))
    return pieces


async def open_extents(
    extents: Sequence[Extent],
    size: int,
    byte_range: tuple[int, int] | None,
    opener: Opener,
) -> tuple[ExtentStream, Location]:
    """Open the first extent ``byte_range`` touches and return the stream of the range.

    The opener's errors for that first extent propagate (before any response
    header: the caller answers 503).  ``size`` is the object's size.
    """
    pieces = plan_reads(extents, size, byte_range)
    if not pieces:
        raise ValueError("the range holds no bytes of the object")
    first, location = await opener(pieces[0].extent, pieces[0].sub_range)
    return ExtentStream(pieces, first, opener, size=size, byte_range=byte_range), location


class _Opening:
    """One extent being opened (or opened and not yet delivered)."""

    def __init__(self) -> None:
        self.deferred: Deferred[tuple[BackendStream, Location]] | None = None
        self.stream: BackendStream | None = None
        self.error: Failure | None = None

    @property
    def settled(self) -> bool:
        return self.stream is not None or self.error is not None


class _PieceSink:
    """The consumer of one extent's backend stream: cuts it to the piece, forwards the
    bytes, and hands the extent's producer to the :class:`ExtentStream`."""

    def __init__(self, owner: ExtentStream, piece: Piece, stream: BackendStream) -> None:
        self.owner = owner
        self.stream = stream
        self.skip = 0
        wanted = piece.sub_range
        if wanted is not None and stream.content_range is None:
            self.skip = piece.start  # the backend ignored the Range: cut it here
        self.left = piece.length
        self.received = 0
        self.cut = False  # we stopped the stream ourselves after the last wanted byte

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        self.owner._attach(self, producer)

    def unregisterProducer(self) -> None:
        self.owner._detach(self)

    def write(self, data: bytes) -> None:
        if self.cut or self.owner._stopped:
            return
        if self.skip:
            dropped = min(self.skip, len(data))
            data = data[dropped:]
            self.skip -= dropped
            if not data:
                return
        extra = len(data) > self.left
        if extra:
            data = data[: self.left]
        if data:
            self.left -= len(data)
            self.received += len(data)
            self.owner._write(data)
        if extra and not self.owner._stopped:
            # More than the piece: the rest is not wanted (a backend that ignored the
            # Range).  A stream that ends exactly at the piece is left to end by itself,
            # so its connection goes back to the pool.
            self.cut = True
            self.stream.cancel()


class ExtentStream:
    """A :class:`BackendStream` (and push producer) over the pieces of several extents."""

    def __init__(
        self,
        pieces: Sequence[Piece],
        first: BackendStream,
        opener: Opener,
        *,
        size: int,
        byte_range: tuple[int, int] | None,
    ) -> None:
        self._pieces = list(pieces)
        self._opener = opener
        self.status = 206 if byte_range is not None else 200
        self.length: int | None = sum(p.length for p in self._pieces)
        self.content_range: tuple[int, int, int] | None = (
            (byte_range[0], byte_range[1], size) if byte_range is not None else None
        )
        self.headers: dict[str, str] = {}
        opened = _Opening()
        opened.stream = first
        self._openings: dict[int, _Opening] = {0: opened}
        self._retried: set[int] = set()
        self._consumer: IBodyConsumer | None = None
        self._done: Deferred[None] | None = None
        self._sink: _PieceSink | None = None
        self._producer: PushProducer | None = None
        self._paused = False
        self._stopped = False
        self._advance_to: int | None = None  # the piece to start next, once opened
        self._pumping = False
        self._again = False
        #: Body bytes handed to the consumer so far.
        self.delivered = 0

    # -- BackendStream -------------------------------------------------------------------

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        """Stream every piece into ``consumer`` (see ``BackendStream.deliver``)."""
        if self._consumer is not None:
            raise RuntimeError("body already delivered")
        done: Deferred[None] = Deferred()
        self._done = done
        self._consumer = consumer
        consumer.registerProducer(self, True)
        if self._stopped:
            self._finish(Failure(CancelledError()))
            return done
        self._advance_to = 0
        self._kick()
        return done

    def cancel(self) -> None:
        """Stop the extent being read and drop the ones opened ahead."""
        if self._stopped:
            return
        self._stopped = True
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.stream.cancel()
        for opening in self._openings.values():
            if opening.stream is not None:
                opening.stream.cancel()
            elif opening.deferred is not None and not opening.settled:
                opening.deferred.cancel()
        self._openings.clear()
        self._finish(Failure(CancelledError()))

    # -- IPushProducer (the relay's view) ------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        if self._producer is not None:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._producer is not None:
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self.cancel()

    # -- the pieces ----------------------------------------------------------------------

    def _attach(self, sink: _PieceSink, producer: PushProducer) -> None:
        if sink is not self._sink:
            producer.stopProducing()
            return
        self._producer = producer
        if self._paused:
            producer.pauseProducing()

    def _detach(self, sink: _PieceSink) -> None:
        if sink is self._sink:
            self._producer = None

    def _write(self, data: bytes) -> None:
        if self._stopped or self._consumer is None:
            return
        self.delivered += len(data)
        self._consumer.write(data)

    def _open(self, index: int) -> None:
        """Start opening piece ``index`` (unless it is already)."""
        if index >= len(self._pieces) or index in self._openings or self._stopped:
            return
        opening = _Opening()
        self._openings[index] = opening
        piece = self._pieces[index]
        d: Deferred[tuple[BackendStream, Location]] = Deferred.fromCoroutine(
            self._opener(piece.extent, piece.sub_range)
        )
        opening.deferred = d

        def opened(result: tuple[BackendStream, Location]) -> None:
            stream = result[0]
            if self._stopped or self._openings.get(index) is not opening:
                stream.cancel()
                return
            opening.stream = stream
            if self._advance_to == index:
                self._kick()

        def failed(reason: Failure) -> None:
            if self._stopped or self._openings.get(index) is not opening:
                return
            opening.error = reason
            if self._advance_to == index:
                self._kick()

        d.addCallbacks(opened, failed)

    def _kick(self) -> None:
        """Start the next piece if it is open; a trampoline, so extents that end at once
        (in-memory backends) never recurse."""
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            while True:
                self._again = False
                self._step()
                if not self._again:
                    break
        finally:
            self._pumping = False

    def _step(self) -> None:
        index = self._advance_to
        if index is None or self._stopped:
            return
        if index >= len(self._pieces):
            self._advance_to = None
            self._finish(None)
            return
        self._open(index)
        opening = self._openings[index]
        if not opening.settled:
            return  # opened() or failed() kicks again
        self._advance_to = None
        del self._openings[index]
        if opening.error is not None:
            self._fail(opening.error, index)
            return
        assert opening.stream is not None
        self._start(index, opening.stream)

    def _start(self, index: int, stream: BackendStream) -> None:
        piece = self._pieces[index]
        sent = stream.content_range
        if piece.sub_range is not None and sent is not None and sent[0] != piece.start:
            stream.cancel()
            self._fail(
                Failure(BackendUnavailable("the backend answered a different byte range")), index
            )
            return
        sink = _PieceSink(self, piece, stream)
        self._sink = sink
        self._open(index + 1)  # one ahead, while this one streams
        try:
            delivered = stream.deliver(sink)
        except RuntimeError as exc:
            self._fail(Failure(BackendUnavailable(str(exc))), index)
            return
        delivered.addBoth(self._ended, index, sink)

    def _ended(self, result: object, index: int, sink: _PieceSink) -> None:
        if sink is self._sink:
            self._sink = None
            self._producer = None
        if self._stopped:
            return
        failure = result if isinstance(result, Failure) else None
        if failure is not None and sink.cut and failure.check(CancelledError):
            failure = None  # we stopped it after the last wanted byte
        if failure is None and sink.left:
            failure = Failure(
                BackendUnavailable(f"extent {self._pieces[index].extent.part_number} ended {sink.left} bytes short")
            )
        if failure is not None:
            if sink.received == 0 and index not in self._retried:
                # Nothing of this extent went out yet: open it again (any copy) once.
                self._retried.add(index)
                _log.warn(
                    "extent {part} failed before its first byte ({error}); opening it again",
                    component="objects",
                    part=self._pieces[index].extent.part_number,
                    error=failure.getErrorMessage(),
                )
                self._openings.pop(index, None)
                self._advance_to = index
                self._kick()
                return
            self._fail(failure, index)
            return
        self._advance_to = index + 1
        self._kick()

    def _fail(self, reason: Failure, index: int) -> None:
        """A failure after the response started: stop everything and errback."""
        if self._stopped:
            return
        error = reason.value
        if not isinstance(error, BackendError):
            message = getattr(error, "message", None) or reason.getErrorMessage()
            reason = Failure(
                BackendUnavailable(
                    f"extent {self._pieces[index].extent.part_number} could not be read: {message}"
                )
            )
        self._stopped = True
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.stream.cancel()
        for opening in self._openings.values():
            if opening.stream is not None:
                opening.stream.cancel()
            elif opening.deferred is not None and not opening.settled:
                opening.deferred.cancel()
        self._openings.clear()
        self._finish(reason)

    def _finish(self, reason: Failure | None) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        if self._consumer is not None:
            self._consumer.unregisterProducer()
        if reason is None:
            done.callback(None)
        else:
            done.errback(reason)


def check_read_back(payload: Payload, etag: str) -> None:
    """A copy source read back must be the bytes its record describes (when the ETag
    recorded is their MD5): what was stored is what is copied, byte for byte."""
    if "-" in etag or len(etag) != 32:
        return  # a multipart ETag says nothing of these bytes' MD5
    if payload.md5_hex != etag.lower():
        raise BackendError(
            f"copy source read back with MD5 {payload.md5_hex}, its record says {etag}", code="BadDigest"
        )
