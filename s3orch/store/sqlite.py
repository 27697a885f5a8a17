"""The SQLite metadata store (single instance).

Two adbapi pools: one connection for writes, so write transactions are
serialised by construction and ``BEGIN IMMEDIATE`` takes the write lock up
front (a reservation and its quota check can never interleave with another),
and a few connections for reads, which WAL lets run beside the writer.

Each database step is a plain synchronous ``_txn_*`` function of a cursor.  It
runs inside one transaction that is rolled back on any error and retried when
SQLite reports the database locked (another process, e.g. ``s3orch-admin``,
holding the write lock past ``busy_timeout``); a rolled-back attempt left no
trace, so a retry is safe.  Anything odd a transaction notices (quota that
would go negative: a bug signal) is collected as a note and logged from the
reactor thread, since twisted.logger observers are not meant to be called
from pool threads.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from twisted.enterprise import adbapi
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from s3orch.store import migrate
from s3orch.store.interface import (
    UPLOAD_ABORTED,
    UPLOAD_ABORTING,
    UPLOAD_COMPLETED,
    UPLOAD_COMPLETING,
    UPLOAD_CREATING,
    UPLOAD_OPEN,
    CleanupItem,
    CompleteOutcome,
    Intent,
    IntentNotFound,
    ListEntry,
    ListPage,
    Location,
    MultipartUpload,
    ObjectRecord,
    PartMismatch,
    PreconditionConflict,
    QuotaRow,
    Reservation,
    StoreError,
    StoreUnavailable,
    UploadedPart,
    UploadLimitReached,
    UploadListPage,
    UploadNotFound,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: The caller tries to delete displaced/deleted copies at once; the queue waits this
#: long before its own first attempt, so the two rarely race.
IMMEDIATE_DELETE_GRACE = 60.0
#: Cleanup backoff: 60 s doubling per failed attempt, at most a day.
CLEANUP_BACKOFF_BASE = 60.0
CLEANUP_BACKOFF_MAX = 86400.0
#: The failure that moves a cleanup row to the dead-letter table.
CLEANUP_MAX_ATTEMPTS = 10
#: ``busy_timeout`` per attempt, and how many attempts a transaction gets.
BUSY_TIMEOUT_MS = 5000
LOCK_RETRIES = 3
READ_POOL_SIZE = 4
_MAX_ERROR_TEXT = 2000

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
#: Primary result codes that mean "not now" (BUSY, LOCKED, IOERR, FULL, CANTOPEN).
_UNAVAILABLE_CODES = (_SQLITE_BUSY, _SQLITE_LOCKED, 10, 13, 14)

_QUOTA_COLUMNS = ("bytes_used", "orphan_bytes", "reserved_bytes", "object_count")



@dataclass
class _Notes:
    """Anomalies one transaction noticed, logged after it finishes (in the reactor thread)."""

    warnings: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def warn(self, fmt: str, **fields: Any) -> None:
        self.warnings.append((fmt, fields))


# --- connections and transactions (run in pool threads) -------------------------------


def _open_connection(conn: sqlite3.Connection, *, read_only: bool) -> None:
    """Per-connection settings (adbapi ``cp_openfun``).

    ``synchronous=FULL``: in WAL mode NORMAL can lose the last acknowledged
    transactions on power loss, and an acknowledged write must survive.
    """
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"SQLite database cannot use WAL journal mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if read_only:
        conn.execute("PRAGMA query_only = ON")


def _open_writer(conn: sqlite3.Connection) -> None:
    _open_connection(conn, read_only=False)


def _open_reader(conn: sqlite3.Connection) -> None:
    _open_connection(conn, read_only=True)


def admin_connection(config: Any) -> tuple[sqlite3.Connection, str]:
    """A writer connection to ``config.path`` for ``s3orch-admin`` (and where it points)."""
    migrate.check_sqlite_version()
    try:
        conn = sqlite3.connect(config.path, isolation_level=None)
        try:
            _open_writer(conn)
        except BaseException:
            conn.close()
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"cannot use SQLite database {config.path}: {exc}") from exc
    return conn, str(config.path)


def is_unavailable(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says the database cannot serve now (locked past the retries,
    I/O failing, disk full) rather than that the statement is wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in _UNAVAILABLE_CODES
    text = str(exc)
    return any(word in text for word in ("locked", "busy", "disk I/O", "disk is full", "unable to open"))


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _run_txn(
    conn: Any,
    begin: str,
    notes: _Notes,
    fn: Callable[Concatenate[sqlite3.Cursor, _Notes, _P], _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """Run ``fn`` in one transaction, retrying the whole of it when the database is locked."""
    for attempt in range(LOCK_RETRIES):
        notes.warnings.clear()
        cur = conn.cursor()
        try:
            cur.execute(begin)
            try:
                result = fn(cur, notes, *args, **kwargs)
                cur.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            return result
        except sqlite3.OperationalError as exc:
            if attempt + 1 < LOCK_RETRIES and _is_locked(exc):
                time.sleep(0.05 * (attempt + 1))
                continue
            raise
        finally:
            cur.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _run_migrations(conn: Any) -> list[int]:
    return migrate.migrate(conn, "sqlite")


# --- quota and cleanup helpers (inside a write transaction) ---------------------------


def _adjust_quota(
    cur: sqlite3.Cursor,
    notes: _Notes,
    backend: str,
    now: float,
    *,
    used: int = 0,
    orphan: int = 0,
    reserved: int = 0,
    count: int = 0,
) -> None:
    """Apply deltas to a backend's counters, clamping at 0 (a negative result is a bug)."""
    row = cur.execute(
        "SELECT bytes_used, orphan_bytes, reserved_bytes, object_count"
        " FROM backend_quotas WHERE backend_name = ?",
        (backend,),
    ).fetchone()
    if row is None:
        cur.execute(
            "INSERT INTO backend_quotas (backend_name, bytes_limit, updated_at) VALUES (?, 0, ?)",
            (backend, now),
        )
        row = (0, 0, 0, 0)
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
    cur.execute(
        "UPDATE backend_quotas SET bytes_used = ?, orphan_bytes = ?, reserved_bytes = ?,"
        " object_count = ?, updated_at = ? WHERE backend_name = ?",
        (*values, now, backend),
    )


