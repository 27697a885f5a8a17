"""Multipart uploads, native on the backend.

A client's multipart upload maps to a multipart upload on ONE backend, chosen
at Create by the routing strategy, at the upload's own per-write storage key.
Parts stream from the request spool straight to that backend, and Complete
only asks the backend to assemble them: no object byte moves twice, and an
object may be as large as the backend allows (not capped at one PUT).

The store records every step around the backend calls (DESIGN I1-I5):

* Create: row ``creating`` -> backend Create -> row ``open`` with the backend's
  upload id.  A crash in between leaves a ``creating`` row whose backend upload
  the stale-upload cleanup finds by listing the backend's uploads.
* UploadPart: the part's bytes are reserved on the upload's backend (a full
  backend answers 507) -> backend UploadPart -> the part row takes over the
  reservation (a replaced part's bytes are released).  A failed backend call
  releases the reservation; a crash leaves an attempt row that Complete/Abort
  release.
* Complete: validated against OUR part records (MD5 ETags, sizes) -> row
  ``completing`` with the part list -> backend Complete -> one transaction makes
  the object current (reserved -> used, old version queued for cleanup).  A
  crash or an ambiguous backend failure leaves ``completing``: a retried Complete
  takes it over (the backend's NoSuchUpload plus an object of the right size at
  the storage key means the first attempt assembled it).
* Abort: row ``aborting`` -> backend Abort -> every reservation released.

Upload ids are ours, bound to bucket and key: every per-upload call answers a
foreign or unknown id identically (404 NoSuchUpload), so ids cannot be probed
across buckets (I8).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, BinaryIO

from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import BackendError, BackendNotFound, BackendUnavailable, ObjectBackend
from s3orch.core.failover import with_failover
from s3orch.core.objects import NewObject, ObjectService
from s3orch.core.placement import storage_key, write_candidates
from s3orch.observe.audit import audit
from s3orch.observe.metrics import ACTIVE_MULTIPART
from s3orch.s3 import errors
from s3orch.s3.conditions import WriteConditions
from s3orch.s3.xml import CompletedPart
from s3orch.store.interface import (
    UPLOAD_COMPLETED,
    UPLOAD_COMPLETING,
    UPLOAD_OPEN,
    Location,
    MultipartUpload,
    ObjectRecord,
    PartMismatch,
    UploadedPart,
    UploadLimitReached,
    UploadListPage,
    UploadNotFound,
)

MiB = 1024 * 1024
#: S3: every part but the last must be at least 5 MiB (checked on Complete).
MIN_PART_SIZE = 5 * MiB
MAX_PART_NUMBER = 10000
#: ListParts / ListMultipartUploads page size cap (AWS's).
MAX_LIST = 1000
#: How many stale uploads one cleanup pass handles.
STALE_BATCH = 100
#: A ``completing``/``aborting`` upload untouched this long was left by a crash or a failure.
BUSY_STALE_AFTER = 3600.0

_SPOOL_CHUNK = 256 * 1024


# --- pure protocol logic -----------------------------------------------------------------


def new_upload_id(now: float) -> str:
    """32 hex characters: 48 bits of milliseconds, then 80 random bits.

    Random enough that nobody guesses one, and time-ordered, so sorting a key's
    uploads by id (what ``upload-id-marker`` paging compares) is also sorting
    them by initiation time (what ListMultipartUploads promises).
    """
    millis = int(now * 1000) & 0xFFFFFFFFFFFF
    return f"{millis:012x}{secrets.token_hex(10)}"


def multipart_etag(part_md5s: Sequence[str]) -> str:
    """S3's multipart ETag: MD5 of the concatenated binary part MD5s, then ``-N``."""
    digest = hashlib.md5(b"".join(bytes.fromhex(md5) for md5 in part_md5s)).hexdigest()
    return f"{digest}-{len(part_md5s)}"


def parse_part_number(raw: str | None) -> int:
    """A ``partNumber`` query value: an integer 1..10000, else InvalidArgument."""
    text = (raw or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9 or not 1 <= int(text) <= MAX_PART_NUMBER:
        raise errors.InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive",
            ArgumentName="partNumber",
            ArgumentValue=(raw or "")[:64],
        )
    return int(text)


