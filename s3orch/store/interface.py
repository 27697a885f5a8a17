"""The metadata store contract.

Every engine (SQLite, PostgreSQL) implements :class:`MetadataStore` and passes
one contract test suite; both run the same transactions (:mod:`s3orch.store.txn`)
through :class:`s3orch.store.sqlstore.SQLStore`.  Each method is one transaction: the
quota reservation, the location record, the intent and the cleanup rows of
one step always commit together, so quota is exact and nothing leaks even if
the process dies between two steps.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from s3orch.s3.conditions import UNCONDITIONAL, WriteConditions


@dataclass(frozen=True)
class Location:
    """One stored copy of an extent (of a whole single-extent object) on one backend."""

    backend: str
    storage_key: str
    size: int  # bytes stored on the backend (== the extent's size without encryption)


@dataclass(frozen=True)
class Extent:
    """A run of an object's bytes stored as one backend object per copy.

    A PUT or a copy makes one extent, part 0, holding the whole object.  A
    completed multipart upload is one extent per part, numbered as the part was
    (ascending, possibly with gaps), each placed on its own backend.
    """

    part_number: int  # 0: the whole object; N: part N of a multipart object
    offset: int  # the first byte of the object it holds
    size: int
    locations: tuple[Location, ...]  # its copies, in read-preference order
    etag: str | None = None  # MD5 hex of the part's bytes (parts of multipart objects)
    checksum_value: str | None = None  # the part's checksum in the object's algorithm


@dataclass(frozen=True)
class ObjectRecord:
    """The client-visible identity of an object plus where its copies live.

    A single-extent object (every PUT and copy of one, and native multipart
    objects of older builds) keeps its copies in ``locations`` and has no
    ``parts``.  A multi-extent object (a completed multipart upload) has its
    extents, in order, in ``parts`` and no ``locations``.  :attr:`extents` is the
    one view readers need for both.
    """

    bucket: str
    key: str
    write_id: str
    size: int
    etag: str  # without quotes: md5 hex, or "<hex>-N" for multipart
    last_modified: float  # epoch seconds
    content_type: str = "application/octet-stream"
    #: Stored system headers by lower-case name: content-encoding, content-disposition,
    #: content-language, cache-control, expires.
    headers: dict[str, str] = field(default_factory=dict)
    #: User metadata, names lower-case *without* the ``x-amz-meta-`` prefix.
    user_metadata: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str | None = None  # e.g. "CRC32", "SHA256"
    checksum_value: str | None = None  # base64, as the client sent it
    parts_count: int | None = None
    #: Sizes of the parts, in order, for multipart objects (GET ?partNumber=N).
    part_sizes: tuple[int, ...] | None = None
    content_hash: str | None = None  # sha256 hex of the plaintext
    locations: tuple[Location, ...] = ()
    #: The extents of a multi-extent object, by part number (empty otherwise).
    parts: tuple[Extent, ...] = ()

    @property
    def extents(self) -> tuple[Extent, ...]:
        """The object's extents in order: its parts, or one extent with ``locations``."""
        if self.parts:
            return self.parts
        return (Extent(0, 0, self.size, self.locations),)


@dataclass(frozen=True)
class ListEntry:
    key: str
    size: int
    etag: str
    last_modified: float


