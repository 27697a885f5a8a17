"""The compression seam: the client's bytes → the stored stream, and back, never a whole object in memory.

Two functions are the whole contract with the write and read paths (and with encryption, which
composes around them: compress, then encrypt; decrypt, then decompress):

* :func:`compress_spool` turns the client's :class:`~s3orch.payload.Payload` (a replayable spool)
  into the stored stream as a new spool, one chunk at a time in the offload thread, or answers
  None when the extent is to be stored as is (below ``min_size``, or stored/logical worse than
  ``min_ratio``).  The new Payload's MD5/SHA-256 are the stored stream's (what the backend request
  carries); the object keeps the client's (the ETag stays the MD5 of what the client wrote).
* :func:`open_decompressed` answers a read of a compressed extent with a
  :class:`~s3orch.backend.interface.BackendStream` of exactly the logical range asked for.
  ``open_range`` opens a range of the *stored stream* (a backend GET, or the decrypting stream
  when the extent is also encrypted), so this module never knows which.  A full read streams the
  whole stored stream and checks the seek table at its end; a ranged read fetches the seek table
  (its size follows from the row's sizes), then only the frames covering the range.

A chunk leaves only after its frame verified; a corrupt stream errbacks the delivery with
:class:`CompressedStreamRejected` (a :class:`BackendError`: the relay aborts the client connection).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO

from s3orch.backend.interface import BackendError, BackendStream, IBodyConsumer, PushProducer
from s3orch.backend.transform_stream import (
    TransformingRelay,
    TransformingStream,
    drop_prefix,
    relayed_headers,
)
from s3orch.codec.zstd import (
    ChunkCompressor,
    ChunkDecompressor,
    CorruptStream,
    RangePlan,
    SeekTable,
    check_chunk_size,
    table_size,
    zstd_level,
)
from s3orch.config.features import CompressionConfig
from s3orch.core.spool import Offload
from s3orch.observe import compression_metrics as m
from s3orch.payload import Payload

_READ_SIZE = 1024 * 1024

#: Opens inclusive range ``(start, end)`` of the stored stream (None: all of it).
OpenRange = Callable[[tuple[int, int] | None], Awaitable[BackendStream]]


class CompressedStreamRejected(BackendError):
    """The stored stream is not the compressed extent that was written: no byte of it is served."""


@dataclass(frozen=True)
class CompressionSettings:
    """``compression.*`` as the seam uses them (checked here so a bad value never reaches zstd)."""

    level: str = "default"
    chunk_size: int = 1024 * 1024
    min_size: int = 4096
    min_ratio: float = 0.95

    def __post_init__(self) -> None:
        zstd_level(self.level)
        check_chunk_size(self.chunk_size)

    @classmethod
    def from_config(cls, config: CompressionConfig) -> CompressionSettings:
        """``compression.*`` (``level`` empty means default; the loader checked the ranges)."""
        return cls(config.level or "default", config.chunk_size, config.min_size, config.min_ratio)


def frames_for(logical_size: int, chunk_size: int) -> int:
    """Frames of an extent of ``logical_size`` bytes (the row knows both; no frame when empty)."""
    return -(-logical_size // chunk_size)


def _compress_file(source: BinaryIO, length: int, target: BinaryIO, settings: CompressionSettings) -> tuple[str, str, int]:
    """Compress ``length`` bytes of ``source`` into ``target`` (blocking); its MD5, SHA-256, size."""
    comp = ChunkCompressor(settings.level, settings.chunk_size)
    md5, sha = hashlib.md5(), hashlib.sha256()
    left, size = length, 0
    while True:
        data = source.read(min(_READ_SIZE, left)) if left else b""
        left -= len(data)
        out = comp.feed(data) if data else comp.finish()
        md5.update(out)
        sha.update(out)
        target.write(out)
        size += len(out)
        if not data:
            break
    if left:
        raise ValueError("the client's bytes ended early")
    target.seek(0)
    return md5.hexdigest(), sha.hexdigest(), size


async def compress_spool(
    plain: Payload, settings: CompressionSettings, *, spool_dir: str | None, offload: Offload
) -> Payload | None:
    """The stored stream of ``plain`` as a new spool (the caller closes both), or None to store
    ``plain`` as is.  Compression always runs to the end before the ratio decides, so a skipped
    extent cost one pass in the offload thread and nothing on the backends."""
    if plain.length < settings.min_size:
        m.COMPRESSION_SKIPPED.labels("below_min_size").inc()
        return None
    target: BinaryIO = tempfile.TemporaryFile(dir=spool_dir or None)  # noqa: SIM115 - the Payload owns it
    found: list[tuple[str, str, int]] = []

    def work() -> None:
        found.append(_compress_file(plain.reader(), plain.length, target, settings))

    try:
        await offload(work)
    except BaseException:
        target.close()
        m.COMPRESSION_ERRORS.labels("compress", "spool").inc()
        raise
    md5_hex, sha_hex, size = found[0]
    ratio = size / plain.length if plain.length else 1.0
    m.COMPRESSION_RATIO.observe(ratio)
    if ratio > settings.min_ratio:
        target.close()
        m.COMPRESSION_SKIPPED.labels("ratio").inc()
        return None
    m.COMPRESSION_OPERATIONS.labels("compress").inc()
    m.COMPRESSION_BYTES_IN.inc(plain.length)
    m.COMPRESSION_BYTES_SAVED.inc(plain.length - size)
    return Payload(target, size, md5_hex, sha_hex)


class _Collect:
    """A consumer keeping a small body in memory (the seek table: 8 bytes a frame)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > self.limit:
            raise CompressedStreamRejected("seek table longer than the row says")
        self.data += data


