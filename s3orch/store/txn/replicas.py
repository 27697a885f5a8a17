"""Replicas: finding extents with too few copies, reserving room for a new copy, recording it.

A new copy is made in three steps, like a write (PUT-before-COMMIT):

1. :func:`txn_reserve_replica` picks the target by the routing strategy among the
   candidates that hold no copy of the extent, and queues the new copy's own storage
   key for cleanup, due only after ``hold`` seconds: its bytes count as orphaned
   (quota is reserved, exactly), and a copy abandoned by a crash is deleted later by
   the cleanup queue with nobody's help.
2. The caller copies the bytes to that key.
3. :func:`txn_record_replica` turns the cleanup row into a location (orphan -> used)
   only if the object is still the same write, the extent still lacks copies and the
   row was not claimed by the cleanup queue; otherwise it makes the row due now and
   returns it, so the caller deletes exactly the key it wrote, and nothing newer.

"Counted" copies are those not on an ``uncounted`` backend (one whose breaker has
been open past ``replication.unhealthy_threshold``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from s3orch.store.records import (
    CleanupItem,
    Location,
    ReplicaOutcome,
    ReplicaReservation,
    UnderReplicated,
)
from s3orch.store.txn.base import Notes, Tx, marks
from s3orch.store.txn.cleanup import enqueue_cleanup
from s3orch.store.txn.quota import adjust_quota, lock_quotas, pick_backend

#: The cleanup reason of a replica in flight (and of one whose record was refused).
REPLICA_REASON = "replication_orphan"


def _counted(uncounted: Sequence[str]) -> tuple[str, list[Any]]:
    """SQL counting a group's copies not on ``uncounted`` backends, and its parameters."""
    if not uncounted:
        return "COUNT(*)", []
    return (
        f"SUM(CASE WHEN backend_name IN ({marks(len(uncounted))}) THEN 0 ELSE 1 END)",
        list(uncounted),
    )


def _copies(tx: Tx, bucket: str, key: str, part_number: int, lock: bool = False) -> list[Location]:
    rows = tx.execute(
        "SELECT backend_name, storage_key, size_bytes FROM object_locations"
        " WHERE bucket = ? AND object_key = ? AND part_number = ?"
        f" ORDER BY created_at, backend_name{tx.for_update() if lock else ''}",
        (bucket, key, part_number),
    ).fetchall()
    return [Location(row[0], row[1], int(row[2])) for row in rows]


def stored_md5(tx: Tx, bucket: str, key: str, part_number: int) -> str | None:
    """The MD5 a copy of the extent's stored bytes must match before it is copied: the object's
    (or the part's) ETag, or "" when the stored bytes are not the client's.  Ciphertext and
    compressed frames move as they are; GCM tags and zstd's per-frame checksums check them on every
    read.  A part of a multipart object is compressed (or not) on its own.  None: no such extent."""
    row = tx.execute(
        "SELECT etag, encrypted, compression_chunk_size FROM objects WHERE bucket = ? AND object_key = ?",
        (bucket, key),
    ).fetchone()
    if row is None:
        return None
    if not part_number:
        return "" if row[1] or row[2] is not None else str(row[0])
    part = tx.execute(
        "SELECT etag, compression_chunk_size FROM object_parts WHERE bucket = ? AND object_key = ? AND part_number = ?",
        (bucket, key, part_number),
    ).fetchone()
    if part is None:
        return None
    return "" if row[1] or part[1] is not None else str(part[0] or "")