def _enqueue_cleanup(
    cur: sqlite3.Cursor,
    notes: _Notes,
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
    row = cur.execute(
        "SELECT id, size_bytes, reason, attempts FROM cleanup_queue"
        " WHERE backend_name = ? AND storage_key = ?",
        (backend, storage_key),
    ).fetchone()
    if row is not None:
        notes.warn(
            "backend object {backend}/{storage_key} is already queued for cleanup",
            backend=backend,
            storage_key=storage_key,
        )
        return CleanupItem(int(row[0]), backend, storage_key, int(row[1]), row[2], int(row[3]))
    cur.execute(
        "INSERT INTO cleanup_queue (backend_name, storage_key, reason, size_bytes, attempts,"
        " next_retry, created_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
        (backend, storage_key, reason, size, next_retry, now),
    )
    item_id = cur.lastrowid
    assert item_id is not None
    _adjust_quota(cur, notes, backend, now, orphan=size)
    return CleanupItem(item_id, backend, storage_key, size, reason, 0)


def _orphan_locations(
    cur: sqlite3.Cursor,
    notes: _Notes,
    bucket: str,
    key: str,
    reason: str,
    now: float,
    keep: tuple[str, str] | None = None,
) -> list[CleanupItem]:
    """Drop a key's locations: bytes_used -> orphan_bytes, each copy into cleanup_queue.

    ``keep`` names a backend object that is being re-recorded (its bytes are
    replaced, not orphaned), so it must never be queued for deletion.
    """
    rows = cur.execute(
        "SELECT backend_name, storage_key, size_bytes FROM object_locations"
        " WHERE bucket = ? AND object_key = ? ORDER BY backend_name",
        (bucket, key),
    ).fetchall()
    cur.execute(
        "DELETE FROM object_locations WHERE bucket = ? AND object_key = ?", (bucket, key)
    )
    items: list[CleanupItem] = []
    for backend, storage_key, size in rows:
        _adjust_quota(cur, notes, backend, now, used=-int(size), count=-1)
        if keep is not None and (backend, storage_key) == keep:
            continue
        items.append(
            _enqueue_cleanup(
                cur, notes, backend, storage_key, int(size), reason, now,
                now + IMMEDIATE_DELETE_GRACE,
            )
        )
    return items


# --- transactions ---------------------------------------------------------------------


def _txn_sync_quota_limits(cur: sqlite3.Cursor, notes: _Notes, limits: dict[str, int]) -> None:
    now = time.time()
    for backend, limit in limits.items():
        cur.execute(
            "INSERT INTO backend_quotas (backend_name, bytes_limit, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (backend_name) DO UPDATE SET bytes_limit = excluded.bytes_limit,"
            " updated_at = excluded.updated_at",
            (backend, limit, now),
        )


def _txn_get_quotas(cur: sqlite3.Cursor, notes: _Notes) -> dict[str, QuotaRow]:
    rows = cur.execute(
        "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes, object_count"
        " FROM backend_quotas ORDER BY backend_name"
    ).fetchall()
    return {row[0]: QuotaRow(*row) for row in rows}


def _pick_backend(
    cur: sqlite3.Cursor, candidates: Sequence[str], strategy: str, size: int
) -> str | None:
    """The backend ``strategy`` chooses among ``candidates`` with room for ``size`` bytes.

    ``pack``: the first (config order) with room; ``spread``: the least utilised
    ((used + orphan + reserved) / limit; unlimited counts as 0), ties in config order.
    """
    names = list(dict.fromkeys(candidates))
    if not names:
        return None
    marks = ",".join("?" * len(names))
    rows = {
        row[0]: row
        for row in cur.execute(
            "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes"
            f" FROM backend_quotas WHERE backend_name IN ({marks})",
            names,
        ).fetchall()
    }
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
    if not fitting:
        return None
    return min(fitting)[2]


def _txn_reserve(
    cur: sqlite3.Cursor,
    notes: _Notes,
    intent: Intent,
    candidates: Sequence[str],
    strategy: str,
    now: float,
) -> Reservation | None:
    existing = cur.execute(
        "SELECT backend_name, storage_key, size_bytes FROM pending_objects WHERE write_id = ?",
        (intent.write_id,),
    ).fetchone()
    if existing is not None:  # the same intent again (a retried call): one reservation only
        return Reservation(intent.write_id, existing[0], existing[1], int(existing[2]))
    chosen = _pick_backend(cur, candidates, strategy, intent.size)
    if chosen is None:
        return None
    _adjust_quota(cur, notes, chosen, now, reserved=intent.size)
    cur.execute(
        "INSERT INTO pending_objects (write_id, bucket, object_key, backend_name, storage_key,"
        " size_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (intent.write_id, intent.bucket, intent.key, chosen, intent.storage_key, intent.size, now),
    )
    return Reservation(intent.write_id, chosen, intent.storage_key, intent.size)


def _txn_release(cur: sqlite3.Cursor, notes: _Notes, write_id: str) -> None:
    row = cur.execute(
        "SELECT backend_name, size_bytes FROM pending_objects WHERE write_id = ?", (write_id,)
    ).fetchone()
    if row is None:
        return
    cur.execute("DELETE FROM pending_objects WHERE write_id = ?", (write_id,))
    _adjust_quota(cur, notes, row[0], time.time(), reserved=-int(row[1]))


def _etag_matches(if_match: str, etag: str) -> bool:
    wanted = if_match.strip()
    return wanted == "*" or wanted.strip('"') == etag


@dataclass(frozen=True)
class _IntentGone:
    """The commit found no intent; raised as IntentNotFound once the transaction committed."""

    cleanup: CleanupItem | None


def _queue_unreferenced_upload(
    cur: sqlite3.Cursor, notes: _Notes, reservation: Reservation, now: float
) -> CleanupItem | None:
    """Queue the bytes of a write that can no longer be committed, unless something uses them."""
    used = cur.execute(
        "SELECT 1 FROM object_locations WHERE backend_name = ? AND storage_key = ?",
        (reservation.backend, reservation.storage_key),
    ).fetchone()
    if used is not None:
        return None
    return _enqueue_cleanup(
        cur,
        notes,
        reservation.backend,
        reservation.storage_key,
        reservation.size,
        "intent_missing",
        now,
        now + IMMEDIATE_DELETE_GRACE,
    )


def _txn_commit_object(
    cur: sqlite3.Cursor,
    notes: _Notes,
    reservation: Reservation,
    record: ObjectRecord,
    now: float,
    if_none_match: bool,
    if_match: str | None,
) -> list[CleanupItem] | _IntentGone:
    current = cur.execute(
        "SELECT write_id, etag FROM objects WHERE bucket = ? AND object_key = ?",
        (record.bucket, record.key),
    ).fetchone()
    if current is not None and current[0] == record.write_id:
        return []  # already committed: a retry of a call whose answer was lost
    pending = cur.execute(
        "SELECT bucket, object_key, backend_name, size_bytes FROM pending_objects"
        " WHERE write_id = ?",
        (reservation.write_id,),
    ).fetchone()
    if pending is None:
        return _IntentGone(_queue_unreferenced_upload(cur, notes, reservation, now))
    if (pending[0], pending[1]) != (record.bucket, record.key):
        raise ValueError(
            f"intent {reservation.write_id} is for {pending[0]}/{pending[1]},"
            f" not {record.bucket}/{record.key}"
        )
    if if_none_match and current is not None:
        raise PreconditionConflict(f"{record.bucket}/{record.key} exists")
    if if_match is not None and (current is None or not _etag_matches(if_match, current[1])):
        raise PreconditionConflict(f"{record.bucket}/{record.key} does not match {if_match}")

    new_copy = (reservation.backend, reservation.storage_key)
    displaced = _orphan_locations(
        cur, notes, record.bucket, record.key, "overwrite_displaced", now, keep=new_copy
    )
    cur.execute("DELETE FROM pending_objects WHERE write_id = ?", (reservation.write_id,))
    _adjust_quota(cur, notes, pending[2], now, reserved=-int(pending[3]))
    _adjust_quota(cur, notes, reservation.backend, now, used=reservation.size, count=1)
    _write_object_row(cur, record, reservation.backend, reservation.storage_key, reservation.size, now)
    return displaced


def _write_object_row(
    cur: sqlite3.Cursor,
    record: ObjectRecord,
    backend: str,
    storage_key: str,
    stored_size: int,
    now: float,
) -> None:
    """Make ``record`` the key's row with exactly one location (the old ones are gone)."""
    cur.execute(
        "INSERT INTO objects (bucket, object_key, write_id, size_bytes, etag, content_type,"
        " headers, user_metadata, checksum_algorithm, checksum_value, parts_count, part_sizes,"
        " content_hash, encrypted, wrapped_dek, base_nonce, key_id, plaintext_size,"
        " last_modified, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL, NULL, NULL, ?, ?)"
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
            record.last_modified,
            now,
        ),
    )
    # A new version starts without the old version's tags (S3 PUT replaces them).
    cur.execute(
        "DELETE FROM object_tags WHERE bucket = ? AND object_key = ?", (record.bucket, record.key)
    )
    cur.execute(
        "INSERT INTO object_locations (bucket, object_key, backend_name, storage_key, write_id,"
        " size_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            record.bucket,
            record.key,
            backend,
            storage_key,
            record.write_id,
            stored_size,
            now,
        ),
    )


