"""Reconcile and import: the database's side of a backend, compared with what the backend holds.

The reconciler (:mod:`s3orch.core.reconcile`) merges a backend's listing with
:func:`txn_stored_copies` (the copies the database has on that backend, in storage-key byte
order, keyset-paged) and acts on the differences, each decision made again inside its own
transaction on the rows as they are then:

* :func:`txn_queue_orphans`: backend objects of s3orch's own key layout that nothing
  references (no copy, intent, cleanup row, dead letter, multipart part or attempt) are
  queued for cleanup; one with a pending cleanup or a dead letter is counted as
  ``suppressed_pending_cleanup`` and never brought back (the original's #1325).
* :func:`txn_forget_lost_copy`: a copy whose backend object is gone is forgotten (its bytes
  leave ``bytes_used``) while the object is still the write that made it, the copy is older
  than the grace period and no write of the key is in flight; the last copy of an extent
  takes the whole object with it (its other copies are queued for cleanup).
* :func:`txn_import_objects`: sync/import adopts backend objects in place: the row points at
  the backend key as it is (no byte copied), never over an existing object or a write in
  flight, and never twice (the backend key is then referenced).
"""

from __future__ import annotations

from collections.abc import Sequence

from s3orch.store.records import CleanupItem, ImportCandidate, LostCopy, ObjectRecord, StoredCopy
from s3orch.store.txn.base import Notes, Tx, marks
from s3orch.store.txn.cleanup import enqueue_cleanup
from s3orch.store.txn.objects import NewCopy, orphan_locations, write_object_row
from s3orch.store.txn.quota import adjust_quota, lock_quotas
from s3orch.store.txn.replicas import lock_if_current

#: The cleanup reason of an unreferenced backend object of s3orch's layout found by a pass.
RECONCILE_ORPHAN_REASON = "reconcile_orphan"
#: The cleanup reason of the surviving copies of an object whose last copy of an extent was lost.
RECONCILE_LOST_REASON = "reconcile_lost"

#: Most keys in one ``IN`` list.
_CHUNK = 500

#: Where a backend object may be referenced, by what it means for the reconciler.
_REFERENCES: tuple[tuple[str, str], ...] = (
    ("object_locations", "referenced"),
    ("cleanup_queue", "pending_cleanup"),
    ("cleanup_dlq", "pending_cleanup"),
    ("pending_objects", "in_flight"),
    ("multipart_uploads", "in_flight"),
    ("multipart_parts", "in_flight"),
    ("multipart_part_attempts", "in_flight"),
)


def _byte_order(tx: Tx) -> str:
    """The collation that sorts storage keys by bytes, as S3 lists them (SQLite's default
    BINARY already does; PostgreSQL's ``storage_key`` has the database's collation)."""
    return ' COLLATE "C"' if tx.dialect.row_locks else ""


def txn_stored_copies(tx: Tx, notes: Notes, backend: str, after: str | None, limit: int) -> list[StoredCopy]:
    """Up to ``limit`` copies on ``backend`` whose storage key is after ``after``, in byte
    order of the storage key (keyset paging: a pass ends while writes go on)."""
    collate = _byte_order(tx)
    where = ["backend_name = ?"]
    args: list[object] = [backend]
    if after is not None:
        where.append(f"storage_key{collate} > ?")
        args.append(after)
    rows = tx.execute(
        "SELECT storage_key, bucket, object_key, part_number, write_id, size_bytes, created_at"
        f" FROM object_locations WHERE {' AND '.join(where)}"
        f" ORDER BY storage_key{collate} LIMIT ?",
        [*args, limit],
    ).fetchall()
    return [
        StoredCopy(str(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4]), int(r[5]), float(r[6]))
        for r in rows
    ]


def references(tx: Tx, backend: str, keys: Sequence[str]) -> dict[str, str]:
    """Storage key -> how the database references it (``referenced``, ``pending_cleanup``,
    ``in_flight``; the first found in that order), for those of ``keys`` it references."""
    found: dict[str, str] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = list(keys[start:start + _CHUNK])
        for table, meaning in _REFERENCES:
            for (storage_key,) in tx.execute(
                f"SELECT storage_key FROM {table} WHERE backend_name = ?"
                f" AND storage_key IN ({marks(len(chunk))})",
                [backend, *chunk],
            ).fetchall():
                found.setdefault(str(storage_key), meaning)
    return found


def txn_queue_orphans(
    tx: Tx, notes: Notes, backend: str, found: Sequence[tuple[str, int]], now: float, due: float
) -> tuple[dict[str, str], list[CleanupItem]]:
    """Queue for cleanup (due at ``due``) the backend objects of ``found`` (key, size) that
    nothing references now; (key -> ``queued`` or why it was left, the queued rows)."""
    known = references(tx, backend, [key for key, _ in found])
    free = [(key, size) for key, size in found if key not in known]
    items: list[CleanupItem] = []
    if free:
        lock_quotas(tx, [backend])
        for key, size in free:
            items.append(enqueue_cleanup(tx, notes, backend, key, size, RECONCILE_ORPHAN_REASON, now, due))
    decisions = dict(known)
    decisions.update((key, "queued") for key, _ in free)
    return decisions, items


