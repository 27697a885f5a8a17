"""Integrity: the copies the scrubber checks, their verification times, dropping a corrupt copy,
and the SHA-256 backfill of versions written without one.

What a copy must hash to comes from its object's row: the plaintext SHA-256
(``objects.content_hash``) for a single-extent object, the part's MD5 (``object_parts.etag``)
for a part of a multipart object, the MD5 ETag when a single-part object has no SHA-256.
A corrupt copy is dropped only while the object is the same write and another copy of the
extent remains, under the replicator's locks (:func:`~s3orch.store.txn.replicas.lock_if_current`):
its row goes, its bytes go to the cleanup queue (used -> orphan), and the replicator rebuilds the
missing copy from a good one.  The last copy is never dropped: its reads keep failing loudly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from s3orch.store.records import CleanupItem, ScrubCopy
from s3orch.store.txn.base import Notes, Tx
from s3orch.store.txn.cleanup import enqueue_cleanup
from s3orch.store.txn.quota import adjust_quota, lock_quotas
from s3orch.store.txn.replicas import _copies, lock_if_current

#: The cleanup reason of a copy whose bytes failed verification (s3-orchestrator's).
INTEGRITY_REASON = "integrity_failed"

_COPY_COLUMNS = (
    "SELECT l.bucket, l.object_key, o.write_id, l.part_number, l.backend_name, l.storage_key,"
    " l.size_bytes, l.last_verified, o.content_hash, o.etag, p.etag, o.encrypted,"
    # a part is compressed (or not) on its own
    " CASE WHEN l.part_number = 0 THEN o.compression_chunk_size ELSE p.compression_chunk_size END"
    " FROM object_locations l"
    " JOIN objects o ON o.bucket = l.bucket AND o.object_key = l.object_key"
    " LEFT JOIN object_parts p ON p.bucket = l.bucket AND p.object_key = l.object_key"
    " AND p.part_number = l.part_number"
)


def expected_digest(part_number: int, content_hash: str | None, etag: str | None,
                    part_etag: str | None) -> tuple[str, str] | None:
    """What a copy of the extent must hash to (see the module)."""
    if part_number > 0:
        return ("md5", part_etag) if part_etag and "-" not in part_etag else None
    if content_hash:
        return ("sha256", content_hash)
    return ("md5", etag) if etag and "-" not in etag else None


def _scrub_copy(row: Sequence[Any]) -> ScrubCopy:
    return ScrubCopy(
        bucket=row[0], key=row[1], write_id=row[2], part_number=int(row[3]), backend=row[4],
        storage_key=row[5], size=int(row[6]), last_verified=None if row[7] is None else float(row[7]),
        expected=expected_digest(int(row[3]), row[8], row[9], row[10]), encrypted=bool(row[11]),
        compressed=row[12] is not None,
    )


def txn_scrub_candidates(tx: Tx, notes: Notes, limit: int, before: float) -> list[ScrubCopy]:
    rows = tx.execute(
        _COPY_COLUMNS + " WHERE l.last_verified IS NULL OR l.last_verified < ?"
        " ORDER BY l.last_verified NULLS FIRST LIMIT ?",
        (before, limit),
    ).fetchall()
    return [_scrub_copy(row) for row in rows]


def txn_copies_to_scrub(tx: Tx, notes: Notes, bucket: str, key: str) -> list[ScrubCopy]:
    rows = tx.execute(
        _COPY_COLUMNS + " WHERE l.bucket = ? AND l.object_key = ? ORDER BY l.part_number, l.backend_name",
        (bucket, key),
    ).fetchall()
    return [_scrub_copy(row) for row in rows]


def txn_mark_verified(tx: Tx, notes: Notes, copies: Sequence[ScrubCopy], now: float) -> None:
    for copy in copies:
        tx.execute(
            "UPDATE object_locations SET last_verified = ? WHERE bucket = ? AND object_key = ?"
            " AND part_number = ? AND backend_name = ? AND storage_key = ?",
            (now, copy.bucket, copy.key, copy.part_number, copy.backend, copy.storage_key),
        )


def txn_drop_corrupt_copy(tx: Tx, notes: Notes, copy: ScrubCopy, now: float) -> CleanupItem | None:
    if not lock_if_current(tx, copy.bucket, copy.key, copy.write_id):
        return None
    copies = _copies(tx, copy.bucket, copy.key, copy.part_number, lock=True)
    found = [c for c in copies if (c.backend, c.storage_key) == (copy.backend, copy.storage_key)]
    if not found or len(copies) < 2:
        return None
    lock_quotas(tx, [copy.backend])
    tx.execute(
        "DELETE FROM object_locations WHERE bucket = ? AND object_key = ? AND part_number = ?"
        " AND backend_name = ? AND storage_key = ?",
        (copy.bucket, copy.key, copy.part_number, copy.backend, copy.storage_key),
    )
    adjust_quota(tx, notes, copy.backend, now, used=-found[0].size, count=-1)
    return enqueue_cleanup(tx, notes, copy.backend, copy.storage_key, found[0].size, INTEGRITY_REASON, now, now)


def txn_integrity_stats(tx: Tx, notes: Notes) -> tuple[int, float | None]:
    row = tx.execute(
        "SELECT SUM(CASE WHEN last_verified IS NULL THEN 1 ELSE 0 END), MIN(last_verified)"
        " FROM object_locations"
    ).fetchone()
    return int(row[0] or 0), None if row[1] is None else float(row[1])


def txn_unhashed_objects(
    tx: Tx, notes: Notes, after: tuple[str, str] | None, limit: int
) -> tuple[list[ScrubCopy], tuple[str, str] | None]:
    sql = (
        # Encrypted and compressed objects always have the client's hash (a backfill would hash stored bytes).
        "SELECT o.bucket, o.object_key FROM objects o WHERE o.content_hash IS NULL AND o.encrypted = ?"
        " AND o.compression_chunk_size IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM object_parts p WHERE p.bucket = o.bucket AND p.object_key = o.object_key)"
    )
    params: list[Any] = [False]
    if after is not None:
        sql += " AND (o.bucket > ? OR (o.bucket = ? AND o.object_key > ?))"
        params += [after[0], after[0], after[1]]
    keys = tx.execute(sql + " ORDER BY o.bucket, o.object_key LIMIT ?", (*params, limit)).fetchall()
    found: list[ScrubCopy] = []
    for bucket, key in keys:
        found += txn_copies_to_scrub(tx, notes, bucket, key)
    resume = (str(keys[-1][0]), str(keys[-1][1])) if len(keys) == limit else None
    return found, resume


def txn_set_content_hash(tx: Tx, notes: Notes, bucket: str, key: str, write_id: str, sha256_hex: str) -> bool:
    tx.execute(
        "UPDATE objects SET content_hash = ? WHERE bucket = ? AND object_key = ? AND write_id = ?"
        " AND content_hash IS NULL",
        (sha256_hex, bucket, key, write_id),
    )
    return tx.rowcount == 1