def _txn_get_object(
    cur: sqlite3.Cursor, notes: _Notes, bucket: str, key: str
) -> ObjectRecord | None:
    row = cur.execute(
        "SELECT write_id, size_bytes, etag, last_modified, content_type, headers,"
        " user_metadata, checksum_algorithm, checksum_value, parts_count, part_sizes,"
        " content_hash FROM objects WHERE bucket = ? AND object_key = ?",
        (bucket, key),
    ).fetchone()
    if row is None:
        return None
    locations = tuple(
        Location(backend, storage_key, int(size))
        for backend, storage_key, size in cur.execute(
            "SELECT backend_name, storage_key, size_bytes FROM object_locations"
            " WHERE bucket = ? AND object_key = ? ORDER BY created_at, backend_name",
            (bucket, key),
        ).fetchall()
    )
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
    )


def _txn_delete_object(
    cur: sqlite3.Cursor, notes: _Notes, bucket: str, key: str, now: float
) -> list[CleanupItem]:
    found = cur.execute(
        "SELECT 1 FROM objects WHERE bucket = ? AND object_key = ?", (bucket, key)
    ).fetchone()
    if found is None:
        return []
    items = _orphan_locations(cur, notes, bucket, key, "delete", now)
    # object_tags go with the row (ON DELETE CASCADE)
    cur.execute("DELETE FROM objects WHERE bucket = ? AND object_key = ?", (bucket, key))
    return items


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


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    """The common prefix ``key`` rolls up into, or None when it is listed itself."""
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    if at < 0:
        return None
    return key[: at + len(delimiter)]


def _txn_list_objects(
    cur: sqlite3.Cursor,
    notes: _Notes,
    bucket: str,
    prefix: str,
    delimiter: str,
    start_after: str,
    max_keys: int,
) -> ListPage:
    """Range scans over the (bucket, object_key) b-tree, in one read snapshot.

    A common prefix is emitted once and the scan restarts past every key under
    it, so a "directory" of a million keys costs one index seek, not a million rows.
    """
    upper = prefix_upper_bound(prefix)
    if start_after < prefix:
        lower: str | None = prefix
        inclusive = True
    else:
        lower, inclusive = start_after, False
        if start_after.startswith(prefix) and _common_prefix(
            start_after, prefix, delimiter
        ) == start_after:
            lower, inclusive = prefix_upper_bound(start_after), True  # skip its whole group
    if upper is not None and lower is not None and lower >= upper:
        lower = None

    wanted = max_keys + 1  # one more than asked, to know whether the listing is truncated
    items: list[ListEntry | str] = []
    while lower is not None and len(items) < wanted:
        sql = (
            "SELECT object_key, size_bytes, etag, last_modified FROM objects"
            f" WHERE bucket = ? AND object_key {'>=' if inclusive else '>'} ?"
        )
        params: list[Any] = [bucket, lower]
        if upper is not None:
            sql += " AND object_key < ?"
            params.append(upper)
        sql += " ORDER BY object_key"
        jumped = False
        # Rows are stepped lazily, so breaking out early reads nothing more.
        for key, size, etag, last_modified in cur.execute(sql, params):
            common = _common_prefix(key, prefix, delimiter)
            if common is not None:
                items.append(common)
                lower, inclusive = prefix_upper_bound(common), True
                jumped = True
                break
            items.append(ListEntry(key, int(size), etag, float(last_modified)))
            lower, inclusive = key, False
            if len(items) >= wanted:
                break
        if not jumped:
            break

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


