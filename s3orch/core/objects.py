"""Object operations across backends: put, read, delete, copy, list.

The write path is PUT-before-COMMIT: quota reserved and an intent row written (one transaction),
the bytes sent to a fresh backend key, then one transaction records the location, settles quota
and queues the displaced copies for deletion: a failure between the steps leaves the old version
plus an intent the reaper resolves, or the new version; never a leaked byte or quota.

Parts of multipart uploads go the same way, each placed by the routing strategy on its own
(:meth:`ObjectService.place_part`); reading one streams its extents (:mod:`s3orch.core.extents`).
With ``write_path.parallel_copies`` a PUT or copy writes every copy at once (:mod:`s3orch.core.fanout`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import BackendError, BackendStream
from s3orch.codec.objects import Compressor, open_compressed
from s3orch.config.model import ReadPathConfig
from s3orch.core.cache import NO_CACHE, ObjectCache
from s3orch.core.cleanup import Cleanups
from s3orch.core.crashpoints import crash_point
from s3orch.core.extents import check_read_back, open_extents
from s3orch.core.failover import with_failover
from s3orch.core.fanout import FanOut, Send, copy_or_put
from s3orch.core.fleet import BackendFleet
from s3orch.core.integrity import Scrubber
from s3orch.core.parts import PartPlacement
from s3orch.core.placement import new_upload_id, storage_key
from s3orch.core.reads import CopyReader
from s3orch.core.spans import OBJECT_SPANS, traced_methods
from s3orch.core.spool import Spooler
from s3orch.core.stream_write import send_once
from s3orch.crypto.envelope import Envelope, require
from s3orch.notify import events as ev
from s3orch.notify.emit import object_created, object_removed
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.audit import audit
from s3orch.observe.metrics import PENDING_ENQUEUED, PENDING_RESOLVED
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.s3.conditions import UNCONDITIONAL, WriteConditions, raise_violation
from s3orch.s3.tagging import encode_tags
from s3orch.store.interface import (
    ORIGIN_COPY,
    CleanupItem,
    Extent,
    Intent,
    IntentNotFound,
    ListPage,
    Location,
    MetadataStore,
    MultipartUpload,
    ObjectRecord,
    OutboxEvent,
    PartReservation,
    PreconditionConflict,
    ReplicaReservation,
    Reservation,
    StoreUnavailable,
    UploadedPart,
    UploadNotFound,
)

#: AWS refuses to copy (CopyObject, UploadPartCopy) more than this in one request.
MAX_COPY_SOURCE_SIZE = 5 * 1024**3


@dataclass(frozen=True)
class NewObject:
    """What a client asked to store, minus the bytes."""

    content_type: str
    system_headers: dict[str, str]
    user_metadata: dict[str, str]


@dataclass(frozen=True)
class DeleteOutcome:
    key: str
    error: tuple[str, str] | None  # (code, message) when the key could not be deleted


@traced_methods(OBJECT_SPANS)
class ObjectService(PartPlacement):
    """The S3 object operations over the store and the backend fleet (one per process).
    Backend deletes go through ``cleanups``; copy sources read back are spooled by ``spooler``
    (``server.spool_dir``); ``routing_strategy`` (pack/spread) picks among candidates."""

    log = Logger(namespace="s3orch.core")
    cache: ObjectCache = NO_CACHE  # ``cache.*``: set by the tap; every write here invalidates the key

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        cleanups: Cleanups,
        spooler: Spooler,
        routing_strategy: str,
        clock: IReactorTime,
        events: EventSink = NULL_SINK,
        read_path: ReadPathConfig | None = None,
    ) -> None:
        self.events = events  # webhooks: written with the change (see s3orch.notify)
        self.store = store
        self.reader = CopyReader(fleet, clock, read_path)  # which copy a read tries first, hedging
        self.fleet = fleet
        self.cleanups = cleanups
        self.spooler = spooler
        self.routing_strategy = routing_strategy
        self.clock = clock
        #: ``integrity.enabled``: verifies full GETs (``verify_on_read``); set by the tap.
        self.scrubber: Scrubber | None = None
        self.fanout: FanOut | None = None  # write_path.parallel_copies (set by the wiring)
        #: ``encryption``: seals every PUT, opens encrypted records (s3orch.crypto); set by the tap.
        self.envelope: Envelope | None = None
        #: ``compression``: compresses every PUT before sealing (s3orch.codec); set by the tap.
        self.compressor: Compressor | None = None

    @property
    def fleet(self) -> BackendFleet:
        return self._fleet

    @fleet.setter
    def fleet(self, fleet: BackendFleet) -> None:
        """A new fleet (tests swap it) is the readers' too."""
        self._fleet = fleet
        self.reader.fleet = fleet

    # -- writes ---------------------------------------------------------------

    async def put(
        self,
        bucket: str,
        key: str,
        payload: Payload,
        *,
        new: NewObject,
        conditions: WriteConditions = UNCONDITIONAL,
        request_id: str = "",
    ) -> ObjectRecord:
        """Store ``payload`` as the new version of ``bucket/key`` (sealed first when encryption is
        on).  ``conditions`` are checked before any byte is sent (a write that cannot succeed
        costs nothing) and again in the commit transaction (atomic against a concurrent writer)."""
        await self.check_conditions(bucket, key, conditions)
        write_id = uuid.uuid4().hex
        skey = storage_key(bucket, key, write_id)
        compressor = self.compressor
        packed = await compressor.pack(payload) if compressor is not None else None
        body = payload if packed is None else packed  # compress, then seal
        try:
            sealed = await self.envelope.seal(body) if self.envelope and self.envelope.enabled else None
        except BaseException:
            if packed is not None:
                packed.close()
            raise
        if sealed is not None and packed is not None:
            packed.close()  # the ciphertext spool is what the backends get
        stored = body if sealed is None else sealed.payload  # what the backend gets
        length = stored.length
        transformed = sealed is not None or packed is not None
        known = not payload.streaming  # a stream's digests are known once it was sent
        intent = Intent(  # a transformed or streamed write's intent keeps no etag: the reaper never promotes it
            write_id, bucket, key, length, skey,
            etag=payload.md5_hex if known and not transformed else None, content_type=new.content_type,
            headers=dict(new.system_headers), user_metadata=dict(new.user_metadata),
            checksum_algorithm=payload.checksum_algorithm if known else None,
            checksum_value=payload.checksum_value if known else None,
            content_hash=payload.sha256_hex if known else None, conditions=conditions,
        )

        def new_record(last_modified: float = 0.0, locations: tuple[Location, ...] = ()) -> ObjectRecord:
            record = ObjectRecord(
                bucket=bucket, key=key, write_id=write_id, size=payload.length, etag=payload.md5_hex,
                last_modified=last_modified, content_type=new.content_type, headers=dict(new.system_headers),
                user_metadata=dict(new.user_metadata), checksum_algorithm=payload.checksum_algorithm,
                checksum_value=payload.checksum_value, content_hash=payload.sha256_hex, locations=locations,
            )
            record = record if sealed is None else sealed.stamp(record)
            if packed is not None and compressor is not None:
                record = replace(record, compression_chunk_size=compressor.settings.chunk_size)
            return record

        async def upload(reservation: Reservation) -> None:
            await send_once(stored, lambda: self.fleet[reservation.backend].put_object(skey, stored))

        try:
            if self.fanout is not None and self.fanout.levels() is not None:
                return await self._fan_out(
                    intent, stored, lambda name, skey, body: self.fleet[name].put_object(skey, body), new_record(),
                    conditions, request_id, ev.OBJECT_CREATED_PUT,
                )
            reservation, _ = await with_failover(
                operation="PUT",
                candidates=lambda failed: self.fleet.write_candidates(length, exclude=failed),
                reserve=lambda names: self._reserve(intent, names),
                backend_of=lambda r: r.backend,
                attempt=upload,
                undo=lambda r, exc: self.cleanups.abandon(r.write_id, exc),
                request_id=request_id,
                eligible=self.fleet.takes_writes,
            )
        finally:
            if transformed:
                stored.close()  # fan-out copies still running read their own handles
        crash_point("after-backend-put")
        located = (Location(reservation.backend, reservation.storage_key, length),)
        record = new_record(self.clock.seconds(), located)  # built once: replace() costs a second build
        return await self._commit(reservation, record, conditions, request_id, ev.OBJECT_CREATED_PUT)

    async def _fan_out(
        self, intent: Intent, payload: Payload, send: Send, record: ObjectRecord, conditions: WriteConditions,
        request_id: str, event_type: str,
    ) -> ObjectRecord:
        """The write to ``replication.factor`` backends at once (:mod:`s3orch.core.fanout`)."""
        assert self.fanout is not None
        return await self.fanout.write(
            intent, payload, send, record, reserve=self._reserve, undo=self._undo_upload, request_id=request_id,
            commit=lambda r, rec, more: self._commit(r, rec, conditions, request_id, event_type, more))

    async def check_conditions(self, bucket: str, key: str, conditions: WriteConditions) -> None:
        """Raise what AWS answers when ``conditions`` fail for the key's current object."""
        if conditions.active:
            current = await self.store.get_object(bucket, key)
            conditions.check(current.etag if current is not None else None)

    async def _reserve(self, intent: Intent, names: list[str]) -> Reservation | None:
        reservation = await self.store.reserve(intent, names, self.routing_strategy, self.clock.seconds())
        if reservation is not None:
            PENDING_ENQUEUED.inc()
        return reservation

    async def _commit(
        self, reservation: Reservation, record: ObjectRecord, conditions: WriteConditions,
        request_id: str, event_type: str, companions: Sequence[ReplicaReservation] = (),
    ) -> ObjectRecord:
        try:
            displaced = await self.store.commit_object(
                reservation, record, self.clock.seconds(), conditions,
                events=object_created(self.events, event_type, record), companions=companions,
            )
        except PreconditionConflict as exc:
            await self._undo_upload(reservation)
            raise_violation(exc.violation)
            raise  # unreachable: raise_violation always raises for a violation
        except IntentNotFound as exc:
            # Our intent was resolved elsewhere (reaper): the upload is queued for cleanup.
            if exc.cleanup is not None:
                await self.cleanups.run([exc.cleanup], "intent_missing")
            raise errors.ServiceUnavailable("The write was superseded; please retry.") from None
        self.cache.invalidate(record.bucket, record.key)
        if displaced:
            crash_point("overwrite-displaced")
        PENDING_RESOLVED.labels("committed").inc()
        audit("storage.PutObject", request_id=request_id, backend=reservation.backend,
              bucket=record.bucket, key=record.key, size=record.size)
        self.cleanups.in_background(displaced, "overwrite_displaced")
        crash_point("after-commit")
        return record

    async def _undo_upload(self, reservation: Reservation) -> None:
        try:
            await self.fleet[reservation.backend].delete_object(reservation.storage_key)
        except BackendError:
            # The intent stays: the reaper finds the bytes unreferenced and removes them.
            return
        await self.store.release(reservation.write_id, self.clock.seconds())

    # -- reads ----------------------------------------------------------------

    async def head(self, bucket: str, key: str) -> ObjectRecord:
        record = await self.store.get_object(bucket, key)
        if record is None:
            raise errors.NoSuchKey(Key=key)
        return record

    async def set_tags(self, bucket: str, key: str, tags: Sequence[tuple[str, str]]) -> None:
        """Replace the key's tag set (metadata only; 404 NoSuchKey when there is no key)."""
        if not await self.store.set_object_tags(bucket, key, encode_tags(tags)):
            raise errors.NoSuchKey(Key=key)

    async def open(
        self, record: ObjectRecord, byte_range: tuple[int, int] | None
    ) -> tuple[BackendStream, Location]:
        """Open the object (or the inclusive ``byte_range``) for reading; fails over to the
        next copy before the first byte.  A multi-extent object is one stream over its extents
        (:func:`~s3orch.core.extents.open_extents`), the first one open when this returns.
        Raises 503 when the holders are unreachable, 500 when no copy exists (never 404).  The
        location is the copy the first byte comes from.  An encrypted record is decrypted on
        the way (only the chunks the range covers are fetched)."""
        if record.compressed:
            return await open_compressed(record, byte_range, self._open_copies, self.envelope)
        if record.encrypted:
            return await require(self.envelope).open_record(record, byte_range, self._open_copies)
        if record.parts or len(record.locations) > 1:  # several copies: a retry may take another
            return await open_extents(record.extents, record.size, byte_range, self._open_extent)
        return await self._open_copies(record.locations, byte_range)

    async def _open_extent(
        self, extent: Extent, byte_range: tuple[int, int] | None
    ) -> tuple[BackendStream, Location]:
        return await self._open_copies(extent.locations, byte_range)

    async def _open_copies(
        self, locations: Sequence[Location], byte_range: tuple[int, int] | None
    ) -> tuple[BackendStream, Location]:
        return await self.reader.open(locations, byte_range)

    # -- deletes --------------------------------------------------------------

    async def delete(
        self, bucket: str, key: str, request_id: str = "", *,
        write_id: str | None = None, events: Sequence[OutboxEvent] | None = None,
    ) -> bool:
        """Delete a key; True if it existed.  With ``write_id`` only while that write is still
        current (a lifecycle expiry never deletes a newer overwrite); ``events`` replace the
        ``s3:ObjectRemoved:Delete`` event."""
        now = self.clock.seconds()
        removed = object_removed(self.events, ev.OBJECT_REMOVED_DELETE, bucket, key) if events is None else events
        if write_id is None:
            items: list[CleanupItem] | None = await self.store.delete_object(bucket, key, now, events=removed)
            items = items or None  # [] is an absent key
        else:
            items = await self.store.delete_object_if(bucket, key, write_id, now, events=removed)
        self.cache.invalidate(bucket, key)
        if items is None:
            return False
        audit("storage.DeleteObject", request_id=request_id, bucket=bucket, key=key)
        await self.cleanups.run(items, "delete")
        return True

    async def delete_many(
        self, bucket: str, keys: Sequence[str], request_id: str = ""
    ) -> list[DeleteOutcome]:
        """Delete keys: metadata one transaction each, backend deletes concurrently (bounded)."""
        outcomes: list[DeleteOutcome] = []
        pending: list[CleanupItem] = []
        for key in keys:
            try:
                removed = object_removed(self.events, ev.OBJECT_REMOVED_BATCH, bucket, key)
                items = await self.store.delete_object(bucket, key, self.clock.seconds(), events=removed)
            except errors.S3Error as exc:
                outcomes.append(DeleteOutcome(key, (exc.code, exc.message)))
                continue
            except StoreUnavailable:
                message = "The metadata database is unavailable; please retry."
                outcomes.append(DeleteOutcome(key, ("ServiceUnavailable", message)))
                continue
            except Exception as exc:
                self.log.failure("delete failed", component="objects", key=key)
                outcomes.append(DeleteOutcome(key, ("InternalError", str(exc) or "delete failed")))
                continue
            self.cache.invalidate(bucket, key)
            pending.extend(items)
            outcomes.append(DeleteOutcome(key, None))
        if pending:
            audit("storage.DeleteObjects", request_id=request_id, bucket=bucket, count=len(pending))
        await self.cleanups.run(pending, "delete")
        return outcomes

    async def spool_range(
        self,
        source: ObjectRecord,
        byte_range: tuple[int, int] | None,
        *,
        checksum_algorithm: str | None = None,
    ) -> Payload:
        """Read (a range of) an object into a spool (never into memory whole), hashing
        it on the way: MD5, SHA-256 and ``checksum_algorithm``.  The caller closes it.

        An empty range (``end`` = ``start`` - 1) reads nothing."""
        size = source.size if byte_range is None else max(0, byte_range[1] - byte_range[0] + 1)
        if size == 0:
            return await self.spooler.empty(checksum_algorithm=checksum_algorithm)
        stream, _ = await self.open(source, byte_range)
        skip = 0
        if byte_range is not None and stream.content_range is None:
            skip = byte_range[0]  # the backend ignored the Range: cut it ourselves
        return await self.spooler.spool(stream, size, skip=skip, checksum_algorithm=checksum_algorithm)

    # -- copy -----------------------------------------------------------------

    async def copy(
        self,
        bucket: str,
        source: ObjectRecord,
        dest_key: str,
        new: NewObject,
        *,
        conditions: WriteConditions = UNCONDITIONAL,
        request_id: str = "",
    ) -> ObjectRecord:
        """Copy an object within the bucket (server-side on a backend when possible).  A
        multi-extent source is copied extent by extent, each placed like a part, so no backend
        ever needs room for the whole object; encrypted bytes are copied as they are stored."""
        if source.size > MAX_COPY_SOURCE_SIZE:
            raise errors.InvalidRequest(
                "The specified copy source is larger than the maximum allowable size for a "
                f"copy source: {MAX_COPY_SOURCE_SIZE}"
            )
        await self.check_conditions(bucket, dest_key, conditions)
        if source.parts:
            return await self._copy_extents(bucket, source, dest_key, new, conditions, request_id)
        write_id = uuid.uuid4().hex
        skey = storage_key(bucket, dest_key, write_id)
        holders = {loc.backend: loc for loc in source.locations}
        as_stored = source.encrypted or source.compressed
        stored = source.locations[0].size if as_stored and source.locations else source.size
        intent = Intent(
            write_id, bucket, dest_key, stored, skey, etag=None if as_stored else source.etag,
            content_type=new.content_type, headers=dict(new.system_headers), user_metadata=dict(new.user_metadata),
            checksum_algorithm=source.checksum_algorithm, checksum_value=source.checksum_value,
            content_hash=source.content_hash, parts_count=source.parts_count, part_sizes=source.part_sizes,
            conditions=conditions,
        )
        record = replace(source, key=dest_key, write_id=write_id, content_type=new.content_type,
                         headers=dict(new.system_headers), user_metadata=dict(new.user_metadata))
        spool: Payload | None = None

        async def read_source() -> Payload:
            """The source's bytes as stored (ciphertext, compressed frames copied as they are), checked."""
            if source.encrypted or source.compressed:
                return await self._spool_stored(source.locations, stored)
            spooled = await self.spool_range(source, None)
            check_read_back(spooled, source.etag)
            return spooled

        if self.fanout is not None and self.fanout.levels() is not None:
            # Every copy from one read of the source (a holder copies server-side).
            spool = await read_source()
            try:
                send, event = copy_or_put(self.fleet, holders), ev.OBJECT_CREATED_COPY
                return await self._fan_out(intent, spool, send, record, conditions, request_id, event)
            finally:
                spool.close()

        async def copy_to(reservation: Reservation) -> None:
            nonlocal spool
            backend = self.fleet[reservation.backend]
            if reservation.backend in holders:
                await backend.copy_object(holders[reservation.backend].storage_key, skey)
                return
            if spool is None:
                spool = await read_source()
            await backend.put_object(skey, spool)

        try:
            reservation, _ = await with_failover(
                operation="copy",
                candidates=lambda failed: self.fleet.write_candidates(stored, exclude=failed, prefer=holders),
                reserve=lambda names: self._reserve(intent, names),
                backend_of=lambda r: r.backend,
                attempt=copy_to,
                undo=lambda r, exc: self.cleanups.abandon(r.write_id, exc),
                request_id=request_id,
                eligible=self.fleet.takes_writes,
            )
        finally:
            if spool is not None:
                spool.close()
        record = replace(record, last_modified=self.clock.seconds(), locations=(Location(reservation.backend, skey, stored),))
        return await self._commit(reservation, record, conditions, request_id, ev.OBJECT_CREATED_COPY)

    async def _copy_extents(
        self,
        bucket: str,
        source: ObjectRecord,
        dest_key: str,
        new: NewObject,
        conditions: WriteConditions,
        request_id: str,
    ) -> ObjectRecord:
        """Copy a multi-extent object through an upload of the gateway's own: each
        extent becomes a part placed by the routing strategy, then one transaction
        makes them the new version (or the upload is aborted, its parts cleaned up)."""
        now = self.clock.seconds()
        upload = await self.store.create_multipart_upload(
            MultipartUpload(
                upload_id=new_upload_id(now),
                bucket=bucket,
                key=dest_key,
                initiated=now,
                content_type=new.content_type,
                headers=dict(new.system_headers),
                user_metadata=dict(new.user_metadata),
                checksum_algorithm=source.checksum_algorithm,
                origin=ORIGIN_COPY,
            ),
            0,
            now,
        )
        try:
            for extent in source.parts:
                await self._copy_extent(upload, source, extent, request_id)
            record = replace(
                source,
                key=dest_key,
                write_id=upload.upload_id,
                last_modified=self.clock.seconds(),
                content_type=new.content_type,
                headers=dict(new.system_headers),
                user_metadata=dict(new.user_metadata),
                locations=(),
                parts=(),
            )
            outcome = await self.store.complete_upload(
                bucket,
                dest_key,
                upload.upload_id,
                [(extent.part_number, extent.etag or "") for extent in source.parts],
                record,
                self.clock.seconds(),
                conditions,
                events=object_created(self.events, ev.OBJECT_CREATED_COPY, record),
            )
        except UploadNotFound:
            raise errors.ServiceUnavailable("The copy was interrupted; please retry.") from None
        except PreconditionConflict as exc:
            await self._abandon(upload)
            raise_violation(exc.violation)
            raise  # unreachable
        except BaseException:
            await self._abandon(upload)
            raise
        audit("storage.CopyObject", request_id=request_id, bucket=bucket, key=dest_key,
              size=record.size, parts=len(source.parts))
        self.cleanups.in_background(outcome.displaced, "overwrite_displaced")
        return record

    async def _spool_stored(self, locations: Sequence[Location], size: int) -> Payload:
        """A transformed extent's stored bytes: ciphertext and frames move as is (checked on reads)."""
        return await self.spooler.spool((await self.reader.open(locations, None))[0], size)

    async def _copy_extent(
        self, upload: MultipartUpload, source: ObjectRecord, extent: Extent, request_id: str
    ) -> None:
        holders = {loc.backend: loc for loc in extent.locations}
        spool: Payload | None = None
        as_stored = source.encrypted or extent.compression_chunk_size is not None  # the part stays compressed
        size = extent.locations[0].size if as_stored and extent.locations else extent.size

        async def send(reservation: PartReservation) -> None:
            nonlocal spool
            backend = self.fleet[reservation.backend]
            if reservation.backend in holders and extent.size > 0:
                await backend.copy_object(holders[reservation.backend].storage_key, reservation.storage_key)
                return
            if spool is None and as_stored:
                spool = await self._spool_stored(extent.locations, size)
            elif spool is None:
                spool = await self.spool_range(source, (extent.offset, extent.offset + extent.size - 1))
                check_read_back(spool, extent.etag or "")
            await backend.put_object(reservation.storage_key, spool)

        try:
            reservation = await self.place_part(
                upload, extent.part_number, size, send, prefer=holders, request_id=request_id
            )
        finally:
            if spool is not None:
                spool.close()
        await self.commit_part(
            reservation,
            UploadedPart(
                part_number=extent.part_number,
                etag=extent.etag or "",
                size=size,
                last_modified=self.clock.seconds(),
                backend=reservation.backend,
                storage_key=reservation.storage_key,
                checksum_algorithm=source.checksum_algorithm,
                checksum_value=extent.checksum_value,
                compression_chunk_size=extent.compression_chunk_size, logical_size=extent.size,
            ),
        )

    async def _abandon(self, upload: MultipartUpload) -> None:
        """Abort an upload of the gateway's own; on failure the stale-upload cleanup will."""
        now = self.clock.seconds()
        try:
            await self.store.begin_abort(upload.bucket, upload.key, upload.upload_id, now)
            items = await self.store.finish_abort(upload.upload_id, now)
        except Exception:
            self.log.failure("could not abort copy upload {upload_id}", component="objects", upload_id=upload.upload_id)
            return
        await self.cleanups.run(items, "abort_part_cleanup")

    # -- listing --------------------------------------------------------------

    async def list(self, bucket: str, prefix: str, delimiter: str, start_after: str, max_keys: int) -> ListPage:
        return await self.store.list_objects(bucket, prefix, delimiter, start_after, max_keys)

