"""Multipart uploads whose parts are placed one by one: :class:`MultipartService`.

An upload has no backend of its own.  Each part is stored like a PUT (``ObjectService.place_part``):
placed by the routing strategy on a backend with room, reserved atomically with a record of the
attempt, under a backend key of its own.  So one upload's parts may live on different backends and
an object may be larger than any backend's free space.  With encryption each part is sealed
under the upload's data key (:mod:`s3orch.crypto.parts`).

The store records every step, so that an acknowledged upload survives crashes,
a failed step leaves the previous object, and neither bytes nor quota leak:

* Create: one row, ``open``.  Nothing is placed or reserved.
* UploadPart: reserve + attempt row (one transaction) -> backend PUT -> the part
  row takes over the reservation (one transaction); a part uploaded again
  replaces the earlier one, whose bytes are queued for cleanup, so the upload
  that finishes last wins.  A failed backend call releases the reservation and
  tries the next backend; a crash leaves an attempt row that Complete/Abort (or
  the stale-upload cleanup) turn into a cleanup.
* Complete: validated against OUR part records (MD5 ETags, order, 5 MiB minimum,
  checksums: the rules of :mod:`s3orch.core.multipart`), then one transaction, no
  backend call: the listed parts become the object's extents (reserved -> used
  where each lives), the old version and the unlisted parts are queued for cleanup.  A repeated Complete answers the same.
* Abort: ``aborting`` -> every part queued for cleanup, reservations released ->
  ``aborted``.

Native uploads of older builds (parts inside one backend upload) can only be aborted: the
migration marks them ``aborting`` and the stale-upload cleanup aborts them on their backend.
Upload ids are ours, bound to bucket and key: a foreign or unknown id answers 404 NoSuchUpload
alike, so ids cannot be probed across buckets (bucket isolation).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import BackendError, BackendUnavailable
from s3orch.core.cleanup import Cleanups
from s3orch.core.crashpoints import crash_point
from s3orch.core.fanout import FanOut
from s3orch.core.fleet import BackendFleet
from s3orch.core.multipart import (
    MIN_PART_SIZE,
    check_part_checksum,
    complete_checksum,
    multipart_etag,
    select_parts,
    server_side_part_copy,
)
from s3orch.core.objects import MAX_COPY_SOURCE_SIZE, NewObject, ObjectService
from s3orch.core.placement import new_upload_id
from s3orch.core.spans import MULTIPART_SPANS, traced_methods
from s3orch.core.stream_write import send_once
from s3orch.crypto import parts as sealing
from s3orch.notify import events as ev
from s3orch.notify.emit import object_created
from s3orch.observe.audit import audit
from s3orch.observe.metrics import ACTIVE_MULTIPART
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.s3.conditions import UNCONDITIONAL, WriteConditions, raise_violation
from s3orch.s3.xml import CompletedPart
from s3orch.store.interface import (
    ORIGIN_CLIENT,
    UPLOAD_COMPLETED,
    UPLOAD_OPEN,
    MetadataStore,
    MultipartUpload,
    ObjectRecord,
    PartMismatch,
    PartReservation,
    PreconditionConflict,
    UploadedPart,
    UploadLimitReached,
    UploadListPage,
    UploadNotFound,
)

#: How many stale uploads one cleanup pass handles.
STALE_BATCH = 100
#: A ``completing``/``aborting`` upload untouched this long was left by a crash or a failure.
BUSY_STALE_AFTER = 3600.0


def _no_such_upload(upload_id: str) -> errors.S3Error:
    return errors.NoSuchUpload(UploadId=upload_id)


def _backend_failure(exc: BackendError) -> errors.S3Error:
    """What a client hears when an upload's backend fails."""
    if isinstance(exc, BackendUnavailable):
        return errors.ServiceUnavailable("The storage backend of this upload is unavailable; please retry.")
    return errors.BadGateway()


# --- the service -------------------------------------------------------------------------