def _txn_cleanup_done(cur: sqlite3.Cursor, notes: _Notes, ids: Sequence[int]) -> None:
    now = time.time()
    for item_id in ids:
        row = cur.execute(
            "SELECT backend_name, size_bytes FROM cleanup_queue WHERE id = ?", (item_id,)
        ).fetchone()
        if row is None:
            continue  # already done: a repeated call must not release bytes twice
        cur.execute("DELETE FROM cleanup_queue WHERE id = ?", (item_id,))
        _adjust_quota(cur, notes, row[0], now, orphan=-int(row[1]))


def cleanup_backoff(attempts_before: int) -> float:
    """Seconds until the next try after a failure, given the failures before this one."""
    factor: int = 1 << min(max(attempts_before, 0), 32)
    return min(CLEANUP_BACKOFF_BASE * factor, CLEANUP_BACKOFF_MAX)


def _txn_cleanup_failed(
    cur: sqlite3.Cursor, notes: _Notes, item_id: int, error: str, now: float
) -> None:
    row = cur.execute(
        "SELECT backend_name, storage_key, reason, size_bytes, attempts, created_at"
        " FROM cleanup_queue WHERE id = ?",
        (item_id,),
    ).fetchone()
    if row is None:
        return
    backend, storage_key, reason, size, attempts_before, created_at = row
    attempts = int(attempts_before) + 1
    error = error[:_MAX_ERROR_TEXT]
    if attempts >= CLEANUP_MAX_ATTEMPTS:
        # Out of the queue, but the bytes stay counted as orphaned: they still exist.
        cur.execute(
            "INSERT INTO cleanup_dlq (original_id, backend_name, storage_key, reason, size_bytes,"
            " attempts, last_error, first_enqueued_at, moved_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item_id, backend, storage_key, reason, size, attempts, error, created_at, now),
        )
        cur.execute("DELETE FROM cleanup_queue WHERE id = ?", (item_id,))
        notes.warn(
            "cleanup of {backend}/{storage_key} failed {attempts} times; moved to the DLQ",
            backend=backend,
            storage_key=storage_key,
            attempts=attempts,
        )
        return
    cur.execute(
        "UPDATE cleanup_queue SET attempts = ?, next_retry = ?, last_error = ?,"
        " claimed_at = NULL, claimed_by = NULL WHERE id = ?",
        (attempts, now + cleanup_backoff(int(attempts_before)), error, item_id),
    )


def _txn_due_cleanups(
    cur: sqlite3.Cursor, notes: _Notes, now: float, limit: int
) -> list[CleanupItem]:
    rows = cur.execute(
        "SELECT id, backend_name, storage_key, size_bytes, reason, attempts FROM cleanup_queue"
        " WHERE next_retry <= ? ORDER BY next_retry, id LIMIT ?",
        (now, limit),
    ).fetchall()
    return [CleanupItem(int(r[0]), r[1], r[2], int(r[3]), r[4], int(r[5])) for r in rows]


def _txn_claim_cleanups(
    cur: sqlite3.Cursor, notes: _Notes, now: float, limit: int, owner: str, grace: float
) -> list[CleanupItem]:
    rows = cur.execute(
        "SELECT id, backend_name, storage_key, size_bytes, reason, attempts FROM cleanup_queue"
        " WHERE next_retry <= ? AND (claimed_at IS NULL OR claimed_at <= ?)"
        " ORDER BY next_retry, id LIMIT ?",
        (now, now - grace, limit),
    ).fetchall()
    cur.executemany(
        "UPDATE cleanup_queue SET claimed_at = ?, claimed_by = ? WHERE id = ?",
        [(now, owner, row[0]) for row in rows],
    )
    return [CleanupItem(int(r[0]), r[1], r[2], int(r[3]), r[4], int(r[5])) for r in rows]


def _txn_object_counts(cur: sqlite3.Cursor, notes: _Notes) -> dict[str, int]:
    rows = cur.execute(
        "SELECT backend_name, object_count FROM backend_quotas ORDER BY backend_name"
    ).fetchall()
    return {row[0]: int(row[1]) for row in rows}


def _txn_ping(cur: sqlite3.Cursor, notes: _Notes) -> None:
    cur.execute("SELECT 1").fetchone()


# --- multipart uploads ----------------------------------------------------------------

_UPLOAD_COLUMNS = (
    "upload_id, bucket, object_key, backend_name, backend_upload_id, storage_key,"
    " content_type, headers, user_metadata, checksum_algorithm, state, complete_parts, etag,"
    " created_at, updated_at"
)
#: Upload states that count toward ``max_multipart_uploads``.
_ACTIVE_STATES = (UPLOAD_CREATING, UPLOAD_OPEN, UPLOAD_COMPLETING)


def _upload_from_row(row: Sequence[Any]) -> MultipartUpload:
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
        state=row[10],
        complete_parts=None if row[11] is None else tuple(json.loads(row[11])),
        etag=row[12],
        initiated=float(row[13]),
        updated_at=float(row[14]),
    )


def _load_upload(cur: sqlite3.Cursor, upload_id: str) -> MultipartUpload | None:
    row = cur.execute(
        f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE upload_id = ?", (upload_id,)
    ).fetchone()
    return None if row is None else _upload_from_row(row)


def _owned_upload(
    cur: sqlite3.Cursor, bucket: str, key: str, upload_id: str, states: Sequence[str]
) -> MultipartUpload:
    """The upload if it belongs to ``bucket``/``key`` and is in ``states``; else UploadNotFound
    (one answer for missing, foreign and finished uploads: nothing to probe)."""
    upload = _load_upload(cur, upload_id)
    if upload is None or (upload.bucket, upload.key) != (bucket, key) or upload.state not in states:
        raise UploadNotFound(upload_id)
    return upload


def _upload_reserved_bytes(cur: sqlite3.Cursor, upload_id: str) -> int:
    """Bytes the upload holds reserved: its parts plus its part attempts in flight."""
    row = cur.execute(
        "SELECT (SELECT COALESCE(SUM(size_bytes), 0) FROM multipart_parts WHERE upload_id = ?)"
        " + (SELECT COALESCE(SUM(size_bytes), 0) FROM multipart_part_attempts WHERE upload_id = ?)",
        (upload_id, upload_id),
    ).fetchone()
    return int(row[0])


