"""The metadata store's transactions, written once for every SQL engine.

Each ``txn_*`` function is one transaction's logic: a plain synchronous
function of a :class:`Tx` (a cursor speaking the shared SQL) and the
transaction's :class:`Notes`, run in a pool thread by the engine, inside one
transaction that is rolled back on any error and may be run again whole
(SQLite ``database is locked``; PostgreSQL 40001/40P01, dropped connections).
So every function is idempotent under retry: a retried reservation finds its
intent, a retried commit finds its write current, a repeated cleanup_done
finds its rows gone.

What differs between engines inside a transaction lives behind the small
:class:`Dialect`:

* the parameter marker (the SQL here is written with ``?``);
* whether a transaction must lock what it decides on.  SQLite runs every
  write transaction on one connection under ``BEGIN IMMEDIATE``: nobody else
  writes, so there is nothing to lock.  PostgreSQL serves many instances at
  READ COMMITTED, so the same statements carry ``FOR UPDATE`` (``SKIP
  LOCKED`` for queue claims), and the dialect takes transaction-scoped
  advisory locks where there may be no row to lock yet (an object key, a
  bucket's count of uploads).

One lock order keeps deadlocks rare: the object key (advisory), the object
row, the key's pending intents, its locations, then every quota row the
transaction touches, in name order; multipart calls lock the upload row
before anything else of the upload.  Nothing is read in one transaction and
written in another.

The statements use only what both engines have (``ON CONFLICT``,
``RETURNING``, row values, ``IN`` lists); anything odd a transaction notices
(quota that would go negative: a bug signal) is collected in its notes and
logged by the store from the reactor thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, Protocol

from s3orch.s3.conditions import WriteConditions
from s3orch.store.interface import (
    INTENT_ALREADY_RESOLVED,
    INTENT_AMBIGUOUS,
    INTENT_DROP,
    INTENT_DROPPED,
    INTENT_KEEP,
    INTENT_PROMOTE,
    INTENT_PROMOTED,
    INTENT_SUPERSEDED,
    ORIGIN_CLIENT,
    UPLOAD_ABORTED,
    UPLOAD_ABORTING,
    UPLOAD_COMPLETED,
    UPLOAD_COMPLETING,
    UPLOAD_CREATING,
    UPLOAD_OPEN,
    CleanupItem,
    CompleteOutcome,
    Extent,
    Intent,
    IntentResolution,
    ListEntry,
    ListPage,
    Location,
    MultipartUpload,
    ObjectRecord,
    PartCommit,
    PartMismatch,
    PartReservation,
    PendingIntent,
    PreconditionConflict,
    QuotaRow,
    Reservation,
    UploadedPart,
    UploadLimitReached,
    UploadListPage,
    UploadNotFound,
)

#: The caller tries to delete displaced/deleted copies at once; the queue waits this
#: long before its own first attempt, so the two rarely race.
IMMEDIATE_DELETE_GRACE = 60.0
#: A part upload still in flight when its upload completed or was aborted may still
#: land: its cleanup is first tried this long after (should the upload's own request
#: finish later still, it queues the part again; see ``txn_commit_part``).
IN_FLIGHT_GRACE = 3600.0
#: Cleanup backoff: 60 s doubling per failed attempt, at most a day.
CLEANUP_BACKOFF_BASE = 60.0
CLEANUP_BACKOFF_MAX = 86400.0
#: The failure that moves a cleanup row to the dead-letter table.
CLEANUP_MAX_ATTEMPTS = 10
#: Listings with a delimiter fetch this many rows first (a common prefix ends the batch
#: early), doubling while no prefix interrupts; without one, all they need.
LIST_BATCH_MIN = 32
MAX_ERROR_TEXT = 2000

_QUOTA_COLUMNS = ("bytes_used", "orphan_bytes", "reserved_bytes", "object_count")


class RetryTransaction(Exception):
    """A transaction lost a race it can only resolve by running again (a duplicate insert:
    another attempt of the same call committed first); engines retry it like a conflict."""


@dataclass
class Notes:
    """Anomalies one transaction noticed, logged after it finishes (in the reactor thread)."""

    warnings: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def warn(self, fmt: str, **fields: Any) -> None:
        self.warnings.append((fmt, fields))


class Dialect(Protocol):
    """What differs between engines inside a transaction (see the module docstring)."""

    #: The engine's parameter marker for the shared SQL's ``?``.
    placeholder: str
    #: Whether other writers run concurrently, so statements lock what they decide on.
    row_locks: bool

    def lock_key(self, tx: Tx, bucket: str, key: str) -> None:
        """Serialise the writers of one object key until the transaction ends (even
        while the key has no row to lock)."""

    def lock_bucket_uploads(self, tx: Tx, bucket: str) -> None:
        """Serialise the counting of one bucket's active multipart uploads."""


@lru_cache(maxsize=512)
def _translate(sql: str, placeholder: str) -> str:
    return sql.replace("?", placeholder)


class Tx:
    """A DB-API cursor inside one transaction, taking the shared SQL (``?`` markers)."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self.cursor = cursor
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Tx:
        if self.dialect.placeholder != "?":
            sql = _translate(sql, self.dialect.placeholder)
        if params:
            self.cursor.execute(sql, tuple(params))
        else:
            self.cursor.execute(sql)
        return self

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)

    def for_update(self, *, skip_locked: bool = False) -> str:
        """The row-lock clause for a SELECT that decides a write ("" without row locks)."""
        if not self.dialect.row_locks:
            return ""
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"


def marks(count: int) -> str:
    """``?, ?, ...`` for an ``IN`` list of ``count`` values."""
    return ", ".join("?" * count)


# --- pure helpers -----------------------------------------------------------------------


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``.

    None when there is none (empty prefix, or only U+10FFFF characters).  The
    successor of U+D7FF is U+E000: surrogates have no UTF-8 form, so no key holds one.
    """
    chars = prefix
    while chars:
        last = ord(chars[-1])
        chars = chars[:-1]
        if last < 0x10FFFF:
            following = 0xE000 if 0xD7FF <= last < 0xE000 else last + 1
            return chars + chr(following)
    return None


def common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    """The common prefix ``key`` rolls up into, or None when it is listed itself."""
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    if at < 0:
        return None
    return key[: at + len(delimiter)]


def cleanup_backoff(attempts_before: int) -> float:
    """Seconds until the next try after a failure, given the failures before this one."""
    factor: int = 1 << min(max(attempts_before, 0), 32)
    return min(CLEANUP_BACKOFF_BASE * factor, CLEANUP_BACKOFF_MAX)


def check_conditions(
    conditions: WriteConditions, bucket: str, key: str, current: Sequence[Any] | None
) -> None:
    """PreconditionConflict unless ``conditions`` hold for the key's current object
    (``current``: its locked (write_id, etag) row, or None)."""
    violation = conditions.violation(None if current is None else str(current[1]))
    if violation is not None:
        raise PreconditionConflict(f"{bucket}/{key}: {violation}", violation)


def choose_backend(
    names: Sequence[str], rows: dict[str, Sequence[Any]], size: int, strategy: str
) -> str | None:
    """The backend ``strategy`` chooses among ``names`` with room for ``size`` bytes.

    ``pack``: the first (config order) with room; ``spread``: the least utilised
    ((used + orphan + reserved) / limit; unlimited counts as 0), ties in config order.
    ``rows`` are quota rows (name, limit, used, orphan, reserved) by name.
    """
    fitting: list[tuple[Fraction, int, str]] = []
    for index, name in enumerate(names):
        # No row: sync_quota_limits never heard of it, so it has no limit.
        _, limit, used, orphan, reserved = rows.get(name, (name, 0, 0, 0, 0))
        occupied = int(used) + int(orphan) + int(reserved)
        if limit and int(limit) - occupied < size:
            continue
        ratio = Fraction(occupied, int(limit)) if limit else Fraction(0)
        fitting.append((ratio, index, name))
        if strategy == "pack":
            break
    return min(fitting)[2] if fitting else None


