"""The values that cross the metadata store's boundary: records, reservations, outcomes.

Plain frozen dataclasses (a named tuple for listing rows, built a thousand at a time) and
the string constants they carry, so the core, the front door and the workers can hold them
without importing any database code.
:mod:`s3orch.store.interface` says what each store call does with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

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
    #: A part stored compressed (:mod:`s3orch.codec`): its frames' chunk size; ``size`` stays the
    #: client's, the locations' sizes are the stored ones.  None: stored as the client sent it.
    compression_chunk_size: int | None = None


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
    #: Envelope encryption (:mod:`s3orch.crypto`): the stored bytes are ciphertext; ``size``
    #: stays the plaintext size, the locations' sizes are the stored sizes.  Text fields so the
    #: record stays JSON (the location journal): the wrapped DEK in base64, the key id, the
    #: object's random identity (bound into every chunk's authenticated data) in hex.
    encrypted: bool = False
    wrapped_dek: str = ""
    key_id: str = ""
    crypto_id: str = ""
    #: Compression (:mod:`s3orch.codec`): the stored stream is chunked zstd frames of this many
    #: client bytes each (None: stored as the client sent it).  ``size`` stays the client's size.
    #: A multi-extent object has it when any of its extents is compressed; each extent's own
    #: :attr:`Extent.compression_chunk_size` says which.
    compression_chunk_size: int | None = None

    @property
    def compressed(self) -> bool:
        return self.compression_chunk_size is not None

    @property
    def extents(self) -> tuple[Extent, ...]:
        """The object's extents in order: its parts, or one extent with ``locations``."""
        if self.parts:
            return self.parts
        return (Extent(0, 0, self.size, self.locations, compression_chunk_size=self.compression_chunk_size),)


class ListEntry(NamedTuple):
    """One key of a listing page: a named tuple so a page of 1000 is built straight from the
    result rows (``ListEntry._make``: a quarter of a frozen dataclass's construction cost)."""

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
    #: Claimed over a stale claim of an instance presumed dead (claim_cleanups); not part
    #: of the row's identity.
    reclaimed: bool = field(default=False, compare=False)


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
    #: Envelope encryption: the upload's data key (base64, wrapped) and its key id; empty: plaintext.
    wrapped_dek: str = ""
    key_id: str = ""

    @property
    def encrypted(self) -> bool:
        return bool(self.wrapped_dek)

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
    #: A compressed part (:mod:`s3orch.codec.parts`): its frames' chunk size and the client's size
    #: (``size`` is the stored size: quotas count it).  None: stored as sent (or only encrypted).
    compression_chunk_size: int | None = None
    logical_size: int | None = None


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


@dataclass(frozen=True)
class QueuedCleanup:
    """A cleanup_queue row as an operator sees it (the admin API's ``cleanup-queue``)."""

    id: int
    backend: str
    storage_key: str
    reason: str
    size: int
    attempts: int
    next_retry: float
    last_error: str | None
    created_at: float
    claimed_by: str | None


@dataclass(frozen=True)
class DeadCleanup:
    """A cleanup_dlq row: a backend delete that failed :data:`CLEANUP_MAX_ATTEMPTS` times.

    Its bytes still count as ``orphan_bytes`` until it is requeued and succeeds, or an
    operator writes it off.
    """

    id: int
    original_id: int
    backend: str
    storage_key: str
    reason: str
    size: int
    attempts: int
    last_error: str | None
    first_enqueued_at: float
    moved_at: float


@dataclass(frozen=True)
class OutboxEvent:
    """One webhook delivery to record in the notification outbox: an event for one endpoint.

    ``payload`` is the whole request body (the CloudEvents JSON), fixed when the event
    happens, so a retry after a restart sends the same bytes.  ``event_id`` is the
    CloudEvents ``id`` (one per event, shared by its endpoints' rows).
    """

    endpoint: str
    event_id: str
    event_type: str
    subject: str
    payload: str


@dataclass(frozen=True)
class OutboxEntry:
    """A delivery waiting in the outbox; ``attempts`` failed so far."""

    id: int
    endpoint: str
    event_id: str
    event_type: str
    subject: str
    payload: str
    attempts: int
    next_attempt: float
    created_at: float


