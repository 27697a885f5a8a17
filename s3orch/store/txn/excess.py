"""Excess copies: finding extents with more copies than the replication factor, removing some.

The over-replication cleaner (:mod:`s3orch.core.over_replication`) scores copies by the
health and fill of their backends; :func:`txn_remove_excess` re-reads the extent's copies
under the object key's lock and row locks (the same locks the replicator's reservation and
record take), so the choice is a compare-and-swap on the copies as they are now: a copy the
replicator added or a write that replaced the object meanwhile is seen, and an extent is
never left with fewer than ``factor`` copies.  A removed copy's bytes move from used to
orphaned in the same transaction, queued for cleanup like any other unreferenced object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3orch.store.records import CleanupItem, ExcessCopies, Location
from s3orch.store.txn.base import Notes, Tx
from s3orch.store.txn.cleanup import enqueue_cleanup
from s3orch.store.txn.quota import adjust_quota, lock_quotas
from s3orch.store.txn.replicas import _copies, lock_if_current

#: The cleanup reason of a copy the over-replication cleaner removed.
EXCESS_REASON = "over_replication"

#: A copy scoring at least this is on a healthy backend (never the last one removed).
HEALTHY_SCORE = 2.0


def txn_over_replicated(
    tx: Tx, notes: Notes, factor: int, limit: int, after: tuple[str, str, int] | None
) -> list[ExcessCopies]:
    """Up to ``limit`` extents of current objects with more than ``factor`` copies, in
    (bucket, key, part) order after ``after`` (keyset paging: a pass ends while writes go on)."""
    where = " WHERE (bucket, object_key, part_number) > (?, ?, ?)" if after is not None else ""
    args: list[Any] = [*(after if after is not None else ()), factor, limit]
    found = tx.execute(
        "SELECT bucket, object_key, part_number FROM object_locations"
        f"{where} GROUP BY bucket, object_key, part_number HAVING COUNT(*) > ?"
        " ORDER BY bucket, object_key, part_number LIMIT ?",
        args,
    ).fetchall()
    out: list[ExcessCopies] = []
    for bucket, key, part_number in found:
        row = tx.execute(
            "SELECT write_id FROM objects WHERE bucket = ? AND object_key = ?", (bucket, key)
        ).fetchone()
        copies = _copies(tx, bucket, key, int(part_number))
        if row is None or not copies:
            continue
        out.append(ExcessCopies(bucket, key, str(row[0]), int(part_number), copies[0].size, tuple(copies)))
    return out


def txn_count_over_replicated(tx: Tx, notes: Notes, factor: int) -> int:
    """How many extents :func:`txn_over_replicated` would page through now."""
    row = tx.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM object_locations"
        " GROUP BY bucket, object_key, part_number HAVING COUNT(*) > ?) AS excess",
        (factor,),
    ).fetchone()
    return int(row[0])


def choose_excess(copies: list[Location], factor: int, scores: Mapping[str, float]) -> list[Location]:
    """The copies to remove: the lowest-scored first (ties by backend name) until ``factor``
    remain, never the last copy on a healthy backend.  A backend without a score (no longer
    configured) scores 1, as an open circuit does."""
    ranked = sorted(copies, key=lambda c: (scores.get(c.backend, 1.0), c.backend))
    kept = list(copies)
    out: list[Location] = []
    for copy in ranked:
        if len(kept) <= factor:
            break
        healthy = [c for c in kept if scores.get(c.backend, 1.0) >= HEALTHY_SCORE]
        if healthy == [copy]:
            continue
        kept.remove(copy)
        out.append(copy)
    return out


def txn_remove_excess(
    tx: Tx,
    notes: Notes,
    extent: ExcessCopies,
    factor: int,
    scores: Mapping[str, float],
    now: float,
    grace: float,
) -> list[CleanupItem]:
    """Remove the excess copies of ``extent`` while the object is still ``extent.write_id``;
    the removed copies' cleanup rows (due after ``grace``: the caller deletes them at once)."""
    if factor < 1:
        return []
    if not lock_if_current(tx, extent.bucket, extent.key, extent.write_id):
        return []
    copies = _copies(tx, extent.bucket, extent.key, extent.part_number, lock=True)
    victims = choose_excess(copies, factor, scores)
    if not victims:
        return []
    lock_quotas(tx, [v.backend for v in victims])
    items: list[CleanupItem] = []
    for victim in victims:
        tx.execute(
            "DELETE FROM object_locations WHERE bucket = ? AND object_key = ? AND part_number = ?"
            " AND backend_name = ? AND storage_key = ?",
            (extent.bucket, extent.key, extent.part_number, victim.backend, victim.storage_key),
        )
        adjust_quota(tx, notes, victim.backend, now, used=-victim.size, count=-1)
        items.append(
            enqueue_cleanup(
                tx, notes, victim.backend, victim.storage_key, victim.size, EXCESS_REASON, now, now + grace
            )
        )
    return items
