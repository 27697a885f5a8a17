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
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orch.backend.interface import (
    BackendError,
    BackendStream,
    BackendUnavailable,
    PushProducer,
)
from s3orch.http.socket_buffers import WriteWindow

#: Responses up to this size keep the client socket's own buffer sizes (no window to widen).
_SMALL_BODY = 64 * 1024


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
    """
    if skip < 0 or (limit is not None and limit < 0):
        raise ValueError("skip and limit must not be negative")
    return _Relay(stream, request, skip, limit, verifier).start()


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
        verifier: BodyVerifier | None = None,
    ) -> None:
        self._stream = stream
        self._verifier = verifier
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
        if data:
            self._request.write(data)
        if last:
            self._complete()

    # --- producer side (called by the client channel) ---

    def pauseProducing(self) -> None:
        self._paused = True
        if self._backend is not None:
            self._backend.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._backend is not None:
            self._backend.resumeProducing()

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
        self._running = False
        self._stream.cancel()
        self._unregister()
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