async def read_seek_table(open_range: OpenRange, stored_size: int, logical_size: int, chunk_size: int) -> SeekTable:
    """The seek table, fetched as the stored stream's last ``table_size(frames)`` bytes and
    checked against the row (frame count, both sizes)."""
    size = table_size(frames_for(logical_size, chunk_size))
    if stored_size < size:
        raise CompressedStreamRejected("the row's stored size cannot hold the seek table")
    stream = await open_range((stored_size - size, stored_size - 1))
    sink = _Collect(stored_size if stream.status == 200 else size)
    await stream.deliver(sink)
    data = bytes(sink.data[-size:] if stream.status == 200 else sink.data)
    try:
        table = SeekTable.parse(data)
    except CorruptStream as exc:
        m.COMPRESSION_ERRORS.labels("decompress_range", "corrupt").inc()
        raise CompressedStreamRejected(str(exc)) from exc
    if table.logical_size != logical_size or table.stored_size != stored_size:
        m.COMPRESSION_ERRORS.labels("decompress_range", "corrupt").inc()
        raise CompressedStreamRejected("seek table does not match the row's sizes")
    return table


async def open_decompressed(
    open_range: OpenRange,
    *,
    stored_size: int,
    logical_size: int,
    chunk_size: int,
    byte_range: tuple[int, int] | None,
) -> BackendStream:
    """The logical bytes ``byte_range`` (inclusive, already clamped; None: all) of a compressed
    extent whose stored stream ``open_range`` reads."""
    if byte_range is None or logical_size == 0:
        return DecompressingStream(await open_range(None), stored_size, logical_size, None)
    table = await read_seek_table(open_range, stored_size, logical_size, chunk_size)
    plan = table.plan(*byte_range)
    inner = await open_range((plan.stored_start, plan.stored_end))
    return DecompressingStream(inner, stored_size, logical_size, plan, byte_range[0])


class DecompressingStream(TransformingStream):
    """A :class:`BackendStream` of logical bytes over ``inner``, the stored stream (whole, or the
    frames of ``plan``).  Backpressure passes straight through: the inner producer is registered."""

    def __init__(
        self, inner: BackendStream, stored_size: int, logical_size: int, plan: RangePlan | None, first: int = 0
    ) -> None:
        self._inner = inner
        self._plan = plan
        fetched = stored_size if plan is None else plan.fetched
        #: A backend that ignored our Range sends the stream from byte 0: skip to the plan's start.
        self._stored_skip = plan.stored_start if plan is not None and inner.status == 200 else 0
        self._stored_left = fetched
        short = inner.length is not None and inner.length - self._stored_skip < fetched
        if short or (plan is None and inner.length is not None and inner.length != fetched):
            self.cancel()
            m.COMPRESSION_ERRORS.labels(self._op, "truncated").inc()
            raise CompressedStreamRejected(f"stored stream has {inner.length} bytes, {fetched} expected")
        if plan is not None and inner.status == 206 and inner.content_range is not None:
            if inner.content_range[0] != plan.stored_start:
                self.cancel()
                raise CompressedStreamRejected("the backend answered a different byte range")
        self._fetched = fetched
        self._skip = 0 if plan is None else plan.skip
        self.length: int | None = logical_size if plan is None else plan.length
        self._left = self.length or 0
        self.status = 200 if plan is None else 206
        self.content_range: tuple[int, int, int] | None = None
        if plan is not None:
            self.content_range = (first, first + plan.length - 1, logical_size)
        self.headers = relayed_headers(inner.headers)
        self._decompressor = ChunkDecompressor(expect=None if plan is None else plan.entries)

    @property
    def _op(self) -> str:
        return "decompress" if self._plan is None else "decompress_range"

    def _relay(self, consumer: IBodyConsumer) -> _Decompressing:
        return _Decompressing(self, consumer)

    def _rejected(self, error: Exception) -> BackendError:
        m.COMPRESSION_ERRORS.labels(self._op, "corrupt").inc()
        return CompressedStreamRejected(str(error))

    def _succeeded(self) -> None:
        served = self.length or 0
        m.COMPRESSION_OPERATIONS.labels(self._op).inc()
        m.COMPRESSION_READ_FETCHED.inc(self._fetched)
        m.COMPRESSION_READ_SERVED.inc(served)
        if served:
            m.COMPRESSION_READ_AMPLIFICATION.observe(self._fetched / served)


class _Decompressing(TransformingRelay):
    """Decompresses the stored frames, releasing a frame's bytes only after it verified."""

    transform_error = CorruptStream

    def __init__(self, owner: DecompressingStream, consumer: IBodyConsumer) -> None:
        super().__init__(owner._inner, consumer)
        self.owner = owner

    def transform(self, data: bytes) -> None:
        owner = self.owner
        if owner._plan is not None and owner._stored_left == 0 and not owner._stored_skip:
            self.stop()  # the rest of a whole object sent for a range: stop the transfer
            return
        if owner._stored_skip:
            data, owner._stored_skip = drop_prefix(data, owner._stored_skip)
        if owner._plan is not None and len(data) > owner._stored_left:
            data = data[: owner._stored_left]  # a backend that ignored the Range: the rest is not ours
        owner._stored_left -= len(data)
        try:
            out = owner._decompressor.feed(data)
        except CorruptStream as exc:
            self.reject(exc)
            return
        if owner._skip:
            out, owner._skip = drop_prefix(out, owner._skip)
        out = out[: owner._left]
        if out:
            owner._left -= len(out)
            self.consumer.write(out)

    def finish(self) -> None:
        self.owner._decompressor.finish()
        if self.owner._left:
            raise CorruptStream("stream ended before the range did")