@traced_methods(MULTIPART_SPANS)
class MultipartService:
    """Multipart uploads over the store and the backend fleet (one per process).

    Parts are placed, and copy sources read, by ``objects``
    (:meth:`~s3orch.core.objects.ObjectService.place_part`,
    :meth:`~s3orch.core.objects.ObjectService.spool_range`); unreferenced parts are
    deleted by ``cleanups``.  ``bucket_limits`` caps each bucket's open uploads
    (``buckets[].max_multipart_uploads``, 0: no cap); an upload untouched for
    ``stale_timeout`` seconds (``cleanup_queue.multipart_stale_timeout``) is aborted
    by :meth:`abort_stale`.
    """

    log = Logger(namespace="s3orch.core")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        objects: ObjectService,
        cleanups: Cleanups,
        clock: IReactorTime,
        bucket_limits: Mapping[str, int],
        stale_timeout: float,
        min_part_size: int = MIN_PART_SIZE,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.objects = objects
        self.cleanups = cleanups
        self.bucket_limits = dict(bucket_limits)
        self.clock = clock
        self.stale_timeout = stale_timeout
        self.min_part_size = min_part_size
        self._locks: dict[str, DeferredLock] = {}
        self.fanout: FanOut | None = None  # write_path.parallel_copies (set by the wiring)

    # -- helpers ------------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.seconds()

    async def _locked(self, upload_id: str) -> DeferredLock:
        """Serialise Complete/Abort of one upload inside this process."""
        lock = self._locks.setdefault(upload_id, DeferredLock())
        await lock.acquire()
        return lock

    def _unlock(self, upload_id: str, lock: DeferredLock) -> None:
        lock.release()
        if not lock.locked and not lock.waiting:
            self._locks.pop(upload_id, None)

    async def _client_upload(
        self, bucket: str, key: str, upload_id: str, states: Sequence[str] = (UPLOAD_OPEN,)
    ) -> MultipartUpload:
        """A client's upload of this version in one of ``states``; else NoSuchUpload."""
        upload = await self.store.get_multipart_upload(bucket, key, upload_id)
        if upload is None or upload.state not in states or upload.native or upload.origin != ORIGIN_CLIENT:
            raise _no_such_upload(upload_id)
        return upload

    async def refresh_gauge(self) -> None:
        """``s3o_active_multipart_uploads`` from the store (exact after restarts too)."""
        try:
            counts = await self.store.active_multipart_counts()
        except Exception:
            self.log.failure("cannot count active multipart uploads", component="multipart")
            return
        for name in self.fleet.names:
            ACTIVE_MULTIPART.labels(name).set(counts.get(name, 0))

    async def _check_room(self, size: int) -> None:
        """507 when the configured backends together have less free room than ``size``."""
        names = self.fleet.write_candidates(0)
        quotas = await self.store.get_quotas()
        room = 0
        for name in names:
            row = quotas.get(name)
            if row is None or row.available is None:
                return  # an unlimited backend
            room += max(0, row.available)
        if room < size:
            raise errors.InsufficientStorage()

    # -- create -------------------------------------------------------------------------

    async def create(
        self,
        bucket: str,
        key: str,
        new: NewObject,
        *,
        checksum_algorithm: str | None = None,
        checksum_type: str | None = None,
        size_hint: int = 0,
        request_id: str = "",
    ) -> MultipartUpload:
        """Record a new upload (nothing is placed until parts arrive).  ``size_hint`` (our use of
        ``x-amz-mp-object-size`` on Create): 507 now when the backends have no room for it."""
        if self.fleet.usage_exhausted():  # every backend past a monthly limit (BEHAVIOURS §1.8)
            raise errors.InsufficientStorage()
        if size_hint:
            await self._check_room(size_hint)
        now = self._now()
        template = MultipartUpload(
            upload_id=new_upload_id(now),
            bucket=bucket,
            key=key,
            initiated=now,
            content_type=new.content_type,
            headers=dict(new.system_headers),
            user_metadata=dict(new.user_metadata),
            checksum_algorithm=checksum_algorithm,
            checksum_type=checksum_type if checksum_algorithm else None,
        )
        template = await sealing.seal_upload(self.objects.envelope, template)  # encryption: its data key
        try:
            upload = await self.store.create_multipart_upload(
                template, self.bucket_limits.get(bucket, 0), now
            )
        except UploadLimitReached:
            raise errors.SlowDown("Too many active multipart uploads") from None
        audit(
            "storage.CreateMultipartUpload",
            request_id=request_id,
            bucket=bucket,
            key=key,
            upload_id=upload.upload_id,
        )
        return upload

    # -- parts --------------------------------------------------------------------------

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
            raise _no_such_upload(upload.upload_id) from None

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
        stored = await sealing.seal_part(self.objects.envelope, upload, part_number, payload)

        async def send(reservation: PartReservation) -> None:
            await send_once(stored, lambda: self.fleet[reservation.backend].put_object(reservation.storage_key, stored))

        try:
            reservation = await self._store_part(upload, part_number, stored.length, send, request_id)
        finally:
            if stored is not payload:
                stored.close()
        part = UploadedPart(
            part_number=part_number,
            etag=payload.md5_hex,
            size=stored.length,
            last_modified=self._now(),
            backend=reservation.backend,
            storage_key=reservation.storage_key,
            checksum_algorithm=payload.checksum_algorithm,
            checksum_value=payload.checksum_value,
        )
        return await self._commit(upload, reservation, part, "UploadPart", request_id)

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

        Server-side on the backend when the range is exactly one extent of the
        source, a copy of it is on the backend placement chose, and its MD5 (and the
        upload's checksum) are known; otherwise the range is streamed through a
        spool (hashing it).
        """
        upload = await self._client_upload(bucket, key, upload_id)
        sealing.refuse_part_copy(upload)
        size = source.size if byte_range is None else byte_range[1] - byte_range[0] + 1
        if size > MAX_COPY_SOURCE_SIZE:
            raise errors.InvalidRequest(
                "The specified copy source is larger than the maximum allowable size for a "
                f"copy source: {MAX_COPY_SOURCE_SIZE}"
            )
        algorithm = upload.checksum_algorithm
        whole = server_side_part_copy(source, byte_range, algorithm) if size > 0 else None
        holders = {loc.backend: loc for loc in whole.extent.locations} if whole is not None else {}
        spool: Payload | None = None
        if whole is None:
            # Read the source before reserving anything: its errors are its own.
            spool = await self._spool(source, byte_range, algorithm)
        used: dict[str, str | None] = {}

        async def send(reservation: PartReservation) -> None:
            nonlocal spool
            backend = self.fleet[reservation.backend]
            holder = holders.get(reservation.backend)
            if holder is not None and whole is not None:
                await backend.copy_object(holder.storage_key, reservation.storage_key)
                used.update(md5=whole.md5_hex, checksum=whole.checksum_value)
                return
            if spool is None:
                spool = await self._spool(source, byte_range, algorithm)
            await backend.put_object(reservation.storage_key, spool)
            used.update(md5=spool.md5_hex, checksum=spool.checksum_value)

        try:
            reservation = await self._store_part(
                upload, part_number, size, send, request_id, prefer=list(holders)
            )
        finally:
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

    # -- complete -----------------------------------------------------------------------

    async def complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        requested: Sequence[CompletedPart],
        *,
        conditions: WriteConditions = UNCONDITIONAL,
        expected_size: int | None = None,
        checksum: tuple[str, str] | None = None,
        checksum_type: str | None = None,
        request_id: str = "",
    ) -> ObjectRecord:
        """Make the listed parts the key's current version (metadata only)."""
        lock = await self._locked(upload_id)
        try:
            return await self._complete(
                bucket, key, upload_id, requested, conditions, expected_size, checksum,
                checksum_type, request_id,
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
        conditions: WriteConditions,
        expected_size: int | None,
        checksum: tuple[str, str] | None,
        checksum_type: str | None,
        request_id: str,
    ) -> ObjectRecord:
        upload = await self._client_upload(bucket, key, upload_id, (UPLOAD_OPEN, UPLOAD_COMPLETED))
        if upload.state == UPLOAD_COMPLETED:
            return await self._repeat(bucket, key, upload_id)
        stored, _ = await self.store.list_parts(upload_id)
        chosen = select_parts(
            requested,
            {p.part_number: p for p in stored},
            self.min_part_size,
            upload.checksum_algorithm,
            upload.checksum_type,
        )
        sizes = sealing.plain_sizes(self.objects.envelope, upload, chosen)  # the client's bytes
        total = sum(sizes)
        if expected_size is not None and expected_size != total:
            raise errors.InvalidRequest(
                f"The provided 'x-amz-mp-object-size' header value {expected_size} does not "
                f"match what was computed: {total}"
            )
        checksum_value = complete_checksum(upload, chosen, checksum, checksum_type)
        await self.objects.check_conditions(bucket, key, conditions)
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
            checksum_algorithm=upload.checksum_algorithm if checksum_value else None,
            checksum_value=checksum_value,
            parts_count=len(chosen),
            part_sizes=tuple(sizes),
        )
        record = sealing.stamp_upload(upload, record)
        crash_point("complete-before-commit")
        try:
            outcome = await self.store.complete_upload(
                bucket, key, upload_id, [(p.part_number, p.etag) for p in chosen], record,
                self._now(), conditions,
                events=object_created(self.objects.events, ev.OBJECT_CREATED_COMPLETE, record),
            )
        except PartMismatch:
            raise errors.InvalidPart() from None
        except UploadNotFound:
            raise _no_such_upload(upload_id) from None
        except PreconditionConflict as exc:
            raise_violation(exc.violation)
            raise  # unreachable
        if outcome.already_completed:
            return await self._repeat(bucket, key, upload_id)
        self.objects.cache.invalidate(bucket, key)
        crash_point("complete-after-commit")
        audit(
            "storage.CompleteMultipartUpload",
            request_id=request_id,
            bucket=bucket,
            key=key,
            upload_id=upload_id,
            parts=len(chosen),
            size=total,
            backends=",".join(sorted({p.backend or "" for p in chosen})),
        )
        self.cleanups.in_background(outcome.displaced, "overwrite_displaced")
        self.cleanups.in_background(outcome.discarded, "part_discarded")
        if self.fanout is not None:  # no body to fan out: the replicator copies the parts now
            self.fanout.replicate_soon(bucket, key, upload_id)
        await self.refresh_gauge()
        return record

    # -- abort --------------------------------------------------------------------------

    async def abort(self, bucket: str, key: str, upload_id: str, request_id: str = "") -> None:
        """Queue every part of the upload for deletion and release its reservations."""
        lock = await self._locked(upload_id)
        try:
            upload = await self.store.get_multipart_upload(bucket, key, upload_id)
            if upload is None or upload.origin != ORIGIN_CLIENT:
                raise _no_such_upload(upload_id)
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
        if upload.native:
            await self._abort_native(upload, request_id)
        items = await self.store.finish_abort(upload_id, self._now())
        await self.cleanups.run(items, "abort_part_cleanup")
        audit(
            "storage.MultipartCleanup" if stale else "storage.AbortMultipartUpload",
            request_id=request_id,
            bucket=upload.bucket,
            key=upload.key,
            upload_id=upload_id,
        )
        await self.refresh_gauge()

    async def _abort_native(self, upload: MultipartUpload, request_id: str) -> None:
        """Abort the backend upload behind a native upload of an older build."""
        backend = self.fleet.client(upload.backend or "")
        if backend is None or upload.storage_key is None:
            return  # backend gone from the config: nothing left to abort there
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

    async def abort_stale(self) -> int:
        """Abort uploads older than the stale timeout (and ones left aborting by a crash,
        or by an older build); purge old tombstones.  Returns how many were aborted."""
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
    ) -> tuple[MultipartUpload, list[UploadedPart], bool]:
        """The upload and a page of its parts."""
        upload = await self._client_upload(bucket, key, upload_id)
        parts, truncated = await self.store.list_parts(upload_id, marker, max_parts)
        return upload, sealing.client_parts(self.objects.envelope, upload, parts), truncated

    async def list_uploads(
        self, bucket: str, prefix: str, delimiter: str, key_marker: str, upload_id_marker: str, max_uploads: int
    ) -> UploadListPage:
        """A page of the bucket's open uploads."""
        return await self.store.list_multipart_uploads(
            bucket, prefix, delimiter, key_marker, upload_id_marker, max_uploads
        )
