"""Lifecycle expiration: pages of keys under an internal-key prefix committed before a cutoff.

s3-orchestrator matches a rule's prefix against its *internal* key, ``{bucket}/{key}``
(BEHAVIOURS §1.18).  Bucket names hold no ``/``, so that is two range scans over the
(bucket, object_key) primary key, never a scan of every row:

* a prefix with a ``/`` names one bucket (before it) and a key prefix (after it):
  ``photos/tmp/`` is bucket ``photos``, keys starting ``tmp/``;
* a prefix without one matches every key of every bucket whose name starts with it:
  ``arch`` is all of buckets ``archive``, ``arch-2024``, ...

Age is the ``created_at`` of the key's current version (its commit time): an overwrite
makes the key young again.  Each key comes with its tag set, which a rule with ``tags`` filters
on (a page may then expire fewer keys than it holds).  Pages are in (bucket, key) order, resumed after the last one.
"""

from __future__ import annotations

import json
from typing import Any

from s3orch.s3.tagging import stored_tags
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
    if exact:
        key_upper = prefix_upper_bound(key_prefix)
        if after is None or after[1] < key_prefix:
            return _scan(tx, created_before, limit, bucket=bucket, key_range=(key_prefix, False, key_upper))
        return _scan(tx, created_before, limit, bucket=bucket, key_range=(after[1], True, key_upper))
    upper = prefix_upper_bound(bucket)
    found: list[ExpiredObject] = []
    start = bucket
    if after is not None:
        # The rest of the bucket the last page ended in, then the buckets after it: each an
        # index seek (a row-value cursor over the range would rescan it on SQLite).
        found = _scan(tx, created_before, limit, bucket=after[0], key_range=(after[1], True, None))
        start = after[0]
    if len(found) < limit:
        found += _scan(
            tx, created_before, limit - len(found), bucket_range=(start, after is not None, upper)
        )
    return found


def _scan(
    tx: Tx,
    created_before: float,
    limit: int,
    *,
    bucket: str | None = None,
    key_range: tuple[str, bool, str | None] | None = None,
    bucket_range: tuple[str, bool, str | None] | None = None,
) -> list[ExpiredObject]:
    """One range scan of the primary key: keys of one ``bucket`` in ``key_range``, or every
    key of the buckets in ``bucket_range``; a range is (lower, lower excluded, upper or None)."""
    sql = (
        "SELECT bucket, object_key, write_id, COALESCE(plaintext_size, size_bytes), created_at, headers FROM objects"
        " WHERE created_at < ?"
    )
    params: list[Any] = [created_before]
    column, bounds = ("object_key", key_range) if bucket is not None else ("bucket", bucket_range)
    if bucket is not None:
        sql += " AND bucket = ?"
        params.append(bucket)
    assert bounds is not None
    lower, excluded, upper = bounds
    sql += f" AND {column} {'>' if excluded else '>='} ?"
    params.append(lower)
    if upper is not None:
        sql += f" AND {column} < ?"
        params.append(upper)
    sql += " ORDER BY bucket, object_key LIMIT ?"
    params.append(limit)
    return [
        ExpiredObject(str(b), str(k), str(w), int(size), float(created), stored_tags(json.loads(headers or "{}")))
        for b, k, w, size, created, headers in tx.execute(sql, params).fetchall()
    ]
