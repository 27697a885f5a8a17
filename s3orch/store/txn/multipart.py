"""Multipart uploads: create, place and commit parts, complete, abort, and tidy up.

Every transaction that changes an upload, its parts or its part attempts locks
the upload row first, then (Complete) the object key and row, then every quota
row it touches in name order: one lock order, and an upload's reservations can
never be counted by one transaction and dropped by another.  Each part and each
part upload in flight (an *attempt*) holds its reservation on its own backend
(a native upload of an older build: on the upload's).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from s3orch.s3.conditions import WriteConditions
from s3orch.store.errors import PartMismatch, UploadLimitReached, UploadNotFound
from s3orch.store.records import (
    ORIGIN_CLIENT,
    UPLOAD_ABORTED,
    UPLOAD_ABORTING,
    UPLOAD_COMPLETED,
    UPLOAD_COMPLETING,
    UPLOAD_CREATING,
    UPLOAD_OPEN,
    CleanupItem,
    CompleteOutcome,
    MultipartUpload,
    ObjectRecord,
    OutboxEvent,
    PartCommit,
    PartReservation,
    UploadedPart,
)
from s3orch.store.txn.base import Notes, RetryTransaction, Tx, marks
from s3orch.store.txn.cleanup import IMMEDIATE_DELETE_GRACE, enqueue_cleanup, queue_backend_object
from s3orch.store.txn.objects import (
    NewCopy,
    check_conditions,
    orphan_locations,
    supersede_intents,
    write_object_row,
)
from s3orch.store.txn.outbox import add_events
from s3orch.store.txn.quota import adjust_quota, lock_quotas, pick_backend

#: A part upload still in flight when its upload completed or was aborted may still
#: land: its cleanup is first tried this long after (should the upload's own request
#: finish later still, it queues the part again; see ``txn_commit_part``).
IN_FLIGHT_GRACE = 3600.0


UPLOAD_COLUMNS = (
    "upload_id, bucket, object_key, backend_name, backend_upload_id, storage_key,"
    " content_type, headers, user_metadata, checksum_algorithm, checksum_type, origin, state,"
    " complete_parts, etag, created_at, updated_at, wrapped_dek, key_id"
)


#: Upload states that count toward ``max_multipart_uploads``.
ACTIVE_STATES = (UPLOAD_CREATING, UPLOAD_OPEN, UPLOAD_COMPLETING)


def upload_from_row(row: Sequence[Any]) -> MultipartUpload:
    return MultipartUpload(
        upload_id=row[0],
        bucket=row[1],
        key=row[2],
        backend=row[3],
        backend_upload_id=row[4],
        storage_key=row[5],
        content_type=row[6],
        headers=json.loads(row[7]),
        user_metadata=json.loads(row[8]),
        checksum_algorithm=row[9],
        checksum_type=row[10],
        origin=row[11],
        state=row[12],
        complete_parts=None if row[13] is None else tuple(json.loads(row[13])),
        etag=row[14],
        initiated=float(row[15]),
        updated_at=float(row[16]),
        wrapped_dek=base64.b64encode(bytes(row[17])).decode("ascii") if row[17] is not None else "",
        key_id=row[18] or "",
    )


def load_upload(tx: Tx, upload_id: str, lock: bool = False) -> MultipartUpload | None:
    row = tx.execute(
        f"SELECT {UPLOAD_COLUMNS} FROM multipart_uploads WHERE upload_id = ?"
        + (tx.for_update() if lock else ""),
        (upload_id,),
    ).fetchone()
    return None if row is None else upload_from_row(row)


def owned_upload(
    tx: Tx, bucket: str, key: str, upload_id: str, states: Sequence[str]
) -> MultipartUpload:
    """The (locked) upload if it belongs to ``bucket``/``key`` and is in ``states``; else
    UploadNotFound (one answer for missing, foreign and finished uploads: nothing to probe)."""
    upload = load_upload(tx, upload_id, lock=True)
    if upload is None or (upload.bucket, upload.key) != (bucket, key) or upload.state not in states:
        raise UploadNotFound(upload_id)
    return upload


def txn_create_multipart_upload(
    tx: Tx, notes: Notes, upload: MultipartUpload, max_uploads: int, now: float
) -> MultipartUpload:
    existing = load_upload(tx, upload.upload_id)
    if existing is not None:  # a retried call
        return existing
    if max_uploads > 0 and upload.origin == ORIGIN_CLIENT:
        # Instances creating uploads in one bucket count one at a time.
        tx.dialect.lock_bucket_uploads(tx, upload.bucket)
        (active,) = tx.execute(
            "SELECT COUNT(*) FROM multipart_uploads WHERE bucket = ? AND origin = ?"
            f" AND state IN ({marks(len(ACTIVE_STATES))})",
            (upload.bucket, ORIGIN_CLIENT, *ACTIVE_STATES),
        ).fetchone()
        if int(active) >= max_uploads:
            raise UploadLimitReached(upload.bucket)
    tx.execute(
        "INSERT INTO multipart_uploads (upload_id, bucket, object_key, content_type, headers,"
        " user_metadata, checksum_algorithm, checksum_type, origin, state, created_at, updated_at,"
        " encrypted, wrapped_dek, key_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (upload_id) DO NOTHING",
        (
            upload.upload_id,
            upload.bucket,
            upload.key,
            upload.content_type,
            json.dumps(upload.headers, sort_keys=True),
            json.dumps(upload.user_metadata, sort_keys=True),
            upload.checksum_algorithm,
            upload.checksum_type,
            upload.origin,
            UPLOAD_OPEN,
            upload.initiated,
            now,
            upload.encrypted,
            base64.b64decode(upload.wrapped_dek) if upload.encrypted else None,
            upload.key_id or None,
        ),
    )
    if tx.rowcount == 0:
        raise RetryTransaction(f"upload {upload.upload_id} was created concurrently")
    created = load_upload(tx, upload.upload_id)
    assert created is not None
    return created


def txn_get_multipart_upload(
    tx: Tx, notes: Notes, bucket: str, key: str, upload_id: str
) -> MultipartUpload | None:
    upload = load_upload(tx, upload_id)
    if upload is None or (upload.bucket, upload.key) != (bucket, key):
        return None
    return upload


def txn_reserve_part(
    tx: Tx,
    notes: Notes,
    bucket: str,
    key: str,
    upload_id: str,
    part_number: int,
    size: int,
    attempt_id: str,
    storage_key: str,
    candidates: Sequence[str],
    strategy: str,
    now: float,
) -> PartReservation | None:
    upload = owned_upload(tx, bucket, key, upload_id, (UPLOAD_OPEN,))
    if upload.native:
        raise UploadNotFound(upload_id)  # an older build's native upload takes no parts
    existing = tx.execute(
        "SELECT backend_name, storage_key, size_bytes FROM multipart_part_attempts"
        " WHERE attempt_id = ?",
        (attempt_id,),
    ).fetchone()
    if existing is not None:  # a retried call: one reservation only
        return PartReservation(attempt_id, upload_id, existing[0], existing[1], int(existing[2]))
    chosen = pick_backend(tx, candidates, strategy, size, lock=True)
    if chosen is None:
        return None
    adjust_quota(tx, notes, chosen, now, reserved=size)
    tx.execute(
        "INSERT INTO multipart_part_attempts (attempt_id, upload_id, part_number, size_bytes,"
        " backend_name, storage_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (attempt_id, upload_id, part_number, size, chosen, storage_key, now),
    )
    return PartReservation(attempt_id, upload_id, chosen, storage_key, size)


@dataclass(frozen=True)
class _Attempt:
    upload: MultipartUpload
    part_number: int
    size: int
    backend: str
    storage_key: str | None


def _attempt(tx: Tx, attempt_id: str) -> _Attempt | None:
    """A part attempt with its upload, the upload locked first (the lock order), then the
    attempt read again under that lock."""
    found = tx.execute(
        "SELECT upload_id FROM multipart_part_attempts WHERE attempt_id = ?", (attempt_id,)
    ).fetchone()
    if found is None:
        return None
    upload = load_upload(tx, found[0], lock=True)
    row = tx.execute(
        "SELECT part_number, size_bytes, backend_name, storage_key FROM multipart_part_attempts"
        " WHERE attempt_id = ?",
        (attempt_id,),
    ).fetchone()
    if row is None or upload is None:
        return None  # released while we waited for the upload
    return _Attempt(upload, int(row[0]), int(row[1]), row[2] or upload.backend or "", row[3])


def _delete_attempt(tx: Tx, attempt_id: str) -> bool:
    """Whether this transaction removed the attempt (so its bytes are its to release)."""
    tx.execute("DELETE FROM multipart_part_attempts WHERE attempt_id = ?", (attempt_id,))
    return tx.rowcount == 1


def txn_release_part(tx: Tx, notes: Notes, attempt_id: str, now: float) -> list[CleanupItem]:
    """Drop a failed part attempt: its reservation becomes orphaned bytes queued for
    deletion, as a backend that failed to answer may have stored them (I4)."""
    found = _attempt(tx, attempt_id)
    if found is None or not _delete_attempt(tx, attempt_id):
        return []  # already released (or Complete/Abort released it)
    adjust_quota(tx, notes, found.backend, now, reserved=-found.size)
    return _queue_part_object(tx, notes, found.backend, found.storage_key, found.size, now)


def _queue_part_object(
    tx: Tx, notes: Notes, backend: str | None, storage_key: str | None, size: int, now: float
) -> list[CleanupItem]:
    """Queue an uploaded part nobody will keep (it may already be queued: Complete or
    Abort queued it as in flight; it is then due now, as its bytes have landed)."""
    if backend is None or storage_key is None:
        return []
    queued = tx.execute(
        "SELECT id, size_bytes, reason, attempts FROM cleanup_queue"
        " WHERE backend_name = ? AND storage_key = ?",
        (backend, storage_key),
    ).fetchone()
    if queued is not None:
        tx.execute("UPDATE cleanup_queue SET next_retry = ? WHERE id = ?", (now, queued[0]))
        return [CleanupItem(int(queued[0]), backend, storage_key, int(queued[1]), queued[2], int(queued[3]))]
    item = queue_backend_object(tx, notes, backend, storage_key, size, "part_orphaned", now)
    return [item] if item is not None else []


def txn_commit_part(
    tx: Tx, notes: Notes, attempt_id: str, part: UploadedPart, now: float
) -> PartCommit:
    found = _attempt(tx, attempt_id)
    if found is None or not _delete_attempt(tx, attempt_id):
        recorded = tx.execute(
            "SELECT 1 FROM multipart_parts WHERE backend_name = ? AND storage_key = ?",
            (part.backend, part.storage_key),
        ).fetchone()
        if recorded is not None:
            return PartCommit(True)  # a repeated call
        # Complete or Abort took the attempt (and queued its key) while the bytes travelled.
        return PartCommit(False, _queue_part_object(tx, notes, part.backend, part.storage_key, part.size, now))
    upload = found.upload
    if (
        upload.state != UPLOAD_OPEN
        or found.part_number != part.part_number
        or (part.backend, part.storage_key) != (found.backend, found.storage_key)
    ):
        lock_quotas(tx, [found.backend] + ([part.backend] if part.backend else []))
        adjust_quota(tx, notes, found.backend, now, reserved=-found.size)
        return PartCommit(False, _queue_part_object(tx, notes, part.backend, part.storage_key, part.size, now))
    old = tx.execute(
        "SELECT size_bytes, backend_name, storage_key FROM multipart_parts"
        " WHERE upload_id = ? AND part_number = ?",
        (upload.upload_id, part.part_number),
    ).fetchone()
    old_backend = (old[1] or upload.backend or "") if old is not None else None
    lock_quotas(tx, [found.backend] + ([old_backend] if old_backend is not None else []))
    # The attempt's reservation becomes the part's.
    if part.size != found.size:
        adjust_quota(tx, notes, found.backend, now, reserved=part.size - found.size)
    cleanup: list[CleanupItem] = []
    if old is not None and old_backend is not None:
        # The part it replaces: its bytes are no longer this upload's.
        adjust_quota(tx, notes, old_backend, now, reserved=-int(old[0]))
        if old[2] is not None:
            cleanup.append(
                enqueue_cleanup(
                    tx, notes, old_backend, old[2], int(old[0]), "part_replaced", now,
                    now + IMMEDIATE_DELETE_GRACE,
                )
            )
    tx.execute(
        "INSERT INTO multipart_parts (upload_id, part_number, etag, size_bytes, checksum_algorithm,"
        " checksum_value, backend_name, storage_key, backend_etag, created_at, plaintext_size,"
        " compression_chunk_size)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)"
        " ON CONFLICT (upload_id, part_number) DO UPDATE SET etag = excluded.etag,"
        " size_bytes = excluded.size_bytes, checksum_algorithm = excluded.checksum_algorithm,"
        " checksum_value = excluded.checksum_value, backend_name = excluded.backend_name,"
        " storage_key = excluded.storage_key, backend_etag = NULL,"
        " created_at = excluded.created_at, plaintext_size = excluded.plaintext_size,"
        " compression_chunk_size = excluded.compression_chunk_size",
        (
            upload.upload_id,
            part.part_number,
            part.etag,
            part.size,
            part.checksum_algorithm,
            part.checksum_value,
            part.backend,
            part.storage_key,
            now,
            part.logical_size if part.compression_chunk_size is not None else None,
            part.compression_chunk_size,
        ),
    )
    return PartCommit(True, cleanup)


_PART_COLUMNS = (
    "part_number, etag, size_bytes, created_at, backend_name, storage_key, checksum_algorithm,"
    " checksum_value, backend_etag, plaintext_size, compression_chunk_size"
)


def _part_from_row(row: Sequence[Any]) -> UploadedPart:
    return UploadedPart(
        part_number=int(row[0]),
        etag=row[1],
        size=int(row[2]),
        last_modified=float(row[3]),
        backend=row[4],
        storage_key=row[5],
        checksum_algorithm=row[6],
        checksum_value=row[7],
        backend_etag=row[8],
        logical_size=None if row[10] is None else int(row[9]),
        compression_chunk_size=None if row[10] is None else int(row[10]),
    )


def txn_list_parts(
    tx: Tx, notes: Notes, upload_id: str, marker: int, max_parts: int
) -> tuple[list[UploadedPart], bool]:
    rows = tx.execute(
        f"SELECT {_PART_COLUMNS} FROM multipart_parts WHERE upload_id = ? AND part_number > ?"
        " ORDER BY part_number LIMIT ?",
        (upload_id, marker, max_parts + 1),
    ).fetchall()
    return [_part_from_row(r) for r in rows[:max_parts]], len(rows) > max_parts


def _attempt_rows(tx: Tx, upload: MultipartUpload) -> list[tuple[str, str | None, int]]:
    """(backend, storage key, size) of the upload's part attempts, deleted."""
    rows = tx.execute(
        "DELETE FROM multipart_part_attempts WHERE upload_id = ?"
        " RETURNING backend_name, storage_key, size_bytes",
        (upload.upload_id,),
    ).fetchall()
    return [(row[0] or upload.backend or "", row[1], int(row[2])) for row in rows]


