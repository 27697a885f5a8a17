"""Compressed multipart parts: each part compressed on its own, by the rules of a PUT.

UploadPart (and an UploadPartCopy that streams its range) compresses the part's bytes when
``compression.enabled``, the part is at least ``min_size`` and the ratio is good enough, exactly
as a PUT does (:meth:`~s3orch.codec.objects.Compressor.pack`); an encrypted upload then seals the
compressed stream (:mod:`s3orch.crypto.parts`): compress, then encrypt.  Each part decides for
itself, so one upload may mix compressed parts and parts stored as sent (random data).

The sizes follow the single-part rule: the part row's ``size`` is what the backend stores (the
reservation and the quota count it), ``logical_size`` the client's (ListParts, the 5 MiB minimum,
the completed object's size and ranges); a part's ETag stays the MD5 of the client's bytes, so the
completed object's ETag is AWS's over them.  A completed object's extents keep each part's chunk
size (``object_parts.compression_chunk_size``); the object's own column is set when any part is
compressed, so the read path (:func:`~s3orch.codec.objects.open_compressed`) opens it extent by
extent and its size is read from ``plaintext_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from s3orch.codec.objects import Compressor
from s3orch.crypto import parts as sealing
from s3orch.crypto.envelope import Envelope, require
from s3orch.crypto.format import plaintext_size_of
from s3orch.payload import Payload
from s3orch.store.records import MultipartUpload, ObjectRecord, UploadedPart


@dataclass(frozen=True)
class PartBody:
    """A part's stored bytes and what its row records of them (the caller calls :meth:`close`)."""

    stored: Payload  # what the part's backend gets
    logical_size: int  # the client's bytes
    chunk_size: int | None  # None: not compressed
    owned: tuple[Payload, ...] = ()  # spools made here

    def stamp(self, part: UploadedPart) -> UploadedPart:
        """``part`` as these bytes store it: the stored size, and the client's when compressed."""
        compressed = self.chunk_size is not None
        return replace(part, size=self.stored.length, compression_chunk_size=self.chunk_size,
                       logical_size=self.logical_size if compressed else None)

    def close(self) -> None:
        for spool in self.owned:
            spool.close()


async def prepare_part(
    compressor: Compressor | None,
    envelope: Envelope | None,
    upload: MultipartUpload,
    part_number: int,
    plain: Payload,
) -> PartBody:
    """The bytes part ``part_number`` of ``upload`` stores for the client's ``plain``: compressed
    when that pays, then sealed when the upload is encrypted (``plain`` itself otherwise)."""
    packed = await compressor.pack(plain) if compressor is not None else None
    inner = plain if packed is None else packed
    try:
        stored = await sealing.seal_part(envelope, upload, part_number, inner)
    except BaseException:
        if packed is not None:
            packed.close()
        raise
    if packed is None or compressor is None:
        return PartBody(stored, plain.length, None, () if stored is plain else (stored,))
    return PartBody(stored, plain.length, compressor.settings.chunk_size, (packed,) if stored is packed else (packed, stored))


def client_size(envelope: Envelope | None, upload: MultipartUpload, part: UploadedPart) -> int:
    """The client's size of ``part``: recorded when compressed, derived from the stored size when
    only encrypted, the stored size otherwise."""
    if part.compression_chunk_size is not None and part.logical_size is not None:
        return part.logical_size
    if upload.encrypted:
        return plaintext_size_of(part.size, require(envelope).chunk_size)
    return part.size


def client_parts(envelope: Envelope | None, upload: MultipartUpload, parts: Sequence[UploadedPart]) -> list[UploadedPart]:
    """``parts`` with the client's sizes (ListParts, Complete's checks and the object's sizes)."""
    return [replace(part, size=client_size(envelope, upload, part)) for part in parts]


def mark_compressed(record: ObjectRecord, parts: Sequence[UploadedPart]) -> ObjectRecord:
    """The completed object's record, marked compressed when any of its ``parts`` is."""
    chunk = next((p.compression_chunk_size for p in parts if p.compression_chunk_size is not None), None)
    return record if chunk is None else replace(record, compression_chunk_size=chunk)
