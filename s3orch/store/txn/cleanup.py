"""The cleanup queue: backend objects nobody references, waiting to be deleted.

Queuing an object moves its bytes to ``orphan_bytes`` in the same transaction
that stopped referencing it, so quota stays exact while the delete is pending;
a finished delete releases them, a failed one is retried with backoff and, after
:data:`CLEANUP_MAX_ATTEMPTS`, moves to the dead-letter table (its bytes stay
counted: they still exist).  Rows are claimed per instance (``claimed_by``,
``FOR UPDATE SKIP LOCKED`` on PostgreSQL) so two instances never work on one row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from s3orch.store.records import CleanupItem, OutboxEvent
from s3orch.store.txn.base import Notes, Tx, marks
from s3orch.store.txn.outbox import add_events
from s3orch.store.txn.quota import adjust_quota, lock_quotas

#: The caller tries to delete displaced/deleted copies at once; the queue waits this
#: long before its own first attempt, so the two rarely race.
IMMEDIATE_DELETE_GRACE = 60.0


#: Cleanup backoff: 60 s doubling per failed attempt, at most a day.
CLEANUP_BACKOFF_BASE = 60.0


CLEANUP_BACKOFF_MAX = 86400.0


#: The failure that moves a cleanup row to the dead-letter table.
CLEANUP_MAX_ATTEMPTS = 10


MAX_ERROR_TEXT = 2000


def cleanup_backoff(attempts_before: int) -> float:
    """Seconds until the next try after a failure, given the failures before this one."""
    factor: int = 1 << min(max(attempts_before, 0), 32)
    return min(CLEANUP_BACKOFF_BASE * factor, CLEANUP_BACKOFF_MAX)


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


def _cleanup_items(rows: Iterable[Sequence[Any]]) -> list[CleanupItem]:
    return [CleanupItem(int(r[0]), r[1], r[2], int(r[3]), r[4], int(r[5])) for r in rows]


def txn_cleanup_done(tx: Tx, notes: Notes, ids: Sequence[int], now: float) -> None:
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


def txn_cleanup_failed(
    tx: Tx,
    notes: Notes,
    item_id: int,
    error: str,
    now: float,
    exhausted_events: Sequence[OutboxEvent] = (),
) -> bool:
    row = tx.execute(
        "SELECT backend_name, storage_key, reason, size_bytes, attempts, created_at"
        f" FROM cleanup_queue WHERE id = ?{tx.for_update()}",
        (item_id,),
    ).fetchone()
    if row is None:
        return False
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
        add_events(tx, exhausted_events, now)  # the DLQ move and its event commit together
        notes.warn(
            "cleanup of {backend}/{storage_key} failed {attempts} times; moved to the DLQ",
            backend=backend,
            storage_key=storage_key,
            attempts=attempts,
        )
        return True
    tx.execute(
        "UPDATE cleanup_queue SET attempts = ?, next_retry = ?, last_error = ?,"
        " claimed_at = NULL, claimed_by = NULL WHERE id = ?",
        (attempts, now + cleanup_backoff(int(attempts_before)), error, item_id),
    )
    return False


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
    # A row whose claimer never finished is marked: its claim was recovered.
    return [CleanupItem(int(r[0]), r[1], r[2], int(r[3]), r[4], int(r[5]), r[7] is not None) for r in rows]