def checksum_element(algorithm: str) -> str:
    """The CompleteMultipartUpload element of a checksum algorithm (``ChecksumCRC32``...)."""
    return "Checksum" + algorithm.upper()


def select_parts(
    requested: Sequence[CompletedPart],
    stored: Mapping[int, UploadedPart],
    min_part_size: int = MIN_PART_SIZE,
) -> list[UploadedPart]:
    """Check a Complete's part list against the uploaded parts, as AWS does.

    Order of the checks: part numbers in range (InvalidArgument), strictly
    ascending (InvalidPartOrder), each part uploaded with that ETag and any
    checksum given (InvalidPart), every part but the last at least
    ``min_part_size`` (EntityTooSmall).  Returns the chosen parts in order.
    """
    if not requested:
        raise errors.MalformedXML()
    previous = 0
    for part in requested:
        if not 1 <= part.part_number <= MAX_PART_NUMBER:
            raise errors.InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive",
                ArgumentName="partNumber",
                ArgumentValue=str(part.part_number),
            )
        if part.part_number <= previous:
            raise errors.InvalidPartOrder()
        previous = part.part_number
    chosen: list[UploadedPart] = []
    for part in requested:
        found = stored.get(part.part_number)
        if found is None or found.etag.lower() != part.etag.strip().strip('"').lower():
            raise errors.InvalidPart(PartNumber=str(part.part_number), ETag=part.etag)
        for element, value in part.checksums.items():
            if (
                found.checksum_algorithm
                and checksum_element(found.checksum_algorithm) == element
                and found.checksum_value != value
            ):
                raise errors.InvalidPart(PartNumber=str(part.part_number), ETag=part.etag)
        chosen.append(found)
    for small in chosen[:-1]:
        if small.size < min_part_size:
            raise errors.EntityTooSmall(
                ProposedSize=str(small.size),
                MinSizeAllowed=str(min_part_size),
                PartNumber=str(small.part_number),
                ETag='"' + small.etag + '"',
            )
    return chosen


def part_range(record: ObjectRecord, raw_part_number: str) -> tuple[int, int] | None:
    """The inclusive byte range GET/HEAD ``?partNumber=N`` serves (None: the empty object).

    A non-multipart object is one part.  A part beyond the object's parts is
    416 InvalidPartNumber.
    """
    number = parse_part_number(raw_part_number)
    sizes = record.part_sizes if record.part_sizes else (record.size,)
    if number > len(sizes):
        raise errors.InvalidPartNumber(PartNumberRequested=str(number), ActualPartCount=str(len(sizes)))
    start = sum(sizes[: number - 1])
    end = start + sizes[number - 1] - 1
    if end < start:
        return None
    return start, end


def parse_copy_source_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``x-amz-copy-source-range: bytes=first-last`` within an object of ``size`` bytes."""
    if value is None:
        return None
    unit, _, spec = value.strip().partition("=")
    first, dash, last = spec.partition("-")
    if (
        unit.strip().lower() != "bytes"
        or not dash
        or not first.isdigit()
        or not last.isdigit()
        or int(first) > int(last)
    ):
        raise errors.InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first "
            "and last are the zero-based offsets of the first and last bytes to copy",
            ArgumentName="x-amz-copy-source-range",
            ArgumentValue=value[:128],
        )
    start, end = int(first), int(last)
    if end >= size:
        raise errors.InvalidArgument(
            f"Range specified is not valid for source object of size: {size}",
            ArgumentName="x-amz-copy-source-range",
            ArgumentValue=value[:128],
        )
    return start, end


def _no_such_upload(upload_id: str) -> errors.S3Error:
    return errors.NoSuchUpload(UploadId=upload_id)


def _backend_failure(exc: BackendError) -> errors.S3Error:
    """What a client hears when the upload's (only possible) backend fails."""
    if isinstance(exc, BackendUnavailable):
        return errors.ServiceUnavailable("The storage backend of this upload is unavailable; please retry.")
    return errors.BadGateway()


# --- the service -------------------------------------------------------------------------