@dataclass(frozen=True)
class IntentGone:
    """The commit found no intent; raised as IntentNotFound once the transaction committed."""

    cleanup: CleanupItem | None


# --- quota and cleanup helpers (inside a write transaction) -----------------------------


def lock_quotas(tx: Tx, backends: Iterable[str]) -> None:
    """Lock the existing quota rows of ``backends`` in name order (the one lock order)."""
    names = sorted(set(backends))
    if names and tx.dialect.row_locks:
        tx.execute(
            f"SELECT 1 FROM backend_quotas WHERE backend_name IN ({marks(len(names))})"
            " ORDER BY backend_name FOR UPDATE",
            names,
        )


def adjust_quota(
    tx: Tx,
    notes: Notes,
    backend: str,
    now: float,
    *,
    used: int = 0,
    orphan: int = 0,
    reserved: int = 0,
    count: int = 0,
) -> None:
    """Apply deltas to a backend's counters, clamping at 0 (a negative result is a bug)."""
    select = (
        "SELECT bytes_used, orphan_bytes, reserved_bytes, object_count"
        f" FROM backend_quotas WHERE backend_name = ?{tx.for_update()}"
    )
    row = tx.execute(select, (backend,)).fetchone()
    if row is None:
        tx.execute(
            "INSERT INTO backend_quotas (backend_name, bytes_limit, updated_at) VALUES (?, 0, ?)"
            " ON CONFLICT (backend_name) DO NOTHING",
            (backend, now),
        )
        row = tx.execute(select, (backend,)).fetchone()
    values: list[int] = []
    for column, old, delta in zip(_QUOTA_COLUMNS, row, (used, orphan, reserved, count)):
        new = int(old) + delta
        if new < 0:
            notes.warn(
                "quota counter {column} of backend {backend} would go negative"
                " ({old} + {delta}); clamped to 0",
                column=column,
                backend=backend,
                old=int(old),
                delta=delta,
            )
            new = 0
        values.append(new)
    tx.execute(
        "UPDATE backend_quotas SET bytes_used = ?, orphan_bytes = ?, reserved_bytes = ?,"
        " object_count = ?, updated_at = ? WHERE backend_name = ?",
        (*values, now, backend),
    )


def enqueue_cleanup(
    tx: Tx,
    notes: Notes,
    backend: str,
    storage_key: str,
    size: int,
    reason: str,
    now: float,
    next_retry: float,
) -> CleanupItem:
    """Queue a backend object for deletion and count its bytes as orphaned.

    One row per backend object: queuing an object twice would count its bytes twice.
    """
    inserted = tx.execute(
        "INSERT INTO cleanup_queue (backend_name, storage_key, reason, size_bytes, attempts,"
        " next_retry, created_at) VALUES (?, ?, ?, ?, 0, ?, ?)"
        " ON CONFLICT (backend_name, storage_key) DO NOTHING RETURNING id",
        (backend, storage_key, reason, size, next_retry, now),
    ).fetchone()
    if inserted is None:
        row = tx.execute(
            "SELECT id, size_bytes, reason, attempts FROM cleanup_queue"
            " WHERE backend_name = ? AND storage_key = ?",
            (backend, storage_key),
        ).fetchone()
        notes.warn(
            "backend object {backend}/{storage_key} is already queued for cleanup",
            backend=backend,
            storage_key=storage_key,
        )
        return CleanupItem(int(row[0]), backend, storage_key, int(row[1]), row[2], int(row[3]))
    adjust_quota(tx, notes, backend, now, orphan=size)
    return CleanupItem(int(inserted[0]), backend, storage_key, size, reason, 0)


def queue_backend_object(
    tx: Tx, notes: Notes, backend: str, storage_key: str, size: int, reason: str, now: float
) -> CleanupItem | None:
    """Queue a backend object for deletion unless a committed copy uses it."""
    used = tx.execute(
        "SELECT 1 FROM object_locations WHERE backend_name = ? AND storage_key = ?",
        (backend, storage_key),
    ).fetchone()
    if used is not None:
        return None
    return enqueue_cleanup(
        tx, notes, backend, storage_key, size, reason, now, now + IMMEDIATE_DELETE_GRACE
    )


def orphan_locations(
    tx: Tx,
    notes: Notes,
    bucket: str,
    key: str,
    reason: str,
    now: float,
    keep: tuple[str, str] | None = None,
    also_lock: Sequence[str] = (),
) -> list[CleanupItem]:
    """Drop a key's locations: bytes_used -> orphan_bytes, each copy into cleanup_queue.

    ``keep`` names a backend object that is being re-recorded (its bytes are
    replaced, not orphaned), so it must never be queued for deletion.
    ``also_lock`` are backends the caller adjusts next: every quota row of the
    transaction is locked here, in one ordered pass.  The caller holds the key's
    object row, so its locations cannot change underneath.
    """
    rows = tx.execute(
        "SELECT backend_name, storage_key, size_bytes FROM object_locations"
        f" WHERE bucket = ? AND object_key = ? ORDER BY backend_name{tx.for_update()}",
        (bucket, key),
    ).fetchall()
    lock_quotas(tx, [row[0] for row in rows] + list(also_lock))
    tx.execute("DELETE FROM object_locations WHERE bucket = ? AND object_key = ?", (bucket, key))
    items: list[CleanupItem] = []
    for backend, storage_key, size in rows:
        adjust_quota(tx, notes, backend, now, used=-int(size), count=-1)
        if keep is not None and (backend, storage_key) == keep:
            continue
        items.append(
            enqueue_cleanup(
                tx, notes, backend, storage_key, int(size), reason, now,
                now + IMMEDIATE_DELETE_GRACE,
            )
        )
    return items


def pick_backend(
    tx: Tx, candidates: Sequence[str], strategy: str, size: int, *, lock: bool
) -> str | None:
    """:func:`choose_backend` over the candidates' quota rows; ``lock`` keeps those rows
    locked until commit, so the check and the reservation see the same values."""
    names = list(dict.fromkeys(candidates))
    if not names:
        return None
    rows = tx.execute(
        "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes"
        f" FROM backend_quotas WHERE backend_name IN ({marks(len(names))}) ORDER BY backend_name"
        + (tx.for_update() if lock else ""),
        names,
    ).fetchall()
    return choose_backend(names, {row[0]: row for row in rows}, size, strategy)


# --- objects and quotas -----------------------------------------------------------------


def txn_ping(tx: Tx, notes: Notes) -> None:
    tx.execute("SELECT 1").fetchone()


def txn_sync_quota_limits(tx: Tx, notes: Notes, limits: dict[str, int]) -> None:
    now = time.time()
    for backend, limit in sorted(limits.items()):
        tx.execute(
            "INSERT INTO backend_quotas (backend_name, bytes_limit, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (backend_name) DO UPDATE SET bytes_limit = excluded.bytes_limit,"
            " updated_at = excluded.updated_at",
            (backend, limit, now),
        )


def txn_get_quotas(tx: Tx, notes: Notes) -> dict[str, QuotaRow]:
    rows = tx.execute(
        "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes, object_count"
        " FROM backend_quotas ORDER BY backend_name"
    ).fetchall()
    return {row[0]: QuotaRow(*row) for row in rows}


def txn_object_counts(tx: Tx, notes: Notes) -> dict[str, int]:
    rows = tx.execute(
        "SELECT backend_name, object_count FROM backend_quotas ORDER BY backend_name"
    ).fetchall()
    return {row[0]: int(row[1]) for row in rows}


