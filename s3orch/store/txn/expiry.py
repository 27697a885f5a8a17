"""Lifecycle expiration: pages of keys under an internal-key prefix committed before a cutoff.

s3-orchestrator matches a rule's prefix against its *internal* key, ``{bucket}/{key}``
(BEHAVIOURS §1.18).  Bucket names hold no ``/``, so that is two range scans over the
(bucket, object_key) primary key, never a scan of every row:

* a prefix with a ``/`` names one bucket (before it) and a key prefix (after it):
  ``photos/tmp/`` is bucket ``photos``, keys starting ``tmp/``;
* a prefix without one matches every key of every bucket whose name starts with it:
  ``arch`` is all of buckets ``archive``, ``arch-2024``, ...

Age is the ``created_at`` of the key's current version (its commit time): an overwrite
makes the key young again.  Pages are in (bucket, key) order, resumed after the last one.
"""

from __future__ import annotations

from typing import Any

from s3orch.store.records import ExpiredObject
from s3orch.store.txn.base import Notes, Tx
from s3orch.store.txn.listing import prefix_upper_bound


def split_prefix(prefix: str) -> tuple[str, bool, str]:
    """(bucket or bucket prefix, whether the bucket is exact, key prefix) of an internal-key prefix."""
    bucket, slash, key = prefix.partition("/")
    return bucket, bool(slash), key


def txn_expired_objects(
    tx: Tx,
    notes: Notes,
    prefix: str,
    created_before: float,
    after: tuple[str, str] | None,
    limit: int,
) -> list[ExpiredObject]:
    bucket, exact, key_prefix = split_prefix(prefix)
    sql = "SELECT bucket, object_key, write_id, size_bytes, created_at FROM objects WHERE created_at < ?"
    params: list[Any] = [created_before]
    if exact:
        sql += " AND bucket = ? AND object_key >= ?"
        params += [bucket, key_prefix]
        upper = prefix_upper_bound(key_prefix)
        if upper is not None:
            sql += " AND object_key < ?"
            params.append(upper)
    else:
        sql += " AND bucket >= ?"
        params.append(bucket)
        upper = prefix_upper_bound(bucket)
        if upper is not None:
            sql += " AND bucket < ?"
            params.append(upper)
    if after is not None:
        sql += " AND (bucket > ? OR (bucket = ? AND object_key > ?))"
        params += [after[0], after[0], after[1]]
    sql += " ORDER BY bucket, object_key LIMIT ?"
    params.append(limit)
    return [
        ExpiredObject(str(b), str(k), str(w), int(size), float(created))
        for b, k, w, size, created in tx.execute(sql, params).fetchall()
    ]
