"""Drains: the persisted state of a backend being emptied, and the copies still on it.

A drain's row lives in ``drain_state`` (schema version 1) until it is cancelled, so a restart
resumes it (the original forgot drains on restart).  The drain worker pages
through the extents with a copy on the backend; one whose other copies already
exist elsewhere loses only its source copy (:func:`txn_drop_drained_copy`: the
location becomes a cleanup row, its bytes orphaned until the queue deletes them),
one with no other copy is first copied by the replicator's machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from s3orch.store.records import CleanupItem, DrainState, OutboxEvent, UnderReplicated
from s3orch.store.txn.base import Notes, Tx
from s3orch.store.txn.cleanup import enqueue_cleanup
from s3orch.store.txn.outbox import add_events
from s3orch.store.txn.quota import adjust_quota, lock_quotas
from s3orch.store.txn.replicas import _copies, lock_if_current, stored_md5

#: The cleanup reason of a drained source copy.
DRAIN_REASON = "drain"

_COLUMNS = "backend_name, state, started_at, updated_at, objects_moved, bytes_moved, error"


def _state(row: Any) -> DrainState:
    return DrainState(
        str(row[0]), str(row[1]), float(row[2]), float(row[3]),
        int(row[4]), int(row[5]), row[6],
    )


def txn_drains(tx: Tx, notes: Notes) -> list[DrainState]:
    """Every persisted drain, by backend name."""
    rows = tx.execute(f"SELECT {_COLUMNS} FROM drain_state ORDER BY backend_name").fetchall()
    return [_state(row) for row in rows]


def txn_start_drain(tx: Tx, notes: Notes, backend: str, now: float) -> bool:
    """Start (or restart a completed) drain of ``backend``; False when one is active or failed (still
    draining; two instances starting it at once: exactly one wins, by the primary key)."""
    tx.execute("DELETE FROM drain_state WHERE backend_name = ? AND state = 'completed'", (backend,))
    inserted = tx.execute(
        "INSERT INTO drain_state (backend_name, state, started_at, updated_at) VALUES (?, 'active', ?, ?)"
        " ON CONFLICT (backend_name) DO NOTHING RETURNING backend_name",
        (backend, now, now),
    ).fetchone()
    return inserted is not None


def txn_cancel_drain(tx: Tx, notes: Notes, backend: str) -> bool:
    """Forget the drain of ``backend`` (it takes writes again); False when there was none."""
    gone = tx.execute(
        "DELETE FROM drain_state WHERE backend_name = ? RETURNING backend_name", (backend,)
    ).fetchone()
    return gone is not None


def txn_drain_moved(tx: Tx, notes: Notes, backend: str, objects: int, size: int) -> None:
    """Count moved copies on the drain's row (nothing when it was cancelled meanwhile)."""
    tx.execute(
        "UPDATE drain_state SET objects_moved = objects_moved + ?, bytes_moved = bytes_moved + ?"
        " WHERE backend_name = ?",
        (objects, size, backend),
    )


def txn_finish_drain(
    tx: Tx, notes: Notes, backend: str, state: str, error: str | None, now: float
) -> bool:
    """Mark an active drain ``completed`` or ``failed``; False when it is not active any more."""
    done = tx.execute(
        "UPDATE drain_state SET state = ?, error = ?, updated_at = ?"
        " WHERE backend_name = ? AND state <> 'completed' RETURNING backend_name",
        (state, error, now, backend),
    ).fetchone()
    return done is not None


def txn_backend_holdings(tx: Tx, notes: Notes, backend: str) -> tuple[int, int]:
    """How many copies (extents) and bytes ``backend`` still holds by the database."""
    row = tx.execute(
        "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM object_locations WHERE backend_name = ?",
        (backend,),
    ).fetchone()
    return int(row[0]), int(row[1])


def txn_backend_extents(
    tx: Tx, notes: Notes, backend: str, limit: int, after: tuple[str, str, int] | None
) -> list[UnderReplicated]:
    """Up to ``limit`` extents with a copy on ``backend``, in (bucket, key, part) order after ``after``."""
    where = " AND (l.bucket, l.object_key, l.part_number) > (?, ?, ?)" if after is not None else ""
    rows = tx.execute(
        "SELECT l.bucket, l.object_key, l.part_number, l.write_id, o.etag FROM object_locations l"
        " JOIN objects o ON o.bucket = l.bucket AND o.object_key = l.object_key"
        f" WHERE l.backend_name = ?{where}"
        " ORDER BY l.bucket, l.object_key, l.part_number LIMIT ?",
        [backend, *(after if after is not None else ()), limit],
    ).fetchall()
    return [extent_of(tx, *row) for row in rows]


def extent_of(tx: Tx, bucket: str, key: str, part_number: int, write_id: str, etag: str) -> UnderReplicated:
    """One extent with every copy of it (oldest first) and the MD5 its stored bytes must match
    (:func:`~s3orch.store.txn.replicas.stored_md5`: "" for ciphertext and compressed frames,
    which move as they are): a placement worker's work item."""
    etag = stored_md5(tx, bucket, key, int(part_number)) or ""
    copies = _copies(tx, bucket, key, int(part_number))
    return UnderReplicated(bucket, key, str(write_id), int(part_number), copies[0].size, etag, tuple(copies))


