"""The MetadataStore, written once over an engine and the shared transactions.

:class:`SQLStore` takes an :class:`~s3orch.store.engine.Engine` (SQLite,
PostgreSQL) that opens its pools and runs one transaction; the argument
checks, the choice of transaction and the mapping of results to the contract's
exceptions are here, once, for every engine.

``_call(read_only, idempotent, fn, *args)`` runs ``fn(tx, notes, *args)`` in one
transaction.  ``read_only`` asks for one consistent snapshot and no writes;
``idempotent=False`` marks the few calls that must not be re-run when the
outcome of their COMMIT is unknown (a lost connection while committing):
running them again would answer differently (``commit_part``) or count a
failure twice (``cleanup_failed``).  An error the engine classifies as
unavailable becomes :class:`~s3orch.store.errors.StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Concatenate, ParamSpec, TypeVar

from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from s3orch.s3.conditions import UNCONDITIONAL, WriteConditions
from s3orch.store.engine import ConnectionPools, Engine
from s3orch.store.errors import IntentNotFound, StoreError, StoreUnavailable
from s3orch.store.interface_usage import UsageRow
from s3orch.store.records import (
    CleanupItem,
    CompleteOutcome,
    DeadCleanup,
    DrainState,
    ExcessCopies,
    ExpiredObject,
    Intent,
    IntentResolution,
    ListPage,
    MultipartUpload,
    ObjectRecord,
    OutboxEntry,
    OutboxEvent,
    PartCommit,
    PartReservation,
    PendingIntent,
    QueuedCleanup,
    QuotaRow,
    ReplicaOutcome,
    ReplicaReservation,
    Reservation,
    UnderReplicated,
    UploadedPart,
    UploadListPage,
)
from s3orch.store.sqlstore_integrity import CryptoTransactions, IntegrityTransactions
from s3orch.store.sqlstore_reconcile import ReconcileTransactions
from s3orch.store.txn import (
    cleanup,
    dlq,
    drains,
    excess,
    expiry,
    intents,
    journal,
    listing,
    multipart,
    objects,
    outbox,
    quota,
    rebalance,
    replicas,
    usage,
)
from s3orch.store.txn.base import Notes, Tx, txn_ping

_P = ParamSpec("_P")
_T = TypeVar("_T")

_STRATEGIES = ("pack", "spread")
#: Read transactions short and bounded like a lookup by key: the engine may run them without a thread hop
#: (:meth:`~s3orch.store.engine.ConnectionPools.run_point_read`).
#: A listing page without a delimiter of at most POINT_LIST_KEYS keys is one range scan of at most
#: 1001 rows (0.6 ms in SQLite for the first page of a million-key bucket): less than the hop costs.
POINT_READS: frozenset[Callable[..., object]] = frozenset({objects.txn_get_object, listing.txn_list_keys})
POINT_LIST_KEYS = 1000


def _check_strategy(strategy: str) -> None:
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown placement strategy {strategy!r}")


class SQLStore(ReconcileTransactions, IntegrityTransactions, CryptoTransactions):
    """:class:`~s3orch.store.interface.MetadataStore` on a SQL database (see the module)."""

    _log = Logger(namespace="s3orch.store")

    def __init__(self, engine: Engine, reactor: IReactorCore) -> None:
        self.engine = engine
        self._reactor = reactor
        self._pools: ConnectionPools | None = None

    async def start(self) -> None:
        if self._pools is None:
            self._pools = await self.engine.open_pools(self._reactor)

    async def close(self) -> None:
        pools, self._pools = self._pools, None
        if pools is not None:
            pools.close()

    async def _call(
        self,
        read_only: bool,
        idempotent: bool,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        pools = self._pools
        if pools is None:
            raise StoreError("the store is not started")
        notes = Notes()
        try:
            if fn in POINT_READS:
                return await pools.run_point_read(notes, fn, *args, **kwargs)
            return await pools.run_transaction(read_only, idempotent, notes, fn, *args, **kwargs)
        except Exception as exc:
            if self.engine.is_unavailable(exc):
                raise StoreUnavailable(f"{self.engine.describe()}: {exc}".strip()) from exc
            raise
        finally:
            for fmt, fields in notes.warnings:
                self._log.warn(fmt, component="store", **fields)

    async def _write(
        self, fn: Callable[Concatenate[Tx, Notes, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        return await self._call(False, True, fn, *args, **kwargs)

    async def _write_once(
        self, fn: Callable[Concatenate[Tx, Notes, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """A write that is not re-run after an unknown COMMIT outcome."""
        return await self._call(False, False, fn, *args, **kwargs)

    async def _read(
        self, fn: Callable[Concatenate[Tx, Notes, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        return await self._call(True, True, fn, *args, **kwargs)

    # -- objects and quotas ---------------------------------------------------------------

    async def ping(self) -> None:
        await self._read(txn_ping)

    async def sync_quota_limits(self, limits: dict[str, int], now: float) -> None:
        for backend, limit in limits.items():
            if limit < 0:
                raise ValueError(f"negative quota limit for backend {backend!r}: {limit}")
        await self._write(quota.txn_sync_quota_limits, dict(limits), now)

    async def get_quotas(self) -> dict[str, QuotaRow]:
        return await self._read(quota.txn_get_quotas)

    async def reserve(
        self,
        intent: Intent,
        candidates: Sequence[str],
        strategy: str,
        now: float,
    ) -> Reservation | None:
        """See the protocol.  A candidate with no quota row counts as unlimited (the
        start-up ``sync_quota_limits`` creates rows for every configured backend);
        reserving again with the same ``write_id`` returns the first reservation."""
        _check_strategy(strategy)
        if intent.size < 0:
            raise ValueError(f"negative intent size {intent.size}")
        return await self._write(objects.txn_reserve, intent, tuple(candidates), strategy, now)

    async def release(self, write_id: str, now: float) -> None:
        await self._write(objects.txn_release, write_id, now)

    async def commit_object(
        self,
        reservation: Reservation,
        record: ObjectRecord,
        now: float,
        conditions: WriteConditions = UNCONDITIONAL,
        *,
        events: Sequence[OutboxEvent] = (),
        companions: Sequence[ReplicaReservation] = (),
    ) -> list[CleanupItem]:
        """See the protocol.  ``record.locations`` and ``parts`` are ignored: the new
        version has exactly the reservation's copy (and ``companions``), as its one extent."""
        result = await self._write(
            objects.txn_commit_object, reservation, record, now, conditions, tuple(events),
            tuple(companions),
        )
        if isinstance(result, objects.IntentGone):
            raise IntentNotFound(reservation.write_id, result.cleanup)
        return result

    async def get_object(self, bucket: str, key: str) -> ObjectRecord | None:
        return await self._read(objects.txn_get_object, bucket, key)

    async def objects_since(
        self, since: float, limit: int, known: Collection[tuple[str, str, str]] = ()
    ) -> tuple[list[ObjectRecord], list[tuple[str, str, str, float]]]:
        return await self._read(journal.txn_objects_since, since, limit, known)

    async def keys_after(self, bucket: str, key: str, limit: int) -> list[tuple[str, str, str]]:
        return await self._read(journal.txn_keys_after, bucket, key, limit)

    async def objects_of(self, keys: Sequence[tuple[str, str]]) -> list[ObjectRecord]:
        return await self._read(journal.txn_objects_of, tuple(keys))

    async def delete_object(
        self, bucket: str, key: str, now: float, *, events: Sequence[OutboxEvent] = ()
    ) -> list[CleanupItem]:
        return await self._write(objects.txn_delete_object, bucket, key, now, tuple(events))

    async def delete_object_if(
        self, bucket: str, key: str, write_id: str, now: float, *, events: Sequence[OutboxEvent] = ()
    ) -> list[CleanupItem] | None:
        return await self._write(objects.txn_delete_object_if, bucket, key, write_id, now, tuple(events))

    async def expired_objects(
        self, prefix: str, created_before: float, after: tuple[str, str] | None, limit: int
    ) -> list[ExpiredObject]:
        if limit <= 0:
            return []
        return await self._read(expiry.txn_expired_objects, prefix, created_before, after, limit)

    async def list_objects(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        start_after: str,
        max_keys: int,
    ) -> ListPage:
        if max_keys < 0:
            raise ValueError(f"negative max_keys {max_keys}")
        if not delimiter and max_keys <= POINT_LIST_KEYS:
            return await self._read(listing.txn_list_keys, bucket, prefix, start_after, max_keys)
        return await self._read(listing.txn_list_objects, bucket, prefix, delimiter, start_after, max_keys)

    async def object_counts(self) -> dict[str, int]:
        return await self._read(quota.txn_object_counts)

    # -- the cleanup queue ------------------------------------------------------------------

    async def cleanup_done(self, ids: Sequence[int], now: float) -> None:
        if ids:
            await self._write(cleanup.txn_cleanup_done, tuple(ids), now)

    async def cleanup_failed(
        self, item_id: int, error: str, now: float, *, exhausted_events: Sequence[OutboxEvent] = ()
    ) -> bool:
        return await self._write_once(
            cleanup.txn_cleanup_failed, item_id, error, now, tuple(exhausted_events)
        )

    async def due_cleanups(self, now: float, limit: int) -> list[CleanupItem]:
        return await self._read(cleanup.txn_due_cleanups, now, limit)

    async def claim_cleanups(
        self, now: float, limit: int, owner: str, grace: float
    ) -> list[CleanupItem]:
        if limit <= 0:
            return []
        return await self._write(cleanup.txn_claim_cleanups, now, limit, owner, grace)

    async def cleanup_queue_page(self, limit: int) -> tuple[int, list[QueuedCleanup]]:
        return await self._read(dlq.txn_cleanup_queue_page, max(0, limit))

    async def cleanup_dlq_page(self, backend: str | None, limit: int) -> tuple[int, int, list[DeadCleanup]]:
        return await self._read(dlq.txn_cleanup_dlq_page, backend, max(0, limit))

    async def requeue_dlq(
        self, ids: Sequence[int] | None, backend: str | None, limit: int, now: float
    ) -> list[int]:
        if limit <= 0:
            return []
        wanted = None if ids is None else tuple(sorted(set(ids)))
        return await self._write(dlq.txn_requeue_dlq, wanted, backend, limit, now)

    async def write_off_dlq(
        self, ids: Sequence[int] | None, backend: str | None, limit: int, now: float
    ) -> tuple[int, int]:
        if limit <= 0:
            return 0, 0
        wanted = None if ids is None else tuple(sorted(set(ids)))
        return await self._write(dlq.txn_write_off_dlq, wanted, backend, limit, now)

    # -- pending intents --------------------------------------------------------------------

    async def stale_intents(
        self, now: float, min_age: float, limit: int, owner: str = "", grace: float = 300.0
    ) -> list[PendingIntent]:
        if limit <= 0:
            return []
        return await self._write(intents.txn_stale_intents, now, min_age, limit, owner, grace)

    async def resolve_intent(
        self, write_id: str, outcome: str, now: float, *, events: Sequence[OutboxEvent] = ()
    ) -> IntentResolution:
        return await self._write(intents.txn_resolve_intent, write_id, outcome, now, tuple(events))

    async def count_intents(self) -> int:
        return await self._read(intents.txn_count_intents)

    # -- multipart uploads ------------------------------------------------------------------

    async def create_multipart_upload(
        self, upload: MultipartUpload, max_uploads: int, now: float
    ) -> MultipartUpload:
        return await self._write(multipart.txn_create_multipart_upload, upload, max_uploads, now)

    async def get_multipart_upload(
        self, bucket: str, key: str, upload_id: str
    ) -> MultipartUpload | None:
        return await self._read(multipart.txn_get_multipart_upload, bucket, key, upload_id)

    async def reserve_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        size: int,
        attempt_id: str,
        storage_key: str,
        candidates: Sequence[str],
        strategy: str,
        now: float,
    ) -> PartReservation | None:
        _check_strategy(strategy)
        if size < 0:
            raise ValueError(f"negative part size {size}")
        return await self._write(
            multipart.txn_reserve_part,
            bucket,
            key,
            upload_id,
            part_number,
            size,
            attempt_id,
            storage_key,
            tuple(candidates),
            strategy,
            now,
        )

    async def release_part(self, attempt_id: str, now: float) -> list[CleanupItem]:
        return await self._write(multipart.txn_release_part, attempt_id, now)

    async def commit_part(self, attempt_id: str, part: UploadedPart, now: float) -> PartCommit:
        return await self._write_once(multipart.txn_commit_part, attempt_id, part, now)

    async def list_parts(
        self, upload_id: str, part_number_marker: int = 0, max_parts: int = 10000
    ) -> tuple[list[UploadedPart], bool]:
        return await self._read(
            multipart.txn_list_parts, upload_id, part_number_marker, max(0, max_parts)
        )

    async def complete_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        record: ObjectRecord,
        now: float,
        conditions: WriteConditions = UNCONDITIONAL,
        *,
        events: Sequence[OutboxEvent] = (),
    ) -> CompleteOutcome:
        """See the protocol.  Idempotent under retry: a transaction re-run after an
        unknown COMMIT outcome finds the upload completed and answers a repeat."""
        return await self._write(
            multipart.txn_complete_upload, bucket, key, upload_id, tuple(parts), record, now,
            conditions, tuple(events),
        )

    async def begin_abort(
        self, bucket: str, key: str, upload_id: str, now: float, *, stale: bool = False
    ) -> MultipartUpload:
        return await self._write(multipart.txn_begin_abort, bucket, key, upload_id, now, stale)

    async def finish_abort(self, upload_id: str, now: float) -> list[CleanupItem]:
        return await self._write(multipart.txn_finish_abort, upload_id, now)

    async def list_multipart_uploads(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        key_marker: str,
        upload_id_marker: str,
        max_uploads: int,
    ) -> UploadListPage:
        if max_uploads < 0:
            raise ValueError(f"negative max_uploads {max_uploads}")
        return await self._read(
            listing.txn_list_multipart_uploads, bucket, prefix, delimiter, key_marker, upload_id_marker, max_uploads
        )

    async def stale_multipart_uploads(
        self, created_before: float, busy_before: float, limit: int
    ) -> list[MultipartUpload]:
        return await self._read(multipart.txn_stale_multipart_uploads, created_before, busy_before, limit)

    async def purge_multipart_uploads(self, before: float) -> int:
        return await self._write(multipart.txn_purge_multipart_uploads, before)

    async def active_multipart_counts(self) -> dict[str, int]:
        return await self._read(multipart.txn_active_multipart_counts)

    # -- the notification outbox ------------------------------------------------------------

    async def enqueue_events(self, events: Sequence[OutboxEvent], now: float) -> None:
        if events:
            await self._write(outbox.txn_enqueue_events, tuple(events), now)

    async def due_events(self, now: float, limit: int) -> list[OutboxEntry]:
        if limit <= 0:
            return []
        return await self._read(outbox.txn_due_events, now, limit)

    async def events_done(self, ids: Sequence[int]) -> None:
        if ids:
            await self._write(outbox.txn_events_done, tuple(ids))

    async def event_failed(self, entry_id: int, error: str, next_attempt: float) -> int:
        return await self._write_once(outbox.txn_event_failed, entry_id, error, next_attempt)

    async def count_events(self) -> int:
        return await self._read(outbox.txn_count_events)

    # -- replicas ------------------------------------------------------------------------

    async def under_replicated(
        self,
        factor: int,
        limit: int,
        after: tuple[str, str, int] | None = None,
        uncounted: Sequence[str] = (),
    ) -> list[UnderReplicated]:
        if factor < 1 or limit < 1:
            raise ValueError("factor and limit must be at least 1")
        return await self._read(
            replicas.txn_under_replicated, factor, limit, after, tuple(sorted(set(uncounted)))
        )

    async def count_under_replicated(self, factor: int, uncounted: Sequence[str] = ()) -> int:
        return await self._read(
            replicas.txn_count_under_replicated, factor, tuple(sorted(set(uncounted)))
        )

    async def drop_missing_copy(
        self, extent: UnderReplicated, backend: str, storage_key: str, now: float
    ) -> bool:
        return await self._write(replicas.txn_drop_missing_copy, extent, backend, storage_key, now)

    async def reserve_replica(
        self,
        extent: UnderReplicated,
        factor: int,
        uncounted: Sequence[str],
        candidates: Sequence[str],
        strategy: str,
        storage_key: str,
        now: float,
        hold: float,
    ) -> ReplicaOutcome:
        _check_strategy(strategy)
        return await self._write(
            replicas.txn_reserve_replica, extent, factor, tuple(sorted(set(uncounted))),
            tuple(candidates), strategy, storage_key, now, hold,
        )

    async def reserve_copy(
        self,
        candidates: Sequence[str],
        strategy: str,
        storage_key: str,
        size: int,
        now: float,
        hold: float,
    ) -> ReplicaReservation | None:
        _check_strategy(strategy)
        return await self._write(
            replicas.txn_reserve_copy, tuple(candidates), strategy, storage_key, size, now, hold
        )

    async def abandon_replica(self, cleanup_id: int, due: float) -> None:
        await self._write(replicas.txn_abandon_replica, cleanup_id, due)

    async def record_replica(
        self,
        extent: UnderReplicated,
        reservation: ReplicaReservation,
        factor: int,
        uncounted: Sequence[str],
        now: float,
    ) -> ReplicaOutcome:
        return await self._write(
            replicas.txn_record_replica, extent, reservation, factor,
            tuple(sorted(set(uncounted))), now,
        )

    # -- drains --------------------------------------------------------------------------

    async def drains(self) -> list[DrainState]:
        return await self._read(drains.txn_drains)

    async def start_drain(self, backend: str, now: float) -> bool:
        return await self._write(drains.txn_start_drain, backend, now)

    async def cancel_drain(self, backend: str) -> bool:
        return await self._write(drains.txn_cancel_drain, backend)

    async def drain_moved(self, backend: str, objects: int, size: int) -> None:
        await self._write(drains.txn_drain_moved, backend, objects, size)

    async def finish_drain(self, backend: str, state: str, error: str | None, now: float) -> bool:
        return await self._write(drains.txn_finish_drain, backend, state, error, now)

    async def backend_holdings(self, backend: str) -> tuple[int, int]:
        return await self._read(drains.txn_backend_holdings, backend)

    async def backend_extents(
        self, backend: str, limit: int, after: tuple[str, str, int] | None = None
    ) -> list[UnderReplicated]:
        return await self._read(drains.txn_backend_extents, backend, limit, after)

    async def drop_drained_copy(
        self, extent: UnderReplicated, backend: str, now: float
    ) -> CleanupItem | None:
        return await self._write(drains.txn_drop_drained_copy, extent, backend, now)

    async def backend_uploads(self, backend: str) -> list[tuple[str, str, str]]:
        return await self._read(drains.txn_backend_uploads, backend)

    async def remove_backend(
        self, backend: str, now: float, events: Sequence[OutboxEvent] = ()
    ) -> tuple[int, int]:
        return await self._write(drains.txn_remove_backend, backend, now, tuple(events))

    # -- excess copies ---------------------------------------------------------------------

    async def over_replicated(
        self, factor: int, limit: int, after: tuple[str, str, int] | None = None
    ) -> list[ExcessCopies]:
        if factor < 1 or limit < 1:
            raise ValueError("factor and limit must be at least 1")
        return await self._read(excess.txn_over_replicated, factor, limit, after)

    async def count_over_replicated(self, factor: int) -> int:
        return await self._read(excess.txn_count_over_replicated, factor)

    async def remove_excess(
        self, extent: ExcessCopies, factor: int, scores: Mapping[str, float], now: float, grace: float
    ) -> list[CleanupItem]:
        return await self._write(excess.txn_remove_excess, extent, factor, dict(scores), now, grace)

    # -- rebalance -------------------------------------------------------------------------

    async def rebalance_candidates(self, backend: str, limit: int) -> list[UnderReplicated]:
        return await self._read(rebalance.txn_rebalance_candidates, backend, limit)

    async def move_copy(
        self,
        extent: UnderReplicated,
        reservation: ReplicaReservation,
        source: str,
        source_key: str,
        now: float,
        grace: float,
    ) -> ReplicaOutcome:
        return await self._write(rebalance.txn_move_copy, extent, reservation, source, source_key, now, grace)

    # -- monthly usage ---------------------------------------------------------------------

    async def add_usage(
        self, deltas: Mapping[tuple[str, str], tuple[int, int, int]], period: str
    ) -> dict[str, UsageRow]:
        return await self._write_once(usage.txn_add_usage, dict(deltas), period)

    async def get_usage(self, period: str | None, backend: str | None = None) -> dict[str, UsageRow]:
        return await self._read(usage.txn_usage, period, backend)