def txn_forget_lost_copy(
    tx: Tx, notes: Notes, backend: str, copy: StoredCopy, now: float, grace: float
) -> LostCopy:
    """Forget ``copy`` on ``backend`` (its backend object is gone), under the key's lock, if
    the object is still ``copy.write_id``, the copy older than ``grace`` seconds and no write
    of the key in flight; the last copy of an extent deletes the object (see the module)."""
    if copy.created_at > now - grace:
        return LostCopy("kept")
    if not lock_if_current(tx, copy.bucket, copy.key, copy.write_id):
        return LostCopy("kept")
    row = tx.execute(
        "SELECT size_bytes, created_at FROM object_locations WHERE bucket = ? AND object_key = ?"
        f" AND part_number = ? AND backend_name = ? AND storage_key = ?{tx.for_update()}",
        (copy.bucket, copy.key, copy.part_number, backend, copy.storage_key),
    ).fetchone()
    if row is None or float(row[1]) > now - grace:
        return LostCopy("kept")
    in_flight = tx.execute(
        "SELECT 1 FROM pending_objects WHERE bucket = ? AND object_key = ? LIMIT 1", (copy.bucket, copy.key)
    ).fetchone()
    if in_flight is not None:
        return LostCopy("kept")
    size = int(row[0])
    others = tx.execute(
        "SELECT COUNT(*) FROM object_locations WHERE bucket = ? AND object_key = ? AND part_number = ?"
        " AND NOT (backend_name = ? AND storage_key = ?)",
        (copy.bucket, copy.key, copy.part_number, backend, copy.storage_key),
    ).fetchone()
    if int(others[0]) > 0:
        lock_quotas(tx, [backend])
        tx.execute(
            "DELETE FROM object_locations WHERE backend_name = ? AND storage_key = ?", (backend, copy.storage_key)
        )
        adjust_quota(tx, notes, backend, now, used=-size, count=-1)
        return LostCopy("removed", size)
    # The last copy of an extent: the object cannot be read whole any more.  Its bytes on
    # this backend are gone (released, not orphaned); any other extent's copies are queued.
    items = orphan_locations(
        tx, notes, copy.bucket, copy.key, RECONCILE_LOST_REASON, now, keep=(backend, copy.storage_key)
    )
    tx.execute("DELETE FROM objects WHERE bucket = ? AND object_key = ?", (copy.bucket, copy.key))
    return LostCopy("lost", size, tuple(items))


def txn_import_objects(
    tx: Tx,
    notes: Notes,
    backend: str,
    candidates: Sequence[ImportCandidate],
    write_ids: Sequence[str],
    now: float,
    write: bool = True,
) -> list[str]:
    """Adopt each candidate in place (its write id from ``write_ids``, so a retried
    transaction writes the same rows); per candidate ``imported``, ``exists`` (the key has an
    object), ``in_flight`` (a write of the key is pending) or ``referenced`` (the backend
    object already belongs to s3orch).  ``write=False`` (a dry run, in a read-only
    transaction) decides the same and writes nothing."""
    known = references(tx, backend, [c.storage_key for c in candidates])
    outcomes: list[str] = []
    adopted: list[ImportCandidate] = []
    planned: dict[str, set[str]] = {}
    for candidate, write_id in zip(candidates, write_ids, strict=True):
        if candidate.storage_key in known:
            outcomes.append("referenced")
            continue
        if write:
            tx.dialect.lock_key(tx, candidate.bucket, candidate.key)
        exists = tx.execute(
            f"SELECT 1 FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update() if write else ''}",
            (candidate.bucket, candidate.key),
        ).fetchone()
        if exists is not None:
            outcomes.append("exists")
            continue
        pending = tx.execute(
            "SELECT 1 FROM pending_objects WHERE bucket = ? AND object_key = ? LIMIT 1",
            (candidate.bucket, candidate.key),
        ).fetchone()
        if pending is not None:
            outcomes.append("in_flight")
            continue
        if candidate.key in planned.get(candidate.bucket, set()):
            outcomes.append("exists")  # the same key twice in one batch: the first wins
            continue
        planned.setdefault(candidate.bucket, set()).add(candidate.key)
        known[candidate.storage_key] = "referenced"
        if write:
            record = ObjectRecord(
                bucket=candidate.bucket, key=candidate.key, write_id=write_id, size=candidate.size,
                etag=candidate.etag, last_modified=candidate.last_modified,
            )
            write_object_row(tx, record, [NewCopy(0, backend, candidate.storage_key, candidate.size)], now)
        adopted.append(candidate)
        outcomes.append("imported")
    if adopted and write:  # quota rows last (the one lock order)
        adjust_quota(
            tx, notes, backend, now, used=sum(c.size for c in adopted), count=len(adopted)
        )
    return outcomes

