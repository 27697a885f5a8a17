"""The contract between the orchestration core and one storage backend.

The core only ever talks to :class:`ObjectBackend`; the real client
(:mod:`s3orch.backend.s3`) and the in-memory fake (:mod:`s3orch.backend.memory`)
both implement it, so the core's failover, quota and cleanup logic is tested
without sockets.  Errors are backend-level (:class:`BackendError`), never
client-facing ``S3Error``: the core decides what a backend failure means for
the client (try another copy, 503, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from s3orch.payload import Payload


class BackendError(Exception):
    """A backend answered with an error, or could not be reached.

    ``status`` is the HTTP status (None when no response arrived), ``code`` the
    S3 error code parsed from the backend's ``<Error>`` body when there was one.
    ``retryable`` tells the caller whether the same call may succeed later.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        backend: str | None = None,
        retryable: bool | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        #: No answer within the backend timeout (a stream-through write tells a client's stall by it).
        self.timed_out = timed_out
        self.message = message
        self.status = status
        self.code = code
        self.backend = backend
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        where = f"[{self.backend}] " if self.backend else ""
        what = " ".join(str(p) for p in (self.status, self.code) if p is not None)
        return f"{where}{what + ': ' if what else ''}{self.message}"


class BackendNotFound(BackendError):
    """The object is absent on this backend (404 NoSuchKey).

    Only a missing *key* maps here; a missing bucket is a misconfiguration and
    stays a plain :class:`BackendError`, so the core never answers 404 for it.
    """

    def __init__(
        self,
        message: str = "object not found",
        *,
        status: int | None = 404,
        code: str | None = "NoSuchKey",
        backend: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, backend=backend, retryable=False)


class BackendUnavailable(BackendError):
    """The backend could not serve the call now: connection refused or reset,
    timeout, 5xx, throttling, or a body cut off mid-transfer.  Retryable."""

    retryable = True


@dataclass(frozen=True)
class ListedObject:
    """One object of a backend listing (reconcile and sync/import read these)."""

    key: str
    size: int
    etag: str  # without quotes
    last_modified: float  # epoch seconds (0 when the backend gave none)


class Timer(Protocol):
    """An ``IDelayedCall`` as a typing Protocol."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...

    def reset(self, secondsLater: float) -> None: ...


class Clock(Protocol):
    """The part of ``IReactorTime`` backends use, as a typing Protocol: zope
    interfaces are opaque to mypy, so ``IReactorTime`` arguments are cast to
    this.  ``callLater`` returns a :class:`Timer` (typed Any so that
    ``task.Clock`` and real reactors match)."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> Any: ...


class PushProducer(Protocol):
    """Twisted's ``IPushProducer`` as a typing Protocol (zope interfaces are
    opaque to mypy); ``TransportProxyProducer`` and transports match it."""

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


class IBodyConsumer(Protocol):
    """Where a :class:`BackendStream` delivers its body (Twisted ``IConsumer`` shape).

    ``registerProducer(producer, True)`` is called once before any data: the
    producer pauses/resumes/stops the backend transfer, which is how client
    backpressure reaches the backend socket.  ``unregisterProducer()`` is called
    once when the body ends, cleanly or not, before ``deliver``'s Deferred fires.
    """

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def write(self, data: bytes) -> None: ...


class ForwardingConsumer:
    """A consumer that sits between a stream and ``consumer`` and transforms what it writes
    (decryption, decompression): backpressure passes straight through, so the producer
    calls go to ``consumer`` as they are; subclasses implement ``write``."""

    consumer: IBodyConsumer

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        self.consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.consumer.unregisterProducer()


class BackendStream(Protocol):
    """A GET response whose headers have arrived and whose body has not been read.

    The caller must either ``deliver`` the body or ``cancel`` it: an undelivered
    body holds a backend connection.
    """

    status: int  # 200 or 206
    length: int | None  # bytes the body will carry, when the backend announced it
    content_range: tuple[int, int, int] | None  # (start, end inclusive, total) of a 206
    headers: dict[str, str]  # lower-case names

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        """Stream the body into ``consumer``; fires on a complete body, errbacks
        with :class:`BackendUnavailable` if it was cut short, with
        ``CancelledError`` after :meth:`cancel`."""
        ...

    def cancel(self) -> None:
        """Stop the transfer and drop the connection (never drains the rest)."""
        ...