def txn_under_replicated(
    tx: Tx,
    notes: Notes,
    factor: int,
    limit: int,
    after: tuple[str, str, int] | None,
    uncounted: Sequence[str],
) -> list[UnderReplicated]:
    """Up to ``limit`` extents with fewer than ``factor`` counted copies, in (bucket, key,
    part) order after ``after`` (keyset paging: a pass ends even while writes go on)."""
    counted, params = _counted(uncounted)
    where = " WHERE (bucket, object_key, part_number) > (?, ?, ?)" if after is not None else ""
    sql = (
        "SELECT bucket, object_key, part_number FROM object_locations"
        f"{where} GROUP BY bucket, object_key, part_number HAVING {counted} < ?"
        " ORDER BY bucket, object_key, part_number LIMIT ?"
    )
    args: list[Any] = [*(after if after is not None else ()), *params, factor, limit]
    found = tx.execute(sql, args).fetchall()
    out: list[UnderReplicated] = []
    for bucket, key, part_number in found:
        row = tx.execute("SELECT write_id FROM objects WHERE bucket = ? AND object_key = ?", (bucket, key)).fetchone()
        etag = stored_md5(tx, bucket, key, int(part_number))
        if row is None or etag is None:
            continue
        copies = _copies(tx, bucket, key, int(part_number))
        if not copies:
            continue
        out.append(
            UnderReplicated(
                bucket, key, str(row[0]), int(part_number), copies[0].size, etag, tuple(copies)
            )
        )
    return out


def txn_count_under_replicated(tx: Tx, notes: Notes, factor: int, uncounted: Sequence[str]) -> int:
    """How many extents :func:`txn_under_replicated` would page through now."""
    counted, params = _counted(uncounted)
    row = tx.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM object_locations"
        f" GROUP BY bucket, object_key, part_number HAVING {counted} < ?) AS short",
        [*params, factor],
    ).fetchone()
    return int(row[0])


def lock_if_current(tx: Tx, bucket: str, key: str, write_id: str) -> bool:
    """Lock the key and its object row; whether the object is still the write ``write_id``
    (placement workers act on a copy only while it belongs to the current write)."""
    tx.dialect.lock_key(tx, bucket, key)
    row = tx.execute(
        f"SELECT write_id FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}",
        (bucket, key),
    ).fetchone()
    return row is not None and bool(row[0] == write_id)


def _check_extent(
    tx: Tx, bucket: str, key: str, write_id: str, part_number: int, factor: int, uncounted: Sequence[str]
) -> tuple[str, list[Location]]:
    """Lock the key and its object row; ("ok", copies) while the object is still
    ``write_id`` and the extent still has fewer than ``factor`` counted copies."""
    if not lock_if_current(tx, bucket, key, write_id):
        return "stale", []
    copies = _copies(tx, bucket, key, part_number, lock=True)
    if not copies:
        return "stale", []
    skipped = set(uncounted)
    if sum(1 for copy in copies if copy.backend not in skipped) >= factor:
        return "satisfied", copies
    return "ok", copies


def txn_drop_missing_copy(
    tx: Tx, notes: Notes, extent: UnderReplicated, backend: str, storage_key: str, now: float
) -> bool:
    """Forget a copy its backend answered 404 for (its bytes are gone), while the object is
    still the same write and another copy of the extent remains; True when it was dropped."""
    if not lock_if_current(tx, extent.bucket, extent.key, extent.write_id):
        return False
    copies = _copies(tx, extent.bucket, extent.key, extent.part_number, lock=True)
    missing = [c for c in copies if (c.backend, c.storage_key) == (backend, storage_key)]
    if not missing or len(copies) < 2:
        return False  # never the last record of an extent: its reads must keep failing loudly
    lock_quotas(tx, [backend])
    tx.execute(
        "DELETE FROM object_locations WHERE bucket = ? AND object_key = ? AND part_number = ?"
        " AND backend_name = ?",
        (extent.bucket, extent.key, extent.part_number, backend),
    )
    adjust_quota(tx, notes, backend, now, used=-missing[0].size, count=-1)
    return True