def _drop_upload_parts(cur: sqlite3.Cursor, notes: _Notes, upload: MultipartUpload, now: float) -> None:
    """Release every reservation of the upload and forget its parts and attempts."""
    reserved = _upload_reserved_bytes(cur, upload.upload_id)
    cur.execute("DELETE FROM multipart_parts WHERE upload_id = ?", (upload.upload_id,))
    cur.execute("DELETE FROM multipart_part_attempts WHERE upload_id = ?", (upload.upload_id,))
    if reserved:
        _adjust_quota(cur, notes, upload.backend, now, reserved=-reserved)


def _txn_create_multipart_upload(
    cur: sqlite3.Cursor,
    notes: _Notes,
    upload: MultipartUpload,
    candidates: Sequence[str],
    strategy: str,
    size_hint: int,
    max_uploads: int,
    now: float,
) -> MultipartUpload | None:
    existing = _load_upload(cur, upload.upload_id)
    if existing is not None:  # a retried call
        return existing
    if max_uploads > 0:
        marks = ",".join("?" * len(_ACTIVE_STATES))
        (active,) = cur.execute(
            f"SELECT COUNT(*) FROM multipart_uploads WHERE bucket = ? AND state IN ({marks})",
            (upload.bucket, *_ACTIVE_STATES),
        ).fetchone()
        if int(active) >= max_uploads:
            raise UploadLimitReached(upload.bucket)
    chosen = _pick_backend(cur, candidates, strategy, max(size_hint, 1))
    if chosen is None:
        return None
    cur.execute(
        "INSERT INTO multipart_uploads (upload_id, bucket, object_key, backend_name, storage_key,"
        " content_type, headers, user_metadata, checksum_algorithm, state, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            upload.upload_id,
            upload.bucket,
            upload.key,
            chosen,
            upload.storage_key,
            upload.content_type,
            json.dumps(upload.headers, sort_keys=True),
            json.dumps(upload.user_metadata, sort_keys=True),
            upload.checksum_algorithm,
            UPLOAD_CREATING,
            upload.initiated,
            now,
        ),
    )
    return _load_upload(cur, upload.upload_id)


def _txn_open_multipart_upload(
    cur: sqlite3.Cursor, notes: _Notes, upload_id: str, backend_upload_id: str, now: float
) -> bool:
    cur.execute(
        "UPDATE multipart_uploads SET backend_upload_id = ?, state = ?, updated_at = ?"
        " WHERE upload_id = ? AND state = ?",
        (backend_upload_id, UPLOAD_OPEN, now, upload_id, UPLOAD_CREATING),
    )
    return cur.rowcount == 1


def _txn_drop_multipart_upload(cur: sqlite3.Cursor, notes: _Notes, upload_id: str) -> None:
    cur.execute(
        "DELETE FROM multipart_uploads WHERE upload_id = ? AND state = ?",
        (upload_id, UPLOAD_CREATING),
    )


def _txn_get_multipart_upload(
    cur: sqlite3.Cursor, notes: _Notes, bucket: str, key: str, upload_id: str
) -> MultipartUpload | None:
    upload = _load_upload(cur, upload_id)
    if upload is None or (upload.bucket, upload.key) != (bucket, key):
        return None
    return upload


def _txn_reserve_part(
    cur: sqlite3.Cursor,
    notes: _Notes,
    bucket: str,
    key: str,
    upload_id: str,
    part_number: int,
    size: int,
    attempt_id: str,
    now: float,
) -> MultipartUpload | None:
    upload = _owned_upload(cur, bucket, key, upload_id, (UPLOAD_OPEN,))
    if cur.execute(
        "SELECT 1 FROM multipart_part_attempts WHERE attempt_id = ?", (attempt_id,)
    ).fetchone():
        return upload  # a retried call: one reservation only
    row = cur.execute(
        "SELECT bytes_limit, bytes_used, orphan_bytes, reserved_bytes FROM backend_quotas"
        " WHERE backend_name = ?",
        (upload.backend,),
    ).fetchone()
    if row is not None and int(row[0]) and int(row[0]) - int(row[1]) - int(row[2]) - int(row[3]) < size:
        return None
    cur.execute(
        "INSERT INTO multipart_part_attempts (attempt_id, upload_id, part_number, size_bytes,"
        " created_at) VALUES (?, ?, ?, ?, ?)",
        (attempt_id, upload_id, part_number, size, now),
    )
    _adjust_quota(cur, notes, upload.backend, now, reserved=size)
    return upload


def _attempt(cur: sqlite3.Cursor, attempt_id: str) -> tuple[str, int, int, str, str] | None:
    """(upload_id, part_number, size, upload state, backend) of a part attempt."""
    row = cur.execute(
        "SELECT a.upload_id, a.part_number, a.size_bytes, u.state, u.backend_name"
        " FROM multipart_part_attempts AS a JOIN multipart_uploads AS u USING (upload_id)"
        " WHERE a.attempt_id = ?",
        (attempt_id,),
    ).fetchone()
    return None if row is None else (row[0], int(row[1]), int(row[2]), row[3], row[4])


def _txn_release_part(cur: sqlite3.Cursor, notes: _Notes, attempt_id: str) -> None:
    found = _attempt(cur, attempt_id)
    if found is None:
        return  # already released (or Complete/Abort released it)
    cur.execute("DELETE FROM multipart_part_attempts WHERE attempt_id = ?", (attempt_id,))
    _adjust_quota(cur, notes, found[4], time.time(), reserved=-found[2])