class SpliceSource(Protocol):
    """A body still on its backend socket, byte for byte what the client gets: lent to the
    zero-copy relay (:mod:`s3orch.http.splice`), which moves it with ``splice(2)``.

    Only the raw body of the lean HTTP/1.1 client over plain TCP offers one, and only a
    wrapper that passes bytes through unchanged forwards it (:func:`splice_source`): a
    transforming stream (decryption, decompression) never exposes its inner socket.
    """

    #: ``server.backend_timeout`` of the socket: nothing for this long while the relay waits
    #: to read is a stalled body (0: no limit).
    stall_timeout: float

    def remaining(self) -> int:
        """Body bytes the backend has still to send on the socket."""
        ...

    def lend(self) -> int:
        """Stop reading the socket into Python (and the stream's own stall countdown);
        return its file descriptor, which the caller reads :meth:`remaining` bytes from."""
        ...

    def moved(self, count: int) -> None:
        """``count`` more body bytes left the socket through the borrower (byte counters)."""
        ...

    def finish(self) -> None:
        """Every remaining byte was moved: the body ends cleanly (``deliver``'s Deferred
        fires) and the connection goes back to its pool."""
        ...

    def fail(self, reason: str) -> None:
        """The body failed while lent: drop the connection; ``deliver``'s Deferred fails
        with a :class:`BackendUnavailable` saying ``reason``."""
        ...


def splice_source(stream: BackendStream) -> SpliceSource | None:
    """``stream``'s :class:`SpliceSource` now, or None.  A stream offers one through an
    optional ``splice_source()`` method (streams without it, e.g. transforming ones, never
    do); a pass-through wrapper defines the method and asks its inner stream.  The method is
    looked up on the class, so a wrapper forwarding unknown attributes (``__getattr__``) does
    not expose its inner stream's socket by accident."""
    if getattr(type(stream), "splice_source", None) is None:
        return None
    offer: Callable[[], SpliceSource | None] = getattr(stream, "splice_source")  # noqa: B009
    return offer()


class ObjectBackend(Protocol):
    """One S3-compatible store holding object copies under opaque storage keys.

    Keys are chosen by the core (never overwritten in place), so this API has
    no conditional writes.  ETags are returned without quotes.
    """

    name: str

    async def put_object(self, storage_key: str, payload: Payload) -> str:
        """Upload ``payload`` (read through ``payload.reader()``, with its MD5 as
        ``Content-MD5`` so the backend refuses altered bytes); return the backend's
        ETag.  Retries are the caller's job: a replayable payload may be sent again.
        A :class:`~s3orch.stream_payload.StreamPayload` is read once through its
        producer, with the client's own Content-MD5 and SHA-256 claims when it sent them."""
        ...

    async def get_object(self, storage_key: str, byte_range: tuple[int, int] | None = None) -> BackendStream:
        """Start a GET; ``byte_range`` is inclusive ``(start, end)``.

        A quirky backend may answer a ranged GET with 200 and the whole object
        (``content_range`` is then None): the caller cuts it with the relay's
        ``skip``/``limit``.
        """
        ...

    async def head_object(self, storage_key: str) -> dict[str, str]:
        """Return the object's response headers, names lower-case."""
        ...

    async def delete_object(self, storage_key: str) -> None:
        """Delete; an already absent key counts as success."""
        ...

    async def copy_object(self, source_key: str, dest_key: str) -> str:
        """Server-side copy within this backend; return the new ETag."""
        ...

    async def list_keys(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[tuple[str, int]], str | None]:
        """One page of ``(key, size)`` under ``prefix`` plus the next page's
        token (None on the last page); used by the reconciler."""
        ...

    async def list_objects(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[ListedObject], str | None]:
        """One page of objects under ``prefix`` in key (byte) order, with their ETag and
        Last-Modified, plus the next page's token (None on the last page)."""
        ...

    # -- native multipart uploads --------------------------------------------------------
    # Multipart uploads store each part as an object of its own (put_object), placed
    # one by one.  Older builds used backend-native uploads; these two calls remain so
    # that the stale-upload cleanup can abort the ones such a build left behind.

    async def abort_multipart_upload(self, storage_key: str, upload_id: str) -> None:
        """Abort and drop every part; an upload already gone counts as success."""
        ...

    async def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str]]:
        """``(key, upload id)`` of the backend's open uploads under ``prefix`` (up to 1000):
        how the stale-upload cleanup finds an upload whose id was never recorded."""
        ...

    async def close(self) -> None:
        """Release connections; the backend is unusable afterwards."""
        ...