def txn_reserve(
    tx: Tx,
    notes: Notes,
    intent: Intent,
    candidates: Sequence[str],
    strategy: str,
    now: float,
) -> Reservation | None:
    existing = tx.execute(
        "SELECT backend_name, storage_key, size_bytes FROM pending_objects WHERE write_id = ?",
        (intent.write_id,),
    ).fetchone()
    if existing is not None:  # the same intent again (a retried call): one reservation only
        return Reservation(intent.write_id, existing[0], existing[1], int(existing[2]))
    chosen = pick_backend(tx, candidates, strategy, intent.size, lock=True)
    if chosen is None:
        return None
    adjust_quota(tx, notes, chosen, now, reserved=intent.size)
    tx.execute(
        "INSERT INTO pending_objects (write_id, bucket, object_key, backend_name, storage_key,"
        " size_bytes, created_at, etag, content_type, headers, user_metadata, checksum_algorithm,"
        " checksum_value, content_hash, parts_count, part_sizes, conditions)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (write_id) DO NOTHING",
        (
            intent.write_id,
            intent.bucket,
            intent.key,
            chosen,
            intent.storage_key,
            intent.size,
            now,
            intent.etag,
            intent.content_type,
            json.dumps(intent.headers, sort_keys=True),
            json.dumps(intent.user_metadata, sort_keys=True),
            intent.checksum_algorithm,
            intent.checksum_value,
            intent.content_hash,
            intent.parts_count,
            None if intent.part_sizes is None else json.dumps(list(intent.part_sizes)),
            intent.conditions.to_json(),
        ),
    )
    if tx.rowcount == 0:
        raise RetryTransaction(f"intent {intent.write_id} was reserved concurrently")
    return Reservation(intent.write_id, chosen, intent.storage_key, intent.size)


def txn_release(tx: Tx, notes: Notes, write_id: str) -> None:
    row = tx.execute(
        "DELETE FROM pending_objects WHERE write_id = ? RETURNING backend_name, size_bytes",
        (write_id,),
    ).fetchone()
    if row is None:
        return
    adjust_quota(tx, notes, row[0], time.time(), reserved=-int(row[1]))


def txn_commit_object(
    tx: Tx,
    notes: Notes,
    reservation: Reservation,
    record: ObjectRecord,
    now: float,
    conditions: WriteConditions,
) -> list[CleanupItem] | IntentGone:
    tx.dialect.lock_key(tx, record.bucket, record.key)
    current = tx.execute(
        f"SELECT write_id, etag FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}",
        (record.bucket, record.key),
    ).fetchone()
    if current is not None and current[0] == record.write_id:
        return []  # already committed: a retry of a call whose answer was lost
    pending = tx.execute(
        "SELECT bucket, object_key, backend_name, size_bytes FROM pending_objects"
        f" WHERE write_id = ?{tx.for_update()}",
        (reservation.write_id,),
    ).fetchone()
    if pending is None:
        return IntentGone(
            queue_backend_object(
                tx, notes, reservation.backend, reservation.storage_key, reservation.size,
                "intent_missing", now,
            )
        )
    if (pending[0], pending[1]) != (record.bucket, record.key):
        raise ValueError(
            f"intent {reservation.write_id} is for {pending[0]}/{pending[1]},"
            f" not {record.bucket}/{record.key}"
        )
    check_conditions(conditions, record.bucket, record.key, current)
    supersede_intents(tx, record.bucket, record.key, now, but=reservation.write_id)
    return commit_write(tx, notes, reservation, record, str(pending[2]), int(pending[3]), now)


def supersede_intents(
    tx: Tx,
    bucket: str,
    key: str,
    now: float,
    *,
    but: str | None = None,
    created_before: float | None = None,
) -> None:
    """Mark the key's pending intents (all but ``but``; only those created at or before
    ``created_before`` when given) as made obsolete by the write or delete committing now.

    Their own commits still succeed (a write in flight that commits later is simply
    the newer version), but a write whose commit failed must never be promoted over a
    newer version or back after a delete: the pending reaper drops marked intents.
    Called before any quota row is locked (the one lock order: key, object row,
    intents, quotas).
    """
    sql = (
        "UPDATE pending_objects SET superseded_at = ?"
        " WHERE bucket = ? AND object_key = ? AND superseded_at IS NULL"
    )
    params: list[Any] = [now, bucket, key]
    if but is not None:
        sql += " AND write_id <> ?"
        params.append(but)
    if created_before is not None:
        sql += " AND created_at <= ?"
        params.append(created_before)
    tx.execute(sql, params)


def commit_write(
    tx: Tx,
    notes: Notes,
    reservation: Reservation,
    record: ObjectRecord,
    pending_backend: str,
    pending_size: int,
    now: float,
) -> list[CleanupItem]:
    """Make a reserved write the key's current version (the caller holds the key, its
    object row and the intent): the previous copies are orphaned, the intent and its
    reservation go, the stored bytes count as used."""
    new_copy = (reservation.backend, reservation.storage_key)
    displaced = orphan_locations(
        tx, notes, record.bucket, record.key, "overwrite_displaced", now, keep=new_copy,
        also_lock=(pending_backend, reservation.backend),
    )
    tx.execute("DELETE FROM pending_objects WHERE write_id = ?", (reservation.write_id,))
    adjust_quota(tx, notes, pending_backend, now, reserved=-pending_size)
    adjust_quota(tx, notes, reservation.backend, now, used=reservation.size, count=1)
    write_object_row(
        tx, record, [NewCopy(0, reservation.backend, reservation.storage_key, reservation.size)], now
    )
    return displaced


@dataclass(frozen=True)
class NewCopy:
    """A backend object that becomes a copy of one extent of the object being written."""

    part_number: int
    backend: str
    storage_key: str
    size: int
    etag: str | None = None  # the part's MD5 (multi-extent objects)
    checksum_value: str | None = None


def write_object_row(tx: Tx, record: ObjectRecord, copies: Sequence[NewCopy], now: float) -> None:
    """Make ``record`` the key's row with exactly ``copies`` as its extents' copies (the
    old locations are gone).  Copies of part 0 make a single-extent object; copies of
    parts 1.. make a multi-extent object whose extents are those parts, in order."""
    tx.execute(
        "INSERT INTO objects (bucket, object_key, write_id, size_bytes, etag, content_type,"
        " headers, user_metadata, checksum_algorithm, checksum_value, parts_count, part_sizes,"
        " content_hash, encrypted, wrapped_dek, base_nonce, key_id, plaintext_size,"
        " last_modified, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?, ?)"
        " ON CONFLICT (bucket, object_key) DO UPDATE SET"
        " write_id = excluded.write_id, size_bytes = excluded.size_bytes,"
        " etag = excluded.etag, content_type = excluded.content_type,"
        " headers = excluded.headers, user_metadata = excluded.user_metadata,"
        " checksum_algorithm = excluded.checksum_algorithm,"
        " checksum_value = excluded.checksum_value, parts_count = excluded.parts_count,"
        " part_sizes = excluded.part_sizes, content_hash = excluded.content_hash,"
        " encrypted = excluded.encrypted, wrapped_dek = excluded.wrapped_dek,"
        " base_nonce = excluded.base_nonce, key_id = excluded.key_id,"
        " plaintext_size = excluded.plaintext_size, last_modified = excluded.last_modified,"
        " created_at = excluded.created_at",
        (
            record.bucket,
            record.key,
            record.write_id,
            record.size,
            record.etag,
            record.content_type,
            json.dumps(record.headers, sort_keys=True),
            json.dumps(record.user_metadata, sort_keys=True),
            record.checksum_algorithm,
            record.checksum_value,
            record.parts_count,
            None if record.part_sizes is None else json.dumps(list(record.part_sizes)),
            record.content_hash,
            False,  # encrypted
            record.last_modified,
            now,
        ),
    )
    # A new version starts without the old version's tags (S3 PUT replaces them) and
    # without its extents.
    tx.execute(
        "DELETE FROM object_tags WHERE bucket = ? AND object_key = ?", (record.bucket, record.key)
    )
    tx.execute(
        "DELETE FROM object_parts WHERE bucket = ? AND object_key = ?", (record.bucket, record.key)
    )
    offset = 0
    written: set[int] = set()
    for copy in sorted(copies, key=lambda c: c.part_number):
        if copy.part_number and copy.part_number not in written:
            written.add(copy.part_number)
            tx.execute(
                "INSERT INTO object_parts (bucket, object_key, part_number, write_id, offset_bytes,"
                " size_bytes, etag, checksum_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.bucket,
                    record.key,
                    copy.part_number,
                    record.write_id,
                    offset,
                    copy.size,
                    copy.etag or "",
                    copy.checksum_value,
                ),
            )
            offset += copy.size
        tx.execute(
            "INSERT INTO object_locations (bucket, object_key, part_number, backend_name,"
            " storage_key, write_id, size_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.bucket,
                record.key,
                copy.part_number,
                copy.backend,
                copy.storage_key,
                record.write_id,
                copy.size,
                now,
            ),
        )


