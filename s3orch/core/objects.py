"""Object operations across backends: put, read, delete, copy, list.

The write path is PUT-before-COMMIT: quota is reserved and an intent row
written (one transaction), the bytes go to a fresh backend key, then one
transaction records the location, settles quota and queues the displaced
copies for deletion.  A failure between the steps leaves either the old
version intact plus an intent the reaper can resolve, or the new version; it
never loses both (invariants I1, I3, I4, I5 in DESIGN.md).
"""

from __future__ import annotations

import base64
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import BackendError, BackendNotFound, BackendStream, ObjectBackend
from s3orch.core.failover import with_failover
from s3orch.core.placement import storage_key, write_candidates
from s3orch.observe.audit import audit
from s3orch.observe.metrics import (
    CLEANUP_ENQUEUED,
    CLEANUP_PROCESSED,
    PENDING_ENQUEUED,
    PENDING_RESOLVED,
)
from s3orch.s3 import errors
from s3orch.s3.conditions import WriteConditions
from s3orch.store.interface import (
    CleanupItem,
    Intent,
    IntentNotFound,
    ListPage,
    Location,
    MetadataStore,
    ObjectRecord,
    PreconditionConflict,
    Reservation,
    StoreUnavailable,
)


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


class ObjectService:
    """The orchestration core: one instance per process, shared by every request."""

    log = Logger(namespace="s3orch.core")

    def __init__(
        self,
        *,
        store: MetadataStore,
        backends: Mapping[str, ObjectBackend],
        backend_configs: Sequence[Any],
        routing_strategy: str,
        clock: IReactorTime,
        delete_concurrency: int = 16,
    ) -> None:
        self.store = store
        self.backends = backends
        self.backend_configs = list(backend_configs)
        self.routing_strategy = routing_strategy
        self.clock = clock
        self._delete_limit = DeferredSemaphore(max(1, delete_concurrency))
        self._background: set[Deferred[Any]] = set()

    # -- writes ---------------------------------------------------------------

    async def put(
        self,
        bucket: str,
        key: str,
        body: BinaryIO,
        length: int,
        *,
        md5_hex: str,
        sha256_hex: str | None,
        new: NewObject,
        checksum: tuple[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
        request_id: str = "",
    ) -> ObjectRecord:
        """Store a spooled body as the new version of ``bucket/key``."""
        if if_none_match or if_match is not None:
            current = await self.store.get_object(bucket, key)
            WriteConditions(if_none_match, if_match).check(current.etag if current else None)
        write_id = uuid.uuid4().hex
        skey = storage_key(bucket, key, write_id)
        intent = Intent(
            write_id, bucket, key, length, skey,
            etag=md5_hex, content_type=new.content_type,
            headers=dict(new.system_headers), user_metadata=dict(new.user_metadata),
            checksum_algorithm=checksum[0] if checksum else None,
            checksum_value=checksum[1] if checksum else None,
            content_hash=sha256_hex, if_none_match=if_none_match, if_match=if_match,
        )
        reservation = await self._upload_with_failover(
            bucket, key, write_id, skey, body, length, md5_hex, sha256_hex, request_id, intent
        )
        record = ObjectRecord(
            bucket=bucket,
            key=key,
            write_id=write_id,
            size=length,
            etag=md5_hex,
            last_modified=self.clock.seconds(),
            content_type=new.content_type,
            headers=dict(new.system_headers),
            user_metadata=dict(new.user_metadata),
            checksum_algorithm=checksum[0] if checksum else None,
            checksum_value=checksum[1] if checksum else None,
            content_hash=sha256_hex,
            locations=(Location(reservation.backend, reservation.storage_key, length),),
        )
        return await self._commit(reservation, record, if_none_match, if_match, request_id)

    async def _upload_with_failover(
        self,
        bucket: str,
        key: str,
        write_id: str,
        skey: str,
        body: BinaryIO,
        length: int,
        md5_hex: str,
        sha256_hex: str | None,
        request_id: str,
        intent: Intent | None = None,
    ) -> Reservation:
        """Reserve quota on a backend and upload; on failure try the next one."""

        async def upload(reservation: Reservation) -> None:
            await self.backends[reservation.backend].put_object(
                skey,
                body,
                length,
                content_md5_b64=base64.b64encode(bytes.fromhex(md5_hex)).decode("ascii"),
                sha256_hex=sha256_hex,
            )

        reservation, _ = await with_failover(
            operation="PUT",
            candidates=lambda failed: write_candidates(self.backend_configs, length, exclude=failed),
            reserve=lambda names: self._reserve(
                intent or Intent(write_id, bucket, key, length, skey), names
            ),
            backend_of=lambda r: r.backend,
            attempt=upload,
            undo=lambda r: self.store.release(r.write_id),
            request_id=request_id,
        )
        return reservation

    async def _reserve(self, intent: Intent, names: list[str]) -> Reservation | None:
        reservation = await self.store.reserve(intent, names, self.routing_strategy, self.clock.seconds())
        if reservation is not None:
            PENDING_ENQUEUED.inc()
        return reservation

    async def _commit(
        self,
        reservation: Reservation,
        record: ObjectRecord,
        if_none_match: bool,
        if_match: str | None,
        request_id: str,
    ) -> ObjectRecord:
        try:
            displaced = await self.store.commit_object(
                reservation,
                record,
                self.clock.seconds(),
                if_none_match=if_none_match,
                if_match=if_match,
            )
        except PreconditionConflict:
            await self._undo_upload(reservation)
            raise errors.PreconditionFailed() from None
        except IntentNotFound as exc:
            # Our intent was resolved elsewhere (reaper): the upload is queued for cleanup.
            if exc.cleanup is not None:
                await self.run_cleanups([exc.cleanup], "intent_missing")
            raise errors.ServiceUnavailable("The write was superseded; please retry.") from None
        PENDING_RESOLVED.labels("committed").inc()
        audit(
            "storage.PutObject",
            request_id=request_id,
            backend=reservation.backend,
            bucket=record.bucket,
            key=record.key,
            size=record.size,
        )
        self._cleanup_in_background(displaced, "overwrite_displaced")
        return record

    async def _undo_upload(self, reservation: Reservation) -> None:
        try:
            await self.backends[reservation.backend].delete_object(reservation.storage_key)
        except BackendError:
            # The intent stays: the reaper finds the bytes unreferenced and removes them.
            return
        await self.store.release(reservation.write_id)

    # -- reads ----------------------------------------------------------------

    async def head(self, bucket: str, key: str) -> ObjectRecord:
        record = await self.store.get_object(bucket, key)
        if record is None:
            raise errors.NoSuchKey(Key=key)
        return record

    async def open(
        self, record: ObjectRecord, byte_range: tuple[int, int] | None
    ) -> tuple[BackendStream, Location]:
        """Open a copy for reading, failing over to the next copy before the first byte."""
        unavailable = 0
        for location in record.locations:
            backend = self.backends.get(location.backend)
            if backend is None:
                continue
            try:
                stream = await backend.get_object(location.storage_key, byte_range)
            except BackendNotFound:
                self.log.error(
                    "tracked object missing on its backend",
                    component="objects",
                    backend=location.backend,
                    storage_key=location.storage_key,
                )
                continue
            except BackendError as exc:
                unavailable += 1
                self.log.warn(
                    "backend GET failed; trying the next copy",
                    component="objects",
                    backend=location.backend,
                    error=str(exc),
                )
                continue
            return stream, location
        if unavailable:
            raise errors.ServiceUnavailable("The storage backend holding this object is unavailable.")
        raise errors.InternalError("The object's data could not be found on any backend.")

    # -- deletes --------------------------------------------------------------

    async def delete(self, bucket: str, key: str, request_id: str = "") -> None:
        items = await self.store.delete_object(bucket, key, self.clock.seconds())
        if items:
            audit("storage.DeleteObject", request_id=request_id, bucket=bucket, key=key)
        await self.run_cleanups(items, "delete")

    async def delete_many(
        self, bucket: str, keys: Sequence[str], request_id: str = ""
    ) -> list[DeleteOutcome]:
        """Delete keys: metadata one transaction each, backend deletes concurrently (bounded)."""
        outcomes: list[DeleteOutcome] = []
        pending: list[CleanupItem] = []
        for key in keys:
            try:
                items = await self.store.delete_object(bucket, key, self.clock.seconds())
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
            pending.extend(items)
            outcomes.append(DeleteOutcome(key, None))
        if pending:
            audit("storage.DeleteObjects", request_id=request_id, bucket=bucket, count=len(pending))
        await self.run_cleanups(pending, "delete")
        return outcomes

    async def run_cleanups(self, items: Sequence[CleanupItem], reason: str) -> None:
        """Delete unreferenced backend objects now; failures stay queued for the worker."""
        if not items:
            return
        CLEANUP_ENQUEUED.labels(reason).inc(len(items))
        await self.retry_cleanups(items)

    async def retry_cleanups(self, items: Sequence[CleanupItem]) -> None:
        """Try the backend deletes of queued cleanup rows (bounded concurrency)."""
        if not items:
            return
        done: list[int] = []

        async def one(item: CleanupItem) -> None:
            backend = self.backends.get(item.backend)
            if backend is None:
                done.append(item.id)  # backend gone from config: nothing to delete
                return
            try:
                await self._delete_limit.run(
                    lambda: Deferred.fromCoroutine(backend.delete_object(item.storage_key))
                )
            except BackendError as exc:
                CLEANUP_PROCESSED.labels("retry").inc()
                await self.store.cleanup_failed(item.id, str(exc), self.clock.seconds())
                return
            CLEANUP_PROCESSED.labels("success").inc()
            done.append(item.id)

        await DeferredList(
            [Deferred.fromCoroutine(one(item)) for item in items], consumeErrors=True
        )
        if done:
            await self.store.cleanup_done(done)

    def _cleanup_in_background(self, items: Sequence[CleanupItem], reason: str) -> None:
        if not items:
            return
        d = Deferred.fromCoroutine(self.run_cleanups(items, reason))
        self._background.add(d)

        def forget(result: object) -> None:
            self._background.discard(d)

        d.addErrback(
            lambda f: self.log.failure("background cleanup failed", f, component="objects")
        )
        d.addBoth(forget)

    async def quiesce(self) -> None:
        """Wait for background cleanups (shutdown, tests)."""
        while self._background:
            await DeferredList(list(self._background), consumeErrors=True)

    # -- copy -----------------------------------------------------------------

    async def copy(
        self,
        bucket: str,
        source: ObjectRecord,
        dest_key: str,
        new: NewObject,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        request_id: str = "",
    ) -> ObjectRecord:
        """Copy an object within the bucket (server-side on the backend when possible)."""
        write_id = uuid.uuid4().hex
        skey = storage_key(bucket, dest_key, write_id)
        holders = {loc.backend: loc for loc in source.locations}
        ordered = sorted(self.backend_configs, key=lambda b: b.name not in holders)
        spool: BinaryIO | None = None

        async def copy_to(reservation: Reservation) -> None:
            nonlocal spool
            backend = self.backends[reservation.backend]
            if reservation.backend in holders:
                await backend.copy_object(holders[reservation.backend].storage_key, skey)
                return
            if spool is None:
                spool = await self._spool_object(source)
            await backend.put_object(
                skey,
                spool,
                source.size,
                content_md5_b64=_md5_b64(source.etag),
                sha256_hex=source.content_hash,
            )

        try:
            reservation, _ = await with_failover(
                operation="copy",
                candidates=lambda failed: write_candidates(ordered, source.size, exclude=failed),
                reserve=lambda names: self._reserve(
                    Intent(
                        write_id, bucket, dest_key, source.size, skey,
                        etag=source.etag, content_type=new.content_type,
                        headers=dict(new.system_headers), user_metadata=dict(new.user_metadata),
                        checksum_algorithm=source.checksum_algorithm,
                        checksum_value=source.checksum_value, content_hash=source.content_hash,
                        parts_count=source.parts_count, part_sizes=source.part_sizes,
                        if_none_match=if_none_match, if_match=if_match,
                    ),
                    names,
                ),
                backend_of=lambda r: r.backend,
                attempt=copy_to,
                undo=lambda r: self.store.release(r.write_id),
                request_id=request_id,
            )
        finally:
            if spool is not None:
                spool.close()
        record = replace(
            source,
            key=dest_key,
            write_id=write_id,
            last_modified=self.clock.seconds(),
            content_type=new.content_type,
            headers=dict(new.system_headers),
            user_metadata=dict(new.user_metadata),
            locations=(Location(reservation.backend, skey, source.size),),
        )
        return await self._commit(reservation, record, if_none_match, if_match, request_id)

    async def _spool_object(self, record: ObjectRecord) -> BinaryIO:
        """Download a copy into a temporary spool file (never into memory whole)."""
        stream, _ = await self.open(record, None)
        spool: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the caller

        class _Sink:
            def registerProducer(self, producer: object, streaming: bool) -> None:
                pass

            def unregisterProducer(self) -> None:
                pass

            def write(self, data: bytes) -> None:
                spool.write(data)

        try:
            await stream.deliver(_Sink())  # type: ignore[arg-type]
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    # -- listing --------------------------------------------------------------

    async def list(
        self, bucket: str, prefix: str, delimiter: str, start_after: str, max_keys: int
    ) -> ListPage:
        return await self.store.list_objects(bucket, prefix, delimiter, start_after, max_keys)


def _md5_b64(etag: str) -> str | None:
    if "-" in etag or len(etag) != 32:
        return None
    return base64.b64encode(bytes.fromhex(etag)).decode("ascii")