def _txn_commit_part(
    cur: sqlite3.Cursor, notes: _Notes, attempt_id: str, part: UploadedPart, now: float
) -> bool:
    found = _attempt(cur, attempt_id)
    if found is None:
        return False
    upload_id, part_number, reserved, state, backend = found
    cur.execute("DELETE FROM multipart_part_attempts WHERE attempt_id = ?", (attempt_id,))
    if state != UPLOAD_OPEN or part_number != part.part_number:
        _adjust_quota(cur, notes, backend, now, reserved=-reserved)
        return False
    old = cur.execute(
        "SELECT size_bytes FROM multipart_parts WHERE upload_id = ? AND part_number = ?",
        (upload_id, part_number),
    ).fetchone()
    # The attempt's bytes become the part's; the replaced part's bytes are released.
    delta = part.size - reserved - (int(old[0]) if old is not None else 0)
    if delta:
        _adjust_quota(cur, notes, backend, now, reserved=delta)
    cur.execute(
        "INSERT INTO multipart_parts (upload_id, part_number, etag, size_bytes, checksum_algorithm,"
        " checksum_value, backend_etag, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (upload_id, part_number) DO UPDATE SET etag = excluded.etag,"
        " size_bytes = excluded.size_bytes, checksum_algorithm = excluded.checksum_algorithm,"
        " checksum_value = excluded.checksum_value, backend_etag = excluded.backend_etag,"
        " created_at = excluded.created_at",
        (
            upload_id,
            part_number,
            part.etag,
            part.size,
            part.checksum_algorithm,
            part.checksum_value,
            part.backend_etag,
            now,
        ),
    )
    return True


def _txn_list_parts(
    cur: sqlite3.Cursor, notes: _Notes, upload_id: str, marker: int, max_parts: int
) -> tuple[list[UploadedPart], bool]:
    rows = cur.execute(
        "SELECT part_number, etag, size_bytes, created_at, backend_etag, checksum_algorithm,"
        " checksum_value FROM multipart_parts WHERE upload_id = ? AND part_number > ?"
        " ORDER BY part_number LIMIT ?",
        (upload_id, marker, max_parts + 1),
    ).fetchall()
    parts = [
        UploadedPart(int(r[0]), r[1], int(r[2]), float(r[3]), r[4], r[5], r[6])
        for r in rows[:max_parts]
    ]
    return parts, len(rows) > max_parts


def _txn_begin_complete(
    cur: sqlite3.Cursor,
    notes: _Notes,
    bucket: str,
    key: str,
    upload_id: str,
    parts: Sequence[tuple[int, str]],
    now: float,
) -> MultipartUpload:
    upload = _owned_upload(
        cur, bucket, key, upload_id, (UPLOAD_OPEN, UPLOAD_COMPLETING, UPLOAD_COMPLETED)
    )
    if upload.state == UPLOAD_COMPLETED:
        return upload
    for number, etag in parts:
        row = cur.execute(
            "SELECT etag FROM multipart_parts WHERE upload_id = ? AND part_number = ?",
            (upload_id, number),
        ).fetchone()
        if row is None or row[0].lower() != etag.lower():
            raise PartMismatch(f"part {number}")
    numbers = json.dumps([number for number, _ in parts])
    cur.execute(
        "UPDATE multipart_uploads SET state = ?, complete_parts = ?, updated_at = ?"
        " WHERE upload_id = ?",
        (UPLOAD_COMPLETING, numbers, now, upload_id),
    )
    found = _load_upload(cur, upload_id)
    assert found is not None
    return found


def _txn_reopen_upload(cur: sqlite3.Cursor, notes: _Notes, upload_id: str, now: float) -> None:
    cur.execute(
        "UPDATE multipart_uploads SET state = ?, complete_parts = NULL, updated_at = ?"
        " WHERE upload_id = ? AND state = ?",
        (UPLOAD_OPEN, now, upload_id, UPLOAD_COMPLETING),
    )


@dataclass(frozen=True)
class _UploadGone:
    """finish_complete found the upload aborted; raised as UploadNotFound after commit."""

    cleanup: CleanupItem | None


def _queue_backend_object(
    cur: sqlite3.Cursor, notes: _Notes, backend: str, storage_key: str, size: int, reason: str, now: float
) -> CleanupItem | None:
    """Queue a backend object for deletion unless a committed copy uses it."""
    used = cur.execute(
        "SELECT 1 FROM object_locations WHERE backend_name = ? AND storage_key = ?",
        (backend, storage_key),
    ).fetchone()
    if used is not None:
        return None
    return _enqueue_cleanup(
        cur, notes, backend, storage_key, size, reason, now, now + IMMEDIATE_DELETE_GRACE
    )


def _txn_finish_complete(
    cur: sqlite3.Cursor,
    notes: _Notes,
    upload_id: str,
    record: ObjectRecord,
    stored_size: int,
    now: float,
) -> CompleteOutcome | _UploadGone:
    if record.write_id != upload_id:
        raise ValueError(f"the object of upload {upload_id} must have it as write id")
    upload = _load_upload(cur, upload_id)
    if upload is None:
        raise UploadNotFound(upload_id)
    if upload.state == UPLOAD_COMPLETED:
        return CompleteOutcome([], already_completed=True)
    if upload.state != UPLOAD_COMPLETING or (upload.bucket, upload.key) != (record.bucket, record.key):
        return _UploadGone(
            _queue_backend_object(
                cur, notes, upload.backend, upload.storage_key, stored_size, "complete_aborted", now
            )
        )
    displaced = _orphan_locations(cur, notes, record.bucket, record.key, "overwrite_displaced", now)
    _drop_upload_parts(cur, notes, upload, now)
    _adjust_quota(cur, notes, upload.backend, now, used=stored_size, count=1)
    _write_object_row(cur, record, upload.backend, upload.storage_key, stored_size, now)
    cur.execute(
        "UPDATE multipart_uploads SET state = ?, etag = ?, updated_at = ? WHERE upload_id = ?",
        (UPLOAD_COMPLETED, record.etag, now, upload_id),
    )
    return CompleteOutcome(displaced)


def _txn_begin_abort(
    cur: sqlite3.Cursor,
    notes: _Notes,
    bucket: str,
    key: str,
    upload_id: str,
    now: float,
    stale: bool,
) -> MultipartUpload:
    states: tuple[str, ...] = (UPLOAD_OPEN, UPLOAD_COMPLETING, UPLOAD_ABORTING)
    if stale:
        states += (UPLOAD_CREATING,)
    upload = _owned_upload(cur, bucket, key, upload_id, states)
    cur.execute(
        "UPDATE multipart_uploads SET state = ?, updated_at = ? WHERE upload_id = ?",
        (UPLOAD_ABORTING, now, upload_id),
    )
    return upload