def load_extents(
    tx: Tx, bucket: str, key: str
) -> tuple[tuple[Location, ...], tuple[Extent, ...]]:
    """(copies of a single-extent object, extents of a multi-extent object) of a key."""
    copies: dict[int, list[Location]] = {}
    for part_number, backend, storage_key, size in tx.execute(
        "SELECT part_number, backend_name, storage_key, size_bytes FROM object_locations"
        " WHERE bucket = ? AND object_key = ? ORDER BY part_number, created_at, backend_name",
        (bucket, key),
    ).fetchall():
        copies.setdefault(int(part_number), []).append(Location(backend, storage_key, int(size)))
    parts = tuple(
        Extent(
            int(number),
            int(offset),
            int(size),
            tuple(copies.get(int(number), ())),
            etag,
            checksum,
        )
        for number, offset, size, etag, checksum in tx.execute(
            "SELECT part_number, offset_bytes, size_bytes, etag, checksum_value FROM object_parts"
            " WHERE bucket = ? AND object_key = ? ORDER BY part_number",
            (bucket, key),
        ).fetchall()
    )
    return tuple(copies.get(0, ())), parts


def txn_get_object(tx: Tx, notes: Notes, bucket: str, key: str) -> ObjectRecord | None:
    row = tx.execute(
        "SELECT write_id, size_bytes, etag, last_modified, content_type, headers,"
        " user_metadata, checksum_algorithm, checksum_value, parts_count, part_sizes,"
        " content_hash FROM objects WHERE bucket = ? AND object_key = ?",
        (bucket, key),
    ).fetchone()
    if row is None:
        return None
    locations, parts = load_extents(tx, bucket, key)
    return ObjectRecord(
        bucket=bucket,
        key=key,
        write_id=row[0],
        size=int(row[1]),
        etag=row[2],
        last_modified=float(row[3]),
        content_type=row[4],
        headers=json.loads(row[5]),
        user_metadata=json.loads(row[6]),
        checksum_algorithm=row[7],
        checksum_value=row[8],
        parts_count=row[9],
        part_sizes=None if row[10] is None else tuple(json.loads(row[10])),
        content_hash=row[11],
        locations=locations,
        parts=parts,
    )


def txn_delete_object(tx: Tx, notes: Notes, bucket: str, key: str, now: float) -> list[CleanupItem]:
    tx.dialect.lock_key(tx, bucket, key)
    found = tx.execute(
        f"SELECT 1 FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}", (bucket, key)
    ).fetchone()
    # Even when the key is absent: a failed write of it must not reappear after the delete.
    supersede_intents(tx, bucket, key, now)
    if found is None:
        return []
    items = orphan_locations(tx, notes, bucket, key, "delete", now)
    # object_tags go with the row (ON DELETE CASCADE)
    tx.execute("DELETE FROM objects WHERE bucket = ? AND object_key = ?", (bucket, key))
    return items


def txn_list_objects(
    tx: Tx,
    notes: Notes,
    bucket: str,
    prefix: str,
    delimiter: str,
    start_after: str,
    max_keys: int,
) -> ListPage:
    """Range scans over the (bucket, object_key) index, in one read snapshot.

    A common prefix is emitted once and the scan restarts past every key under
    it, so a "directory" of a million keys costs one index seek, not a million
    rows.  Queries ask only for the rows they can still use (drivers may fetch
    a whole result at once).
    """
    upper = prefix_upper_bound(prefix)
    if start_after < prefix:
        lower: str | None = prefix
        inclusive = True
    else:
        lower, inclusive = start_after, False
        if start_after.startswith(prefix) and common_prefix(
            start_after, prefix, delimiter
        ) == start_after:
            lower, inclusive = prefix_upper_bound(start_after), True  # skip its whole group
    if upper is not None and lower is not None and lower >= upper:
        lower = None

    wanted = max_keys + 1  # one more than asked, to know whether the listing is truncated
    items: list[ListEntry | str] = []
    batch = LIST_BATCH_MIN
    while lower is not None and len(items) < wanted:
        limit = wanted - len(items)
        if delimiter:
            limit = min(limit, batch)
        sql = (
            "SELECT object_key, size_bytes, etag, last_modified FROM objects"
            f" WHERE bucket = ? AND object_key {'>=' if inclusive else '>'} ?"
        )
        params: list[Any] = [bucket, lower]
        if upper is not None:
            sql += " AND object_key < ?"
            params.append(upper)
        sql += " ORDER BY object_key LIMIT ?"
        params.append(limit)
        rows = tx.execute(sql, params).fetchall()
        jumped = False
        for key, size, etag, last_modified in rows:
            common = common_prefix(key, prefix, delimiter)
            if common is not None:
                items.append(common)
                lower, inclusive = prefix_upper_bound(common), True
                jumped = True
                break
            items.append(ListEntry(key, int(size), etag, float(last_modified)))
            lower, inclusive = key, False
            if len(items) >= wanted:
                break
        if jumped:
            batch = LIST_BATCH_MIN
            continue
        if len(rows) < limit:
            break  # the range is exhausted
        batch *= 2

    truncated = len(items) > max_keys
    page = items[:max_keys]
    next_marker: str | None = None
    if truncated and page:
        last = page[-1]
        next_marker = last.key if isinstance(last, ListEntry) else last
    return ListPage(
        entries=tuple(item for item in page if isinstance(item, ListEntry)),
        common_prefixes=tuple(item for item in page if isinstance(item, str)),
        is_truncated=truncated,
        next_marker=next_marker,
    )


# --- the cleanup queue ------------------------------------------------------------------


def _cleanup_items(rows: Iterable[Sequence[Any]]) -> list[CleanupItem]:
    return [CleanupItem(int(r[0]), r[1], r[2], int(r[3]), r[4], int(r[5])) for r in rows]


def txn_cleanup_done(tx: Tx, notes: Notes, ids: Sequence[int]) -> None:
    now = time.time()
    wanted = sorted(set(ids))
    if not wanted:
        return
    rows = tx.execute(
        f"SELECT id, backend_name, size_bytes FROM cleanup_queue WHERE id IN ({marks(len(wanted))})"
        f" ORDER BY id{tx.for_update()}",
        wanted,
    ).fetchall()  # ids already gone are skipped: a repeat must not release twice
    if not rows:
        return
    lock_quotas(tx, [row[1] for row in rows])
    tx.execute(
        f"DELETE FROM cleanup_queue WHERE id IN ({marks(len(rows))})", [row[0] for row in rows]
    )
    for _, backend, size in rows:
        adjust_quota(tx, notes, backend, now, orphan=-int(size))


def txn_cleanup_failed(tx: Tx, notes: Notes, item_id: int, error: str, now: float) -> None:
    row = tx.execute(
        "SELECT backend_name, storage_key, reason, size_bytes, attempts, created_at"
        f" FROM cleanup_queue WHERE id = ?{tx.for_update()}",
        (item_id,),
    ).fetchone()
    if row is None:
        return
    backend, storage_key, reason, size, attempts_before, created_at = row
    attempts = int(attempts_before) + 1
    error = error[:MAX_ERROR_TEXT]
    if attempts >= CLEANUP_MAX_ATTEMPTS:
        # Out of the queue, but the bytes stay counted as orphaned: they still exist.
        tx.execute(
            "INSERT INTO cleanup_dlq (original_id, backend_name, storage_key, reason, size_bytes,"
            " attempts, last_error, first_enqueued_at, moved_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item_id, backend, storage_key, reason, size, attempts, error, created_at, now),
        )
        tx.execute("DELETE FROM cleanup_queue WHERE id = ?", (item_id,))
        notes.warn(
            "cleanup of {backend}/{storage_key} failed {attempts} times; moved to the DLQ",
            backend=backend,
            storage_key=storage_key,
            attempts=attempts,
        )
        return
    tx.execute(
        "UPDATE cleanup_queue SET attempts = ?, next_retry = ?, last_error = ?,"
        " claimed_at = NULL, claimed_by = NULL WHERE id = ?",
        (attempts, now + cleanup_backoff(int(attempts_before)), error, item_id),
    )