@dataclass(frozen=True)
class ListPage:
    entries: tuple[ListEntry, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    #: The last key or common prefix returned (the next page starts after it);
    #: None unless ``is_truncated``.
    next_marker: str | None


@dataclass(frozen=True)
class QuotaRow:
    backend: str
    bytes_limit: int
    bytes_used: int
    orphan_bytes: int
    reserved_bytes: int
    object_count: int

    @property
    def available(self) -> int | None:
        """Free bytes, or None when the backend is unlimited."""
        if self.bytes_limit == 0:
            return None
        return self.bytes_limit - self.bytes_used - self.orphan_bytes - self.reserved_bytes


@dataclass(frozen=True)
class Intent:
    """A write about to be sent to a backend (PUT-before-COMMIT).

    The fields after ``storage_key`` describe the object row the write's commit
    will record.  They are kept with the intent so that, when the commit fails
    after the bytes were stored, the pending reaper can finish the write exactly
    as the commit would have (see :meth:`MetadataStore.resolve_intent`).  An
    intent without an ``etag`` cannot be finished that way: the reaper drops it.
    The object's size is ``size`` (what is stored equals what the client sent).
    """

    write_id: str
    bucket: str
    key: str
    size: int  # bytes to reserve (what will be stored on the backend)
    storage_key: str  # the backend object key for this write (the same on any backend)
    etag: str | None = None  # as in ObjectRecord; None: unknown, the write cannot be promoted
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    user_metadata: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str | None = None
    checksum_value: str | None = None
    content_hash: str | None = None
    parts_count: int | None = None
    part_sizes: tuple[int, ...] | None = None
    #: The write's conditions (as given to ``commit_object``), re-checked on promotion.
    conditions: WriteConditions = UNCONDITIONAL


@dataclass(frozen=True)
class PendingIntent:
    """A pending intent as the reaper sees it (claimed by :meth:`MetadataStore.stale_intents`)."""

    write_id: str
    bucket: str
    key: str
    backend: str
    storage_key: str
    size: int
    created_at: float
    #: A later commit or delete of the key made this write obsolete: it can only be dropped.
    superseded: bool = False
    #: The intent records the object row (an ETag): it can be promoted.
    promotable: bool = True


#: What the reaper asks :meth:`MetadataStore.resolve_intent` to do with an intent.
INTENT_PROMOTE = "promote"  # the backend holds the bytes: commit the write
INTENT_DROP = "drop"  # the bytes are absent (or unusable): give the write up
INTENT_KEEP = "keep"  # the backend could not say: try again later

#: What :meth:`MetadataStore.resolve_intent` did.
INTENT_PROMOTED = "promoted"
INTENT_DROPPED = "dropped"
INTENT_SUPERSEDED = "superseded"  # dropped because a newer write (or delete) of the key exists
INTENT_AMBIGUOUS = "ambiguous"  # kept for another try
INTENT_ALREADY_RESOLVED = "already_resolved"  # no such intent (committed, or resolved elsewhere)


@dataclass(frozen=True)
class IntentResolution:
    """The outcome of :meth:`MetadataStore.resolve_intent`.

    ``cleanup``: backend objects queued for deletion by it, for an immediate
    delete attempt: the displaced copies of the previous version (promoted), or
    the write's own upload (dropped, superseded).
    """

    status: str
    cleanup: list[CleanupItem] = field(default_factory=list)
    #: Why a promotion became a drop (superseded, a failed condition, no metadata).
    reason: str = ""


@dataclass(frozen=True)
class Reservation:
    write_id: str
    backend: str
    storage_key: str
    size: int


@dataclass(frozen=True)
class CleanupItem:
    id: int
    backend: str
    storage_key: str
    size: int
    reason: str
    attempts: int = 0


class StoreError(Exception):
    """The database cannot be used as configured (wrong path, server, version or schema).

    Its message is written for the operator; a gateway that meets one at start-up
    refuses to start.
    """


class StoreUnavailable(Exception):
    """The database did not answer (down, restarting, connection lost, locked or out of
    disk) after the engine's own retries; the work may be tried again later.

    The front door answers 503 ServiceUnavailable with ``Retry-After``, never 500.
    Every engine raises this, and only this, for such failures (the driver's
    exception is its ``__cause__``).
    """


class PreconditionConflict(Exception):
    """A conditional commit found the key's current object failing its conditions.

    ``violation`` is what :meth:`WriteConditions.violation` said (the failed header, or
    :data:`~s3orch.s3.conditions.KEY_MISSING`); nothing was changed.
    """

    def __init__(self, message: str, violation: str) -> None:
        super().__init__(message)
        self.violation = violation


class IntentNotFound(Exception):
    """``commit_object`` found no pending intent for the reservation's write.

    It was released (the write was given up on, or the pending reaper dropped
    it), or the write was committed and has since been overwritten.  Committing
    anyway could bring an old write back over a newer one, so the write fails.
    Its uploaded copy is queued for cleanup (reason ``intent_missing``) in the
    same transaction and carried here for an immediate delete attempt.
    """

    def __init__(self, write_id: str, cleanup: CleanupItem | None = None) -> None:
        super().__init__(write_id)
        self.write_id = write_id
        self.cleanup = cleanup


#: Multipart upload states (see sql/sqlite/0004_extents.sql for the life cycle).  An
#: upload of this version is open, then completed, or aborting then aborted; creating and
#: completing only describe native uploads of older builds.
UPLOAD_CREATING = "creating"
UPLOAD_OPEN = "open"
UPLOAD_COMPLETING = "completing"
UPLOAD_COMPLETED = "completed"
UPLOAD_ABORTING = "aborting"
UPLOAD_ABORTED = "aborted"

#: Who started an upload: a client, or a CopyObject of a multi-extent object.
ORIGIN_CLIENT = "client"
ORIGIN_COPY = "copy"


@dataclass(frozen=True)
class MultipartUpload:
    """A multipart upload as the store keeps it.

    ``upload_id`` is ours and doubles as the write id of the object the upload
    becomes.  Its parts are placed one by one (each :class:`UploadedPart` names its
    backend and storage key).  ``backend``, ``storage_key`` and ``backend_upload_id``
    are set only on the native uploads of older builds, whose parts lived inside one
    backend upload: those can only be aborted.
    """

    upload_id: str
    bucket: str
    key: str
    initiated: float  # created_at, epoch seconds
    state: str = UPLOAD_OPEN
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    user_metadata: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str | None = None  # upper-case (CRC32 ...)
    checksum_type: str | None = None  # COMPOSITE or FULL_OBJECT, with an algorithm
    origin: str = ORIGIN_CLIENT
    updated_at: float = 0.0
    etag: str | None = None  # the object's ETag once completed
    backend: str | None = None
    storage_key: str | None = None
    backend_upload_id: str | None = None
    #: Part numbers a native Complete sent to the backend (state completing, older builds).
    complete_parts: tuple[int, ...] | None = None

    @property
    def native(self) -> bool:
        """A backend-native upload of an older build (abort only)."""
        return self.backend is not None


@dataclass(frozen=True)
class UploadedPart:
    """One part: ``etag`` is the MD5 of its bytes, stored at ``storage_key`` on ``backend``.

    ``backend``/``storage_key`` are None only for the parts of native uploads of older
    builds (then inside the upload's backend upload, with the backend's ``backend_etag``).
    """

    part_number: int
    etag: str
    size: int
    last_modified: float
    backend: str | None = None
    storage_key: str | None = None
    checksum_algorithm: str | None = None
    checksum_value: str | None = None
    backend_etag: str | None = None


@dataclass(frozen=True)
class PartReservation:
    """Room reserved for one part upload on the backend placement chose."""

    attempt_id: str
    upload_id: str
    backend: str
    storage_key: str
    size: int


@dataclass(frozen=True)
class PartCommit:
    """What :meth:`MetadataStore.commit_part` did.

    ``committed`` False: the upload was completed or aborted meanwhile (or the
    attempt given up); the part's backend object is queued for cleanup instead.
    ``cleanup``: backend objects queued by the call, for an immediate delete: the
    part this one replaced, or the part itself when not committed.
    """

    committed: bool
    cleanup: list[CleanupItem] = field(default_factory=list)


@dataclass(frozen=True)
class UploadListPage:
    """A page of ListMultipartUploads (open uploads only)."""

    uploads: tuple[MultipartUpload, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_key_marker: str | None
    next_upload_id_marker: str | None


class UploadNotFound(Exception):
    """No upload with that id in that bucket and key, or not in a state allowing the call.

    Callers answer exactly what a missing upload answers (404 NoSuchUpload): a
    wrong bucket or key must be indistinguishable from a missing upload.
    """

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id


class UploadLimitReached(Exception):
    """The bucket already has ``max_multipart_uploads`` active uploads."""


class PartMismatch(Exception):
    """``complete_upload``: a listed part is missing or its ETag changed."""


@dataclass(frozen=True)
class CompleteOutcome:
    """What ``complete_upload`` did.

    ``displaced``: the previous version's copies, queued for cleanup
    (``overwrite_displaced``); ``discarded``: the upload's parts not listed, queued
    for cleanup (``part_discarded``).  Both for an immediate delete attempt.
    ``already_completed``: a repeat; nothing changed.
    """

    displaced: list[CleanupItem]
    discarded: list[CleanupItem] = field(default_factory=list)
    already_completed: bool = False


class MetadataStore(Protocol):
    """What the core needs from the metadata database (one call = one transaction)."""

    async def start(self) -> None:
        """Open pools and apply migrations."""

    async def close(self) -> None:
        """Close pools."""

    async def ping(self) -> None:
        """Raise if the database cannot answer."""

    async def sync_quota_limits(self, limits: dict[str, int]) -> None:
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

    async def release(self, write_id: str) -> None:
        """Drop an intent and its reservation (the backend write failed or was undone)."""

    async def commit_object(
        self,
        reservation: Reservation,
        record: ObjectRecord,
        now: float,
        conditions: WriteConditions = UNCONDITIONAL,
    ) -> list[CleanupItem]:
        """Make ``record`` the current version of its key, in one transaction.

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

    async def delete_object(self, bucket: str, key: str, now: float) -> list[CleanupItem]:
        """Remove a key; its copies' bytes move to orphan_bytes and into cleanup_queue
        (reason ``delete``).  Returns the cleanup items; [] when the key is absent.
        Present or not, the key's pending intents are marked superseded (a write whose
        commit failed never reappears after a later delete)."""

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

    async def cleanup_done(self, ids: Sequence[int]) -> None:
        """The backend deletes succeeded (or found nothing): drop rows, release orphan bytes."""

    async def cleanup_failed(self, item_id: int, error: str, now: float) -> None:
        """Count a failed attempt and schedule the retry with backoff."""

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

    async def resolve_intent(self, write_id: str, outcome: str, now: float) -> IntentResolution:
        """Resolve a claimed intent in one transaction; idempotent.

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

    async def release_part(self, attempt_id: str) -> None:
        """Drop a part attempt and its reservation (its backend call failed)."""

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
    ) -> CompleteOutcome:
        """Make the listed ``(part number, etag)`` parts the key's current version.

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