def _release_in_flight(
    tx: Tx, notes: Notes, attempts: Sequence[tuple[str, str | None, int]], now: float
) -> None:
    """Part uploads still in flight: their reservations go, their keys are queued for a
    cleanup first tried after :data:`IN_FLIGHT_GRACE` (their bytes may still land)."""
    for backend, storage_key, size in attempts:
        adjust_quota(tx, notes, backend, now, reserved=-size)
        if storage_key is not None:
            enqueue_cleanup(
                tx, notes, backend, storage_key, size, "part_in_flight", now, now + IN_FLIGHT_GRACE
            )


def txn_complete_upload(
    tx: Tx,
    notes: Notes,
    bucket: str,
    key: str,
    upload_id: str,
    parts: Sequence[tuple[int, str]],
    record: ObjectRecord,
    now: float,
    conditions: WriteConditions,
    events: Sequence[OutboxEvent] = (),
) -> CompleteOutcome:
    if record.write_id != upload_id or (record.bucket, record.key) != (bucket, key):
        raise ValueError(f"the object of upload {upload_id} must be {bucket}/{key} with it as write id")
    upload = owned_upload(tx, bucket, key, upload_id, (UPLOAD_OPEN, UPLOAD_COMPLETED))
    if upload.state == UPLOAD_COMPLETED:
        return CompleteOutcome([], already_completed=True)
    if upload.native:
        raise UploadNotFound(upload_id)
    stored = {
        int(row[0]): row
        for row in tx.execute(
            "SELECT part_number, etag, size_bytes, backend_name, storage_key, checksum_value,"
            " compression_chunk_size FROM multipart_parts WHERE upload_id = ? ORDER BY part_number",
            (upload_id,),
        ).fetchall()
    }
    listed: dict[int, Sequence[Any]] = {}
    for number, etag in parts:
        row = stored.get(number)
        if row is None or row[1].lower() != etag.strip('"').lower() or row[4] is None:
            raise PartMismatch(f"part {number}")
        listed[number] = row
    # The key's lock order, as a PUT's commit takes it.
    tx.dialect.lock_key(tx, bucket, key)
    current = tx.execute(
        f"SELECT write_id, etag FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}",
        (bucket, key),
    ).fetchone()
    check_conditions(conditions, bucket, key, current)
    supersede_intents(tx, bucket, key, now)
    attempts = _attempt_rows(tx, upload)
    backends = [str(row[3]) for row in stored.values()] + [a[0] for a in attempts]
    displaced = orphan_locations(
        tx, notes, bucket, key, "overwrite_displaced", now, also_lock=backends
    )
    copies: list[NewCopy] = []
    for number in sorted(listed):
        _, etag, size, backend, storage_key, checksum, chunk = listed[number]
        adjust_quota(tx, notes, backend, now, reserved=-int(size), used=int(size), count=1)
        copies.append(NewCopy(number, backend, storage_key, int(size), etag, checksum,
                              None if chunk is None else int(chunk)))
    write_object_row(tx, record, copies, now)
    discarded: list[CleanupItem] = []
    for number, row in stored.items():
        if number in listed:
            continue
        adjust_quota(tx, notes, row[3], now, reserved=-int(row[2]))
        discarded.append(
            enqueue_cleanup(
                tx, notes, row[3], row[4], int(row[2]), "part_discarded", now,
                now + IMMEDIATE_DELETE_GRACE,
            )
        )
    _release_in_flight(tx, notes, attempts, now)
    tx.execute("DELETE FROM multipart_parts WHERE upload_id = ?", (upload_id,))
    tx.execute(
        "UPDATE multipart_uploads SET state = ?, etag = ?, updated_at = ? WHERE upload_id = ?",
        (UPLOAD_COMPLETED, record.etag, now, upload_id),
    )
    add_events(tx, events, now)
    return CompleteOutcome(displaced, discarded)