def _txn_finish_abort(
    cur: sqlite3.Cursor, notes: _Notes, upload_id: str, now: float
) -> CleanupItem | None:
    upload = _load_upload(cur, upload_id)
    if upload is None or upload.state != UPLOAD_ABORTING:
        return None  # already finished: a repeated call
    assembled: int | None = None
    if upload.complete_parts:
        # A Complete was sent to the backend: the object may exist at the storage key.
        marks = ",".join("?" * len(upload.complete_parts))
        (assembled,) = cur.execute(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM multipart_parts"
            f" WHERE upload_id = ? AND part_number IN ({marks})",
            (upload_id, *upload.complete_parts),
        ).fetchone()
    _drop_upload_parts(cur, notes, upload, now)
    cur.execute(
        "UPDATE multipart_uploads SET state = ?, updated_at = ? WHERE upload_id = ?",
        (UPLOAD_ABORTED, now, upload_id),
    )
    if assembled is None:
        return None
    return _queue_backend_object(
        cur, notes, upload.backend, upload.storage_key, int(assembled), "abort_part_cleanup", now
    )


def _txn_list_multipart_uploads(
    cur: sqlite3.Cursor,
    notes: _Notes,
    bucket: str,
    prefix: str,
    delimiter: str,
    key_marker: str,
    upload_id_marker: str,
    max_uploads: int,
) -> UploadListPage:
    """Like :func:`_txn_list_objects`, over (key, upload id) of open uploads."""
    upper = prefix_upper_bound(prefix)
    # The position to scan from: (key, upload id or None); None excludes the whole key.
    after: tuple[str, str | None] | None = None
    start: str | None = prefix  # inclusive lower bound on the key
    if key_marker and key_marker >= prefix:
        if (
            key_marker.startswith(prefix)
            and _common_prefix(key_marker, prefix, delimiter) == key_marker
        ):
            start = prefix_upper_bound(key_marker)  # skip the marker's whole group
        else:
            start = None
            after = (key_marker, upload_id_marker or None)
    wanted = max_uploads + 1
    items: list[MultipartUpload | str] = []
    while len(items) < wanted and (start is not None or after is not None):
        sql = f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE bucket = ? AND state = ?"
        params: list[Any] = [bucket, UPLOAD_OPEN]
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
        sql += " ORDER BY object_key, upload_id"
        jumped = False
        for row in cur.execute(sql, params):
            upload = _upload_from_row(row)
            common = _common_prefix(upload.key, prefix, delimiter)
            if common is not None:
                items.append(common)
                start, after = prefix_upper_bound(common), None
                jumped = True
                break
            items.append(upload)
            if len(items) >= wanted:
                break
        if not jumped:
            break
        if start is None:
            break  # nothing sorts after the group
        if upper is not None and start >= upper:
            break
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


