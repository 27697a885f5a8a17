"""Reading a backend stream into a spool file: how the core turns bytes it holds
elsewhere into a :class:`~s3orch.payload.Payload` it can send again.

CopyObject to a backend that holds no copy of the source, and UploadPartCopy of
a range, read the source from one backend and send it to another.  The bytes go
through a temporary file in ``server.spool_dir`` (never into memory whole),
hashed on the way (MD5, SHA-256 and, when asked, a flexible checksum), so the
result is a replayable Payload: the write can fail over to the next backend
without reading the source again.

:class:`SpoolWriter` is a proper ``IConsumer``: it registers the stream's
producer and applies backpressure.  Hashing and the file writes run through an
*offload* function (the reactor's thread pool in a running gateway, see
:func:`thread_offload`), one batch at a time; while more than ``high_water``
bytes wait for the disk, a push producer is paused, and resumed once they are
down to half.  A pull producer is asked for the next chunk only while the
backlog is below ``high_water``.  A backend that ignores the Range and sends
more than asked is cut: the writer stops the producer after the last wanted byte.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from s3orch.backend.interface import BackendStream, BackendUnavailable, PushProducer
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.s3.checksums import new_checksum

#: Runs a blocking function (hashing and writing one batch) off the reactor thread,
#: or not; fires when it has run.
Offload = Callable[[Callable[[], None]], Deferred[None]]

#: Bytes waiting for the disk above which the producer is paused.
DEFAULT_HIGH_WATER = 4 * 1024 * 1024

_CANNOT_BUFFER = "The gateway could not buffer the copy source."


def run_here(work: Callable[[], None]) -> Deferred[None]:
    """Run ``work`` now, on the calling thread (unit tests; a spool without a thread pool)."""
    try:
        work()
    except BaseException:
        return fail()
    return succeed(None)


def thread_offload(reactor: object) -> Offload:
    """Run spool writes in ``reactor``'s thread pool, so a slow disk never stalls the
    reactor; a reactor without threads (a test's ``MemoryReactorClock``) spools on
    the calling thread."""
    if not IReactorThreads.providedBy(reactor):
        return run_here

    def offload(work: Callable[[], None]) -> Deferred[None]:
        result: Deferred[None] = deferToThreadPool(reactor, reactor.getThreadPool(), work)
        return result

    return offload


class SpoolWriter:
    """The consumer a :class:`~s3orch.backend.interface.BackendStream` delivers into.

    Keeps ``length`` bytes after dropping the first ``skip`` (what a backend that
    ignored a Range sent before the range), hashes and writes them through
    ``offload``; :meth:`finish` returns them as a Payload.
    """

    def __init__(
        self,
        length: int,
        *,
        skip: int = 0,
        checksum_algorithm: str | None = None,
        spool_dir: str | None = None,
        offload: Offload = run_here,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> None:
        self.length = length
        self._skip = skip
        self._left = length
        self._md5 = hashlib.md5()
        self._sha256 = hashlib.sha256()
        self._extra = new_checksum(checksum_algorithm) if checksum_algorithm else None
        try:
            self._file: BinaryIO = tempfile.TemporaryFile(dir=spool_dir or None)  # noqa: SIM115 - the Payload owns it
        except OSError as exc:  # spool_dir missing or unwritable: the copy cannot be buffered
            raise errors.ServiceUnavailable(_CANNOT_BUFFER) from exc
        self._offload = offload
        self._high_water = max(1, high_water)
        self._pending: list[bytes] = []
        #: Bytes accepted but not yet on disk (waiting, or being written).
        self.backlog = 0
        self._writing = False
        self._idle: list[Deferred[None]] = []
        self._error: Failure | None = None
        self._producer: PushProducer | None = None
        self._streaming = True
        #: Whether this writer paused the (push) producer.
        self.paused = False
        self._pulling = False
        self._pull_again = False
        #: A pull producer was asked for a chunk and has not written it yet.
        self._asked = False
        #: The producer sent more than ``length`` bytes and was stopped after the last one.
        self.cut = False
        self._closed = False

    @property
    def failed(self) -> bool:
        """A write to the spool failed (the producer was stopped)."""
        return self._error is not None

    # -- IConsumer -------------------------------------------------------------------------

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError("a producer is already registered")
        self._producer = producer
        self._streaming = bool(streaming)
        if not self._streaming:
            self._pull()

    def unregisterProducer(self) -> None:
        self._producer = None
        self.paused = False

    def write(self, data: bytes) -> None:
        self._asked = False
        if self.cut or self._error is not None or self._closed:
            return
        if self._skip:
            dropped = min(self._skip, len(data))
            data = data[dropped:]
            self._skip -= dropped
        overflow = len(data) > self._left
        if overflow:
            data = data[: self._left]
        if data:
            self._left -= len(data)
            self._pending.append(data)
            self.backlog += len(data)
        if overflow:
            self.cut = True
            self._stop_producer()
        self._write_batch()
        producer = self._producer
        if not self._streaming:
            self._pull()
        elif producer is not None and not self.paused and self.backlog >= self._high_water:
            self.paused = True
            producer.pauseProducing()

    # -- the writes ------------------------------------------------------------------------

    def _absorb(self, data: bytes) -> None:
        """Hash and write one batch (runs wherever ``offload`` runs it)."""
        self._md5.update(data)
        self._sha256.update(data)
        if self._extra is not None:
            self._extra.update(data)
        self._file.write(data)

    def _write_batch(self) -> None:
        if self._writing or not self._pending or self._error is not None or self._closed:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._writing = True
        done = self._offload(partial(self._absorb, data))
        done.addCallbacks(self._written, self._write_failed, callbackArgs=(len(data),))

    def _written(self, _: object, size: int) -> None:
        self._writing = False
        self.backlog -= size
        if self._closed:
            self._close_file()
            return
        if self._pending:
            self._write_batch()
        else:
            self._settle()
        producer = self._producer
        if producer is None:
            return
        if self._streaming:
            if self.paused and self.backlog <= self._high_water // 2:
                self.paused = False
                producer.resumeProducing()
        else:
            self._pull()

    def _write_failed(self, reason: Failure) -> None:
        self._writing = False
        self._error = reason
        if self._closed:
            self._close_file()
            return
        self._pending.clear()
        self._stop_producer()
        self._settle()

    def _settle(self) -> None:
        if self._writing or self._pending:
            return
        waiting, self._idle = self._idle, []
        for waiter in waiting:
            waiter.callback(None)

    def _pull(self) -> None:
        """Ask a pull producer for its next chunk, once at a time, while the backlog
        allows (a trampoline: a producer that writes at once re-enters here without
        recursing)."""
        if self._pulling:
            self._pull_again = True
            return
        self._pulling = True
        try:
            while True:
                self._pull_again = False
                producer = self._producer
                if (
                    producer is None
                    or self._asked
                    or self.cut
                    or self._error is not None
                    or self._closed
                    or self.backlog >= self._high_water
                ):
                    return
                self._asked = True
                producer.resumeProducing()
                if not self._pull_again:
                    return
        finally:
            self._pulling = False

    def _stop_producer(self) -> None:
        producer = self._producer
        if producer is not None:
            producer.stopProducing()

    # -- the result ------------------------------------------------------------------------

    async def finish(self) -> Payload:
        """The spooled bytes, once every write has reached the file.

        Raises 503 ServiceUnavailable when the spool could not be written (disk full),
        BackendUnavailable when the stream ended before ``length`` bytes.
        """
        self._write_batch()
        if self._writing or self._pending:
            waiter: Deferred[None] = Deferred()
            self._idle.append(waiter)
            await waiter
        if self._error is not None:
            raise errors.ServiceUnavailable(_CANNOT_BUFFER) from self._error.value
        if self._left:
            raise BackendUnavailable(f"copy source ended {self._left} bytes early")
        self._file.seek(0)
        checksum = None
        if self._extra is not None:
            checksum = (self._extra.algorithm.upper(), self._extra.b64digest())
        return Payload(self._file, self.length, self._md5.hexdigest(), self._sha256.hexdigest(), checksum)

    def discard(self) -> None:
        """Drop the spool (the copy failed or was cancelled); a batch being written
        finishes first (its thread still holds the file)."""
        self._closed = True
        self._pending.clear()
        if not self._writing:
            self._close_file()

    def _close_file(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


@dataclass(frozen=True)
class Spooler:
    """Where copy sources are spooled (``server.spool_dir``; None: the system's
    temporary directory) and where the writes run (``offload``)."""

    spool_dir: str | None = None
    offload: Offload = run_here
    high_water: int = DEFAULT_HIGH_WATER

    async def empty(self, *, checksum_algorithm: str | None = None) -> Payload:
        """A payload of no bytes (an empty copy range), with the digests of nothing."""
        writer = SpoolWriter(0, checksum_algorithm=checksum_algorithm, spool_dir=self.spool_dir)
        try:
            return await writer.finish()
        except BaseException:
            writer.discard()
            raise

    async def spool(
        self,
        stream: BackendStream,
        length: int,
        *,
        skip: int = 0,
        checksum_algorithm: str | None = None,
    ) -> Payload:
        """Deliver ``stream`` into a new spool; ``length`` bytes after the first ``skip``."""
        writer = SpoolWriter(
            length,
            skip=skip,
            checksum_algorithm=checksum_algorithm,
            spool_dir=self.spool_dir,
            offload=self.offload,
            high_water=self.high_water,
        )
        try:
            try:
                await stream.deliver(writer)
            except CancelledError:
                if not (writer.cut or writer.failed):
                    raise
            return await writer.finish()
        except BaseException:
            writer.discard()
            raise
