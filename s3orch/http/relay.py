"""Relay a backend GET body to a client response with backpressure both ways.

The relay sits between a :class:`~s3orch.backend.interface.BackendStream` and a
``twisted.web`` request: it is the client request's push producer (so a slow
client pauses the backend socket) and the stream's consumer.  It enforces
the no-torn-reads rule (a 200 delivers every announced byte or the connection
is aborted): once the status line and ``Content-Length`` are out, the only
honest way to report a failure is to abort the connection, so a backend
failure or short body mid-stream aborts the client connection instead of
finishing a short 200.

While a large body is relayed, the client socket buffers and sends more at a time
(:class:`~s3orch.http.socket_buffers.WriteWindow`): Twisted's 64 KiB would pause and resume the
backend socket every chunk or two.

A large body relayed verbatim between plain TCP sockets moves with ``splice(2)`` once the
headers and the bytes that came with the backend's headers are out (:mod:`s3orch.http.splice`):
the relay waits for the client socket's buffer to empty, lends both sockets to a
:class:`~s3orch.http.splice.Splicer` and takes the outcome back; everything else is as above.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orch.backend.interface import (
    BackendError,
    BackendStream,
    BackendUnavailable,
    PushProducer,
    SpliceSource,
)
from s3orch.http.socket_buffers import WriteWindow
from s3orch.http.splice import Splicer, WriteWatch, client_socket, plan_splice
from s3orch.http.write_deadline import pending_write_bytes

#: Responses up to this size keep the client socket's own buffer sizes (no window to widen).
_SMALL_BODY = 64 * 1024

# The zero-copy path's states: not decided yet, not taken, waiting for the client socket's
# buffer to empty, splicing.
_MAYBE, _ORDINARY, _FLUSHING, _SPLICING = range(4)


class BodyVerifier(Protocol):
    """Checks the relayed bytes (``integrity.verify_on_read``): ``update`` and ``finish`` raise
    a :class:`BackendError` on a mismatch, which aborts the client connection."""

    def update(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


class RelayRequest(Protocol):
    """The part of ``twisted.web.iweb.IRequest`` the relay uses (a typing
    Protocol, since zope interfaces are opaque to mypy)."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...


def relay_body(
    stream: BackendStream,
    request: RelayRequest,
    *,
    skip: int = 0,
    limit: int | None = None,
    verifier: BodyVerifier | None = None,
    answer_unsent: bool = False,
) -> Deferred[int]:
    """Stream ``stream``'s body into ``request`` and finish it.

    The caller has already set the status and headers (including
    Content-Length).  ``skip`` drops that many leading bytes and ``limit``
    stops after that many bytes (cancelling the rest), so a backend that
    answers a ranged GET with the whole object still yields exactly the range.

    Fires with the number of body bytes written: after ``request.finish()`` on
    success, or without writing more when the client went away.  Errbacks with
    :class:`BackendUnavailable` after *aborting* the client connection when
    the backend failed or delivered fewer bytes than announced; the caller
    must not touch the request afterwards.

    With a ``verifier``, every byte passes through it and the last chunk is held back until
    ``verifier.finish()`` accepted the whole body: a mismatch aborts the connection before
    the client has every announced byte, so bad bytes never complete a 200.

    With ``answer_unsent``, a failure before anything reached the client (a small body is
    gathered, a verified one held back, so this is not rare) leaves the connection alone:
    the error still comes back, and the caller answers it (an S3 503 instead of a dropped
    connection the client cannot tell from a network fault).
    """
    if skip < 0 or (limit is not None and limit < 0):
        raise ValueError("skip and limit must not be negative")
    return _Relay(stream, request, skip, limit, verifier, answer_unsent).start()


def _announced_length(request: RelayRequest) -> int | None:
    """The Content-Length the caller promised the client, if any."""
    headers = getattr(request, "responseHeaders", None)
    if headers is None:
        return None
    values = headers.getRawHeaders(b"content-length")
    if not values:
        return None
    try:
        return int(values[-1])
    except ValueError:
        return None


def _abort_client(request: RelayRequest) -> None:
    """Drop the client connection without finishing the response (no torn reads)."""
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None) or getattr(request, "transport", None)
    if transport is None:
        return  # already disconnected
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


