"""Zero-copy relay of a large verbatim GET body: ``splice(2)`` from the backend socket into a
pipe and from the pipe into the client socket, the bytes never copied through Python.

Relaying a 64 MiB body the ordinary way costs two copies per byte (kernel -> Python on the
backend socket, Python -> kernel on the client socket) plus a Python call per chunk: on a
machine whose cores are shared with the client and the backend, that system time is most of
the gateway's cost (issue 20).  :func:`plan_splice` says whether a body may take this path;
:class:`Splicer` moves it.  The relay (:mod:`s3orch.http.relay`) stays in charge of
everything else: the status line and headers, the body bytes that came with the backend's
headers, the outcome (no torn reads) and the byte counts.

The path applies only where nothing is done to the bytes and both ends are plain sockets:

* Linux with ``os.splice``; the client transport is Twisted TCP without TLS;
* the stream offers a :class:`~s3orch.backend.interface.SpliceSource` (the lean HTTP/1.1
  client's own body over plain TCP, through wrappers that pass bytes unchanged);
* at least :data:`SPLICE_MIN_BYTES` are still to come, all from the backend socket's
  current body (a range cut short of the body's end is fine: the connection is dropped after).

While it runs, Twisted reads neither socket: the :class:`Splicer` has the backend socket as
a reader and the client socket as a writer in the reactor.  A pipe holds at most
:data:`PIPE_SIZE` bytes in flight, so backpressure is the kernel's: bytes are taken from the
backend only while the pipe has room, and the pipe drains only while the client socket takes
bytes.  The timeouts still apply: ``server.backend_timeout`` while waiting for the backend
with room in the pipe, ``server.write_timeout`` (the channel's write deadline) while waiting
for the client.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor, IWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orch.backend.interface import BackendStream, SpliceSource, splice_source
from s3orch.observe.metrics import SPLICED_BYTES

#: A body with fewer bytes still to come takes the ordinary path (setting up the pipe and
#: swapping the sockets' reactor registrations costs about what copying 1 MiB does).
SPLICE_MIN_BYTES = 1024 * 1024
#: The pipe's capacity (``F_SETPIPE_SZ``; the kernel's 64 KiB if it refuses).
PIPE_SIZE = 1024 * 1024
#: Splice rounds per reactor callback: a fast pair of sockets still lets the reactor run others.
_ROUNDS = 8

#: Whether this platform has ``splice(2)`` (Linux, Python 3.10+).
AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "splice")
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


def client_socket(transport: Any) -> tcp.Connection | None:
    """``transport`` if it is a plain (not TLS) connected Twisted TCP socket, else None."""
    if (
        not isinstance(transport, tcp.Connection)
        or transport.TLS
        or not transport.connected
        or transport.disconnecting
    ):
        return None
    return transport


def plan_splice(stream: BackendStream, transport: Any, wanted: int, *, exact: bool) -> SpliceSource | None:
    """The source to splice ``wanted`` more body bytes from into ``transport``, or None for
    the ordinary path.  ``exact``: the backend body must end right there (no range limit:
    more bytes would be the backend's error, which the ordinary path reports)."""
    if not AVAILABLE or wanted < SPLICE_MIN_BYTES or client_socket(transport) is None:
        return None
    source = splice_source(stream)
    if source is None:
        return None
    left = source.remaining()
    if left < wanted or (exact and left != wanted):
        return None
    return source


class WriteWatch(Protocol):
    """The channel's write deadline (:class:`~s3orch.http.write_deadline.WriteDeadline`)."""

    def _write_stalled(self) -> None: ...

    def _write_flowing(self) -> None: ...


def open_pipe() -> tuple[int, int, int]:
    """A nonblocking close-on-exec pipe, enlarged to :data:`PIPE_SIZE` if the kernel lets
    us: (read end, write end, capacity)."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size or the user's pipe budget: the default size works
    try:
        size = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
    except OSError:
        size = 64 * 1024
    return read_end, write_end, size


@implementer(IReadDescriptor, IWriteDescriptor)
class _Socket:
    """One of the two sockets as the reactor sees it while the splicer has it."""

    def __init__(self, fd: int, ready: Callable[[], None], lost: Callable[[Failure], None], name: str) -> None:
        self._fd = fd
        self._ready = ready
        self._lost = lost
        self._name = name

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._ready()

    def doWrite(self) -> None:
        self._ready()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor saw the socket hang up or fail (epoll HUP/ERR without data)."""
        self._lost(reason)

    def logPrefix(self) -> str:
        return f"splice-{self._name}"


class Splicer:
    """Moves ``count`` bytes from ``source``'s socket to ``client``'s with ``splice(2)``.

    :meth:`start` takes the sockets from Twisted; exactly one of the callbacks is called,
    once, after the splicer has given the sockets' reactor registrations back and closed its
    pipe: ``on_done()`` when every byte reached the client socket (the source is not yet
    finished: the caller does that), ``on_backend_failed(reason)`` (the source's body ended
    short, failed or stalled; the caller fails the source), ``on_client_gone()`` (the client
    socket refused bytes).  :meth:`stop` ends it early without any callback (the caller
    gave up).  ``moved`` is the bytes handed to the client socket so far.
    """

    def __init__(
        self,
        source: SpliceSource,
        client: tcp.Connection,
        count: int,
        *,
        on_done: Callable[[], None],
        on_backend_failed: Callable[[str], None],
        on_client_gone: Callable[[], None],
        write_watch: WriteWatch | None = None,
    ) -> None:
        self._source = source
        self._client = client
        self._reactor: Any = client.reactor
        self._to_read = self._to_write = count
        self._on_done = on_done
        self._on_backend_failed = on_backend_failed
        self._on_client_gone = on_client_gone
        self._watch = write_watch
        self.moved = 0
        self._in_pipe = 0
        self._pipe: tuple[int, int] | None = None
        self._pipe_size = 0
        self._backend: _Socket | None = None
        self._out: _Socket | None = None
        self._reading = self._writing = False
        self._stalled = False
        self._stall: IDelayedCall | None = None
        self._running = False

    def start(self) -> None:
        """Open the pipe, borrow both sockets and start moving bytes.  Raises ``OSError``
        (no pipe: out of descriptors) before touching either socket."""
        read_end, write_end, self._pipe_size = open_pipe()
        try:
            backend_fd = self._source.lend()
        except BaseException:
            os.close(read_end)
            os.close(write_end)
            raise
        self._pipe = (read_end, write_end)
        self._running = True
        self._backend = _Socket(backend_fd, self._pump, self._backend_lost, "backend")
        client = self._client
        client.stopReading()  # the request is the channel's last until we finish it
        client.stopWriting()  # its buffer is empty (the relay waited for that)
        self._out = _Socket(client.fileno(), self._pump, self._client_lost, "client")
        self._pump()

    def stop(self) -> None:
        """Give the sockets back and close the pipe (idempotent); no callback."""
        if not self._running:
            return
        self._running = False
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        if self._reading and self._backend is not None:
            self._reactor.removeReader(self._backend)
        if self._writing and self._out is not None:
            self._reactor.removeWriter(self._out)
        self._reading = self._writing = False
        if self._stalled and self._watch is not None:
            self._watch._write_flowing()
        self._stalled = False
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            for fd in pipe:
                os.close(fd)

    # --- moving bytes ---

    def _pump(self) -> None:
        """Move what the sockets allow now (a few rounds), then wait for the one that blocks."""
        pipe = self._pipe
        if not self._running or pipe is None or self._backend is None or self._out is None:
            return
        read_end, write_end = pipe
        backend_fd, client_fd = self._backend.fileno(), self._out.fileno()
        for _ in range(_ROUNDS):
            took = gave = 0
            room = self._pipe_size - self._in_pipe
            if self._to_read and room > 0:
                try:
                    took = os.splice(backend_fd, write_end, min(room, self._to_read), flags=_FLAGS)
                except BlockingIOError:
                    took = -1
                except OSError as exc:
                    self._backend_failed(f"reading the backend socket: {exc.strerror or exc}")
                    return
                if took == 0:
                    self._backend_failed("the backend closed the connection")
                    return
                if took > 0:
                    self._in_pipe += took
                    self._to_read -= took
                    self._source.moved(took)
                    if self._stall is not None:
                        self._stall.reset(self._source.stall_timeout)
            if self._in_pipe:
                try:
                    gave = os.splice(read_end, client_fd, self._in_pipe, flags=_FLAGS)
                except BlockingIOError:
                    gave = -1
                except OSError:  # EPIPE, ECONNRESET: the client went away
                    self._client_gone()
                    return
                if gave > 0:
                    self._in_pipe -= gave
                    self._to_write -= gave
                    self.moved += gave
                    SPLICED_BYTES.inc(gave)
                    if self._stalled and self._watch is not None:
                        self._watch._write_flowing()
                    self._stalled = False
            if not self._to_write:
                self._done()
                return
            if took <= 0 and gave <= 0:
                if gave < 0 and not self._stalled and self._watch is not None:
                    self._stalled = True
                    self._watch._write_stalled()  # the client must take bytes within write_timeout
                break
        self._wait(read=bool(self._to_read) and self._in_pipe < self._pipe_size, write=self._in_pipe > 0)

    def _wait(self, *, read: bool, write: bool) -> None:
        """Be called back when the sockets that blocked can move bytes again."""
        if read != self._reading:
            self._reading = read
            if read:
                self._reactor.addReader(self._backend)
            else:
                self._reactor.removeReader(self._backend)
        if write != self._writing:
            self._writing = write
            if write:
                self._reactor.addWriter(self._out)
            else:
                self._reactor.removeWriter(self._out)
        # The backend's countdown runs only while we wait for it with room in the pipe
        # (a full pipe is the client's wait, as a paused body is on the ordinary path).
        timeout = self._source.stall_timeout
        if read and timeout > 0:
            if self._stall is None or not self._stall.active():
                self._stall = self._reactor.callLater(timeout, self._stalled_backend)
        elif self._stall is not None:
            if self._stall.active():
                self._stall.cancel()
            self._stall = None

    # --- outcomes ---

    def _stalled_backend(self) -> None:
        self._stall = None
        self._backend_failed(f"body stalled: nothing for {self._source.stall_timeout:g}s")

    def _backend_lost(self, reason: Failure) -> None:
        self._reading = False  # the reactor dropped it already
        self._backend_failed(f"the backend connection was lost: {reason.getErrorMessage()}")

    def _client_lost(self, reason: Failure) -> None:
        self._writing = False
        self._client_gone()

    def _done(self) -> None:
        self.stop()
        self._on_done()

    def _backend_failed(self, reason: str) -> None:
        if not self._running:
            return
        self.stop()
        self._on_backend_failed(reason)

    def _client_gone(self) -> None:
        if not self._running:
            return
        self.stop()
        self._on_client_gone()
