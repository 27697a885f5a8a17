"""Compression in the object paths: what :class:`~s3orch.core.objects.ObjectService` calls.

Kept out of ``s3orch/core/objects.py`` (at its size limit) and out of the codec's pure modules:
this is the one place that knows both the record's columns and the seam.  Order with encryption:
a PUT compresses, then seals (:meth:`~s3orch.crypto.envelope.Envelope.seal` takes the compressed
spool); a read opens the sealed range through the envelope, then decompresses.  The sizes:
``record.size`` (and an extent's ``size``) is the client's (logical) size, a location's size the
stored one; the compressed stream's size is the stored size, or, encrypted, ``plaintext_size_of``
the stored size.  Multipart parts are compressed one by one (:mod:`s3orch.codec.parts`), so a
multi-extent record may mix compressed extents and extents stored as sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from s3orch.backend.interface import BackendStream
from s3orch.codec.streams import (
    CompressedStreamRejected,
    CompressionSettings,
    compress_spool,
    open_decompressed,
)
from s3orch.config.features import CompressionConfig
from s3orch.core.extents import open_extents
from s3orch.core.spool import Offload, run_here, thread_offload
from s3orch.crypto.envelope import Envelope, StoredOpener, require
from s3orch.crypto.format import plaintext_size_of
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.store.records import Extent, Location, ObjectRecord


class Compressor:
    """``compression.*`` for the write path: the settings and where the work runs."""

    def __init__(
        self, settings: CompressionSettings, *, spool_dir: str | None = None, offload: Offload = run_here
    ) -> None:
        self.settings = settings
        self.spool_dir = spool_dir
        self.offload = offload

    async def pack(self, payload: Payload) -> Payload | None:
        """The compressed spool of ``payload`` (the caller closes it), or None to store it as is."""
        return await compress_spool(payload, self.settings, spool_dir=self.spool_dir, offload=self.offload)


def build_compressor(config: CompressionConfig, reactor: object | None, spool_dir: str | None) -> Compressor | None:
    """The tap's compressor: None when ``compression.enabled`` is off (reads of compressed records
    need no settings: the row holds the chunk size)."""
    if not config.enabled:
        return None
    offload = thread_offload(reactor) if reactor is not None else run_here
    return Compressor(CompressionSettings.from_config(config), spool_dir=spool_dir, offload=offload)


async def open_compressed(
    record: ObjectRecord,
    byte_range: tuple[int, int] | None,
    opener: StoredOpener,
    envelope: Envelope | None,
    dek: bytes | None = None,
) -> tuple[BackendStream, Location]:
    """The logical ``byte_range`` (inclusive, clamped; None: all) of a compressed record, decrypted
    first when it is also encrypted.  A multi-extent record (a multipart upload whose parts were
    compressed one by one) is one stream over its extents, each opened as it is stored: a
    compressed extent fetches only the frames its piece of the range covers."""
    if not record.parts:
        if record.compression_chunk_size is None or not record.locations:
            raise errors.InternalError("The compressed object's metadata is incomplete.")
        return await open_compressed_extent(record, record.extents[0], byte_range, opener, envelope, dek)
    key = dek
    if record.encrypted and key is None:
        key = await require(envelope).data_key(record)  # one unwrap for every extent

    async def open_one(extent: Extent, sub_range: tuple[int, int] | None) -> tuple[BackendStream, Location]:
        if extent.compression_chunk_size is not None:
            return await open_compressed_extent(record, extent, sub_range, opener, envelope, key)
        if record.encrypted:
            return await require(envelope).open_extent(record, extent, sub_range, opener, key)
        return await opener(extent.locations, sub_range)

    return await open_extents(record.extents, record.size, byte_range, open_one)


async def open_compressed_extent(
    record: ObjectRecord,
    extent: Extent,
    byte_range: tuple[int, int] | None,
    opener: StoredOpener,
    envelope: Envelope | None,
    dek: bytes | None = None,
) -> tuple[BackendStream, Location]:
    """The logical ``byte_range`` (within the extent; None: all) of one compressed extent of
    ``record``, decrypted first when the record is encrypted.  Fails over between the extent's
    copies before the first byte (``opener``); a stored stream that does not match the row
    answers 500, never its bytes.  ``dek``: the record's data key when the caller unwrapped it."""
    chunk = extent.compression_chunk_size
    if chunk is None or not extent.locations:
        raise errors.InternalError("The compressed object's metadata is incomplete.")
    locations: Sequence[Location] = extent.locations
    stored = locations[0].size
    opened: list[Location] = []
    if record.encrypted:
        sealer = require(envelope)
        key = dek if dek is not None else await sealer.data_key(record)
        try:
            packed = plaintext_size_of(stored, sealer.chunk_size)
        except ValueError as exc:
            raise errors.InternalError("The stored object failed its integrity check.") from exc
        # The sealed stream's plaintext is the compressed stream (the part number is bound in).
        sealed = Extent(extent.part_number, extent.offset, packed, tuple(locations))

        async def open_range(stored_range: tuple[int, int] | None) -> BackendStream:
            stream, location = await sealer.open_extent(record, sealed, stored_range, opener, key)
            opened.append(location)
            return stream
    else:
        packed = stored

        async def open_range(stored_range: tuple[int, int] | None) -> BackendStream:
            stream, location = await opener(locations, stored_range)
            opened.append(location)
            return stream

    try:
        stream = await open_decompressed(
            open_range, stored_size=packed, logical_size=extent.size, chunk_size=chunk, byte_range=byte_range
        )
    except CompressedStreamRejected as exc:
        raise errors.InternalError("The stored object failed its integrity check.") from exc
    return stream, opened[-1]