@dataclass(frozen=True)
class UnderReplicated:
    """One extent of a current object with fewer counted copies than the replication factor.

    ``etag`` is the MD5 hex of the extent's bytes when known (a single-part object's
    ETag, a part's), so a copy read back can be checked before it is written elsewhere;
    ``copies`` are every copy of the extent (uncounted ones included: never a target).
    """

    bucket: str
    key: str
    write_id: str
    part_number: int
    size: int
    etag: str
    copies: tuple[Location, ...]


@dataclass(frozen=True)
class ExcessCopies:
    """One extent of a current object with more copies than the replication factor (the
    over-replication cleaner's work item); ``copies`` are every copy, oldest first."""

    bucket: str
    key: str
    write_id: str
    part_number: int
    size: int
    copies: tuple[Location, ...]


@dataclass(frozen=True)
class ReplicaReservation:
    """Room reserved for one new copy of an extent on ``backend`` at ``storage_key``.

    The bytes are held as a cleanup row (``cleanup_id``, counted in ``orphan_bytes``)
    due only after a long hold, so a copy abandoned by a crash is deleted and its
    bytes freed without anyone's help; recording the replica turns the row into a
    location (orphan -> used) in one transaction.
    """

    backend: str
    storage_key: str
    size: int
    cleanup_id: int


@dataclass(frozen=True)
class ReplicaOutcome:
    """What a replica reservation or record found: ``reason`` is ``ok``, ``stale``
    (the object was overwritten or deleted, or the extent gained a copy there meanwhile),
    ``satisfied`` (enough counted copies already), ``no_target`` (no candidate has
    room) or ``expired`` (the cleanup queue took the copy: it outlived its hold);
    ``cleanup`` is the new copy's cleanup row when it must be deleted now."""

    reason: str
    reservation: ReplicaReservation | None = None
    cleanup: CleanupItem | None = None


@dataclass(frozen=True)
class ExpiredObject:
    """A key whose current version was committed before a lifecycle rule's cutoff.

    ``write_id`` names that version: the expiry deletes the key only while it is still
    current (:meth:`~s3orch.store.interface.MetadataStore.delete_object_if`)."""

    bucket: str
    key: str
    write_id: str
    size: int
    created_at: float
    #: The version's tag set (sorted pairs), for rules that filter on tags.
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DrainState:
    """One backend's drain as persisted (``drain_state``): writes avoid it while the row exists.

    ``state``: ``active`` (copies are being moved), ``completed`` (nothing left on it),
    ``failed`` (a pass could not move everything; the next one retries); ``updated_at``
    is when it started or last finished a pass."""

    backend: str
    state: str
    started_at: float
    updated_at: float
    objects_moved: int
    bytes_moved: int
    error: str | None


@dataclass(frozen=True)
class StoredCopy:
    """One backend object the database references as a copy (``object_locations``): the
    reconciler's database side, read per backend in storage-key (byte) order."""

    storage_key: str
    bucket: str
    key: str
    part_number: int
    write_id: str
    size: int
    created_at: float


@dataclass(frozen=True)
class LostCopy:
    """What forgetting a copy whose backend object is gone did.

    ``outcome``: ``removed`` (the copy is forgotten, other copies remain), ``lost`` (it was
    the last copy of an extent: the object is deleted, its other copies queued), or ``kept``
    (the object changed, the copy is younger than the grace period, or a write of the key is
    in flight: nothing was done)."""

    outcome: str
    size: int = 0
    cleanups: tuple[CleanupItem, ...] = ()


@dataclass(frozen=True)
class ImportCandidate:
    """A backend object to adopt in place as ``bucket``/``key`` (sync/import): the row will
    point at ``storage_key`` as it is, no byte is copied."""

    bucket: str
    key: str
    storage_key: str
    size: int
    etag: str
    last_modified: float


@dataclass(frozen=True)
class ScrubCopy:
    """One stored copy of an extent of a current object, as the integrity scrubber checks it.

    ``expected`` is what the copy's bytes must hash to: ``("sha256", hex)`` for a
    single-extent object whose plaintext SHA-256 is stored, ``("md5", hex)`` for a part of
    a multipart object (or a single-part object without the SHA-256, by its ETag); None when
    nothing is known (a native multipart object of an older build before a backfill).
    """

    bucket: str
    key: str
    write_id: str
    part_number: int
    backend: str
    storage_key: str
    size: int
    last_verified: float | None
    expected: tuple[str, str] | None
    #: The copy is ciphertext: ``expected`` is the plaintext's digest, checked after decrypting.
    encrypted: bool = False
    #: The copy is compressed frames: ``expected`` is the client's digest, checked after decompressing.
    compressed: bool = False
