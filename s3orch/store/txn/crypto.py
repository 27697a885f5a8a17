"""The stored-form passes' transactions: page objects by encryption or compression state, swap an
object's stored bytes (encrypt/decrypt-existing, compress/decompress-existing: s3orch.core.rewrite)
and re-wrap a data key (rotate-encryption-key).

Each change is a compare-and-swap on the object's write id, in one transaction with its quota
effect, so a client write that raced the pass wins and the pass's bytes go to the cleanup queue.
"""

from __future__ import annotations

import base64
from typing import Any

from s3orch.store.records import CleanupItem, ObjectRecord
from s3orch.store.txn.base import Notes, Tx
from s3orch.store.txn.objects import encryption_columns, orphan_locations
from s3orch.store.txn.quota import adjust_quota

#: The cleanup reason of a copy replaced by its encrypted (or decrypted) rewrite.
REWRITE_REASON = "encryption_rewrite"


def txn_objects_by_encryption(
    tx: Tx, notes: Notes, encrypted: bool, key_id: str | None, after: tuple[str, str] | None, limit: int
) -> list[tuple[str, str]]:
    """Up to ``limit`` (bucket, key) in order after ``after`` whose ``encrypted`` flag is as given
    (and, with ``key_id``, wrapped under that key)."""
    sql = "SELECT bucket, object_key FROM objects WHERE encrypted = ?"
    params: list[Any] = [encrypted]
    if key_id is not None:
        sql += " AND key_id = ?"
        params.append(key_id)
    if after is not None:
        sql += " AND (bucket > ? OR (bucket = ? AND object_key > ?))"
        params += [after[0], after[0], after[1]]
    rows = tx.execute(sql + " ORDER BY bucket, object_key LIMIT ?", (*params, limit)).fetchall()
    return [(str(bucket), str(key)) for bucket, key in rows]


def txn_objects_by_compression(
    tx: Tx, notes: Notes, compressed: bool, min_size: int, after: tuple[str, str] | None, limit: int
) -> list[tuple[str, str]]:
    """Up to ``limit`` (bucket, key) in order after ``after``: the compressed objects, or the
    uncompressed ones of at least ``min_size`` client bytes (``plaintext_size`` holds the client's
    size of an encrypted or compressed row, ``size_bytes`` that of a plain one)."""
    if compressed:
        sql = "SELECT bucket, object_key FROM objects WHERE compression_chunk_size IS NOT NULL"
        params: list[Any] = []
    else:
        sql = ("SELECT bucket, object_key FROM objects WHERE compression_chunk_size IS NULL"
               " AND COALESCE(plaintext_size, size_bytes) >= ?")
        params = [min_size]
    if after is not None:
        sql += " AND (bucket > ? OR (bucket = ? AND object_key > ?))"
        params += [after[0], after[0], after[1]]
    rows = tx.execute(sql + " ORDER BY bucket, object_key LIMIT ?", (*params, limit)).fetchall()
    return [(str(bucket), str(key)) for bucket, key in rows]


def txn_swap_stored_bytes(
    tx: Tx, notes: Notes, record: ObjectRecord, expected_write_id: str, now: float
) -> list[CleanupItem] | None:
    """Make ``record``'s copies (new backend objects), encryption and compression columns the
    object's, if its write id is still ``expected_write_id``: the old copies are orphaned into the
    cleanup queue and ``bytes_used`` moves by the size delta per backend, all here.

    A single-extent ``record`` carries its copies in ``locations``; a multi-extent one its extents
    in ``parts`` (the same part numbers as the row's, each with its new copies and its
    ``compression_chunk_size``; offsets, client sizes and ETags stay).  None: the object changed
    (or its shape is not the record's) meanwhile; nothing was touched."""
    tx.dialect.lock_key(tx, record.bucket, record.key)
    row = tx.execute(
        f"SELECT write_id FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}",
        (record.bucket, record.key),
    ).fetchone()
    if row is None or str(row[0]) != expected_write_id:
        return None
    numbers = tx.execute(
        "SELECT part_number FROM object_parts WHERE bucket = ? AND object_key = ?", (record.bucket, record.key)
    ).fetchall()
    if {int(n) for (n,) in numbers} != {extent.part_number for extent in record.parts}:
        return None
    new = [(0, loc) for loc in record.locations] if not record.parts else [
        (extent.part_number, loc) for extent in record.parts for loc in extent.locations
    ]
    items = orphan_locations(tx, notes, record.bucket, record.key, REWRITE_REASON, now,
                             also_lock=[loc.backend for _, loc in new])
    for part_number, loc in new:
        tx.execute(
            "INSERT INTO object_locations (bucket, object_key, part_number, backend_name,"
            " storage_key, write_id, size_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record.bucket, record.key, part_number, loc.backend, loc.storage_key, expected_write_id, loc.size, now),
        )
        adjust_quota(tx, notes, loc.backend, now, used=loc.size, count=1)
    for extent in record.parts:
        tx.execute(
            "UPDATE object_parts SET compression_chunk_size = ? WHERE bucket = ? AND object_key = ?"
            " AND part_number = ?",
            (extent.compression_chunk_size, record.bucket, record.key, extent.part_number),
        )
    # objects.size_bytes: what one copy of the object occupies (each extent's first copy).
    stored = sum(extent.locations[0].size for extent in record.extents if extent.locations)
    tx.execute(
        "UPDATE objects SET size_bytes = ?, encrypted = ?, wrapped_dek = ?, base_nonce = ?, key_id = ?,"
        " plaintext_size = ?, compression_chunk_size = ? WHERE bucket = ? AND object_key = ? AND write_id = ?",
        (stored, *encryption_columns(record), record.compression_chunk_size,
         record.bucket, record.key, expected_write_id),
    )
    return items


def txn_rewrap_key(
    tx: Tx, notes: Notes, bucket: str, key: str, write_id: str, old_key_id: str, wrapped_dek: str, key_id: str
) -> bool:
    """Replace the object's wrapped data key if it is still ``write_id`` under ``old_key_id``."""
    tx.execute(
        "UPDATE objects SET wrapped_dek = ?, key_id = ? WHERE bucket = ? AND object_key = ?"
        " AND write_id = ? AND key_id = ? AND encrypted = ?",
        (base64.b64decode(wrapped_dek), key_id, bucket, key, write_id, old_key_id, True),
    )
    return bool(tx.rowcount)
