"""The body sink of a stream-through write: hash and verify like a spool, but pass the bytes on.

:class:`StreamingBody` is a :class:`~s3orch.http.body.RequestBody` whose "spool" is a
:class:`~s3orch.stream_payload.StreamPayload`: the same caps, length and digest checks
run on the same bytes, and the verdict comes when the body ends (:meth:`end_of_body`):
verified digests settle the stream (the backend request completes), a mismatch fails it
(the backend request is aborted and the write undone by the core).  The handler gets the
stream as soon as the first byte arrived (:meth:`finish` returns it unverified), so the
backend write runs while the body arrives.
"""

from __future__ import annotations

from typing import Any

from s3orch.http.body import RequestBody
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.stream_payload import StreamPayload


class _StreamWriter:
    """The file-like end RequestBody writes to: the stream."""

    def __init__(self, payload: StreamPayload) -> None:
        self._payload = payload

    def write(self, data: bytes) -> int:
        self._payload.feed(data)
        return len(data)

    def seek(self, offset: int) -> int:
        return 0

    def close(self) -> None:
        """Nothing is held here (RequestBody.discard closes its spool)."""


class StreamingBody(RequestBody):
    """A RequestBody that streams (see the module docstring)."""

    def __init__(self, *, payload: StreamPayload, **kwargs: Any) -> None:
        super().__init__(spool_memory_limit=0, spool_dir=None, **kwargs)
        self._spool.close()  # never written: nothing to drop
        self._spool = _StreamWriter(payload)  # type: ignore[assignment]  # the writes it takes
        self.payload = payload
        #: The handler runs (started on the first body byte).
        self.handling = False
        #: The client's body is complete (verified or not).
        self.complete = False

    def finish(self) -> Payload:
        """The stream, for the handler: its digests are checked when the body ends."""
        if self.failed is not None:
            raise self.failed
        return self.payload

    def end_of_body(self) -> None:
        """The last byte arrived: verify, then settle or fail the stream."""
        self.complete = True
        try:
            verified = RequestBody.finish(self)
        except errors.S3Error as exc:
            self.payload.fail(exc)
            return
        self.payload.end(verified.md5_hex, verified.sha256_hex, verified.checksum)

    def discard(self) -> None:
        """Refused or abandoned: the backend request reading the stream fails."""
        super().discard()
        self.payload.fail(self.failed or errors.IncompleteBody("The client did not send the whole body."))