def _txn_stale_multipart_uploads(
    cur: sqlite3.Cursor, notes: _Notes, created_before: float, busy_before: float, limit: int
) -> list[MultipartUpload]:
    rows = cur.execute(
        f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads"
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
    return [_upload_from_row(row) for row in rows]


def _txn_purge_multipart_uploads(cur: sqlite3.Cursor, notes: _Notes, before: float) -> int:
    cur.execute(
        "DELETE FROM multipart_uploads WHERE state IN (?, ?) AND updated_at < ?",
        (UPLOAD_COMPLETED, UPLOAD_ABORTED, before),
    )
    return int(cur.rowcount)


def _txn_active_multipart_counts(cur: sqlite3.Cursor, notes: _Notes) -> dict[str, int]:
    rows = cur.execute(
        "SELECT backend_name, COUNT(*) FROM multipart_uploads WHERE state NOT IN (?, ?)"
        " GROUP BY backend_name ORDER BY backend_name",
        (UPLOAD_COMPLETED, UPLOAD_ABORTED),
    ).fetchall()
    return {row[0]: int(row[1]) for row in rows}


# --- the store ------------------------------------------------------------------------


class SQLiteStore:
    """:class:`~s3orch.store.interface.MetadataStore` on one SQLite file (one instance only)."""

    _log = Logger(namespace="s3orch.store")

    def __init__(self, path: str | Path, reactor: IReactorCore) -> None:
        self.path = str(path)
        self._reactor = reactor
        self._writer: adbapi.ConnectionPool | None = None
        self._readers: adbapi.ConnectionPool | None = None

    def _pool(self, **kwargs: Any) -> adbapi.ConnectionPool:
        return adbapi.ConnectionPool(  # type: ignore[no-untyped-call]
            "sqlite3",
            self.path,
            check_same_thread=False,  # adbapi closes connections from the reactor thread
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            cp_reactor=self._reactor,
            **kwargs,
        )

    async def start(self) -> None:
        migrate.check_sqlite_version()
        self._writer = self._pool(cp_min=1, cp_max=1, cp_openfun=_open_writer)
        try:
            applied = await self._writer.runWithConnection(  # type: ignore[no-untyped-call]
                _run_migrations
            )
        except BaseException as exc:
            self._writer.close()  # type: ignore[no-untyped-call]
            self._writer = None
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot use SQLite database {self.path}: {exc}") from exc
            raise
        if applied:
            self._log.info(
                "applied schema migrations {versions} to {path}",
                versions=applied,
                path=self.path,
                component="store",
            )
        self._readers = self._pool(cp_min=1, cp_max=READ_POOL_SIZE, cp_openfun=_open_reader)

    async def close(self) -> None:
        for pool in (self._readers, self._writer):
            if pool is not None:
                pool.close()  # type: ignore[no-untyped-call]
        self._readers = self._writer = None

    async def _write(
        self,
        fn: Callable[Concatenate[sqlite3.Cursor, _Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        if self._writer is None:
            raise StoreError("the store is not started")
        return await self._call(self._writer, "BEGIN IMMEDIATE", fn, *args, **kwargs)

    async def _read(
        self,
        fn: Callable[Concatenate[sqlite3.Cursor, _Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        if self._readers is None:
            raise StoreError("the store is not started")
        # BEGIN: one snapshot for the whole read, even when it takes several queries.
        return await self._call(self._readers, "BEGIN", fn, *args, **kwargs)

    async def _call(
        self,
        pool: adbapi.ConnectionPool,
        begin: str,
        fn: Callable[Concatenate[sqlite3.Cursor, _Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        notes = _Notes()
        try:
            result = await pool.runWithConnection(  # type: ignore[no-untyped-call]
                _run_txn, begin, notes, fn, *args, **kwargs
            )
        except sqlite3.OperationalError as exc:
            if is_unavailable(exc):
                raise StoreUnavailable(f"SQLite database {self.path}: {exc}") from exc
            raise
        finally:
            for fmt, fields in notes.warnings:
                self._log.warn(fmt, component="store", **fields)
        return cast(_T, result)

    async def ping(self) -> None:
        await self._read(_txn_ping)

    async def sync_quota_limits(self, limits: dict[str, int]) -> None:
        for backend, limit in limits.items():
            if limit < 0:
                raise ValueError(f"negative quota limit for backend {backend!r}: {limit}")
        await self._write(_txn_sync_quota_limits, dict(limits))

    async def get_quotas(self) -> dict[str, QuotaRow]:
        return await self._read(_txn_get_quotas)

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
        if strategy not in ("pack", "spread"):
            raise ValueError(f"unknown placement strategy {strategy!r}")
        if intent.size < 0:
            raise ValueError(f"negative intent size {intent.size}")
        return await self._write(_txn_reserve, intent, tuple(candidates), strategy, now)

    async def release(self, write_id: str) -> None:
        await self._write(_txn_release, write_id)

    async def commit_object(
        self,
        reservation: Reservation,
        record: ObjectRecord,
        now: float,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> list[CleanupItem]:
        """See the protocol.  ``record.locations`` is ignored: the new version has exactly
        the reservation's copy.  ``if_match`` may be ``*`` or a quoted ETag."""
        result = await self._write(
            _txn_commit_object, reservation, record, now, if_none_match, if_match
        )
        if isinstance(result, _IntentGone):
            raise IntentNotFound(reservation.write_id, result.cleanup)
        return result

    async def get_object(self, bucket: str, key: str) -> ObjectRecord | None:
        return await self._read(_txn_get_object, bucket, key)

    async def delete_object(self, bucket: str, key: str, now: float) -> list[CleanupItem]:
        return await self._write(_txn_delete_object, bucket, key, now)

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
        return await self._read(
            _txn_list_objects, bucket, prefix, delimiter, start_after, max_keys
        )

    async def cleanup_done(self, ids: Sequence[int]) -> None:
        if ids:
            await self._write(_txn_cleanup_done, tuple(ids))

    async def cleanup_failed(self, item_id: int, error: str, now: float) -> None:
        await self._write(_txn_cleanup_failed, item_id, error, now)

    async def due_cleanups(self, now: float, limit: int) -> list[CleanupItem]:
        return await self._read(_txn_due_cleanups, now, limit)

    async def claim_cleanups(
        self, now: float, limit: int, owner: str, grace: float
    ) -> list[CleanupItem]:
        if limit <= 0:
            return []
        return await self._write(_txn_claim_cleanups, now, limit, owner, grace)

    async def object_counts(self) -> dict[str, int]:
        return await self._read(_txn_object_counts)

    # -- multipart uploads --------------------------------------------------------------

    async def create_multipart_upload(
        self,
        upload: MultipartUpload,
        candidates: Sequence[str],
        strategy: str,
        size_hint: int,
        max_uploads: int,
        now: float,
    ) -> MultipartUpload | None:
        if strategy not in ("pack", "spread"):
            raise ValueError(f"unknown placement strategy {strategy!r}")
        return await self._write(
            _txn_create_multipart_upload,
            upload,
            tuple(candidates),
            strategy,
            size_hint,
            max_uploads,
            now,
        )

    async def open_multipart_upload(self, upload_id: str, backend_upload_id: str, now: float) -> bool:
        """See the protocol; False when the upload is no longer ``creating``."""
        return await self._write(_txn_open_multipart_upload, upload_id, backend_upload_id, now)

    async def drop_multipart_upload(self, upload_id: str) -> None:
        await self._write(_txn_drop_multipart_upload, upload_id)

    async def get_multipart_upload(
        self, bucket: str, key: str, upload_id: str
    ) -> MultipartUpload | None:
        return await self._read(_txn_get_multipart_upload, bucket, key, upload_id)

    async def reserve_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        size: int,
        attempt_id: str,
        now: float,
    ) -> MultipartUpload | None:
        if size < 0:
            raise ValueError(f"negative part size {size}")
        return await self._write(
            _txn_reserve_part, bucket, key, upload_id, part_number, size, attempt_id, now
        )

    async def release_part(self, attempt_id: str) -> None:
        await self._write(_txn_release_part, attempt_id)

    async def commit_part(self, attempt_id: str, part: UploadedPart, now: float) -> bool:
        return await self._write(_txn_commit_part, attempt_id, part, now)

    async def list_parts(
        self, upload_id: str, part_number_marker: int = 0, max_parts: int = 10000
    ) -> tuple[list[UploadedPart], bool]:
        return await self._read(_txn_list_parts, upload_id, part_number_marker, max(0, max_parts))

    async def begin_complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        now: float,
    ) -> MultipartUpload:
        return await self._write(_txn_begin_complete, bucket, key, upload_id, tuple(parts), now)

    async def reopen_upload(self, upload_id: str, now: float) -> None:
        await self._write(_txn_reopen_upload, upload_id, now)

    async def finish_complete(
        self, upload_id: str, record: ObjectRecord, stored_size: int, now: float
    ) -> CompleteOutcome:
        result = await self._write(_txn_finish_complete, upload_id, record, stored_size, now)
        if isinstance(result, _UploadGone):
            raise UploadNotFound(upload_id, result.cleanup)
        return result

    async def begin_abort(
        self, bucket: str, key: str, upload_id: str, now: float, *, stale: bool = False
    ) -> MultipartUpload:
        return await self._write(_txn_begin_abort, bucket, key, upload_id, now, stale)

    async def finish_abort(self, upload_id: str, now: float) -> CleanupItem | None:
        return await self._write(_txn_finish_abort, upload_id, now)

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
            _txn_list_multipart_uploads,
            bucket,
            prefix,
            delimiter,
            key_marker,
            upload_id_marker,
            max_uploads,
        )

    async def stale_multipart_uploads(
        self, created_before: float, busy_before: float, limit: int
    ) -> list[MultipartUpload]:
        return await self._read(_txn_stale_multipart_uploads, created_before, busy_before, limit)

    async def purge_multipart_uploads(self, before: float) -> int:
        return await self._write(_txn_purge_multipart_uploads, before)

    async def active_multipart_counts(self) -> dict[str, int]:
        return await self._read(_txn_active_multipart_counts)
