"""The rebalancer's store side: the copies a backend could give up, and moving one copy.

A move is made like a replica (PUT-before-COMMIT): room on the target is reserved by
:func:`~s3orch.store.txn.replicas.txn_reserve_replica` (the new copy's own key queued for
cleanup after a long hold, its bytes counted as orphaned), the bytes are copied, then
:func:`txn_move_copy` swaps the location in one transaction: the target's copy is recorded
(orphan -> used) and the source's removed (used -> orphan, its key queued for deletion),
only while the object is still the same write, the source copy is still recorded and the
target holds no copy.  Otherwise the new copy's row is made due now and returned, so the
caller deletes exactly the key it wrote.  An extent never has fewer copies than before.
"""

from __future__ import annotations

from s3orch.store.records import CleanupItem, ReplicaOutcome, ReplicaReservation, UnderReplicated
from s3orch.store.txn.base import Notes, Tx
from s3orch.store.txn.cleanup import enqueue_cleanup
from s3orch.store.txn.drains import extent_of
from s3orch.store.txn.quota import adjust_quota, lock_quotas
from s3orch.store.txn.replicas import _copies, lock_if_current

#: The cleanup reason of a moved copy's source (deleted once the move is recorded).
SOURCE_REASON = "rebalance_source_delete"
#: The cleanup reason of a copy whose move was refused (deleted at once).
ORPHAN_REASON = "rebalance_orphan"


def txn_rebalance_candidates(tx: Tx, notes: Notes, backend: str, limit: int) -> list[UnderReplicated]:
    """Up to ``limit`` extents of current objects with a copy on ``backend``, smallest first
    (ties in key order): what a plan may move off it."""
    rows = tx.execute(
        "SELECT l.bucket, l.object_key, l.part_number, l.write_id, o.etag FROM object_locations l"
        " JOIN objects o ON o.bucket = l.bucket AND o.object_key = l.object_key AND o.write_id = l.write_id"
        " WHERE l.backend_name = ?"
        " ORDER BY l.size_bytes, l.bucket, l.object_key, l.part_number LIMIT ?",
        (backend, limit),
    ).fetchall()
    return [extent_of(tx, *row) for row in rows]


def txn_move_copy(
    tx: Tx,
    notes: Notes,
    extent: UnderReplicated,
    reservation: ReplicaReservation,
    source: str,
    source_key: str,
    now: float,
    grace: float,
) -> ReplicaOutcome:
    """Swap the copy of ``extent`` at ``source``/``source_key`` for the one just written for
    ``reservation``.  ``ok``: the source's cleanup row (due after ``grace``; the caller deletes
    it at once) is the outcome's ``cleanup``.  ``stale`` (overwritten or deleted),
    ``source_gone`` (the source copy was removed meanwhile) or ``target_holds`` (the target got
    a copy meanwhile): the new copy's row, due now, is the ``cleanup``.  ``expired``: the
    cleanup queue already took the new copy (it outlived its hold); nothing to delete."""
    reason = "ok"
    copies = []
    if not lock_if_current(tx, extent.bucket, extent.key, extent.write_id):
        reason = "stale"
    else:
        copies = _copies(tx, extent.bucket, extent.key, extent.part_number, lock=True)
        if not any((c.backend, c.storage_key) == (source, source_key) for c in copies):
            reason = "source_gone"
        elif any(c.backend == reservation.backend for c in copies):
            reason = "target_holds"
    row = tx.execute(
        "SELECT id, backend_name, storage_key, size_bytes, reason, attempts, claimed_by"
        f" FROM cleanup_queue WHERE id = ?{tx.for_update()}",
        (reservation.cleanup_id,),
    ).fetchone()
    if row is None or (row[1], row[2]) != (reservation.backend, reservation.storage_key) or row[6] is not None:
        return ReplicaOutcome("expired")
    if reason != "ok":
        tx.execute(
            "UPDATE cleanup_queue SET next_retry = ?, reason = ? WHERE id = ?", (now, ORPHAN_REASON, row[0])
        )
        return ReplicaOutcome(
            reason, reservation, CleanupItem(int(row[0]), row[1], row[2], int(row[3]), ORPHAN_REASON, int(row[5]))
        )
    size = int(row[3])
    moved = next(c for c in copies if (c.backend, c.storage_key) == (source, source_key))
    lock_quotas(tx, [reservation.backend, source])
    tx.execute("DELETE FROM cleanup_queue WHERE id = ?", (row[0],))
    adjust_quota(tx, notes, reservation.backend, now, orphan=-size, used=size, count=1)
    tx.execute(
        "INSERT INTO object_locations (bucket, object_key, part_number, backend_name,"
        " storage_key, write_id, size_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            extent.bucket, extent.key, extent.part_number, reservation.backend,
            reservation.storage_key, extent.write_id, size, now,
        ),
    )
    tx.execute(
        "DELETE FROM object_locations WHERE bucket = ? AND object_key = ? AND part_number = ?"
        " AND backend_name = ? AND storage_key = ?",
        (extent.bucket, extent.key, extent.part_number, source, source_key),
    )
    adjust_quota(tx, notes, source, now, used=-moved.size, count=-1)
    item = enqueue_cleanup(tx, notes, source, source_key, moved.size, SOURCE_REASON, now, now + grace)
    return ReplicaOutcome("ok", reservation, item)
