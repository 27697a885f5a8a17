"""``server.write_timeout``: a response must make progress, or its connection is aborted.

A client that stops reading (a zero TCP window) would otherwise hold its connection, its
admission slot and a backend stream forever.  The transport pauses the channel when its
send buffer is full: from then on the client has ``write_timeout`` to take bytes.

A large GET pauses and resumes the channel many times a second, so the deadline is a
:class:`~s3orch.http.lazy_timer.LazyTimer`: a pause only stamps its due time (and the bytes
still pending in the transport), a resume disarms it, and no reactor call is scheduled or
cancelled per pause.  When the deadline of a pause passes while still paused, a transport
that handed some of its buffer to the kernel since the stamp counts as progress (a slow
reader): the deadline moves to a full ``write_timeout`` from now.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from s3orch.http.lazy_timer import LazyTimer
from s3orch.observe.metrics import WRITE_TIMEOUTS

_log = Logger(namespace="s3orch.http")


def pending_write_bytes(transport: Any) -> int | None:
    """Bytes a transport has taken from us but not yet handed to the kernel.

    Reads the buffer of a ``twisted.internet.abstract.FileDescriptor`` (TCP), or of
    the transport under a wrapper (TLS); None when it cannot be known.  A falling
    value means the client is reading, however slowly.
    """
    for _ in range(4):
        if transport is None:
            return None
        buffered = getattr(transport, "dataBuffer", None)
        if isinstance(buffered, (bytes, bytearray, memoryview)):
            offset = getattr(transport, "offset", 0)
            temp = getattr(transport, "_tempDataLen", 0)
            if isinstance(offset, int) and isinstance(temp, int):
                return len(buffered) - offset + temp
            return None
        transport = getattr(transport, "transport", None)
    return None


class WriteDeadline:
    """The channel side of ``write_timeout`` (a mixin of ``S3Channel``).

    The channel calls :meth:`_write_stalled` when the transport pauses it and
    :meth:`_write_flowing` when it resumes; :meth:`_watch_write_now` starts the watch
    whatever the pause state (a rejection the client must take), :meth:`_stop_write_watch`
    ends it (connection lost).  The deadline is a :class:`LazyTimer`: armed when a stall
    begins, disarmed when the client reads, so pauses schedule no reactor calls.
    """

    # S3Channel's (the class this is mixed into)
    transport: Any
    site: Any

    _write_timer: LazyTimer | None = None
    #: The bytes pending in the transport when the current stall began.
    _write_pending: int | None = None

    def _write_stalled(self) -> None:
        """The transport's buffer is full: the client must take bytes within write_timeout."""
        timeout = self.site.write_timeout
        if timeout and (self._write_timer is None or not self._write_timer.armed):
            self._watch_write_now(timeout)

    def _write_flowing(self) -> None:
        """The client drained the buffer: that is progress (the timer, if any, finds no stall)."""
        if self._write_timer is not None:
            self._write_timer.disarm()

    def _watch_write_now(self, timeout: float) -> None:
        self._write_pending = pending_write_bytes(self.transport)
        if self._write_timer is None:
            self._write_timer = LazyTimer(self.site.reactor, self._write_deadline_passed)
        self._write_timer.arm(timeout)

    def _stop_write_watch(self) -> None:
        if self._write_timer is not None:
            self._write_timer.stop()

    def _write_deadline_passed(self) -> None:
        transport: Any = self.transport
        timeout = self.site.write_timeout
        if transport is None or not timeout:
            return
        pending = pending_write_bytes(transport)
        if pending is not None and self._write_pending is not None and pending < self._write_pending:
            self._watch_write_now(timeout)  # some bytes went out: the client is reading, slowly
            return
        self._abort_stalled(transport)

    def _abort_stalled(self, transport: Any) -> None:
        """Drop a connection whose client stopped reading (zero window).

        Aborting runs connectionLost: the request is counted as abandoned, its
        admission slot released and its backend stream cancelled.
        """
        WRITE_TIMEOUTS.inc()
        _log.info(
            "aborting connection: the client accepted no response bytes for {timeout}s",
            timeout=self.site.write_timeout,
            component="http",
        )
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()