def txn_drop_drained_copy(
    tx: Tx, notes: Notes, extent: UnderReplicated, backend: str, now: float
) -> CleanupItem | None:
    """Remove the copy of ``extent`` on ``backend`` while the object is still the same write and
    a copy remains on another backend; its bytes are queued for cleanup (due now).  None when
    nothing was dropped (the object changed, or that copy is the only one)."""
    if not lock_if_current(tx, extent.bucket, extent.key, extent.write_id):
        return None
    copies = _copies(tx, extent.bucket, extent.key, extent.part_number, lock=True)
    source = [c for c in copies if c.backend == backend]
    if not source or len(copies) < 2:
        return None
    lock_quotas(tx, [backend])
    tx.execute(
        "DELETE FROM object_locations WHERE bucket = ? AND object_key = ? AND part_number = ?"
        " AND backend_name = ?",
        (extent.bucket, extent.key, extent.part_number, backend),
    )
    adjust_quota(tx, notes, backend, now, used=-source[0].size, count=-1)
    return enqueue_cleanup(tx, notes, backend, source[0].storage_key, source[0].size, DRAIN_REASON, now, now)


def txn_backend_uploads(tx: Tx, notes: Notes, backend: str) -> list[tuple[str, str, str]]:
    """(bucket, key, upload id) of every open client upload with a part (or a part in flight,
    or its native upload) on ``backend``: a drain aborts them."""
    rows = tx.execute(
        "SELECT bucket, object_key, upload_id FROM multipart_uploads u WHERE state = 'open'"
        " AND origin = 'client' AND (backend_name = ?"
        " OR EXISTS (SELECT 1 FROM multipart_parts p WHERE p.upload_id = u.upload_id AND p.backend_name = ?)"
        " OR EXISTS (SELECT 1 FROM multipart_part_attempts a WHERE a.upload_id = u.upload_id"
        " AND a.backend_name = ?)) ORDER BY bucket, object_key, upload_id",
        (backend, backend, backend),
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def txn_remove_backend(
    tx: Tx, notes: Notes, backend: str, now: float, events: Sequence[OutboxEvent] = ()
) -> tuple[int, int]:
    """Forget ``backend`` (its bytes stay where they are): its copies, queued cleanups, dead
    letters, usage and quota rows.  An object left without any copy of one of its extents
    is deleted too, its copies on other backends queued for cleanup (their bytes orphaned).
    ``events`` (``backend.removed``) go to the outbox with the removal, never without it.
    Returns (copies forgotten, objects deleted).  Refused (-1, 0) while a drain of it is active."""
    row = tx.execute(
        f"SELECT state FROM drain_state WHERE backend_name = ?{tx.for_update()}", (backend,)
    ).fetchone()
    if row is not None and row[0] != "completed":
        return -1, 0
    keys = tx.execute(
        "SELECT DISTINCT bucket, object_key FROM object_locations WHERE backend_name = ?"
        " ORDER BY bucket, object_key",
        (backend,),
    ).fetchall()
    forgotten = tx.execute(
        "DELETE FROM object_locations WHERE backend_name = ? RETURNING 1", (backend,)
    ).fetchall()
    deleted = 0
    for bucket, key in keys:
        lost = tx.execute(
            "SELECT 1 FROM objects o WHERE o.bucket = ? AND o.object_key = ? AND ("
            " NOT EXISTS (SELECT 1 FROM object_locations l WHERE l.bucket = o.bucket"
            " AND l.object_key = o.object_key)"
            " OR EXISTS (SELECT 1 FROM object_parts p WHERE p.bucket = o.bucket AND p.object_key = o.object_key"
            " AND NOT EXISTS (SELECT 1 FROM object_locations l WHERE l.bucket = p.bucket"
            " AND l.object_key = p.object_key AND l.part_number = p.part_number)))",
            (bucket, key),
        ).fetchone()
        if lost is None:
            continue
        rest = tx.execute(
            "SELECT backend_name, storage_key, size_bytes FROM object_locations"
            " WHERE bucket = ? AND object_key = ? ORDER BY backend_name, storage_key",
            (bucket, key),
        ).fetchall()
        lock_quotas(tx, [r[0] for r in rest])
        for name, skey, size in rest:
            adjust_quota(tx, notes, name, now, used=-int(size), count=-1)
            enqueue_cleanup(tx, notes, name, skey, int(size), "backend_removed", now, now)
        tx.execute("DELETE FROM objects WHERE bucket = ? AND object_key = ?", (bucket, key))
        deleted += 1
    for table in ("cleanup_queue", "cleanup_dlq", "backend_usage", "backend_quotas", "drain_state"):
        tx.execute(f"DELETE FROM {table} WHERE backend_name = ?", (backend,))
    add_events(tx, events, now)
    return len(forgotten), deleted
