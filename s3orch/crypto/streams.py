"""Encrypting on the way to a backend, decrypting on the way back, never a whole object in memory.

* :func:`encrypt_spool` turns a plaintext :class:`~s3orch.payload.Payload` (a replayable spool)
  into a ciphertext spool, one chunk at a time, in the offload thread; the ciphertext's own MD5
  and SHA-256 are what the backend request carries (``Content-MD5``, ``x-amz-content-sha256``),
  while the object keeps the plaintext's (the ETag stays the MD5 of what the client sent).
* :class:`DecryptingStream` wraps a backend GET of the chunks covering a plaintext range and is
  itself a :class:`~s3orch.backend.interface.BackendStream` of exactly that range, so the relay,
  the extent stream and the copy spool read it like any other.  A chunk's bytes are released only
  after its tag verified; a failure errbacks the delivery with :class:`CiphertextRejected` (a
  :class:`BackendError`: the relay aborts the client connection, a copy spool is discarded).
  Backpressure passes straight through: the wrapped stream's producer is the one registered.
"""

from __future__ import annotations

import hashlib
import tempfile
from typing import BinaryIO

from s3orch.backend.interface import BackendError, BackendStream, IBodyConsumer
from s3orch.backend.transform_stream import (
    TransformingRelay,
    TransformingStream,
    drop_prefix,
    relayed_headers,
)
from s3orch.core.spool import Offload
from s3orch.crypto.format import (
    ChunkDecryptor,
    ChunkEncryptor,
    ChunkSpan,
    DecryptionError,
    NotEncrypted,
    StreamParams,
    covering,
    covering_all,
)
from s3orch.observe.metrics_crypto import ENCRYPTION_ERRORS, ENCRYPTION_OPERATIONS, FLAG_MISMATCH
from s3orch.payload import Payload

_READ_SIZE = 1024 * 1024


class CiphertextRejected(BackendError):
    """The stored ciphertext failed authentication or ended early: no plaintext of it is served."""


def _encrypt_file(source: BinaryIO, target: BinaryIO, params: StreamParams) -> tuple[str, str]:
    """Encrypt ``params.plaintext_size`` bytes of ``source`` into ``target`` (blocking)."""
    encryptor = ChunkEncryptor(params)
    md5, sha = hashlib.md5(), hashlib.sha256()
    left = params.plaintext_size
    while True:
        data = source.read(min(_READ_SIZE, left)) if left else b""
        left -= len(data)
        out = encryptor.feed(data) if data else encryptor.finish()
        md5.update(out)
        sha.update(out)
        target.write(out)
        if not data:
            break
        if left == 0:
            continue
    if left:
        raise ValueError("plaintext ended early")
    target.seek(0)
    return md5.hexdigest(), sha.hexdigest()


async def encrypt_spool(
    plain: Payload, params: StreamParams, *, spool_dir: str | None, offload: Offload
) -> Payload:
    """The ciphertext of ``plain`` as a new replayable spool (the caller closes both)."""
    target: BinaryIO = tempfile.TemporaryFile(dir=spool_dir or None)  # noqa: SIM115 - the Payload owns it
    digests: list[tuple[str, str]] = []

    def work() -> None:
        digests.append(_encrypt_file(plain.reader(), target, params))

    try:
        await offload(work)
    except BaseException:
        target.close()
        ENCRYPTION_ERRORS.labels("encrypt", "spool").inc()
        raise
    ENCRYPTION_OPERATIONS.labels("encrypt").inc()
    md5_hex, sha_hex = digests[0]
    return Payload(target, params.stored_size, md5_hex, sha_hex)


def plan(params: StreamParams, byte_range: tuple[int, int] | None) -> tuple[ChunkSpan, tuple[int, int] | None]:
    """The chunks a read of ``byte_range`` (plaintext, inclusive; None: all) needs, and the
    stored Range to ask the backend for (None: the whole stored extent)."""
    if byte_range is None or params.plaintext_size == 0:
        return covering_all(params), None
    span = covering(params, byte_range[0], byte_range[1])
    if span.stored_start == 0 and span.stored_end == params.stored_size - 1:
        return span, None
    return span, (span.stored_start, span.stored_end)


