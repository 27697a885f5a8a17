"""The metadata store contract.

Every engine (SQLite now, PostgreSQL later) implements :class:`MetadataStore`
and passes one contract test suite.  Each method is one transaction: the
quota reservation, the location record, the intent and the cleanup rows of
one step always commit together, so quota is exact and nothing leaks even if
the process dies between two steps.

Quota accounting per backend::

    available = bytes_limit - bytes_used - orphan_bytes - reserved_bytes
    (bytes_limit == 0 means unlimited)

* ``reserved_bytes``: bytes of writes in flight (pending intents; later, open
  multipart parts).  Reserved before the backend call, so concurrent writers
  never push a backend past its limit.
* ``bytes_used``: bytes of committed object copies.
* ``orphan_bytes``: bytes of backend objects no longer referenced but not yet
  deleted (rows in ``cleanup_queue`` / ``cleanup_dlq``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Location:
    """One stored copy of an object on one backend."""

    backend: str
    storage_key: str
    size: int  # bytes stored on the backend (== object size without encryption)


@dataclass(frozen=True)
class ObjectRecord:
    """The client-visible identity of an object plus where its copies live."""

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
    """A write about to be sent to a backend (PUT-before-COMMIT)."""

    write_id: str
    bucket: str
    key: str
    size: int  # bytes to reserve (what will be stored on the backend)
    storage_key: str  # the backend object key for this write (the same on any backend)


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


class PreconditionConflict(Exception):
    """``commit_object(if_none_match=True)`` found the key already present."""


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
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> list[CleanupItem]:
        """Make ``record`` the current version of its key, in one transaction.

        Deletes the intent, moves the reservation into ``bytes_used`` of the
        reservation's backend (stored size = ``reservation.size``), removes the
        previous version's locations (their bytes move from ``bytes_used`` to
        ``orphan_bytes``) and enqueues them in ``cleanup_queue`` with reason
        ``overwrite_displaced``.  Returns those cleanup items for an immediate
        delete attempt.  ``if_none_match`` raises PreconditionConflict when the
        key exists; ``if_match`` raises PreconditionConflict unless the current
        ETag equals it.  On PreconditionConflict nothing is changed (the intent
        stays; the caller deletes the uploaded bytes and calls release()).

        Idempotent: when the key's current version already has ``record.write_id``
        (a retried call) it returns [] and changes nothing.  Otherwise, without the
        intent row it raises IntentNotFound; the key is left as it was.
        """

    async def get_object(self, bucket: str, key: str) -> ObjectRecord | None:
        """The current version of a key with its locations, or None."""

    async def delete_object(self, bucket: str, key: str, now: float) -> list[CleanupItem]:
        """Remove a key; its copies' bytes move to orphan_bytes and into cleanup_queue
        (reason ``delete``).  Returns the cleanup items; [] when the key is absent."""

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
        """Cleanup rows whose retry time has come."""

    async def object_counts(self) -> dict[str, int]:
        """Committed copies per backend."""
