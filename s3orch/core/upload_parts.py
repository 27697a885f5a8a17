"""UploadPart and UploadPartCopy: a mixin of :class:`~s3orch.core.uploads.MultipartService`.

Each part is placed like a PUT (:meth:`~s3orch.core.objects.ObjectService.place_part`) and stored
as a PUT would store it: compressed when that pays (:mod:`s3orch.codec.parts`), then sealed under
the upload's data key when the upload is encrypted (:mod:`s3orch.crypto.parts`).  The part row
keeps the stored size (quotas count it) and, for a compressed part, the client's size; its ETag is
always the MD5 of the client's bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from s3orch.backend.interface import BackendError
from s3orch.codec.parts import PartBody, prepare_part
from s3orch.core.fleet import BackendFleet
from s3orch.core.multipart import check_part_checksum, server_side_part_copy
from s3orch.core.objects import MAX_COPY_SOURCE_SIZE, ObjectService
from s3orch.core.stream_write import send_once
from s3orch.crypto import parts as sealing
from s3orch.observe.audit import audit
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.store.interface import (
    UPLOAD_OPEN,
    MultipartUpload,
    ObjectRecord,
    PartReservation,
    UploadedPart,
    UploadNotFound,
)


class PartUploads:
    """Storing one part (the upload service's attributes are declared here for the type checker)."""

    fleet: BackendFleet
    objects: ObjectService

    def _now(self) -> float:
        raise NotImplementedError  # the upload service's

    async def _client_upload(
        self, bucket: str, key: str, upload_id: str, states: Sequence[str] = (UPLOAD_OPEN,)
    ) -> MultipartUpload:
        raise NotImplementedError  # the upload service's

    async def refresh_gauge(self) -> None:
        raise NotImplementedError  # the upload service's

    async def _store_part(
        self,
        upload: MultipartUpload,
        part_number: int,
        size: int,
        send: Callable[[PartReservation], Awaitable[None]],
        request_id: str,
        prefer: Sequence[str] = (),
    ) -> PartReservation:
        try:
            return await self.objects.place_part(
                upload, part_number, size, send, prefer=prefer, request_id=request_id
            )
        except UploadNotFound:
            raise errors.NoSuchUpload(UploadId=upload.upload_id) from None

    async def _commit(
        self, upload: MultipartUpload, reservation: PartReservation, part: UploadedPart, operation: str, request_id: str
    ) -> UploadedPart:
        await self.objects.commit_part(reservation, part)
        audit(
            f"storage.{operation}",
            request_id=request_id,
            backend=reservation.backend,
            bucket=upload.bucket,
            key=upload.key,
            upload_id=upload.upload_id,
            part_number=part.part_number,
            size=part.size,
        )
        await self.refresh_gauge()
        return part

    async def _part_body(self, upload: MultipartUpload, part_number: int, plain: Payload) -> PartBody:
        """What the part's backend gets for the client's ``plain`` (compressed, sealed, or as is)."""
        return await prepare_part(self.objects.compressor, self.objects.envelope, upload, part_number, plain)

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        payload: Payload,
        *,
        request_id: str = "",
    ) -> UploadedPart:
        """Store ``payload`` as one part, on the backend placement picks (re-uploading replaces it)."""
        upload = await self._client_upload(bucket, key, upload_id)
        check_part_checksum(upload, payload.checksum)
        body = await self._part_body(upload, part_number, payload)

        async def send(reservation: PartReservation) -> None:
            await send_once(body.stored, lambda: self.fleet[reservation.backend].put_object(reservation.storage_key, body.stored))

        try:
            reservation = await self._store_part(upload, part_number, body.stored.length, send, request_id)
        finally:
            body.close()
        part = UploadedPart(
            part_number=part_number,
            etag=payload.md5_hex,
            size=payload.length,
            last_modified=self._now(),
            backend=reservation.backend,
            storage_key=reservation.storage_key,
            checksum_algorithm=payload.checksum_algorithm,
            checksum_value=payload.checksum_value,
        )
        return await self._commit(upload, reservation, body.stamp(part), "UploadPart", request_id)

    async def upload_part_copy(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        source: ObjectRecord,
        byte_range: tuple[int, int] | None,
        request_id: str = "",
    ) -> UploadedPart:
        """A part from (a range of) an object of the same bucket, placed like any part.

        Server-side on the backend when the upload is not encrypted, the range is exactly
        one extent of the source stored as the client sent it, a copy of it is on the
        backend placement chose, and its MD5 (and the upload's checksum) are known;
        otherwise the range's client bytes are streamed through a spool (hashing it,
        decompressing and decrypting the source as needed) and stored like an
        UploadPart's: compressed when that pays, sealed under the upload's key.
        """
        upload = await self._client_upload(bucket, key, upload_id)
        size = source.size if byte_range is None else byte_range[1] - byte_range[0] + 1
        if size > MAX_COPY_SOURCE_SIZE:
            raise errors.InvalidRequest(
                "The specified copy source is larger than the maximum allowable size for a "
                f"copy source: {MAX_COPY_SOURCE_SIZE}"
            )
        algorithm = upload.checksum_algorithm
        copyable = size > 0 and sealing.backend_copy_allowed(upload)
        whole = server_side_part_copy(source, byte_range, algorithm) if copyable else None
        holders = {loc.backend: loc for loc in whole.extent.locations} if whole is not None else {}
        spool: Payload | None = None
        body: PartBody | None = None
        if whole is None:
            # Read the source before reserving anything: its errors are its own.
            spool = await self._spool(source, byte_range, algorithm)
            try:
                body = await self._part_body(upload, part_number, spool)
            except BaseException:
                spool.close()  # e.g. the upload's data key would not unwrap
                raise
        used: dict[str, str | None] = {}
        sent: list[PartBody] = []

        async def send(reservation: PartReservation) -> None:
            nonlocal spool, body
            backend = self.fleet[reservation.backend]
            holder = holders.get(reservation.backend)
            sent.clear()
            if holder is not None and whole is not None:
                await backend.copy_object(holder.storage_key, reservation.storage_key)
                used.update(md5=whole.md5_hex, checksum=whole.checksum_value)
                return
            if spool is None:
                spool = await self._spool(source, byte_range, algorithm)
            if body is None:
                body = await self._part_body(upload, part_number, spool)
            await backend.put_object(reservation.storage_key, body.stored)
            sent.append(body)
            used.update(md5=spool.md5_hex, checksum=spool.checksum_value)

        try:
            reservation = await self._store_part(
                upload, part_number, size if body is None else body.stored.length, send, request_id,
                prefer=list(holders),
            )
        finally:
            if body is not None:
                body.close()
            if spool is not None:
                spool.close()
        etag = used["md5"]
        assert etag is not None  # a server-side copy only with a known MD5
        part = UploadedPart(
            part_number=part_number,
            etag=etag,
            size=size,
            last_modified=self._now(),
            backend=reservation.backend,
            storage_key=reservation.storage_key,
            checksum_algorithm=algorithm if used.get("checksum") else None,
            checksum_value=used.get("checksum"),
        )
        if sent:  # the bytes went through a spool: stored as an UploadPart's would be
            part = sent[0].stamp(part)
        return await self._commit(upload, reservation, part, "UploadPartCopy", request_id)

    async def _spool(
        self, source: ObjectRecord, byte_range: tuple[int, int] | None, algorithm: str | None
    ) -> Payload:
        try:
            return await self.objects.spool_range(source, byte_range, checksum_algorithm=algorithm)
        except BackendError as exc:
            raise errors.ServiceUnavailable(
                f"The copy source could not be read; please retry. ({exc.message})"
            ) from exc