def txn_begin_abort(
    tx: Tx,
    notes: Notes,
    bucket: str,
    key: str,
    upload_id: str,
    now: float,
    stale: bool,
) -> MultipartUpload:
    states: tuple[str, ...] = (UPLOAD_OPEN, UPLOAD_COMPLETING, UPLOAD_ABORTING)
    if stale:
        states += (UPLOAD_CREATING,)
    upload = owned_upload(tx, bucket, key, upload_id, states)
    tx.execute(
        "UPDATE multipart_uploads SET state = ?, updated_at = ? WHERE upload_id = ?",
        (UPLOAD_ABORTING, now, upload_id),
    )
    return upload


def txn_finish_abort(tx: Tx, notes: Notes, upload_id: str, now: float) -> list[CleanupItem]:
    upload = load_upload(tx, upload_id, lock=True)
    if upload is None or upload.state != UPLOAD_ABORTING:
        return []  # already finished: a repeated call
    assembled: int | None = None
    if upload.native and upload.complete_parts:
        # An older build sent a Complete to the backend: the object may exist at the
        # upload's storage key.
        (assembled,) = tx.execute(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM multipart_parts"
            f" WHERE upload_id = ? AND part_number IN ({marks(len(upload.complete_parts))})",
            (upload_id, *upload.complete_parts),
        ).fetchone()
    parts = [
        (row[0] or upload.backend or "", row[1], int(row[2]))
        for row in tx.execute(
            "DELETE FROM multipart_parts WHERE upload_id = ?"
            " RETURNING backend_name, storage_key, size_bytes",
            (upload_id,),
        ).fetchall()
    ]
    attempts = _attempt_rows(tx, upload)
    lock_quotas(
        tx,
        [p[0] for p in parts] + [a[0] for a in attempts] + ([upload.backend] if upload.backend else []),
    )
    items: list[CleanupItem] = []
    for backend, storage_key, size in parts:
        adjust_quota(tx, notes, backend, now, reserved=-size)
        if storage_key is not None:
            items.append(
                enqueue_cleanup(
                    tx, notes, backend, storage_key, size, "abort_part_cleanup", now,
                    now + IMMEDIATE_DELETE_GRACE,
                )
            )
    _release_in_flight(tx, notes, attempts, now)
    tx.execute(
        "UPDATE multipart_uploads SET state = ?, updated_at = ? WHERE upload_id = ?",
        (UPLOAD_ABORTED, now, upload_id),
    )
    if assembled is not None and upload.backend is not None and upload.storage_key is not None:
        item = queue_backend_object(
            tx, notes, upload.backend, upload.storage_key, int(assembled), "abort_part_cleanup", now
        )
        if item is not None:
            items.append(item)
    return items


