"""A stream that serves a checked transformation of a stored stream (decryption, decompression).

Both :class:`~s3orch.crypto.streams.DecryptingStream` and
:class:`~s3orch.codec.streams.DecompressingStream` wrap the :class:`BackendStream` of a stored
extent and relay it through a consumer that transforms and verifies chunk by chunk.  How the
delivery ends is the same for both and lives here once: a chunk that failed its check, or a
backend that sent more than was wanted, cancels the inner transfer, and that cancellation is
ours, not the reader's, so it resolves to the transform's own verdict; the end of the stored
stream runs the transform's final check; any other failure of the inner stream passes through
as it is.  What a verdict means (metrics, the exception a reader sees) stays with each subclass.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from s3orch.backend.interface import BackendError, BackendStream, ForwardingConsumer, IBodyConsumer


def relayed_headers(headers: dict[str, str]) -> dict[str, str]:
    """The inner stream's headers that stay true of the transformed bytes (not their length,
    range or digests)."""
    return {
        name: value for name, value in headers.items()
        if name not in ("content-length", "content-range", "etag", "content-md5")
    }


def drop_prefix(data: bytes, skip: int) -> tuple[bytes, int]:
    """``data`` without its first ``skip`` bytes, and how many are still to skip after it."""
    dropped = min(skip, len(data))
    return data[dropped:], skip - dropped


class TransformingRelay(ForwardingConsumer):
    """The consumer between the stored stream and the reader's consumer.

    Subclasses implement :meth:`transform` and :meth:`finish`; once :meth:`reject` or
    :meth:`stop` was called, nothing more reaches :meth:`transform` (the inner transfer is being
    cancelled)."""

    #: The exception the transform raises on bytes that are not what was stored.
    transform_error: type[Exception] = Exception

    def __init__(self, inner: BackendStream, consumer: IBodyConsumer) -> None:
        self.inner = inner
        self.consumer = consumer
        #: Why the stored bytes were refused (a chunk failed its check); None while all is well.
        self.error: Exception | None = None
        #: The wanted bytes are in and the backend sent more: the transfer was cancelled.
        self.cut = False

    def write(self, data: bytes) -> None:
        if self.error is None and not self.cut:
            self.transform(data)

    def transform(self, data: bytes) -> None:
        """Transform and check ``data`` (stored bytes), writing what is verified to ``consumer``."""
        raise NotImplementedError

    def finish(self) -> None:
        """The stored stream ended with every chunk accepted: the transform's final check
        (raises :attr:`transform_error` when the stream was cut short or is otherwise wrong)."""
        raise NotImplementedError

    def reject(self, error: Exception) -> None:
        """The stored bytes failed a check: serve nothing more and stop the transfer."""
        self.error = error
        self.inner.cancel()

    def stop(self) -> None:
        """Everything wanted is in and the backend sends more: stop the transfer (not an error)."""
        self.cut = True
        self.inner.cancel()


class TransformingStream:
    """A :class:`BackendStream` of the transformed bytes of ``_inner``.  Backpressure passes
    straight through: the inner stream's producer is the one registered.

    Subclasses set ``_inner`` and the stream attributes, and supply the relay (:meth:`_relay`)
    and what each verdict means (:meth:`_rejected`, :meth:`_succeeded`)."""

    _inner: BackendStream
    status: int
    length: int | None
    content_range: tuple[int, int, int] | None
    headers: dict[str, str]

    def _relay(self, consumer: IBodyConsumer) -> TransformingRelay:
        raise NotImplementedError

    def _rejected(self, error: Exception) -> BackendError:
        """Count a refused stream; the error the reader's delivery fails with."""
        raise NotImplementedError

    def _succeeded(self) -> None:
        """Count a stream served whole."""
        raise NotImplementedError

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        relay = self._relay(consumer)
        result: Deferred[None] = Deferred()

        def done(_: object) -> None:
            if relay.error is None:
                try:
                    relay.finish()
                except relay.transform_error as exc:
                    relay.error = exc
            if relay.error is not None:
                result.errback(self._rejected(relay.error))
            else:
                self._succeeded()
                result.callback(None)

        def failed(reason: Failure) -> None:
            if (relay.error is not None or relay.cut) and reason.check(CancelledError):
                done(None)  # we cancelled it: a chunk failed, or the wanted chunks were in
            else:
                result.errback(reason)

        self._inner.deliver(relay).addCallbacks(done, failed)
        return result

    def cancel(self) -> None:
        self._inner.cancel()