def txn_due_cleanups(tx: Tx, notes: Notes, now: float, limit: int) -> list[CleanupItem]:
    return _cleanup_items(
        tx.execute(
            "SELECT id, backend_name, storage_key, size_bytes, reason, attempts FROM cleanup_queue"
            " WHERE next_retry <= ? ORDER BY next_retry, id LIMIT ?",
            (now, limit),
        ).fetchall()
    )


def txn_claim_cleanups(
    tx: Tx, notes: Notes, now: float, limit: int, owner: str, grace: float
) -> list[CleanupItem]:
    # SKIP LOCKED: rows another instance is claiming right now are not waited for, and a
    # row it claimed meanwhile fails the re-check of the claim condition under the lock.
    rows = tx.execute(
        "SELECT id, backend_name, storage_key, size_bytes, reason, attempts, claimed_by, claimed_at"
        " FROM cleanup_queue WHERE next_retry <= ? AND (claimed_at IS NULL OR claimed_at <= ?)"
        f" ORDER BY next_retry, id LIMIT ?{tx.for_update(skip_locked=True)}",
        (now, now - grace, limit),
    ).fetchall()
    if rows:
        tx.execute(
            f"UPDATE cleanup_queue SET claimed_at = ?, claimed_by = ? WHERE id IN ({marks(len(rows))})",
            (now, owner, *(row[0] for row in rows)),
        )
    for row in rows:
        if row[7] is not None:  # its claimer never finished: presumed dead
            notes.warn(
                "cleanup of {backend}/{storage_key} claimed by {claimer} {age:.0f}s ago"
                " was never finished; taken over",
                backend=row[1],
                storage_key=row[2],
                claimer=row[6],
                age=now - float(row[7]),
            )
    return _cleanup_items(rows)


# --- pending intents (the pending reaper) ----------------------------------------------

_INTENT_COLUMNS = (
    "write_id, bucket, object_key, backend_name, storage_key, size_bytes, created_at,"
    " superseded_at, etag, content_type, headers, user_metadata, checksum_algorithm,"
    " checksum_value, content_hash, parts_count, part_sizes, conditions, claimed_by, claimed_at"
)


def _pending_intent(row: Sequence[Any]) -> PendingIntent:
    return PendingIntent(
        write_id=row[0],
        bucket=row[1],
        key=row[2],
        backend=row[3],
        storage_key=row[4],
        size=int(row[5]),
        created_at=float(row[6]),
        superseded=row[7] is not None,
        promotable=row[8] is not None,
    )


def _intent_record(row: Sequence[Any], now: float) -> ObjectRecord:
    """The object row the intent's commit would have written (``_INTENT_COLUMNS`` order)."""
    return ObjectRecord(
        bucket=row[1],
        key=row[2],
        write_id=row[0],
        size=int(row[5]),
        etag=row[8],
        last_modified=now,  # the write becomes the current version now
        content_type=row[9] or "application/octet-stream",
        headers=json.loads(row[10] or "{}"),
        user_metadata=json.loads(row[11] or "{}"),
        checksum_algorithm=row[12],
        checksum_value=row[13],
        content_hash=row[14],
        parts_count=row[15],
        part_sizes=None if row[16] is None else tuple(json.loads(row[16])),
    )


def txn_stale_intents(
    tx: Tx, notes: Notes, now: float, min_age: float, limit: int, owner: str, grace: float
) -> list[PendingIntent]:
    # Claimable: old enough, and unclaimed (claimed_by NULL; claimed_at then is the time of
    # the last ambiguous try) or claimed by an instance presumed dead.  SKIP LOCKED as for
    # cleanup claims: rows another instance is claiming now are not waited for.
    rows = tx.execute(
        f"SELECT {_INTENT_COLUMNS} FROM pending_objects"
        " WHERE created_at <= ? AND (claimed_by IS NULL OR claimed_at <= ?)"
        " ORDER BY COALESCE(claimed_at, 0), created_at, write_id"
        f" LIMIT ?{tx.for_update(skip_locked=True)}",
        (now - min_age, now - grace, limit),
    ).fetchall()
    if rows:
        tx.execute(
            f"UPDATE pending_objects SET claimed_at = ?, claimed_by = ?"
            f" WHERE write_id IN ({marks(len(rows))})",
            (now, owner, *(row[0] for row in rows)),
        )
    for row in rows:
        if row[18] is not None:  # its claimer never resolved it: presumed dead
            notes.warn(
                "pending intent {write_id} ({bucket}/{key}) claimed by {claimer} {age:.0f}s ago"
                " was never resolved; taken over",
                write_id=row[0],
                bucket=row[1],
                key=row[2],
                claimer=row[18],
                age=now - float(row[19]),
            )
    return [_pending_intent(row) for row in rows]


def txn_resolve_intent(
    tx: Tx, notes: Notes, write_id: str, outcome: str, now: float
) -> IntentResolution:
    if outcome not in (INTENT_PROMOTE, INTENT_DROP, INTENT_KEEP):
        raise ValueError(f"unknown intent outcome {outcome!r}")
    located = tx.execute(
        "SELECT bucket, object_key FROM pending_objects WHERE write_id = ?", (write_id,)
    ).fetchone()
    if located is None:
        return IntentResolution(INTENT_ALREADY_RESOLVED)
    bucket, key = located[0], located[1]
    # The lock order of a commit: the key, its object row, the intent, then quota rows.
    tx.dialect.lock_key(tx, bucket, key)
    current = tx.execute(
        f"SELECT write_id, etag FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}",
        (bucket, key),
    ).fetchone()
    row = tx.execute(
        f"SELECT {_INTENT_COLUMNS} FROM pending_objects WHERE write_id = ?{tx.for_update()}",
        (write_id,),
    ).fetchone()
    if row is None:
        return IntentResolution(INTENT_ALREADY_RESOLVED)
    if outcome == INTENT_KEEP:
        # Give the claim back; claimed_at stays as the time of this try (tried again
        # after the intents never tried).
        tx.execute(
            "UPDATE pending_objects SET claimed_by = NULL, claimed_at = ? WHERE write_id = ?",
            (now, write_id),
        )
        return IntentResolution(INTENT_AMBIGUOUS)
    intent = _pending_intent(row)
    status, reason = INTENT_DROPPED, ""
    if intent.superseded:
        status, reason = INTENT_SUPERSEDED, "a later write or delete of the key exists"
    elif not intent.promotable:
        reason = "the intent recorded no object metadata"
    elif outcome == INTENT_PROMOTE:
        violation = WriteConditions.from_json(row[17]).violation(
            None if current is None else str(current[1])
        )
        if violation is not None:
            reason = f"its condition failed ({violation})"
        else:
            # Older failed writes of the key must not be promoted over this one later.
            supersede_intents(tx, bucket, key, now, but=write_id, created_before=intent.created_at)
            reservation = Reservation(write_id, intent.backend, intent.storage_key, intent.size)
            displaced = commit_write(
                tx, notes, reservation, _intent_record(row, now), intent.backend, intent.size, now
            )
            return IntentResolution(INTENT_PROMOTED, displaced)
    tx.execute("DELETE FROM pending_objects WHERE write_id = ?", (write_id,))
    lock_quotas(tx, [intent.backend])
    adjust_quota(tx, notes, intent.backend, now, reserved=-intent.size)
    # The bytes may exist (a HEAD that found nothing may have raced the upload's end).
    item = queue_backend_object(
        tx, notes, intent.backend, intent.storage_key, intent.size, "pending_dropped", now
    )
    return IntentResolution(status, [item] if item is not None else [], reason)


def txn_count_intents(tx: Tx, notes: Notes) -> int:
    return int(tx.execute("SELECT COUNT(*) FROM pending_objects").fetchone()[0])