def txn_stale_multipart_uploads(
    tx: Tx, notes: Notes, created_before: float, busy_before: float, limit: int
) -> list[MultipartUpload]:
    rows = tx.execute(
        f"SELECT {UPLOAD_COLUMNS} FROM multipart_uploads"
        " WHERE (state IN (?, ?) AND created_at < ?) OR (state IN (?, ?) AND updated_at < ?)"
        " ORDER BY created_at LIMIT ?",
        (
            UPLOAD_CREATING,
            UPLOAD_OPEN,
            created_before,
            UPLOAD_COMPLETING,
            UPLOAD_ABORTING,
            busy_before,
            limit,
        ),
    ).fetchall()
    return [upload_from_row(row) for row in rows]


def txn_purge_multipart_uploads(tx: Tx, notes: Notes, before: float) -> int:
    tx.execute(
        "DELETE FROM multipart_uploads WHERE state IN (?, ?) AND updated_at < ?",
        (UPLOAD_COMPLETED, UPLOAD_ABORTED, before),
    )
    return tx.rowcount


def txn_active_multipart_counts(tx: Tx, notes: Notes) -> dict[str, int]:
    rows = tx.execute(
        "SELECT backend_name, COUNT(DISTINCT upload_id) FROM ("
        " SELECT p.backend_name AS backend_name, p.upload_id AS upload_id FROM multipart_parts p"
        " JOIN multipart_uploads u ON u.upload_id = p.upload_id"
        " WHERE u.state NOT IN (?, ?) AND p.backend_name IS NOT NULL"
        " UNION SELECT a.backend_name, a.upload_id FROM multipart_part_attempts a"
        " JOIN multipart_uploads u ON u.upload_id = a.upload_id"
        " WHERE u.state NOT IN (?, ?) AND a.backend_name IS NOT NULL"
        " UNION SELECT backend_name, upload_id FROM multipart_uploads"
        " WHERE state NOT IN (?, ?) AND backend_name IS NOT NULL"
        ") AS held GROUP BY backend_name ORDER BY backend_name",
        (UPLOAD_COMPLETED, UPLOAD_ABORTED) * 3,
    ).fetchall()
    return {row[0]: int(row[1]) for row in rows}