def txn_reserve_replica(
    tx: Tx,
    notes: Notes,
    extent: UnderReplicated,
    factor: int,
    uncounted: Sequence[str],
    candidates: Sequence[str],
    strategy: str,
    storage_key: str,
    now: float,
    hold: float,
) -> ReplicaOutcome:
    reason, copies = _check_extent(
        tx, extent.bucket, extent.key, extent.write_id, extent.part_number, factor, uncounted
    )
    if reason != "ok":
        return ReplicaOutcome(reason)
    holders = {copy.backend for copy in copies}
    size = copies[0].size
    chosen = pick_backend(tx, [c for c in candidates if c not in holders], strategy, size, lock=True)
    if chosen is None:
        return ReplicaOutcome("no_target")
    item = enqueue_cleanup(tx, notes, chosen, storage_key, size, REPLICA_REASON, now, now + hold)
    return ReplicaOutcome("ok", ReplicaReservation(chosen, storage_key, size, item.id))


def txn_reserve_copy(
    tx: Tx,
    notes: Notes,
    candidates: Sequence[str],
    strategy: str,
    storage_key: str,
    size: int,
    now: float,
    hold: float,
) -> ReplicaReservation | None:
    """Room for a companion copy of a write still in flight (write fan-out): like
    :func:`txn_reserve_replica` (a cleanup row due after ``hold``), but there is no object
    row to check yet; the commit of the write turns the row into a location, or
    :func:`txn_record_replica` does once the write is current.  None when no candidate
    has room."""
    # (A retry after a lost COMMIT may hold a second row: never recorded, the queue deletes
    # it after its hold, a harmless 404, and frees its room.)
    chosen = pick_backend(tx, list(candidates), strategy, size, lock=True)
    if chosen is None:
        return None
    item = enqueue_cleanup(tx, notes, chosen, storage_key, size, REPLICA_REASON, now, now + hold)
    return ReplicaReservation(chosen, storage_key, size, item.id)


def txn_abandon_replica(tx: Tx, notes: Notes, cleanup_id: int, due: float) -> None:
    """A copy whose PUT got no answer (it may still land): its cleanup row becomes due at
    ``due`` (after a grace), so the queue deletes it once a slow PUT has surely ended."""
    tx.execute(
        "UPDATE cleanup_queue SET next_retry = ? WHERE id = ? AND claimed_by IS NULL AND next_retry > ?",
        (due, cleanup_id, due),
    )


def txn_record_replica(
    tx: Tx,
    notes: Notes,
    extent: UnderReplicated,
    reservation: ReplicaReservation,
    factor: int,
    uncounted: Sequence[str],
    now: float,
) -> ReplicaOutcome:
    reason, copies = _check_extent(
        tx, extent.bucket, extent.key, extent.write_id, extent.part_number, factor, uncounted
    )
    if reason == "ok" and any(copy.backend == reservation.backend for copy in copies):
        reason = "stale"  # never two copies on one backend
    row = tx.execute(
        "SELECT id, backend_name, storage_key, size_bytes, reason, attempts, claimed_by"
        f" FROM cleanup_queue WHERE id = ?{tx.for_update()}",
        (reservation.cleanup_id,),
    ).fetchone()
    if row is None or (row[1], row[2]) != (reservation.backend, reservation.storage_key):
        # The cleanup queue deleted the copy already (it outlived its hold): nothing to keep.
        return ReplicaOutcome("expired")
    item = CleanupItem(int(row[0]), row[1], row[2], int(row[3]), row[4], int(row[5]))
    if row[6] is not None:
        return ReplicaOutcome("expired")  # being deleted by the cleanup queue right now
    if reason != "ok":
        tx.execute("UPDATE cleanup_queue SET next_retry = ? WHERE id = ?", (now, item.id))
        return ReplicaOutcome(reason, reservation, item)
    lock_quotas(tx, [reservation.backend])
    tx.execute("DELETE FROM cleanup_queue WHERE id = ?", (item.id,))
    adjust_quota(tx, notes, reservation.backend, now, orphan=-item.size, used=item.size, count=1)
    tx.execute(
        "INSERT INTO object_locations (bucket, object_key, part_number, backend_name,"
        " storage_key, write_id, size_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            extent.bucket, extent.key, extent.part_number, reservation.backend,
            reservation.storage_key, extent.write_id, item.size, now,
        ),
    )
    return ReplicaOutcome("ok", reservation)