# --- multipart uploads ------------------------------------------------------------------
#
# Every transaction that changes an upload, its parts or its part attempts locks the
# upload row first, then (Complete) the object key and row, then every quota row it
# touches in name order: one lock order, and an upload's reservations can never be
# counted by one transaction and dropped by another.  Each part and attempt holds its
# reservation on its own backend (a native upload of an older build: on the upload's).

UPLOAD_COLUMNS = (
    "upload_id, bucket, object_key, backend_name, backend_upload_id, storage_key,"
    " content_type, headers, user_metadata, checksum_algorithm, checksum_type, origin, state,"
    " complete_parts, etag, created_at, updated_at"
)
#: Upload states that count toward ``max_multipart_uploads``.
ACTIVE_STATES = (UPLOAD_CREATING, UPLOAD_OPEN, UPLOAD_COMPLETING)


def upload_from_row(row: Sequence[Any]) -> MultipartUpload:
    return MultipartUpload(
        upload_id=row[0],
        bucket=row[1],
        key=row[2],
        backend=row[3],
        backend_upload_id=row[4],
        storage_key=row[5],
        content_type=row[6],
        headers=json.loads(row[7]),
        user_metadata=json.loads(row[8]),
        checksum_algorithm=row[9],
        checksum_type=row[10],
        origin=row[11],
        state=row[12],
        complete_parts=None if row[13] is None else tuple(json.loads(row[13])),
        etag=row[14],
        initiated=float(row[15]),
        updated_at=float(row[16]),
    )


def load_upload(tx: Tx, upload_id: str, lock: bool = False) -> MultipartUpload | None:
    row = tx.execute(
        f"SELECT {UPLOAD_COLUMNS} FROM multipart_uploads WHERE upload_id = ?"
        + (tx.for_update() if lock else ""),
        (upload_id,),
    ).fetchone()
    return None if row is None else upload_from_row(row)


def owned_upload(
    tx: Tx, bucket: str, key: str, upload_id: str, states: Sequence[str]
) -> MultipartUpload:
    """The (locked) upload if it belongs to ``bucket``/``key`` and is in ``states``; else
    UploadNotFound (one answer for missing, foreign and finished uploads: nothing to probe)."""
    upload = load_upload(tx, upload_id, lock=True)
    if upload is None or (upload.bucket, upload.key) != (bucket, key) or upload.state not in states:
        raise UploadNotFound(upload_id)
    return upload


def txn_create_multipart_upload(
    tx: Tx, notes: Notes, upload: MultipartUpload, max_uploads: int, now: float
) -> MultipartUpload:
    existing = load_upload(tx, upload.upload_id)
    if existing is not None:  # a retried call
        return existing
    if max_uploads > 0 and upload.origin == ORIGIN_CLIENT:
        # Instances creating uploads in one bucket count one at a time.
        tx.dialect.lock_bucket_uploads(tx, upload.bucket)
        (active,) = tx.execute(
            "SELECT COUNT(*) FROM multipart_uploads WHERE bucket = ? AND origin = ?"
            f" AND state IN ({marks(len(ACTIVE_STATES))})",
            (upload.bucket, ORIGIN_CLIENT, *ACTIVE_STATES),
        ).fetchone()
        if int(active) >= max_uploads:
            raise UploadLimitReached(upload.bucket)
    tx.execute(
        "INSERT INTO multipart_uploads (upload_id, bucket, object_key, content_type, headers,"
        " user_metadata, checksum_algorithm, checksum_type, origin, state, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (upload_id) DO NOTHING",
        (
            upload.upload_id,
            upload.bucket,
            upload.key,
            upload.content_type,
            json.dumps(upload.headers, sort_keys=True),
            json.dumps(upload.user_metadata, sort_keys=True),
            upload.checksum_algorithm,
            upload.checksum_type,
            upload.origin,
            UPLOAD_OPEN,
            upload.initiated,
            now,
        ),
    )
    if tx.rowcount == 0:
        raise RetryTransaction(f"upload {upload.upload_id} was created concurrently")
    created = load_upload(tx, upload.upload_id)
    assert created is not None
    return created


def txn_get_multipart_upload(
    tx: Tx, notes: Notes, bucket: str, key: str, upload_id: str
) -> MultipartUpload | None:
    upload = load_upload(tx, upload_id)
    if upload is None or (upload.bucket, upload.key) != (bucket, key):
        return None
    return upload