class MultipartService:
    """Multipart uploads over :class:`ObjectService`'s store and backends (one per process)."""

    log = Logger(namespace="s3orch.core")

    def __init__(
        self,
        *,
        objects: ObjectService,
        bucket_limits: Mapping[str, int],
        clock: IReactorTime,
        stale_timeout: float = 24 * 3600.0,
        min_part_size: int = MIN_PART_SIZE,
        spool_dir: str | None = None,
    ) -> None:
        self.objects = objects
        self.store = objects.store
        self.backends: Mapping[str, ObjectBackend] = objects.backends
        self.bucket_limits = dict(bucket_limits)
        self.clock = clock
        self.stale_timeout = stale_timeout
        self.min_part_size = min_part_size
        self.spool_dir = spool_dir or None
        self._locks: dict[str, DeferredLock] = {}

    # -- helpers ------------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.seconds()

    def _backend_config(self, name: str) -> Any:
        for config in self.objects.backend_configs:
            if config.name == name:
                return config
        return None

    def _backend(self, upload: MultipartUpload) -> ObjectBackend:
        backend = self.backends.get(upload.backend)
        if backend is None:
            raise errors.ServiceUnavailable("The storage backend of this upload is not configured.")
        return backend

    async def _locked(self, upload_id: str) -> DeferredLock:
        """Serialise Complete/Abort of one upload inside this process."""
        lock = self._locks.setdefault(upload_id, DeferredLock())
        await lock.acquire()
        return lock

    def _unlock(self, upload_id: str, lock: DeferredLock) -> None:
        lock.release()
        if not lock.locked and not lock.waiting:
            self._locks.pop(upload_id, None)

    async def refresh_gauge(self) -> None:
        """``s3o_active_multipart_uploads`` from the store (exact after restarts too)."""
        try:
            counts = await self.store.active_multipart_counts()
        except Exception:
            self.log.failure("cannot count active multipart uploads", component="multipart")
            return
        for config in self.objects.backend_configs:
            ACTIVE_MULTIPART.labels(config.name).set(counts.get(config.name, 0))

    # -- create -------------------------------------------------------------------------

    async def create(
        self,
        bucket: str,
        key: str,
        new: NewObject,
        *,
        checksum_algorithm: str | None = None,
        size_hint: int = 0,
        request_id: str = "",
    ) -> MultipartUpload:
        """Open an upload on the backend the routing strategy picks (failing over on errors)."""

        async def reserve(candidates: list[str]) -> MultipartUpload | None:
            now = self._now()
            upload_id = new_upload_id(now)
            template = MultipartUpload(
                upload_id=upload_id,
                bucket=bucket,
                key=key,
                backend="",
                storage_key=storage_key(bucket, key, upload_id),
                initiated=now,
                content_type=new.content_type,
                headers=dict(new.system_headers),
                user_metadata=dict(new.user_metadata),
                checksum_algorithm=checksum_algorithm,
            )
            try:
                return await self.store.create_multipart_upload(
                    template,
                    candidates,
                    self.objects.routing_strategy,
                    size_hint,
                    self.bucket_limits.get(bucket, 0),
                    now,
                )
            except UploadLimitReached:
                raise errors.SlowDown("Too many active multipart uploads") from None

        async def create(upload: MultipartUpload) -> str:
            return await self._backend(upload).create_multipart_upload(upload.storage_key)

        upload, backend_upload_id = await with_failover(
            operation="CreateMultipartUpload",
            candidates=lambda failed: write_candidates(
                self.objects.backend_configs, size_hint, exclude=failed
            ),
            reserve=reserve,
            backend_of=lambda u: u.backend,
            attempt=create,
            undo=lambda u: self.store.drop_multipart_upload(u.upload_id),
            failure=_backend_failure,
            request_id=request_id,
        )
        upload_id = upload.upload_id
        backend = self._backend(upload)
        if not await self.store.open_multipart_upload(upload_id, backend_upload_id, self._now()):
            await backend.abort_multipart_upload(upload.storage_key, backend_upload_id)
            raise errors.ServiceUnavailable("The upload could not be recorded; please retry.")
        audit(
            "storage.CreateMultipartUpload",
            request_id=request_id,
            backend=upload.backend,
            bucket=bucket,
            key=key,
            upload_id=upload_id,
        )
        await self.refresh_gauge()
        return replace(upload, state=UPLOAD_OPEN, backend_upload_id=backend_upload_id)

    # -- parts --------------------------------------------------------------------------

    async def _reserve(
        self, bucket: str, key: str, upload_id: str, part_number: int, size: int, attempt_id: str
    ) -> MultipartUpload:
        try:
            upload = await self.store.reserve_part(
                bucket, key, upload_id, part_number, size, attempt_id, self._now()
            )
        except UploadNotFound:
            raise _no_such_upload(upload_id) from None
        if upload is None:
            raise errors.InsufficientStorage()
        return upload

    async def _raise_if_gone(self, upload: MultipartUpload, exc: BackendError) -> None:
        """A part call failed: NoSuchUpload if the upload was completed or aborted
        meanwhile (some backends answer a late part with a 500, not NoSuchUpload)."""
        if exc.code == "NoSuchUpload":
            raise _no_such_upload(upload.upload_id) from None
        current = await self.store.get_multipart_upload(upload.bucket, upload.key, upload.upload_id)
        if current is None or current.state != UPLOAD_OPEN:
            raise _no_such_upload(upload.upload_id) from None

    async def _commit_part(
        self, upload: MultipartUpload, attempt_id: str, part: UploadedPart, operation: str, request_id: str
    ) -> UploadedPart:
        if not await self.store.commit_part(attempt_id, part, self._now()):
            # Completed or aborted while the part travelled: the backend drops it.
            raise _no_such_upload(upload.upload_id)
        audit(
            f"storage.{operation}",
            request_id=request_id,
            backend=upload.backend,
            bucket=upload.bucket,
            key=upload.key,
            upload_id=upload.upload_id,
            part_number=part.part_number,
            size=part.size,
        )
        return part

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        body: BinaryIO,
        length: int,
        *,
        md5_hex: str,
        sha256_hex: str | None,
        checksum: tuple[str, str] | None = None,
        request_id: str = "",
    ) -> UploadedPart:
        """Stream one spooled part to the upload's backend (re-uploading replaces the part)."""
        attempt_id = uuid.uuid4().hex
        upload = await self._reserve(bucket, key, upload_id, part_number, length, attempt_id)
        try:
            backend = self._backend(upload)
            assert upload.backend_upload_id is not None
            backend_etag = await backend.upload_part(
                upload.storage_key,
                upload.backend_upload_id,
                part_number,
                body,
                length,
                content_md5_b64=base64.b64encode(bytes.fromhex(md5_hex)).decode("ascii"),
                sha256_hex=sha256_hex,
            )
        except BackendError as exc:
            await self.store.release_part(attempt_id)
            await self._raise_if_gone(upload, exc)
            self.log.warn(
                "backend UploadPart failed",
                component="multipart",
                backend=upload.backend,
                error=str(exc),
                request_id=request_id,
            )
            raise _backend_failure(exc) from exc
        except BaseException:
            await self.store.release_part(attempt_id)
            raise
        part = UploadedPart(
            part_number=part_number,
            etag=md5_hex,
            size=length,
            last_modified=self._now(),
            backend_etag=backend_etag,
            checksum_algorithm=checksum[0] if checksum else None,
            checksum_value=checksum[1] if checksum else None,
        )
        return await self._commit_part(upload, attempt_id, part, "UploadPart", request_id)

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
        """A part from (a range of) an object of the same bucket.

        Server-side on the backend when the source has a copy there; otherwise
        the range is spooled through the gateway (hashing it for the part's ETag).
        """
        size = source.size if byte_range is None else byte_range[1] - byte_range[0] + 1
        attempt_id = uuid.uuid4().hex
        upload = await self._reserve(bucket, key, upload_id, part_number, size, attempt_id)
        try:
            etag, backend_etag = await self._copy_into_part(upload, part_number, source, byte_range, size)
        except BackendError as exc:
            await self.store.release_part(attempt_id)
            await self._raise_if_gone(upload, exc)
            if isinstance(exc, BackendNotFound):
                raise errors.InternalError("The copy source's data could not be found.") from exc
            raise _backend_failure(exc) from exc
        except BaseException:
            await self.store.release_part(attempt_id)
            raise
        part = UploadedPart(part_number, etag, size, self._now(), backend_etag)
        return await self._commit_part(upload, attempt_id, part, "UploadPartCopy", request_id)

    async def _copy_into_part(
        self,
        upload: MultipartUpload,
        part_number: int,
        source: ObjectRecord,
        byte_range: tuple[int, int] | None,
        size: int,
    ) -> tuple[str, str]:
        """(our MD5 ETag, the backend's ETag) of a copied part."""
        backend = self._backend(upload)
        assert upload.backend_upload_id is not None
        whole_md5 = source.etag if ("-" not in source.etag and len(source.etag) == 32) else None
        holder = next((loc for loc in source.locations if loc.backend == upload.backend), None)
        if holder is not None and size > 0:
            backend_etag = await backend.upload_part_copy(
                upload.storage_key, upload.backend_upload_id, part_number, holder.storage_key, byte_range
            )
            # A part's backend ETag is the MD5 of its bytes on S3-compatible stores.
            md5 = whole_md5 if byte_range is None and whole_md5 else backend_etag.strip('"').lower()
            if len(md5) == 32 and all(c in "0123456789abcdef" for c in md5):
                return md5, backend_etag
        spool, md5_hex, sha256_hex = await self._spool_range(source, byte_range, size)
        try:
            backend_etag = await backend.upload_part(
                upload.storage_key,
                upload.backend_upload_id,
                part_number,
                spool,
                size,
                content_md5_b64=base64.b64encode(bytes.fromhex(md5_hex)).decode("ascii"),
                sha256_hex=sha256_hex,
            )
        finally:
            spool.close()
        return md5_hex, backend_etag

    async def _spool_range(
        self, source: ObjectRecord, byte_range: tuple[int, int] | None, size: int
    ) -> tuple[BinaryIO, str, str]:
        """Download (a range of) an object into a temporary file, hashing it on the way."""
        spool: BinaryIO = tempfile.TemporaryFile(dir=self.spool_dir)  # noqa: SIM115 - closed by the caller
        md5 = hashlib.md5()
        sha256 = hashlib.sha256()
        if size == 0:
            return spool, md5.hexdigest(), sha256.hexdigest()
        stream, _ = await self.objects.open(source, byte_range)
        skip = 0
        if byte_range is not None and stream.content_range is None:
            skip = byte_range[0]  # the backend ignored the Range: cut it ourselves
        state = {"skip": skip, "left": size}

        class _Sink:
            def registerProducer(self, producer: object, streaming: bool) -> None:
                pass

            def unregisterProducer(self) -> None:
                pass

            def write(self, data: bytes) -> None:
                if state["skip"]:
                    dropped = min(state["skip"], len(data))
                    data = data[dropped:]
                    state["skip"] -= dropped
                data = data[: state["left"]]
                state["left"] -= len(data)
                md5.update(data)
                sha256.update(data)
                spool.write(data)

        try:
            await stream.deliver(_Sink())  # type: ignore[arg-type]
        except BaseException:
            spool.close()
            raise
        if state["left"]:
            spool.close()
            raise BackendUnavailable(f"copy source ended {state['left']} bytes early")
        spool.seek(0)
        return spool, md5.hexdigest(), sha256.hexdigest()

    # -- complete -----------------------------------------------------------------------

    async def complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        requested: Sequence[CompletedPart],
        *,
        conditions: WriteConditions | None = None,
        expected_size: int | None = None,
        request_id: str = "",
    ) -> ObjectRecord:
        """Assemble the upload on its backend and make it the key's current version."""
        lock = await self._locked(upload_id)
        try:
            return await self._complete(
                bucket, key, upload_id, requested, conditions, expected_size, request_id
            )
        finally:
            self._unlock(upload_id, lock)

    async def _repeat(self, bucket: str, key: str, upload_id: str) -> ObjectRecord:
        """A Complete of a completed upload answers the same while the object is that write."""
        record = await self.store.get_object(bucket, key)
        if record is None or record.write_id != upload_id:
            raise _no_such_upload(upload_id)
        return record

    async def _complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        requested: Sequence[CompletedPart],
        conditions: WriteConditions | None,
        expected_size: int | None,
        request_id: str,
    ) -> ObjectRecord:
        upload = await self.store.get_multipart_upload(bucket, key, upload_id)
        if upload is None or upload.state not in (UPLOAD_OPEN, UPLOAD_COMPLETING, UPLOAD_COMPLETED):
            raise _no_such_upload(upload_id)
        if upload.state == UPLOAD_COMPLETED:
            return await self._repeat(bucket, key, upload_id)
        stored, _ = await self.store.list_parts(upload_id)
        chosen = select_parts(requested, {p.part_number: p for p in stored}, self.min_part_size)
        total = sum(part.size for part in chosen)
        if expected_size is not None and expected_size != total:
            raise errors.InvalidRequest(
                f"The provided x-amz-mp-object-size ({expected_size}) does not match the "
                f"uploaded parts ({total} bytes)."
            )
        config = self._backend_config(upload.backend)
        limit = int(getattr(config, "max_object_size", 0) or 0)
        if limit and total > limit:
            raise errors.EntityTooLarge(MaxSizeAllowed=str(limit), ProposedSize=str(total))
        if conditions is not None and (conditions.if_none_match_star or conditions.if_match is not None):
            current = await self.store.get_object(bucket, key)
            conditions.check(current.etag if current is not None else None)
        try:
            upload = await self.store.begin_complete(
                bucket, key, upload_id, [(p.part_number, p.etag) for p in chosen], self._now()
            )
        except PartMismatch:
            raise errors.InvalidPart() from None
        except UploadNotFound:
            raise _no_such_upload(upload_id) from None
        if upload.state == UPLOAD_COMPLETED:
            return await self._repeat(bucket, key, upload_id)
        await self._backend_complete(upload, chosen, total, request_id)
        record = ObjectRecord(
            bucket=bucket,
            key=key,
            write_id=upload_id,
            size=total,
            etag=multipart_etag([part.etag for part in chosen]),
            last_modified=self._now(),
            content_type=upload.content_type,
            headers=dict(upload.headers),
            user_metadata=dict(upload.user_metadata),
            parts_count=len(chosen),
            part_sizes=tuple(part.size for part in chosen),
            locations=(Location(upload.backend, upload.storage_key, total),),
        )
        try:
            outcome = await self.store.finish_complete(upload_id, record, total, self._now())
        except UploadNotFound as exc:
            # Aborted meanwhile (stale cleanup): the assembled object is queued for deletion.
            if exc.cleanup is not None:
                await self.objects.run_cleanups([exc.cleanup], "complete_aborted")
            raise _no_such_upload(upload_id) from None
        if outcome.already_completed:
            return await self._repeat(bucket, key, upload_id)
        audit(
            "storage.CompleteMultipartUpload",
            request_id=request_id,
            backend=upload.backend,
            bucket=bucket,
            key=key,
            upload_id=upload_id,
            parts=len(chosen),
            size=total,
        )
        self.objects._cleanup_in_background(outcome.displaced, "overwrite_displaced")
        await self.refresh_gauge()
        return record

    async def _backend_complete(
        self, upload: MultipartUpload, chosen: Sequence[UploadedPart], total: int, request_id: str
    ) -> None:
        """Ask the backend to assemble the parts; recognise a Complete an earlier attempt did."""
        backend = self._backend(upload)
        assert upload.backend_upload_id is not None
        try:
            await backend.complete_multipart_upload(
                upload.storage_key,
                upload.backend_upload_id,
                [(part.part_number, part.backend_etag) for part in chosen],
            )
            return
        except BackendUnavailable as exc:
            # Ambiguous (it may have completed): stay ``completing``; a retry takes over.
            self.log.warn(
                "backend CompleteMultipartUpload failed; the upload stays completing",
                component="multipart",
                backend=upload.backend,
                error=str(exc),
                request_id=request_id,
            )
            raise _backend_failure(exc) from exc
        except BackendError as exc:
            if exc.code != "NoSuchUpload":
                await self.store.reopen_upload(upload.upload_id, self._now())
                known = {
                    "InvalidPart": errors.InvalidPart,
                    "InvalidPartOrder": errors.InvalidPartOrder,
                    "EntityTooSmall": errors.EntityTooSmall,
                    "EntityTooLarge": errors.EntityTooLarge,
                }
                if exc.code in known:
                    raise known[exc.code]() from exc
                raise _backend_failure(exc) from exc
        # The backend no longer knows the upload: an earlier attempt (crashed, or
        # answered too late) may have assembled it.  An object of exactly the parts'
        # size at our per-write key can only be that.
        try:
            headers = await backend.head_object(upload.storage_key)
        except BackendNotFound:
            headers = None
        except BackendError as exc:
            raise _backend_failure(exc) from exc
        if headers is not None and headers.get("content-length") == str(total):
            return
        self.log.warn(
            "backend lost a multipart upload; aborting it",
            component="multipart",
            backend=upload.backend,
            upload_id=upload.upload_id,
            request_id=request_id,
        )
        await self._abort_recorded(upload.bucket, upload.key, upload.upload_id, request_id, stale=True)
        raise _no_such_upload(upload.upload_id)

    # -- abort --------------------------------------------------------------------------

    async def abort(self, bucket: str, key: str, upload_id: str, request_id: str = "") -> None:
        """Abort the backend upload and release every byte the upload reserved."""
        lock = await self._locked(upload_id)
        try:
            await self._abort_recorded(bucket, key, upload_id, request_id, stale=False)
        finally:
            self._unlock(upload_id, lock)

    async def _abort_recorded(
        self, bucket: str, key: str, upload_id: str, request_id: str, *, stale: bool
    ) -> None:
        try:
            upload = await self.store.begin_abort(bucket, key, upload_id, self._now(), stale=stale)
        except UploadNotFound:
            raise _no_such_upload(upload_id) from None
        backend = self.backends.get(upload.backend)
        if backend is not None:
            try:
                if upload.backend_upload_id is not None:
                    await backend.abort_multipart_upload(upload.storage_key, upload.backend_upload_id)
                else:
                    # Created on the backend, but the id was never recorded: find it.
                    for found_key, found_id in await backend.list_multipart_uploads(upload.storage_key):
                        if found_key == upload.storage_key:
                            await backend.abort_multipart_upload(found_key, found_id)
            except BackendError as exc:
                # Stays ``aborting``: a retried Abort or the stale-upload cleanup finishes it.
                self.log.warn(
                    "backend AbortMultipartUpload failed",
                    component="multipart",
                    backend=upload.backend,
                    error=str(exc),
                    request_id=request_id,
                )
                raise _backend_failure(exc) from exc
        cleanup = await self.store.finish_abort(upload_id, self._now())
        if cleanup is not None:
            await self.objects.run_cleanups([cleanup], "abort_part_cleanup")
        audit(
            "storage.MultipartCleanup" if stale else "storage.AbortMultipartUpload",
            request_id=request_id,
            backend=upload.backend,
            bucket=upload.bucket,
            key=upload.key,
            upload_id=upload_id,
        )
        await self.refresh_gauge()

    async def abort_stale(self) -> int:
        """Abort uploads older than the stale timeout (and ones left completing or
        aborting by a crash); purge old tombstones.  Returns how many were aborted."""
        now = self._now()
        stale = await self.store.stale_multipart_uploads(
            now - self.stale_timeout, now - min(self.stale_timeout, BUSY_STALE_AFTER), STALE_BATCH
        )
        aborted = 0
        for upload in stale:
            if upload.upload_id in self._locks:
                continue  # a Complete or Abort of this process is on it
            lock = await self._locked(upload.upload_id)
            try:
                await self._abort_recorded(upload.bucket, upload.key, upload.upload_id, "", stale=True)
                aborted += 1
            except errors.S3Error as exc:
                self.log.warn(
                    "stale multipart upload not aborted: {error}",
                    component="multipart_gc",
                    upload_id=upload.upload_id,
                    error=exc.message,
                )
            finally:
                self._unlock(upload.upload_id, lock)
        await self.store.purge_multipart_uploads(now - self.stale_timeout)
        await self.refresh_gauge()
        return aborted

    # -- listings -----------------------------------------------------------------------

    async def list_parts(
        self, bucket: str, key: str, upload_id: str, marker: int, max_parts: int
    ) -> tuple[list[UploadedPart], bool]:
        """A page of an upload's parts."""
        upload = await self.store.get_multipart_upload(bucket, key, upload_id)
        if upload is None or upload.state not in (UPLOAD_OPEN, UPLOAD_COMPLETING):
            raise _no_such_upload(upload_id)
        return await self.store.list_parts(upload_id, marker, max_parts)

    async def list_uploads(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        key_marker: str,
        upload_id_marker: str,
        max_uploads: int,
    ) -> UploadListPage:
        """A page of the bucket's open uploads."""
        return await self.store.list_multipart_uploads(
            bucket, prefix, delimiter, key_marker, upload_id_marker, max_uploads
        )
