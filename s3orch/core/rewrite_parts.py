"""The stored-form passes over multi-extent (multipart) objects: each extent rewritten on its own,
the way UploadPart stores a part (:mod:`s3orch.core.rewrite` calls this for a record with ``parts``).

* Each extent's client bytes are read back through the read path (decrypted and decompressed as
  stored, through the fleet's clients) and checked against the part's MD5.
* An extent is compressed when the pass asks for compression, by ``compression.*`` as UploadPart
  applies them (a part whose compressed form does not pay is stored as sent, so one object may mix
  both), or when it is compressed already and the pass keeps compression (its own chunk size, no
  threshold: it paid when it was uploaded).  A pass asking for compression leaves an object none
  of whose extents pays as it is (:class:`NotWorthIt`), before anything is uploaded.
* An encrypted target seals every extent under one fresh data key of the object, bound to the
  object's identity (its write id, as an upload's id is for UploadPart) and the part number.
* The new sizes are known before the first upload (the sealed size follows from the compressed
  one), so a rewrite that would grow a backend past its free room is refused up front.
* Each extent's new form goes to every backend holding a copy of it, under a new part storage key;
  the caller swaps all extents in one transaction (:meth:`~s3orch.store.interface_crypto.
  CryptoStore.swap_stored_bytes`).  The ETag stays: it is over the client's part MD5s.

The extents' spools are held (on disk) until the decision is taken, as the single-extent rewrite
holds the whole object's spool.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from s3orch.codec.streams import CompressionSettings, compress_spool
from s3orch.core.extents import check_read_back
from s3orch.core.fleet import BackendFleet
from s3orch.core.objects import ObjectService
from s3orch.core.placement import part_storage_key
from s3orch.core.spool import Offload
from s3orch.crypto.envelope import Envelope
from s3orch.crypto.format import StreamParams, ciphertext_size
from s3orch.crypto.parts import upload_identity
from s3orch.crypto.streams import encrypt_spool
from s3orch.payload import Payload
from s3orch.store.records import Extent, Location, ObjectRecord

#: The compression settings of an extent: for a new compression (None) or one kept (its chunk size).
SettingsFor = Callable[[int | None], CompressionSettings]
#: Refuses (raises) when the net growth per backend does not fit its free room.
RoomCheck = Callable[[dict[str, int]], Awaitable[None]]


class NotWorthIt(Exception):
    """The object stays as it is (its compressed form is not worth keeping)."""


@dataclass
class _Inner:
    """One extent's new stream before sealing: its client bytes, or their compressed form."""

    extent: Extent
    body: Payload
    chunk_size: int | None  # None: stored as the client sent it


class ExtentRewriter:
    """Rewrites the extents of one multi-extent object into a target form (see the module doc)."""

    def __init__(
        self, objects: ObjectService, *, settings: SettingsFor, room: RoomCheck, offload: Offload,
        spool_dir: str | None = None,
    ) -> None:
        self.objects = objects
        self.settings = settings
        self.room = room
        self.offload = offload
        self.spool_dir = spool_dir

    @property
    def fleet(self) -> BackendFleet:
        return self.objects.fleet

    async def rewrite(
        self, record: ObjectRecord, compress: bool | None, encrypt: bool, written: list[Location]
    ) -> ObjectRecord:
        """The new row of ``record`` once every extent's new copies are uploaded (each appended to
        ``written`` as it lands, so the caller can drop them).  ``compress``: None keeps each
        extent's own state."""
        envelope = self.objects.envelope
        if encrypt and envelope is None:
            raise ValueError("no encryption key is configured")
        inner: list[_Inner] = []
        try:
            for extent in record.parts:
                inner.append(await self._inner(record, extent, compress))
            if compress and all(item.chunk_size is None for item in inner):
                raise NotWorthIt()
            return await self._upload(record, inner, envelope if encrypt else None, written)
        finally:
            for item in inner:
                item.body.close()

    async def _inner(self, record: ObjectRecord, extent: Extent, compress: bool | None) -> _Inner:
        """The client bytes of ``extent`` read back, compressed when the target says so and it pays."""
        if not extent.locations:
            raise ValueError(f"extent {extent.part_number} has no copies")
        plain = await self.objects.spool_range(record, (extent.offset, extent.offset + extent.size - 1))
        try:
            check_read_back(plain, extent.etag or "")
            kept = extent.compression_chunk_size
            if not (kept is not None if compress is None else compress):
                return _Inner(extent, plain, None)
            settings = self.settings(kept)
            packed = await compress_spool(plain, settings, spool_dir=self.spool_dir, offload=self.offload)
        except BaseException:
            plain.close()
            raise
        if packed is None:
            return _Inner(extent, plain, None)
        plain.close()
        return _Inner(extent, packed, settings.chunk_size)

    async def _upload(
        self, record: ObjectRecord, inner: list[_Inner], envelope: Envelope | None, written: list[Location]
    ) -> ObjectRecord:
        """Seal (with ``envelope``) and upload every extent's new form; the record that names them."""
        growth: dict[str, int] = {}
        for item in inner:
            size = item.body.length if envelope is None else ciphertext_size(item.body.length, envelope.chunk_size)
            for location in item.extent.locations:
                growth[location.backend] = growth.get(location.backend, 0) + size - location.size
        await self.room(growth)
        identity = upload_identity(record.write_id)
        dek, wrapped, key_id = await envelope.new_key() if envelope is not None else (b"", "", "")
        parts: list[Extent] = []
        for item in inner:
            stored = item.body
            if envelope is not None:
                params = StreamParams(dek, identity, item.extent.part_number, stored.length, envelope.chunk_size)
                stored = await encrypt_spool(stored, params, spool_dir=envelope.spool_dir, offload=envelope.offload)
            try:
                copies: list[Location] = []
                for location in item.extent.locations:
                    skey = part_storage_key(record.bucket, record.key, record.write_id, item.extent.part_number,
                                            uuid.uuid4().hex)
                    await self.fleet[location.backend].put_object(skey, stored)
                    copies.append(Location(location.backend, skey, stored.length))
                    written.append(copies[-1])
            finally:
                if stored is not item.body:
                    stored.close()
            parts.append(replace(item.extent, locations=tuple(copies), compression_chunk_size=item.chunk_size))
        chunk = next((item.chunk_size for item in inner if item.chunk_size is not None), None)
        after = replace(record, parts=tuple(parts), compression_chunk_size=chunk)
        if envelope is None:
            return replace(after, encrypted=False, wrapped_dek="", key_id="", crypto_id="")
        return replace(after, encrypted=True, wrapped_dek=wrapped, key_id=key_id, crypto_id=identity.hex())
