"""A request body that flows through to a backend while it arrives (stream-through).

The spool form of :class:`~s3orch.payload.Payload` receives a whole body before the
first backend byte is sent; for a large PUT that doubles its latency.  A
:class:`StreamPayload` is the other form behind the same seam: its length is known
(the request's Content-Length), it can be read **once**, and its digests are known
only when the body has ended (:meth:`StreamPayload.end`).  The front door feeds it the
client's bytes (``s3orch.http.stream_body``); a backend client reads it through
:meth:`StreamPayload.producer`, an ``IBodyProducer`` for Twisted's Agent.

Backpressure both ways: while the backend's socket is full (the Agent pauses the
producer) or no backend request has started yet (the reservation is being made),
bytes wait in a buffer; above :data:`HIGH_WATER` the client's socket is paused, and it
is resumed below :data:`LOW_WATER`.  Memory per request is bounded by about
``HIGH_WATER`` plus one socket read.

A stream is not replayable, so a write may go to another backend only while
:attr:`StreamPayload.sent` is 0 (no byte left the buffer); :attr:`StreamPayload.error`
says why a stream ended badly (a digest mismatch found at its end, the client gone).
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, fail

from s3orch.payload import Payload

#: Buffered bytes above which the client's socket is paused.  Small on purpose: the kernel's
#: socket buffers keep both sides busy, and 16 concurrent 1 GiB transfers must stay under
#: 100 MB of RSS (4 MiB here measured 132 MB there; 256 KiB, 100 MB at the same throughput).
HIGH_WATER = 256 * 1024
#: Buffered bytes below which a paused client's socket is resumed.
LOW_WATER = 64 * 1024


def _nothing() -> None:
    """Default source control (a payload fed by a test)."""


class StreamError(Exception):
    """The stream cannot be read again (bytes already left for another backend)."""


class StreamPayload(Payload):
    """``length`` bytes passing through, read once; digests settled by :meth:`end`.

    ``content_md5_b64`` and ``sha256_claim`` are the client's own claims (None when
    not sent; the claim only when it is a hex SHA-256): a backend may send them so it
    checks the bytes too.  ``checksum_algorithm``: the ``x-amz-checksum-*`` header's algorithm
    (upper-case), whose value :meth:`end` settles.
    """

    streaming = True

    def __init__(
        self,
        length: int,
        *,
        content_md5_b64: str | None = None,
        sha256_claim: str | None = None,
        checksum_algorithm: str | None = None,
        pause_source: Callable[[], None] = _nothing,
        resume_source: Callable[[], None] = _nothing,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
    ) -> None:
        # The declared checksum's algorithm is known now (a part's upload checks it first), its value at the end.
        super().__init__(io.BytesIO(), length, "", "", (checksum_algorithm, "") if checksum_algorithm else None)
        self.content_md5_b64 = content_md5_b64
        self.sha256_claim = sha256_claim
        self._pause_source = pause_source
        self._resume_source = resume_source
        self._high_water = high_water
        self._low_water = low_water
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._source_paused = False
        self._consumer: Any = None
        self._paused = False
        self._done: Deferred[None] | None = None
        self._ended = False
        self._verdict: list[Deferred[None]] = []
        #: Bytes handed to a backend's consumer (a failover is possible only at 0).
        self.sent = 0
        #: Why the stream ended badly (the client's digest mismatched, the client went away).
        self.error: BaseException | None = None
        #: Called with each chunk's size as it is handed to a backend (bytes-out counters).
        self.on_chunk: Callable[[int], None] = lambda size: None

    # -- the front door's side ------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes of the body arrived (already hashed by the sink)."""
        if self.error is not None or not data:
            return
        self._buffer.append(data)
        self._buffered += len(data)
        self._flush()
        if self._buffered > self._high_water and not self._source_paused:
            self._source_paused = True
            self._pause_source()

    def end(self, md5_hex: str, sha256_hex: str, checksum: tuple[str, str] | None) -> None:
        """The body ended and was verified: its digests are known now."""
        object.__setattr__(self, "md5_hex", md5_hex)
        object.__setattr__(self, "sha256_hex", sha256_hex)
        object.__setattr__(self, "checksum", checksum)
        self._ended = True
        self._flush()
        self._announce()

    def fail(self, error: BaseException) -> None:
        """The stream cannot complete (the first reason is kept): a backend request reading it fails."""
        if self.error is not None:
            return
        self.error = error
        self._buffer.clear()
        self._buffered = 0
        done, self._done = self._done, None
        self._consumer = None
        if done is not None:
            done.errback(error)
        self._announce()

    def verdict(self) -> Deferred[None]:
        """Fires once the body ended (verified: :attr:`ended`) or failed (:attr:`error`).

        A backend may answer before that (it counts bytes, not digests): the write waits for
        the client's side before it is committed.
        """
        d: Deferred[None] = Deferred()
        if self._ended or self.error is not None:
            d.callback(None)
        else:
            self._verdict.append(d)
        return d

    def _announce(self) -> None:
        waiting, self._verdict = self._verdict, []
        for d in waiting:
            d.callback(None)

    @property
    def starved(self) -> bool:
        """Waiting for the client's next bytes (nothing buffered, the body not ended)."""
        return not self._ended and self.error is None and self._buffered == 0

    @property
    def ended(self) -> bool:
        """The body ended and its digests are settled."""
        return self._ended

    # -- the backend's side ------------------------------------------------------

    def producer(self) -> StreamProducer:
        """The ``IBodyProducer`` for one backend request; only one that has sent nothing may
        be replaced by another (failover before the first byte)."""
        if self.sent:
            raise StreamError("the body already went to another backend and cannot be sent again")
        if self.error is not None:
            raise StreamError(f"the body stream failed: {self.error}")
        return StreamProducer(self)

    def reader(self) -> BinaryIO:
        raise StreamError("a streamed body has no file; read it through producer()")

    def collect(self) -> Deferred[bytes]:
        """All the bytes, once the body ended (in-memory backends; holds the whole body)."""
        chunks: list[bytes] = []

        class _Collector:
            def write(self, data: bytes) -> None:
                chunks.append(data)

        d = self.producer().startProducing(_Collector())
        return d.addCallback(lambda _: b"".join(chunks))

    def _attach(self, consumer: Any) -> Deferred[None]:
        if self._consumer is not None:
            raise StreamError("the body is already being sent")
        if self.error is not None:
            # The body failed (bad digest, client gone) before the backend began to read it,
            # e.g. while its connection was still being made: that request fails now, not at
            # the backend timeout.
            return fail(self.error)
        self._consumer = consumer
        self._paused = False
        done: Deferred[None] = Deferred()
        self._done = done
        self._flush()
        return done

    def _detach(self) -> None:
        """The backend request stopped reading (its connection failed): no more writes."""
        self._consumer = None
        self._done = None

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        if not paused:
            self._flush()

    def _flush(self) -> None:
        consumer = self._consumer
        while consumer is not None and not self._paused and self._buffer:
            chunk = self._buffer.popleft()
            self._buffered -= len(chunk)
            self.sent += len(chunk)
            consumer.write(chunk)
            self.on_chunk(len(chunk))
            consumer = self._consumer  # write may pause or stop us
        if self._source_paused and self._buffered <= self._low_water and not self._ended:
            self._source_paused = False
            self._resume_source()
        if self._ended and not self._buffer and self._done is not None and self.error is None:
            done, self._done = self._done, None
            self._consumer = None
            done.callback(None)


class StreamProducer:
    """``IBodyProducer`` over a :class:`StreamPayload`: paused by the backend's socket."""

    def __init__(self, payload: StreamPayload) -> None:
        self._payload = payload
        self.length = payload.length
        #: Called after each chunk (the backend client's stall watchdog).
        self.on_chunk: Callable[[], None] = lambda: None

    def startProducing(self, consumer: Any) -> Deferred[None]:
        previous = self._payload.on_chunk

        def chunk(size: int) -> None:
            previous(size)
            self.on_chunk()

        self._payload.on_chunk = chunk
        return self._payload._attach(consumer)

    def pauseProducing(self) -> None:
        self._payload._set_paused(True)

    def resumeProducing(self) -> None:
        self._payload._set_paused(False)

    def stopProducing(self) -> None:
        self._payload._detach()
