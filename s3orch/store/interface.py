"""The metadata store contract: :class:`MetadataStore`, one call = one transaction.

Every engine (SQLite, PostgreSQL; :mod:`s3orch.store.engine`) runs the same
transactions (:mod:`s3orch.store.txn`) through :class:`s3orch.store.sqlstore.SQLStore`
and passes one contract test suite (``tests/store``).  Each method is one
transaction: the quota reservation, the location record, the intent and the
cleanup rows of one step always commit together, so quota is exact and nothing
leaks even if the process dies between two steps.

Time is the caller's: every method that stamps a row takes ``now`` (epoch
seconds from the caller's injected clock); no transaction reads the wall clock,
so a test clock drives the store exactly as it drives everything else.

Quota accounting per backend::

    available = bytes_limit - bytes_used - orphan_bytes - reserved_bytes
    (bytes_limit == 0 means unlimited)

* ``reserved_bytes``: bytes of writes in flight: pending intents, and the parts
  (and part uploads in flight) of open multipart uploads, each on the backend it
  was placed on.  Reserved before the backend call, so concurrent writers never
  push a backend past its limit.
* ``bytes_used``: bytes of committed object copies (one per extent and backend).
* ``orphan_bytes``: bytes of backend objects no longer referenced but not yet
  deleted (rows in ``cleanup_queue`` / ``cleanup_dlq``).

The values (:mod:`s3orch.store.records`) and exceptions (:mod:`s3orch.store.errors`)
of the contract are importable from here too, as callers have always imported them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from s3orch.s3.conditions import UNCONDITIONAL, WriteConditions
from s3orch.store.errors import (
    IntentNotFound,
    PartMismatch,
    PreconditionConflict,
    StoreError,
    StoreUnavailable,
    UploadLimitReached,
    UploadNotFound,
)
from s3orch.store.interface_crypto import CryptoStore
from s3orch.store.interface_drains import DrainStore
from s3orch.store.interface_integrity import IntegrityStore
from s3orch.store.interface_rebalance import RebalanceStore
from s3orch.store.interface_reconcile import ReconcileStore
from s3orch.store.interface_replicas import ReplicaStore
from s3orch.store.interface_tags import TagStore
from s3orch.store.interface_usage import UsageStore
from s3orch.store.records import (
    INTENT_ALREADY_RESOLVED,
    INTENT_AMBIGUOUS,
    INTENT_DROP,
    INTENT_DROPPED,
    INTENT_KEEP,
    INTENT_PROMOTE,
    INTENT_PROMOTED,
    INTENT_SUPERSEDED,
    ORIGIN_CLIENT,
    ORIGIN_COPY,
    UPLOAD_ABORTED,
    UPLOAD_ABORTING,
    UPLOAD_COMPLETED,
    UPLOAD_COMPLETING,
    UPLOAD_CREATING,
    UPLOAD_OPEN,
    CleanupItem,
    CompleteOutcome,
    DeadCleanup,
    DrainState,
    ExcessCopies,
    ExpiredObject,
    Extent,
    Intent,
    IntentResolution,
    ListEntry,
    ListPage,
    Location,
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

__all__ = [
    "CleanupItem",
    "CompleteOutcome",
    "DeadCleanup",
    "DrainState",
    "ExcessCopies",
    "ExpiredObject",
    "Extent",
    "INTENT_ALREADY_RESOLVED",
    "INTENT_AMBIGUOUS",
    "INTENT_DROP",
    "INTENT_DROPPED",
    "INTENT_KEEP",
    "INTENT_PROMOTE",
    "INTENT_PROMOTED",
    "INTENT_SUPERSEDED",
    "Intent",
    "IntentNotFound",
    "IntentResolution",
    "ListEntry",
    "ListPage",
    "Location",
    "MetadataStore",
    "MultipartUpload",
    "ORIGIN_CLIENT",
    "ORIGIN_COPY",
    "ObjectRecord",
    "OutboxEntry",
    "OutboxEvent",
    "PartCommit",
    "PartMismatch",
    "PartReservation",
    "PendingIntent",
    "PreconditionConflict",
    "QueuedCleanup",
    "QuotaRow",
    "ReplicaOutcome",
    "ReplicaReservation",
    "Reservation",
    "StoreError",
    "StoreUnavailable",
    "UPLOAD_ABORTED",
    "UPLOAD_ABORTING",
    "UPLOAD_COMPLETED",
    "UPLOAD_COMPLETING",
    "UPLOAD_CREATING",
    "UPLOAD_OPEN",
    "UnderReplicated",
    "UploadLimitReached",
    "UploadListPage",
    "UploadNotFound",
    "UploadedPart",
]


class MetadataStore(
    DrainStore, ReplicaStore, TagStore, IntegrityStore, RebalanceStore, ReconcileStore, UsageStore, CryptoStore,
    Protocol,
):
    """What the core needs from the metadata database (one call = one transaction)."""

    async def start(self) -> None:
        """Open pools and apply migrations."""

    async def close(self) -> None:
        """Close pools."""

    async def ping(self) -> None:
        """Raise if the database cannot answer."""

    async def sync_quota_limits(self, limits: dict[str, int], now: float) -> None:
        """Create missing ``backend_quotas`` rows and set ``bytes_limit`` from config."""

    async def get_quotas(self) -> dict[str, QuotaRow]:
        """Every backend's quota row."""

    async def reserve(
        self,
        intent: Intent,
        candidates: Sequence[str],
        strategy: str,
        now: float,
    ) -> Reservation | None:
        """Pick a backend among ``candidates`` and reserve ``intent.size`` bytes on it.

        ``candidates`` are already filtered by health and per-backend object size,
        in config order.  ``strategy`` is ``pack`` (first with room) or ``spread``
        (lowest ``(bytes_used + orphan_bytes + reserved_bytes) / bytes_limit``;
        unlimited backends count as 0).  Inserts a ``pending_objects`` row.
        Returns None when no candidate has room.
        """

    async def release(self, write_id: str, now: float) -> None:
        """Drop an intent and its reservation (the backend write failed or was undone)."""

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
        """Make ``record`` the current version of its key, in one transaction (with the held
        ``companions`` of a fan-out write, :meth:`reserve_copy`, as further copies).  ``events`` (webhook deliveries, :meth:`enqueue_events`) are written in the same
        transaction when, and only when, the write becomes current (not on a retry
        that finds it committed, nor when a condition fails).

        Deletes the intent, moves the reservation into ``bytes_used`` of the
        reservation's backend (stored size = ``reservation.size``), removes the
        previous version's locations (their bytes move from ``bytes_used`` to
        ``orphan_bytes``) and enqueues them in ``cleanup_queue`` with reason
        ``overwrite_displaced``.  Returns those cleanup items for an immediate
        delete attempt.  ``conditions`` are checked against the key's current
        object under the key's lock: PreconditionConflict when they fail, and
        nothing is changed (the intent stays; the caller deletes the uploaded bytes
        and calls release()).

        Idempotent: when the key's current version already has ``record.write_id``
        (a retried call) it returns [] and changes nothing.  Otherwise, without the
        intent row it raises IntentNotFound; the key is left as it was.

        The key's other pending intents are marked superseded: should their own
        commits fail, the pending reaper drops them instead of promoting them over
        this version (their commits, if they succeed, still make them current).
        """

    async def get_object(self, bucket: str, key: str) -> ObjectRecord | None:
        """The current version of a key with its copies (and extents), or None."""

    async def objects_since(
        self, since: float, limit: int, known: Collection[tuple[str, str, str]] = ()
    ) -> tuple[list[ObjectRecord], list[tuple[str, str, str, float]]]:
        """Up to ``limit`` objects with ``last_modified >= since``, oldest first: the records of
        those whose (bucket, key, write id) is not in ``known``, and every row seen as (bucket,
        key, write id, last_modified) (the location journal's refresh, :mod:`s3orch.core.journal`)."""

    async def keys_after(self, bucket: str, key: str, limit: int) -> list[tuple[str, str, str]]:
        """Up to ``limit`` (bucket, key, write id) after ``(bucket, key)`` in key order (the
        journal's sweep, which finds keys deleted by other instances)."""

    async def objects_of(self, keys: Sequence[tuple[str, str]]) -> list[ObjectRecord]:
        """The current records of ``keys``, those that exist (the journal's sweep)."""

    async def delete_object(
        self, bucket: str, key: str, now: float, *, events: Sequence[OutboxEvent] = ()
    ) -> list[CleanupItem]:
        """Remove a key (and write ``events`` with it, only when the key existed); its copies' bytes move to orphan_bytes and into cleanup_queue
        (reason ``delete``).  Returns the cleanup items; [] when the key is absent.
        Present or not, the key's pending intents are marked superseded (a write whose
        commit failed never reappears after a later delete)."""

    async def delete_object_if(
        self, bucket: str, key: str, write_id: str, now: float, *, events: Sequence[OutboxEvent] = ()
    ) -> list[CleanupItem] | None:
        """:meth:`delete_object`, but only while ``write_id`` is the key's current version:
        None (nothing changed, no events) when the key is gone or was overwritten since.
        The key's pending intents are left alone (they are newer writes)."""

    async def expired_objects(
        self, prefix: str, created_before: float, after: tuple[str, str] | None, limit: int
    ) -> list[ExpiredObject]:
        """Up to ``limit`` keys whose internal key ``{bucket}/{key}`` starts with ``prefix`` and
        whose current version was committed before ``created_before``, in (bucket, key) order
        after ``after`` (see :mod:`s3orch.store.txn.expiry`)."""

    async def list_objects(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        start_after: str,
        max_keys: int,
    ) -> ListPage:
        """Keys of ``bucket`` > ``start_after`` beginning with ``prefix``, in UTF-8 byte order.

        With a delimiter, keys sharing ``prefix + X + delimiter`` collapse into one
        common prefix (each counts once toward ``max_keys``); ``start_after`` may be a
        common prefix, in which case every key under it is skipped.
        """

    async def cleanup_done(self, ids: Sequence[int], now: float) -> None:
        """The backend deletes succeeded (or found nothing): drop rows, release orphan bytes."""

    async def cleanup_failed(
        self, item_id: int, error: str, now: float, *, exhausted_events: Sequence[OutboxEvent] = ()
    ) -> bool:
        """Count a failed attempt and schedule the retry with backoff; after the last
        attempt the row moves to the dead-letter table, with ``exhausted_events``, and the
        answer is True."""

    async def due_cleanups(self, now: float, limit: int) -> list[CleanupItem]:
        """Cleanup rows whose retry time has come, claimed or not (a read-only view)."""

    async def claim_cleanups(
        self, now: float, limit: int, owner: str, grace: float
    ) -> list[CleanupItem]:
        """Take up to ``limit`` due cleanup rows for ``owner`` so no other instance works on them.

        A row is claimable when its retry time has come and it is unclaimed, or its
        claim is at least ``grace`` seconds old (the claimer died).  The claim ends
        with ``cleanup_done`` (row gone) or ``cleanup_failed`` (claim cleared, retried
        after the backoff).  Oldest retry time first, like ``due_cleanups``.
        """

    async def object_counts(self) -> dict[str, int]:
        """Committed copies per backend."""

    async def cleanup_queue_page(self, limit: int) -> tuple[int, list[QueuedCleanup]]:
        """(rows in the cleanup queue, the first ``limit`` by retry time): for operators."""

    async def cleanup_dlq_page(self, backend: str | None, limit: int) -> tuple[int, int, list[DeadCleanup]]:
        """(rows, bytes, the first ``limit`` rows by id) of the dead-letter table, of one
        backend or (None) all."""

    async def requeue_dlq(
        self, ids: Sequence[int] | None, backend: str | None, limit: int, now: float
    ) -> list[int]:
        """Move up to ``limit`` dead-letter rows (those of ``ids`` if given, of ``backend`` if
        given, lowest id first) back to the cleanup queue, due at ``now`` with no attempts;
        their bytes stay orphaned.  A row whose backend object is already queued is dropped
        and its bytes released (they were counted twice).  Returns the dead-letter ids moved.
        """

    async def write_off_dlq(
        self, ids: Sequence[int] | None, backend: str | None, limit: int, now: float
    ) -> tuple[int, int]:
        """Forget up to ``limit`` dead-letter rows (the operator deleted the backend objects
        by hand, or accepts the leak) and release their ``orphan_bytes``; (rows, bytes)."""


    # -- pending intents (the pending reaper) -----------------------------------------

    async def stale_intents(
        self, now: float, min_age: float, limit: int, owner: str = "", grace: float = 300.0
    ) -> list[PendingIntent]:
        """Claim up to ``limit`` intents created at least ``min_age`` seconds ago for ``owner``.

        Claimed like cleanup rows (:meth:`claim_cleanups`): an intent is claimable
        when unclaimed, or its claim is at least ``grace`` seconds old (the claimer
        died), so two instances never work on the same intent at once.  Intents never
        tried come first (oldest first), then the least recently tried ones.  The
        claim ends with :meth:`resolve_intent`.
        """

    async def resolve_intent(
        self, write_id: str, outcome: str, now: float, *, events: Sequence[OutboxEvent] = ()
    ) -> IntentResolution:
        """Resolve a claimed intent in one transaction; idempotent.  ``events`` are
        written only when the write is promoted.

        * :data:`INTENT_PROMOTE` (the backend holds the bytes): the same effect as
          ``commit_object`` for the write, with the object row the intent recorded
          and the intent's conditions; the previous version's copies are queued for
          cleanup (``overwrite_displaced``) and returned.  When a later commit or
          delete of the key superseded the write, it is dropped instead
          (:data:`INTENT_SUPERSEDED`); when its condition fails or it recorded no
          object row, it is dropped (:data:`INTENT_DROPPED`, with ``reason``).
        * :data:`INTENT_DROP`: the reservation is released and the write's backend
          object queued for cleanup (reason ``pending_dropped``) in case it exists.
        * :data:`INTENT_KEEP`: the claim is given back; the intent is tried again
          later (:data:`INTENT_AMBIGUOUS`).

        Without the intent (committed meanwhile, or resolved by another instance)
        nothing changes: :data:`INTENT_ALREADY_RESOLVED`.
        """

    async def count_intents(self) -> int:
        """Pending intents (writes in flight plus those waiting for the reaper)."""

    # -- multipart uploads ------------------------------------------------------------

    async def create_multipart_upload(
        self, upload: MultipartUpload, max_uploads: int, now: float
    ) -> MultipartUpload:
        """Record a new ``open`` upload (its ``backend``/``storage_key`` are ignored).

        Nothing is placed or reserved: each part is, as it arrives.  Raises
        UploadLimitReached when ``max_uploads`` > 0 and the bucket already has that
        many client uploads not completed or aborted (copy uploads do not count).
        A retried call returns the upload as recorded.
        """

    async def get_multipart_upload(
        self, bucket: str, key: str, upload_id: str
    ) -> MultipartUpload | None:
        """The upload, in any state, only if it belongs to ``bucket``/``key``."""

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
        """Place one part upload: choose a backend among ``candidates`` as :meth:`reserve`
        does and reserve ``size`` bytes there, recording the attempt (its backend and
        ``storage_key``) in the same transaction.

        Raises UploadNotFound unless the upload belongs to ``bucket``/``key`` and is
        ``open`` (and not a native upload of an older build).  Returns None (nothing
        changed) when no candidate has room.  The bytes of a part being replaced stay
        reserved until its replacement commits: both exist on backends in between.
        A retried call (same ``attempt_id``) returns the first reservation.
        """

    async def release_part(self, attempt_id: str, now: float) -> list[CleanupItem]:
        """Drop a part attempt (its backend call failed): its reservation becomes orphaned
        bytes and its storage key is queued for deletion (the bytes may have landed)."""

    async def commit_part(self, attempt_id: str, part: UploadedPart, now: float) -> PartCommit:
        """Record an uploaded part (``part.backend``/``storage_key``: the attempt's).

        The attempt's reservation becomes the part's (adjusted to ``part.size``).  A
        part already recorded under that number is replaced: its reservation moves to
        ``orphan_bytes`` and its backend object is queued for cleanup (``part_replaced``)
        and returned, so whichever upload of a part number commits last wins.  When
        the upload is no longer ``open`` or the attempt is gone (Complete or Abort took
        it), nothing is recorded and the part's backend object is queued for cleanup
        (``part_orphaned``) instead: ``committed`` is False.
        """

    async def list_parts(
        self, upload_id: str, part_number_marker: int = 0, max_parts: int = 10000
    ) -> tuple[list[UploadedPart], bool]:
        """Parts numbered above the marker, ascending, and whether more follow."""

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
        """Make the listed ``(part number, etag)`` parts the key's current version
        (with ``events``, unless the upload was already completed).

        One transaction, no backend call: each listed part becomes an extent of
        ``record`` (whose ``write_id`` must be the upload id; its ``locations`` and
        ``parts`` are ignored) at its own backend object, in part order; its
        reservation becomes ``bytes_used`` where it lives.  The previous version's
        copies are queued for cleanup (``displaced``), the parts not listed too
        (``discarded``, reason ``part_discarded``), and part uploads still in flight
        (``part_in_flight``, first tried after a grace, as they may still land); the
        upload becomes ``completed`` with ``record.etag``.

        Raises UploadNotFound unless the upload belongs to ``bucket``/``key`` and is
        ``open`` or ``completed``; PartMismatch when a listed part is missing or has
        another ETag; PreconditionConflict when ``conditions`` fail.  Each leaves
        everything as it was.  On a ``completed`` upload it changes nothing and
        answers ``already_completed``.
        """

    async def begin_abort(
        self, bucket: str, key: str, upload_id: str, now: float, *, stale: bool = False
    ) -> MultipartUpload:
        """Move an upload to ``aborting`` (refusing further parts).

        Allowed from ``open`` and ``aborting`` (a retried abort), and from the native
        states ``creating``/``completing`` of older builds.  Raises UploadNotFound
        otherwise, or unless it belongs to ``bucket``/``key``.  Returns the upload as
        it was.  ``stale`` is accepted for the stale-upload cleanup (same rules).
        """

    async def finish_abort(self, upload_id: str, now: float) -> list[CleanupItem]:
        """Release every reservation of an ``aborting`` upload and make it ``aborted``.

        Every part's backend object is queued for cleanup (``abort_part_cleanup``) and
        returned for an immediate delete; part uploads in flight are queued too, first
        tried after a grace.  (A native upload whose backend Complete had been sent may
        have an assembled object at its storage key: it is queued and returned too.)
        A repeat does nothing and returns [].
        """

    async def list_multipart_uploads(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        key_marker: str,
        upload_id_marker: str,
        max_uploads: int,
    ) -> UploadListPage:
        """Open client uploads of ``bucket`` in (key, upload id) order after the markers.

        ``upload_id_marker`` applies only together with ``key_marker``: uploads of
        that key with a greater id follow; without it, keys > ``key_marker``.
        Delimiter grouping is as in :meth:`list_objects`.
        """

    async def stale_multipart_uploads(
        self, created_before: float, busy_before: float, limit: int
    ) -> list[MultipartUpload]:
        """Uploads to abort: ``creating``/``open`` created before ``created_before``,
        ``completing``/``aborting`` not touched since ``busy_before``."""

    async def purge_multipart_uploads(self, before: float) -> int:
        """Delete ``completed``/``aborted`` tombstones last updated before ``before``."""

    async def active_multipart_counts(self) -> dict[str, int]:
        """Uploads not completed or aborted, per backend holding at least one of their
        parts or part uploads in flight (an upload counts on each such backend)."""

    # -- the notification outbox ------------------------------------------------------

    async def enqueue_events(self, events: Sequence[OutboxEvent], now: float) -> None:
        """Write webhook deliveries in a transaction of their own (events not caused by
        another transaction: a service starting, a capacity warning), due at once."""

    async def due_events(self, now: float, limit: int) -> list[OutboxEntry]:
        """Deliveries whose next attempt has come, oldest first (the notifier works them
        under its worker lock)."""

    async def events_done(self, ids: Sequence[int]) -> None:
        """Delivered or dropped: remove the rows (missing ids are ignored)."""

    async def event_failed(self, entry_id: int, error: str, next_attempt: float) -> int:
        """Count a failed attempt, retry at ``next_attempt``; the attempts so far (0 when
        the row is gone)."""

    async def count_events(self) -> int:
        """Deliveries waiting."""
