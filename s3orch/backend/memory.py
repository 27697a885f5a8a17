"""An in-memory :class:`~s3orch.backend.interface.ObjectBackend` for unit tests.

It lets the core's failover, quota and cleanup logic (and the relay) be tested
without sockets: objects live in a dict, failures are switched on with knobs,
and GET bodies are delivered in chunks by a push producer that honours pause,
so backpressure is observable.  Holding bodies in memory is fine for a fake.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import Counter
from typing import cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime

from s3orch.backend.interface import (
    BackendError,
    BackendNotFound,
    BackendUnavailable,
    Clock,
    IBodyConsumer,
    ListedObject,
    Timer,
)
from s3orch.payload import Payload
from s3orch.stream_payload import StreamPayload

#: Operation names used by the failure knobs and :attr:`MemoryBackend.calls`.
OPERATIONS = (
    "put_object",
    "get_object",
    "head_object",
    "delete_object",
    "copy_object",
    "list_keys",
    "list_objects",
    "abort_multipart_upload",
    "list_multipart_uploads",
)

class MemoryStream:
    """A GET body served from bytes in chunks, pausable like a socket.

    Without a ``clock`` chunks are pushed synchronously until the consumer
    pauses; with one, one chunk per reactor turn (closer to a real socket).
    ``fail_after`` cuts the body after that many bytes with BackendUnavailable.
    """

    def __init__(
        self,
        data: bytes,
        *,
        status: int = 200,
        content_range: tuple[int, int, int] | None = None,
        headers: dict[str, str] | None = None,
        chunk_size: int = 65536,
        fail_after: int | None = None,
        clock: IReactorTime | None = None,
        backend: str = "memory",
    ) -> None:
        self.status = status
        self.length: int | None = len(data)
        self.content_range = content_range
        self.headers = dict(headers or {})
        self._data = data
        self._chunk_size = max(1, chunk_size)
        self._fail_after = fail_after
        self._clock = cast(Clock, clock) if clock is not None else None
        self._backend = backend
        self._pos = 0
        self._consumer: IBodyConsumer | None = None
        self._done: Deferred[None] | None = None
        self._pumping = False
        self._scheduled: Timer | None = None
        #: "producing", "paused" or "stopped", like StringTransport, for assertions.
        self.producerState = "producing"
        self.cancelled = False

    @property
    def delivered(self) -> int:
        """Bytes handed to the consumer so far."""
        return self._pos

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        """Start pushing the body into ``consumer``."""
        if self._consumer is not None:
            raise RuntimeError("body already delivered")
        done: Deferred[None] = Deferred()
        self._done = done
        self._consumer = consumer
        consumer.registerProducer(self, True)
        if self.cancelled:
            self._finish(CancelledError())
        else:
            self._pump()
        return done

    def cancel(self) -> None:
        """Stop delivering; ``deliver``'s Deferred errbacks with CancelledError."""
        self.cancelled = True
        self.stopProducing()

    # IPushProducer
    def pauseProducing(self) -> None:
        if self.producerState == "producing":
            self.producerState = "paused"

    def resumeProducing(self) -> None:
        if self.producerState == "paused":
            self.producerState = "producing"
            self._pump()

    def stopProducing(self) -> None:
        if self.producerState == "stopped":
            return
        self.producerState = "stopped"
        self.cancelled = True
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._finish(CancelledError())

    def _pump(self) -> None:
        if self._pumping or self._consumer is None:
            return  # re-entered from inside consumer.write(); the outer loop goes on
        self._pumping = True
        try:
            while self.producerState == "producing" and self._done is not None:
                if self._pos >= len(self._data):
                    self._finish(None)
                    return
                if self._fail_after is not None and self._pos >= self._fail_after:
                    self._finish(
                        BackendUnavailable(f"body cut after {self._pos} bytes", backend=self._backend)
                    )
                    return
                if self._clock is not None:
                    if self._scheduled is None or not self._scheduled.active():
                        self._scheduled = self._clock.callLater(0, self._step)
                    return
                self._write_chunk()
        finally:
            self._pumping = False

    def _step(self) -> None:
        self._scheduled = None
        if self.producerState != "producing" or self._done is None:
            return
        if self._pos < len(self._data) and (self._fail_after is None or self._pos < self._fail_after):
            self._write_chunk()
        self._pump()

    def _write_chunk(self) -> None:
        end = self._pos + self._chunk_size
        if self._fail_after is not None:
            end = min(end, self._fail_after)
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        assert self._consumer is not None
        self._consumer.write(chunk)

    def _finish(self, error: Exception | None) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        if self._consumer is not None:
            self._consumer.unregisterProducer()
        if error is None:
            done.callback(None)
        else:
            done.errback(error)