class DecryptingStream(TransformingStream):
    """The plaintext of ``byte_range`` of one encrypted extent, read from ``inner`` (a GET of
    the stored ``stored_range``)."""

    def __init__(
        self,
        inner: BackendStream,
        params: StreamParams,
        byte_range: tuple[int, int] | None,
    ) -> None:
        span, stored_range = plan(params, byte_range)
        self._inner = inner
        self._params = params
        self._span = span
        first, last = byte_range if byte_range is not None else (0, params.plaintext_size - 1)
        self.length: int | None = max(0, last - first + 1)
        self.content_range: tuple[int, int, int] | None = (
            None if byte_range is None else (first, last, params.plaintext_size)
        )
        self.status = 200 if byte_range is None else 206
        self.headers = relayed_headers(inner.headers)
        stored_len = span.stored_end - span.stored_start + 1
        #: Stored bytes to drop first: a backend that ignored our Range sent the extent from byte 0.
        self._stored_skip = 0
        sent = inner.content_range
        if stored_range is not None and sent is None:
            self._stored_skip = span.stored_start
        elif stored_range is not None and sent is not None and sent[0] != span.stored_start:
            raise CiphertextRejected("the backend answered a different byte range")
        expected = stored_len + self._stored_skip
        if inner.length is not None and inner.length < expected:
            # Truncated on the backend: refuse before the first byte.
            ENCRYPTION_ERRORS.labels(self._op, "truncated").inc()
            raise CiphertextRejected(f"stored object has {inner.length} bytes, {expected} expected")
        if inner.length is not None and stored_range is None and inner.length != expected:
            ENCRYPTION_ERRORS.labels(self._op, "truncated").inc()
            raise CiphertextRejected(f"stored object has {inner.length} bytes, {expected} expected")
        self._stored_left = stored_len
        self._plain_skip = span.skip
        self._plain_left = self.length

    @property
    def _op(self) -> str:
        return "decrypt" if self.content_range is None else "decrypt_range"

    def _relay(self, consumer: IBodyConsumer) -> _Decrypting:
        return _Decrypting(self, consumer, ChunkDecryptor(self._params, self._span))

    def _rejected(self, error: Exception) -> BackendError:
        kind = "truncated" if "ended" in str(error) else "authentication"
        ENCRYPTION_ERRORS.labels(self._op, kind).inc()
        if isinstance(error, NotEncrypted):
            FLAG_MISMATCH.labels("decrypt").inc()
        return CiphertextRejected(str(error))

    def _succeeded(self) -> None:
        ENCRYPTION_OPERATIONS.labels(self._op).inc()


class _Decrypting(TransformingRelay):
    """Decrypts the stored chunks, releasing a chunk's plaintext only after its tag verified."""

    transform_error = DecryptionError

    def __init__(self, owner: DecryptingStream, consumer: IBodyConsumer, decryptor: ChunkDecryptor) -> None:
        super().__init__(owner._inner, consumer)
        self.owner = owner
        self.decryptor = decryptor

    def transform(self, data: bytes) -> None:
        owner = self.owner
        if self.decryptor.done:
            if data:  # a backend sending more than the chunks asked for: stop it
                self.stop()
            return
        if owner._stored_skip:
            data, owner._stored_skip = drop_prefix(data, owner._stored_skip)
        if len(data) > owner._stored_left:
            data = data[: owner._stored_left]  # a backend sending more than asked: cut
        owner._stored_left -= len(data)
        try:
            plain = self.decryptor.feed(data)
        except DecryptionError as exc:
            self.reject(exc)
            return
        if owner._plain_skip:
            plain, owner._plain_skip = drop_prefix(plain, owner._plain_skip)
        if owner._plain_left is not None and len(plain) > owner._plain_left:
            plain = plain[: owner._plain_left]
        if plain:
            if owner._plain_left is not None:
                owner._plain_left -= len(plain)
            self.consumer.write(plain)

    def finish(self) -> None:
        self.decryptor.finish()
