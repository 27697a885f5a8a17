"""Pages of current object records for the location journal (:mod:`s3orch.core.journal`).

Reads feed every instance's journal: what changed since a watermark (``last_modified``,
indexed by migration 0006), and a rolling sweep through all keys in key order (keys and write
ids only; the records of those the journal lacks are read by key), which is how a journal
learns of deletes made by other instances.  Each record comes with its copies and
extents, exactly as :func:`~s3orch.store.txn.objects.txn_get_object` returns it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from s3orch.store.records import ObjectRecord
from s3orch.store.txn.base import Notes, Tx
from s3orch.store.txn.objects import txn_get_object


def txn_objects_since(
    tx: Tx, notes: Notes, since: float, limit: int, known: Collection[tuple[str, str, str]] = ()
) -> tuple[list[ObjectRecord], list[tuple[str, str, str, float]]]:
    """Up to ``limit`` rows with ``last_modified >= since``, oldest first: (the records of those
    not in ``known`` (bucket, key, write id), every row scanned as (bucket, key, write id,
    last_modified)).  ``known`` spares re-reading the extents of writes already journaled."""
    rows = [
        (str(b), str(k), str(w), float(lm))
        for b, k, w, lm in tx.execute(
            "SELECT bucket, object_key, write_id, last_modified FROM objects"
            " WHERE last_modified >= ? ORDER BY last_modified, bucket, object_key LIMIT ?",
            (since, limit),
        ).fetchall()
    ]
    wanted = [(b, k) for b, k, w, _ in rows if (b, k, w) not in known]
    return _records(tx, notes, wanted), rows


def txn_keys_after(
    tx: Tx, notes: Notes, bucket: str, key: str, limit: int
) -> list[tuple[str, str, str]]:
    """Up to ``limit`` (bucket, key, write id) after (bucket, key), in key order (the sweep: a
    range scan of the primary key, no extents)."""
    return [
        (str(b), str(k), str(w))
        for b, k, w in tx.execute(
            "SELECT bucket, object_key, write_id FROM objects WHERE (bucket, object_key) > (?, ?)"
            " ORDER BY bucket, object_key LIMIT ?",
            (bucket, key, limit),
        ).fetchall()
    ]


def txn_objects_of(tx: Tx, notes: Notes, keys: Sequence[tuple[str, str]]) -> list[ObjectRecord]:
    """The current records of ``keys`` (those that still exist)."""
    return _records(tx, notes, list(keys))


def _records(tx: Tx, notes: Notes, rows: list[tuple[str, str]]) -> list[ObjectRecord]:
    found = (txn_get_object(tx, notes, bucket, key) for bucket, key in rows)
    return [record for record in found if record is not None]