class MemoryBackend:
    """A backend whose objects live in a dict, with failure and quirk knobs.

    * ``fail``: operations (see :data:`OPERATIONS`, or ``"*"``) that always
      raise :class:`BackendUnavailable` while listed; mutate it freely.
    * :meth:`fail_next`: make the next N calls of an operation fail.
    * ``ranged_get_returns_full``: answer ranged GETs with 200 and the whole
      object, like rclone does.
    * ``body_fails_after``: GET bodies are cut after that many bytes.
    * ``calls``: every call as ``(operation, key)``, to assert e.g. that a
      rejected request caused zero backend calls.
    """

    def __init__(
        self,
        name: str = "memory",
        *,
        fail: set[str] | None = None,
        chunk_size: int = 65536,
        clock: IReactorTime | None = None,
    ) -> None:
        self.name = name
        self.fail: set[str] = set(fail or ())
        self.objects: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.ranged_get_returns_full = False
        self.body_fails_after: int | None = None
        self.chunk_size = chunk_size
        self.closed = False
        #: Native multipart uploads an older build left open: upload id -> (key, {part: bytes}).
        #: Tests put them here; the stale-upload cleanup aborts them.
        self.uploads: dict[str, tuple[str, dict[int, bytes]]] = {}
        self._clock = clock
        self._fail_next: Counter[str] = Counter()
        self._fail_next_error: dict[str, BackendError] = {}

    def fail_next(self, operation: str, count: int = 1, error: BackendError | None = None) -> None:
        """Make the next ``count`` calls of ``operation`` raise ``error``
        (default :class:`BackendUnavailable`)."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        self._fail_next[operation] += count
        if error is not None:
            self._fail_next_error[operation] = error

    def _enter(self, operation: str, key: str) -> None:
        self.calls.append((operation, key))
        if self.closed:
            raise BackendUnavailable("backend closed", backend=self.name)
        if self._fail_next[operation] > 0:
            self._fail_next[operation] -= 1
            error = self._fail_next_error.get(operation)
            if self._fail_next[operation] == 0:
                self._fail_next_error.pop(operation, None)
            raise error or BackendUnavailable(f"injected {operation} failure", backend=self.name)
        if operation in self.fail or "*" in self.fail:
            raise BackendUnavailable(f"injected {operation} failure", backend=self.name)

    def _get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise BackendNotFound(f"no such key {key!r}", backend=self.name) from None

    async def put_object(self, storage_key: str, payload: Payload) -> str:
        """Store the payload's bytes, checking its digests like S3 (Content-MD5, SHA-256)."""
        self._enter("put_object", storage_key)
        length = payload.length
        data = await payload.collect() if isinstance(payload, StreamPayload) else payload.reader().read(length)
        if len(data) != length:
            raise BackendError(
                f"body has {len(data)} bytes, expected {length}",
                status=400,
                code="IncompleteBody",
                backend=self.name,
            )
        md5 = hashlib.md5(data)
        try:
            claimed = base64.b64decode(payload.md5_b64, validate=True)
        except (binascii.Error, ValueError):
            claimed = b""
        if claimed != md5.digest():
            raise BackendError(
                "Content-MD5 mismatch",
                status=400,
                code="BadDigest",
                backend=self.name,
            )
        if hashlib.sha256(data).hexdigest() != payload.sha256_hex.lower():
            raise BackendError(
                "x-amz-content-sha256 mismatch",
                status=400,
                code="XAmzContentSHA256Mismatch",
                backend=self.name,
            )
        self.objects[storage_key] = data
        return md5.hexdigest()

    async def get_object(self, storage_key: str, byte_range: tuple[int, int] | None = None) -> MemoryStream:
        """Serve a stream of the object or of the inclusive range."""
        self._enter("get_object", storage_key)
        data = self._get(storage_key)
        total = len(data)
        headers = {
            "etag": f'"{hashlib.md5(data).hexdigest()}"',
            "accept-ranges": "bytes",
        }
        status, content_range = 200, None
        if byte_range is not None and not self.ranged_get_returns_full:
            start, end = byte_range
            if start >= total or start > end:
                raise BackendError(
                    "range not satisfiable",
                    status=416,
                    code="InvalidRange",
                    backend=self.name,
                )
            end = min(end, total - 1)
            data = data[start : end + 1]
            status, content_range = 206, (start, end, total)
            headers["content-range"] = f"bytes {start}-{end}/{total}"
        headers["content-length"] = str(len(data))
        return MemoryStream(
            data,
            status=status,
            content_range=content_range,
            headers=headers,
            chunk_size=self.chunk_size,
            fail_after=self.body_fails_after,
            clock=self._clock,
            backend=self.name,
        )

    async def head_object(self, storage_key: str) -> dict[str, str]:
        """Return content-length and etag like an S3 HEAD."""
        self._enter("head_object", storage_key)
        data = self._get(storage_key)
        return {
            "content-length": str(len(data)),
            "etag": f'"{hashlib.md5(data).hexdigest()}"',
            "content-type": "application/octet-stream",
        }

    async def delete_object(self, storage_key: str) -> None:
        """Remove the key; a missing key is fine."""
        self._enter("delete_object", storage_key)
        self.objects.pop(storage_key, None)

    async def copy_object(self, source_key: str, dest_key: str) -> str:
        """Copy bytes under a new key."""
        self._enter("copy_object", dest_key)
        data = self._get(source_key)
        self.objects[dest_key] = data
        return hashlib.md5(data).hexdigest()

    async def list_keys(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[tuple[str, int]], str | None]:
        """Page through keys in lexical order; the token is the last key returned."""
        self._enter("list_keys", prefix)
        keys = sorted(k for k in self.objects if k.startswith(prefix))
        if continuation is not None:
            keys = [k for k in keys if k > continuation]
        page = keys[: max(1, max_keys)]
        token = page[-1] if len(keys) > len(page) else None
        return [(k, len(self.objects[k])) for k in page], token

    async def list_objects(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[ListedObject], str | None]:
        """:meth:`list_keys` with each object's MD5 ETag (Last-Modified: the clock's now, or 0)."""
        self._enter("list_objects", prefix)
        keys = sorted(k for k in self.objects if k.startswith(prefix) and (continuation is None or k > continuation))
        page = keys[: max(1, max_keys)]
        token = page[-1] if len(keys) > len(page) else None
        when = self._clock.seconds() if self._clock is not None else 0.0
        return [
            ListedObject(k, len(self.objects[k]), hashlib.md5(self.objects[k]).hexdigest(), when) for k in page
        ], token

    # -- native multipart uploads (left by older builds) ---------------------------------

    async def abort_multipart_upload(self, storage_key: str, upload_id: str) -> None:
        """Drop the upload and its parts; a missing upload is fine."""
        self._enter("abort_multipart_upload", storage_key)
        found = self.uploads.get(upload_id)
        if found is not None and found[0] == storage_key:
            del self.uploads[upload_id]

    async def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str]]:
        """Open uploads under ``prefix``, by key."""
        self._enter("list_multipart_uploads", prefix)
        return sorted((key, uid) for uid, (key, _) in self.uploads.items() if key.startswith(prefix))

    async def close(self) -> None:
        """Further calls fail like an unreachable backend."""
        self.closed = True