class _Relay:
    """One body transfer: push producer (``IPushProducer``) for the client,
    consumer (``IBodyConsumer``) for the backend stream."""

    _log = Logger()

    def __init__(
        self, stream: BackendStream, request: RelayRequest, skip: int, limit: int | None,
        verifier: BodyVerifier | None = None, answer_unsent: bool = False,
    ) -> None:
        self._stream = stream
        self._verifier = verifier
        self._answer_unsent = answer_unsent
        #: With a verifier: the last chunk received, written once the next one (or the verdict) came.
        self._held = b""
        self._request = request
        self._to_skip = skip
        self._remaining = limit
        self._announced = _announced_length(request)
        self._backend: PushProducer | None = None
        self._paused = False
        self._running = True
        self._registered = False
        self._stream_ended = False
        self._result: Deferred[int] = Deferred()
        self._window: WriteWindow | None = None
        self.written = 0
        self._started = False
        self._splice_state = _MAYBE
        self._source: SpliceSource | None = None
        self._splice_count = 0
        self._splice_whole = False
        self._splicer: Splicer | None = None
        #: A small body's chunks until the last one came (None: every chunk is written at once).
        self._gathered: list[bytes] | None = None
        self._gather_total = 0

    def start(self) -> Deferred[int]:
        if getattr(self._request, "_disconnected", False):
            # The client left while we waited for the backend's headers;
            # notifyFinish() would never fire now.
            self._running = False
            self._stream.cancel()
            return succeed(0)
        self._request.registerProducer(self, True)
        self._registered = True
        channel = getattr(self._request, "channel", None)
        wanted = self._announced if self._remaining is None else self._remaining
        if wanted is None or wanted > _SMALL_BODY:
            self._window = WriteWindow(getattr(channel, "transport", None))
        elif wanted and self._verifier is None:
            # A small body goes out in one write with the headers: a backend often sends it in
            # two segments (Go flushes 4 KiB at a time), and each send on loopback is dear.
            self._gathered, self._gather_total = [], wanted
        if getattr(channel, "_waitingForTransport", False):
            # The client socket is already full: HTTPChannel does not tell a
            # newly registered producer, so start paused.
            self._paused = True
        self._request.notifyFinish().addErrback(self._client_gone)
        if self._remaining == 0:
            self._complete()
            return self._result
        try:
            delivered = self._stream.deliver(self)
        except RuntimeError as exc:  # already delivered or cancelled elsewhere
            self._fail(exc)
            return self._result
        delivered.addCallbacks(self._backend_done, self._backend_failed)
        self._started = True
        self._consider_splice()
        return self._result

    # --- consumer side (called by the backend stream) ---

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        self._backend = producer
        if not self._running:
            producer.stopProducing()
        elif self._paused:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._backend = None

    def write(self, data: bytes) -> None:
        if not self._running:
            return
        if self._to_skip:
            if len(data) <= self._to_skip:
                self._to_skip -= len(data)
                return
            data = data[self._to_skip :]
            self._to_skip = 0
        last = False
        if self._remaining is not None:
            if len(data) >= self._remaining:
                data = data[: self._remaining]
                last = True
            self._remaining -= len(data)
        if self._announced is not None and self.written + len(data) > self._announced:
            self._fail(BackendUnavailable(f"backend body longer than the announced {self._announced} bytes"))
            return
        self.written += len(data)
        if self._verifier is not None:
            try:
                self._verifier.update(data)
            except BackendError as exc:
                self._fail(exc)
                return
            data, self._held = self._held, data
        gathered = self._gathered
        if gathered is not None:
            gathered.append(data)
            if self.written < self._gather_total:
                return
            data, self._gathered = b"".join(gathered), None
        if data:
            self._request.write(data)
        if last:
            self._complete()
        elif self._splice_state == _MAYBE and self._started:
            self._consider_splice()

    # --- producer side (called by the client channel) ---

    def pauseProducing(self) -> None:
        self._paused = True
        if self._backend is not None and self._splice_state < _FLUSHING:
            self._backend.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._splice_state == _FLUSHING:
            self._engage()  # the client socket's buffer is empty now
        elif self._backend is not None and self._splice_state < _FLUSHING:
            self._backend.resumeProducing()

    # --- the zero-copy path (s3orch.http.splice) ---

    def _client_transport(self) -> Any:
        return getattr(getattr(self._request, "channel", None), "transport", None)

    def _consider_splice(self) -> None:
        """Decide once, after the first body bytes (and so the headers) went out, whether
        the rest moves with splice; if so, pause the backend and wait for the client
        socket's buffer to empty (the transport resumes us then)."""
        if not self.written:
            return  # the headers go out with the first body bytes
        self._splice_state = _ORDINARY
        if not self._running or self._stream_ended or self._verifier is not None or self._to_skip:
            return
        if self._remaining is not None:
            wanted, exact = self._remaining, False
        elif self._announced is not None:
            wanted, exact = self._announced - self.written, True
        else:
            return
        transport = self._client_transport()
        channel: Any = getattr(self._request, "channel", None)
        source = plan_splice(self._stream, transport, wanted, exact=exact)
        if source is None or self._backend is None or channel is None:
            return
        if transport.producer is not channel or not transport.streamingProducer:
            return  # nobody would tell us when the buffer is empty
        self._source, self._splice_count = source, wanted
        self._splice_whole = source.remaining() == wanted
        self._splice_state = _FLUSHING
        self._backend.pauseProducing()
        if self._paused:
            return  # the transport paused us: it resumes us once its buffer is empty
        if pending_write_bytes(transport) == 0:
            self._engage()
            return
        # What the transport does when its buffer overflows: it resumes its producer (the
        # channel, which resumes us) once the buffer is empty.
        transport.producerPaused = True
        channel.pauseProducing()

    def _engage(self) -> None:
        source = self._source
        transport = client_socket(self._client_transport())
        if not self._running or source is None or transport is None or pending_write_bytes(transport) != 0:
            self._ordinary()
            return
        channel = getattr(self._request, "channel", None)
        watch = cast(WriteWatch, channel) if hasattr(channel, "_write_stalled") else None
        splicer = Splicer(
            source,
            transport,
            self._splice_count,
            on_done=self._spliced,
            on_backend_failed=self._splice_backend_failed,
            on_client_gone=self._splice_client_gone,
            write_watch=watch,
        )
        self._splicer, self._splice_state = splicer, _SPLICING
        try:
            splicer.start()  # may end (and call us back) at once
        except (OSError, RuntimeError) as exc:  # no pipe (out of fds), or the socket went
            self._log.warn("zero-copy relay unavailable, relaying through Python: {error}", error=str(exc))
            self._splicer = None
            self._ordinary()
            return
        self._narrow()  # the wide write window is of no use to splice: free it for another relay

    def _ordinary(self) -> None:
        """Back to the ordinary path (before the sockets were lent)."""
        self._splice_state = _ORDINARY
        self._source = None
        if self._running and not self._paused and self._backend is not None:
            self._backend.resumeProducing()

    def _took_spliced(self, moved: int) -> None:
        self._splicer = None
        self._splice_state = _ORDINARY
        self.written += moved
        if self._remaining is not None:
            self._remaining -= moved

    def _spliced(self) -> None:
        """Every wanted byte reached the client socket: end the backend body (back to its
        pool if the body ends here too), then finish as the ordinary path does."""
        self._took_spliced(self._splice_count)
        source, self._source = self._source, None
        if source is not None and self._splice_whole:
            source.finish()  # the body is whole: deliver() fires, _backend_done completes us
        else:
            self._complete()  # a range short of the body's end: the rest is dropped

    def _splice_backend_failed(self, reason: str) -> None:
        splicer = self._splicer
        self._took_spliced(splicer.moved if splicer is not None else 0)
        source, self._source = self._source, None
        if source is not None:
            source.fail(reason)
        self._fail(BackendUnavailable(f"backend body failed: {reason}"))

    def _splice_client_gone(self) -> None:
        splicer = self._splicer
        self._took_spliced(splicer.moved if splicer is not None else 0)
        _abort_client(self._request)  # its connectionLost ends the relay (_client_gone)

    def _stop_splice(self) -> None:
        """The relay ends while splicing: take the sockets back, count what went out."""
        splicer = self._splicer
        if splicer is not None:
            splicer.stop()
            self._took_spliced(splicer.moved)

    def stopProducing(self) -> None:
        self._client_gone(None)

    # --- outcomes ---

    def _backend_done(self, _: None) -> None:
        self._stream_ended = True
        if not self._running:
            return
        if self._remaining:
            self._fail(BackendUnavailable(f"backend body ended {self._remaining} bytes short"))
        elif self._announced is not None and self.written != self._announced:
            self._fail(
                BackendUnavailable(
                    f"backend body ended after {self.written} of {self._announced} announced bytes"
                )
            )
        else:
            self._complete()

    def _complete(self) -> None:
        """All wanted bytes are out: stop the backend if it has more, finish (with a verifier:
        once it accepted the body, and only then the held-back chunk)."""
        if self._verifier is not None:
            try:
                self._verifier.finish()
            except BackendError as exc:
                self._fail(exc)
                return
            if self._held:
                self._request.write(self._held)
                self._held = b""
        gathered, self._gathered = self._gathered, None
        if gathered:
            self._request.write(b"".join(gathered))
        self._running = False
        if not self._stream_ended:
            self._stream.cancel()  # limit reached: drop the rest, don't drain it
        self._unregister()
        self._narrow()  # before finish(): it may start the next (pipelined) response
        self._request.finish()
        self._result.callback(self.written)

    def _backend_failed(self, failure: Failure) -> None:
        self._stream_ended = True
        self._fail(failure.value or BackendUnavailable("backend body failed"))

    def _fail(self, error: BaseException) -> None:
        """Backend failure mid-body: abort the client so it never sees a short 200."""
        if not self._running:
            return  # we stopped the stream ourselves (limit reached, client gone)
        self._stop_splice()
        self._running = False
        self._stream.cancel()
        self._unregister()
        if self._answer_unsent and not getattr(self._request, "startedWriting", True):
            self._log.warn("backend body failed before the response started: {reason}", reason=str(error))
        else:
            self._log.warn(
                "aborting client response after {written} bytes: {reason}",
                written=self.written,
                reason=str(error),
            )
            _abort_client(self._request)
        self._narrow()
        if not isinstance(error, BackendError):
            error = BackendUnavailable(f"backend body failed: {error!r}")
        self._result.errback(error)

    def _client_gone(self, reason: Failure | None) -> None:
        """The client disconnected: stop the backend transfer, write nothing more."""
        if not self._running:
            return
        self._stop_splice()
        self._running = False
        self._registered = False  # the channel is gone; nothing to unregister from
        self._stream.cancel()
        self._narrow()
        self._result.callback(self.written)

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self._request.unregisterProducer()

    def _narrow(self) -> None:
        """The client socket's own buffer sizes again, for whatever the connection does next."""
        if self._window is not None:
            self._window.restore()
            self._window = None