def txn_reserve_part(
    tx: Tx,
    notes: Notes,
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
    upload = owned_upload(tx, bucket, key, upload_id, (UPLOAD_OPEN,))
    if upload.native:
        raise UploadNotFound(upload_id)  # an older build's native upload takes no parts
    existing = tx.execute(
        "SELECT backend_name, storage_key, size_bytes FROM multipart_part_attempts"
        " WHERE attempt_id = ?",
        (attempt_id,),
    ).fetchone()
    if existing is not None:  # a retried call: one reservation only
        return PartReservation(attempt_id, upload_id, existing[0], existing[1], int(existing[2]))
    chosen = pick_backend(tx, candidates, strategy, size, lock=True)
    if chosen is None:
        return None
    adjust_quota(tx, notes, chosen, now, reserved=size)
    tx.execute(
        "INSERT INTO multipart_part_attempts (attempt_id, upload_id, part_number, size_bytes,"
        " backend_name, storage_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (attempt_id, upload_id, part_number, size, chosen, storage_key, now),
    )
    return PartReservation(attempt_id, upload_id, chosen, storage_key, size)


@dataclass(frozen=True)
class _Attempt:
    upload: MultipartUpload
    part_number: int
    size: int
    backend: str
    storage_key: str | None


def _attempt(tx: Tx, attempt_id: str) -> _Attempt | None:
    """A part attempt with its upload, the upload locked first (the lock order), then the
    attempt read again under that lock."""
    found = tx.execute(
        "SELECT upload_id FROM multipart_part_attempts WHERE attempt_id = ?", (attempt_id,)
    ).fetchone()
    if found is None:
        return None
    upload = load_upload(tx, found[0], lock=True)
    row = tx.execute(
        "SELECT part_number, size_bytes, backend_name, storage_key FROM multipart_part_attempts"
        " WHERE attempt_id = ?",
        (attempt_id,),
    ).fetchone()
    if row is None or upload is None:
        return None  # released while we waited for the upload
    return _Attempt(upload, int(row[0]), int(row[1]), row[2] or upload.backend or "", row[3])


def _delete_attempt(tx: Tx, attempt_id: str) -> bool:
    """Whether this transaction removed the attempt (so its bytes are its to release)."""
    tx.execute("DELETE FROM multipart_part_attempts WHERE attempt_id = ?", (attempt_id,))
    return tx.rowcount == 1


def txn_release_part(tx: Tx, notes: Notes, attempt_id: str) -> None:
    found = _attempt(tx, attempt_id)
    if found is None or not _delete_attempt(tx, attempt_id):
        return  # already released (or Complete/Abort released it)
    adjust_quota(tx, notes, found.backend, time.time(), reserved=-found.size)


def _queue_part_object(
    tx: Tx, notes: Notes, backend: str | None, storage_key: str | None, size: int, now: float
) -> list[CleanupItem]:
    """Queue an uploaded part nobody will keep (it may already be queued: Complete or
    Abort queued it as in flight; it is then due now, as its bytes have landed)."""
    if backend is None or storage_key is None:
        return []
    queued = tx.execute(
        "SELECT id, size_bytes, reason, attempts FROM cleanup_queue"
        " WHERE backend_name = ? AND storage_key = ?",
        (backend, storage_key),
    ).fetchone()
    if queued is not None:
        tx.execute("UPDATE cleanup_queue SET next_retry = ? WHERE id = ?", (now, queued[0]))
        return [CleanupItem(int(queued[0]), backend, storage_key, int(queued[1]), queued[2], int(queued[3]))]
    item = queue_backend_object(tx, notes, backend, storage_key, size, "part_orphaned", now)
    return [item] if item is not None else []


def txn_commit_part(
    tx: Tx, notes: Notes, attempt_id: str, part: UploadedPart, now: float
) -> PartCommit:
    found = _attempt(tx, attempt_id)
    if found is None or not _delete_attempt(tx, attempt_id):
        recorded = tx.execute(
            "SELECT 1 FROM multipart_parts WHERE backend_name = ? AND storage_key = ?",
            (part.backend, part.storage_key),
        ).fetchone()
        if recorded is not None:
            return PartCommit(True)  # a repeated call
        # Complete or Abort took the attempt (and queued its key) while the bytes travelled.
        return PartCommit(False, _queue_part_object(tx, notes, part.backend, part.storage_key, part.size, now))
    upload = found.upload
    if (
        upload.state != UPLOAD_OPEN
        or found.part_number != part.part_number
        or (part.backend, part.storage_key) != (found.backend, found.storage_key)
    ):
        lock_quotas(tx, [found.backend] + ([part.backend] if part.backend else []))
        adjust_quota(tx, notes, found.backend, now, reserved=-found.size)
        return PartCommit(False, _queue_part_object(tx, notes, part.backend, part.storage_key, part.size, now))
    old = tx.execute(
        "SELECT size_bytes, backend_name, storage_key FROM multipart_parts"
        " WHERE upload_id = ? AND part_number = ?",
        (upload.upload_id, part.part_number),
    ).fetchone()
    old_backend = (old[1] or upload.backend or "") if old is not None else None
    lock_quotas(tx, [found.backend] + ([old_backend] if old_backend is not None else []))
    # The attempt's reservation becomes the part's.
    if part.size != found.size:
        adjust_quota(tx, notes, found.backend, now, reserved=part.size - found.size)
    cleanup: list[CleanupItem] = []
    if old is not None and old_backend is not None:
        # The part it replaces: its bytes are no longer this upload's.
        adjust_quota(tx, notes, old_backend, now, reserved=-int(old[0]))
        if old[2] is not None:
            cleanup.append(
                enqueue_cleanup(
                    tx, notes, old_backend, old[2], int(old[0]), "part_replaced", now,
                    now + IMMEDIATE_DELETE_GRACE,
                )
            )
    tx.execute(
        "INSERT INTO multipart_parts (upload_id, part_number, etag, size_bytes, checksum_algorithm,"
        " checksum_value, backend_name, storage_key, backend_etag, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
        " ON CONFLICT (upload_id, part_number) DO UPDATE SET etag = excluded.etag,"
        " size_bytes = excluded.size_bytes, checksum_algorithm = excluded.checksum_algorithm,"
        " checksum_value = excluded.checksum_value, backend_name = excluded.backend_name,"
        " storage_key = excluded.storage_key, backend_etag = NULL,"
        " created_at = excluded.created_at",
        (
            upload.upload_id,
            part.part_number,
            part.etag,
            part.size,
            part.checksum_algorithm,
            part.checksum_value,
            part.backend,
            part.storage_key,
            now,
        ),
    )
    return PartCommit(True, cleanup)


_PART_COLUMNS = (
    "part_number, etag, size_bytes, created_at, backend_name, storage_key, checksum_algorithm,"
    " checksum_value, backend_etag"
)


def _part_from_row(row: Sequence[Any]) -> UploadedPart:
    return UploadedPart(
        part_number=int(row[0]),
        etag=row[1],
        size=int(row[2]),
        last_modified=float(row[3]),
        backend=row[4],
        storage_key=row[5],
        checksum_algorithm=row[6],
        checksum_value=row[7],
        backend_etag=row[8],
    )


def txn_list_parts(
    tx: Tx, notes: Notes, upload_id: str, marker: int, max_parts: int
) -> tuple[list[UploadedPart], bool]:
    rows = tx.execute(
        f"SELECT {_PART_COLUMNS} FROM multipart_parts WHERE upload_id = ? AND part_number > ?"
        " ORDER BY part_number LIMIT ?",
        (upload_id, marker, max_parts + 1),
    ).fetchall()
    return [_part_from_row(r) for r in rows[:max_parts]], len(rows) > max_parts


def _attempt_rows(tx: Tx, upload: MultipartUpload) -> list[tuple[str, str | None, int]]:
    """(backend, storage key, size) of the upload's part attempts, deleted."""
    rows = tx.execute(
        "DELETE FROM multipart_part_attempts WHERE upload_id = ?"
        " RETURNING backend_name, storage_key, size_bytes",
        (upload.upload_id,),
    ).fetchall()
    return [(row[0] or upload.backend or "", row[1], int(row[2])) for row in rows]


def _release_in_flight(
    tx: Tx, notes: Notes, attempts: Sequence[tuple[str, str | None, int]], now: float
) -> None:
    """Part uploads still in flight: their reservations go, their keys are queued for a
    cleanup first tried after :data:`IN_FLIGHT_GRACE` (their bytes may still land)."""
    for backend, storage_key, size in attempts:
        adjust_quota(tx, notes, backend, now, reserved=-size)
        if storage_key is not None:
            enqueue_cleanup(
                tx, notes, backend, storage_key, size, "part_in_flight", now, now + IN_FLIGHT_GRACE
            )


def txn_complete_upload(
    tx: Tx,
    notes: Notes,
    bucket: str,
    key: str,
    upload_id: str,
    parts: Sequence[tuple[int, str]],
    record: ObjectRecord,
    now: float,
    conditions: WriteConditions,
) -> CompleteOutcome:
    if record.write_id != upload_id or (record.bucket, record.key) != (bucket, key):
        raise ValueError(f"the object of upload {upload_id} must be {bucket}/{key} with it as write id")
    upload = owned_upload(tx, bucket, key, upload_id, (UPLOAD_OPEN, UPLOAD_COMPLETED))
    if upload.state == UPLOAD_COMPLETED:
        return CompleteOutcome([], already_completed=True)
    if upload.native:
        raise UploadNotFound(upload_id)
    stored = {
        int(row[0]): row
        for row in tx.execute(
            "SELECT part_number, etag, size_bytes, backend_name, storage_key, checksum_value"
            " FROM multipart_parts WHERE upload_id = ? ORDER BY part_number",
            (upload_id,),
        ).fetchall()
    }
    listed: dict[int, Sequence[Any]] = {}
    for number, etag in parts:
        row = stored.get(number)
        if row is None or row[1].lower() != etag.strip('"').lower() or row[4] is None:
            raise PartMismatch(f"part {number}")
        listed[number] = row
    # The key's lock order, as a PUT's commit takes it.
    tx.dialect.lock_key(tx, bucket, key)
    current = tx.execute(
        f"SELECT write_id, etag FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}",
        (bucket, key),
    ).fetchone()
    check_conditions(conditions, bucket, key, current)
    supersede_intents(tx, bucket, key, now)
    attempts = _attempt_rows(tx, upload)
    backends = [str(row[3]) for row in stored.values()] + [a[0] for a in attempts]
    displaced = orphan_locations(
        tx, notes, bucket, key, "overwrite_displaced", now, also_lock=backends
    )
    copies: list[NewCopy] = []
    for number in sorted(listed):
        _, etag, size, backend, storage_key, checksum = listed[number]
        adjust_quota(tx, notes, backend, now, reserved=-int(size), used=int(size), count=1)
        copies.append(NewCopy(number, backend, storage_key, int(size), etag, checksum))
    write_object_row(tx, record, copies, now)
    discarded: list[CleanupItem] = []
    for number, row in stored.items():
        if number in listed:
            continue
        adjust_quota(tx, notes, row[3], now, reserved=-int(row[2]))
        discarded.append(
            enqueue_cleanup(
                tx, notes, row[3], row[4], int(row[2]), "part_discarded", now,
                now + IMMEDIATE_DELETE_GRACE,
            )
        )
    _release_in_flight(tx, notes, attempts, now)
    tx.execute("DELETE FROM multipart_parts WHERE upload_id = ?", (upload_id,))
    tx.execute(
        "UPDATE multipart_uploads SET state = ?, etag = ?, updated_at = ? WHERE upload_id = ?",
        (UPLOAD_COMPLETED, record.etag, now, upload_id),
    )
    return CompleteOutcome(displaced, discarded)


def txn_begin_abort(
    tx: Tx,
    notes: Notes,
    bucket: str,
    key: str,
    upload_id: str,
    now: float,
    stale: bool,
) -> MultipartUpload:
    states: tuple[str, ...] = (UPLOAD_OPEN, UPLOAD_COMPLETING, UPLOAD_ABORTING)
    if stale:
        states += (UPLOAD_CREATING,)
    upload = owned_upload(tx, bucket, key, upload_id, states)
    tx.execute(
        "UPDATE multipart_uploads SET state = ?, updated_at = ? WHERE upload_id = ?",
        (UPLOAD_ABORTING, now, upload_id),
    )
    return upload


def txn_finish_abort(tx: Tx, notes: Notes, upload_id: str, now: float) -> list[CleanupItem]:
    upload = load_upload(tx, upload_id, lock=True)
    if upload is None or upload.state != UPLOAD_ABORTING:
        return []  # already finished: a repeated call
    assembled: int | None = None
    if upload.native and upload.complete_parts:
        # An older build sent a Complete to the backend: the object may exist at the
        # upload's storage key.
        (assembled,) = tx.execute(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM multipart_parts"
            f" WHERE upload_id = ? AND part_number IN ({marks(len(upload.complete_parts))})",
            (upload_id, *upload.complete_parts),
        ).fetchone()
    parts = [
        (row[0] or upload.backend or "", row[1], int(row[2]))
        for row in tx.execute(
            "DELETE FROM multipart_parts WHERE upload_id = ?"
            " RETURNING backend_name, storage_key, size_bytes",
            (upload_id,),
        ).fetchall()
    ]
    attempts = _attempt_rows(tx, upload)
    lock_quotas(
        tx,
        [p[0] for p in parts] + [a[0] for a in attempts] + ([upload.backend] if upload.backend else []),
    )
    items: list[CleanupItem] = []
    for backend, storage_key, size in parts:
        adjust_quota(tx, notes, backend, now, reserved=-size)
        if storage_key is not None:
            items.append(
                enqueue_cleanup(
                    tx, notes, backend, storage_key, size, "abort_part_cleanup", now,
                    now + IMMEDIATE_DELETE_GRACE,
                )
            )
    _release_in_flight(tx, notes, attempts, now)
    tx.execute(
        "UPDATE multipart_uploads SET state = ?, updated_at = ? WHERE upload_id = ?",
        (UPLOAD_ABORTED, now, upload_id),
    )
    if assembled is not None and upload.backend is not None and upload.storage_key is not None:
        item = queue_backend_object(
            tx, notes, upload.backend, upload.storage_key, int(assembled), "abort_part_cleanup", now
        )
        if item is not None:
            items.append(item)
    return items


def txn_list_multipart_uploads(
    tx: Tx,
    notes: Notes,
    bucket: str,
    prefix: str,
    delimiter: str,
    key_marker: str,
    upload_id_marker: str,
    max_uploads: int,
) -> UploadListPage:
    """Like :func:`txn_list_objects`, over (key, upload id) of open uploads, in batches."""
    upper = prefix_upper_bound(prefix)
    # The position to scan from: (key, upload id or None); None excludes the whole key.
    after: tuple[str, str | None] | None = None
    start: str | None = prefix  # inclusive lower bound on the key
    if key_marker and key_marker >= prefix:
        if (
            key_marker.startswith(prefix)
            and common_prefix(key_marker, prefix, delimiter) == key_marker
        ):
            start = prefix_upper_bound(key_marker)  # skip the marker's whole group
        else:
            start = None
            after = (key_marker, upload_id_marker or None)
    wanted = max_uploads + 1
    items: list[MultipartUpload | str] = []
    batch = LIST_BATCH_MIN
    while len(items) < wanted and (start is not None or after is not None):
        limit = wanted - len(items)
        if delimiter:
            limit = min(limit, batch)
        sql = (
            f"SELECT {UPLOAD_COLUMNS} FROM multipart_uploads"
            " WHERE bucket = ? AND state = ? AND origin = ?"
        )
        params: list[Any] = [bucket, UPLOAD_OPEN, ORIGIN_CLIENT]
        if after is not None:
            if after[1] is None:
                sql += " AND object_key > ?"
                params.append(after[0])
            else:
                sql += " AND (object_key, upload_id) > (?, ?)"
                params.extend(after)
        else:
            sql += " AND object_key >= ?"
            params.append(start)
        if upper is not None:
            sql += " AND object_key < ?"
            params.append(upper)
        sql += " ORDER BY object_key, upload_id LIMIT ?"
        params.append(limit)
        rows = tx.execute(sql, params).fetchall()
        jumped = False
        for row in rows:
            upload = upload_from_row(row)
            common = common_prefix(upload.key, prefix, delimiter)
            if common is not None:
                items.append(common)
                start, after = prefix_upper_bound(common), None
                jumped = True
                break
            items.append(upload)
            start, after = None, (upload.key, upload.upload_id)
            if len(items) >= wanted:
                break
        if jumped:
            if start is None:
                break  # nothing sorts after the group
            if upper is not None and start >= upper:
                break
            batch = LIST_BATCH_MIN
            continue
        if len(rows) < limit:
            break  # the range is exhausted
        batch *= 2
    truncated = len(items) > max_uploads
    page = items[:max_uploads]
    next_key: str | None = None
    next_id: str | None = None
    if truncated and page:
        last = page[-1]
        if isinstance(last, str):
            next_key = last
        else:
            next_key, next_id = last.key, last.upload_id
    return UploadListPage(
        uploads=tuple(item for item in page if not isinstance(item, str)),
        common_prefixes=tuple(item for item in page if isinstance(item, str)),
        is_truncated=truncated,
        next_key_marker=next_key,
        next_upload_id_marker=next_id,
    )


def txn_stale_multipart_uploads(
    tx: Tx, notes: Notes, created_before: float, busy_before: float, limit: int
) -> list[MultipartUpload]:
    rows = tx.execute(
        f"SELECT {UPLOAD_COLUMNS} FROM multipart_uploads"
        " WHERE (state IN (?, ?) AND created_at < ?) OR (state IN (?, ?) AND updated_at < ?)"
        " ORDER BY created_at LIMIT ?",
        (
            UPLOAD_CREATING,
            UPLOAD_OPEN,
            created_before,
            UPLOAD_COMPLETING,
            UPLOAD_ABORTING,
            busy_before,
            limit,
        ),
    ).fetchall()
    return [upload_from_row(row) for row in rows]


def txn_purge_multipart_uploads(tx: Tx, notes: Notes, before: float) -> int:
    tx.execute(
        "DELETE FROM multipart_uploads WHERE state IN (?, ?) AND updated_at < ?",
        (UPLOAD_COMPLETED, UPLOAD_ABORTED, before),
    )
    return tx.rowcount


def txn_active_multipart_counts(tx: Tx, notes: Notes) -> dict[str, int]:
    rows = tx.execute(
        "SELECT backend_name, COUNT(DISTINCT upload_id) FROM ("
        " SELECT p.backend_name AS backend_name, p.upload_id AS upload_id FROM multipart_parts p"
        " JOIN multipart_uploads u ON u.upload_id = p.upload_id"
        " WHERE u.state NOT IN (?, ?) AND p.backend_name IS NOT NULL"
        " UNION SELECT a.backend_name, a.upload_id FROM multipart_part_attempts a"
        " JOIN multipart_uploads u ON u.upload_id = a.upload_id"
        " WHERE u.state NOT IN (?, ?) AND a.backend_name IS NOT NULL"
        " UNION SELECT backend_name, upload_id FROM multipart_uploads"
        " WHERE state NOT IN (?, ?) AND backend_name IS NOT NULL"
        ") AS held GROUP BY backend_name ORDER BY backend_name",
        (UPLOAD_COMPLETED, UPLOAD_ABORTED) * 3,
    ).fetchall()
    return {row[0]: int(row[1]) for row in rows}
