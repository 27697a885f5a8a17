"""Object versions: reserve, commit, read and delete one key's current version.

A write reserves quota with a pending intent (:func:`txn_reserve`), stores its
bytes on a backend, then commits (:func:`txn_commit_object`): the intent goes,
the reservation becomes used bytes, the previous version's copies are orphaned
into the cleanup queue, all in one transaction.  Multipart completion and the
pending reaper's promotion reuse :func:`commit_write`, :func:`write_object_row`
and :func:`orphan_locations`, so every way a version becomes current is one code
path under one lock order (object key, object row, intents, locations, quotas).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from s3orch.s3.conditions import WriteConditions
from s3orch.store.errors import PreconditionConflict
from s3orch.store.records import (
    CleanupItem,
    Extent,
    Intent,
    Location,
    ObjectRecord,
    OutboxEvent,
    ReplicaReservation,
    Reservation,
)
from s3orch.store.txn.base import Notes, RetryTransaction, Tx
from s3orch.store.txn.cleanup import IMMEDIATE_DELETE_GRACE, enqueue_cleanup, queue_backend_object
from s3orch.store.txn.outbox import add_events
from s3orch.store.txn.quota import adjust_quota, lock_quotas, pick_backend


def check_conditions(
    conditions: WriteConditions, bucket: str, key: str, current: Sequence[Any] | None
) -> None:
    """PreconditionConflict unless ``conditions`` hold for the key's current object
    (``current``: its locked (write_id, etag) row, or None)."""
    violation = conditions.violation(None if current is None else str(current[1]))
    if violation is not None:
        raise PreconditionConflict(f"{bucket}/{key}: {violation}", violation)


@dataclass(frozen=True)
class IntentGone:
    """The commit found no intent; raised as IntentNotFound once the transaction committed."""

    cleanup: CleanupItem | None


def orphan_locations(
    tx: Tx,
    notes: Notes,
    bucket: str,
    key: str,
    reason: str,
    now: float,
    keep: tuple[str, str] | None = None,
    also_lock: Sequence[str] = (),
) -> list[CleanupItem]:
    """Drop a key's locations: bytes_used -> orphan_bytes, each copy into cleanup_queue.

    ``keep`` names a backend object that is being re-recorded (its bytes are
    replaced, not orphaned), so it must never be queued for deletion.
    ``also_lock`` are backends the caller adjusts next: every quota row of the
    transaction is locked here, in one ordered pass.  The caller holds the key's
    object row, so its locations cannot change underneath.
    """
    rows = tx.execute(
        "SELECT backend_name, storage_key, size_bytes FROM object_locations"
        f" WHERE bucket = ? AND object_key = ? ORDER BY backend_name{tx.for_update()}",
        (bucket, key),
    ).fetchall()
    lock_quotas(tx, [row[0] for row in rows] + list(also_lock))
    tx.execute("DELETE FROM object_locations WHERE bucket = ? AND object_key = ?", (bucket, key))
    items: list[CleanupItem] = []
    for backend, storage_key, size in rows:
        adjust_quota(tx, notes, backend, now, used=-int(size), count=-1)
        if keep is not None and (backend, storage_key) == keep:
            continue
        items.append(
            enqueue_cleanup(
                tx, notes, backend, storage_key, int(size), reason, now,
                now + IMMEDIATE_DELETE_GRACE,
            )
        )
    return items


def txn_reserve(
    tx: Tx,
    notes: Notes,
    intent: Intent,
    candidates: Sequence[str],
    strategy: str,
    now: float,
) -> Reservation | None:
    existing = tx.execute(
        "SELECT backend_name, storage_key, size_bytes FROM pending_objects WHERE write_id = ?",
        (intent.write_id,),
    ).fetchone()
    if existing is not None:  # the same intent again (a retried call): one reservation only
        return Reservation(intent.write_id, existing[0], existing[1], int(existing[2]))
    chosen = pick_backend(tx, candidates, strategy, intent.size, lock=True)
    if chosen is None:
        return None
    adjust_quota(tx, notes, chosen, now, reserved=intent.size)
    tx.execute(
        "INSERT INTO pending_objects (write_id, bucket, object_key, backend_name, storage_key,"
        " size_bytes, created_at, etag, content_type, headers, user_metadata, checksum_algorithm,"
        " checksum_value, content_hash, parts_count, part_sizes, conditions)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (write_id) DO NOTHING",
        (
            intent.write_id,
            intent.bucket,
            intent.key,
            chosen,
            intent.storage_key,
            intent.size,
            now,
            intent.etag,
            intent.content_type,
            json.dumps(intent.headers, sort_keys=True),
            json.dumps(intent.user_metadata, sort_keys=True),
            intent.checksum_algorithm,
            intent.checksum_value,
            intent.content_hash,
            intent.parts_count,
            None if intent.part_sizes is None else json.dumps(list(intent.part_sizes)),
            intent.conditions.to_json(),
        ),
    )
    if tx.rowcount == 0:
        raise RetryTransaction(f"intent {intent.write_id} was reserved concurrently")
    return Reservation(intent.write_id, chosen, intent.storage_key, intent.size)


def txn_release(tx: Tx, notes: Notes, write_id: str, now: float) -> None:
    row = tx.execute(
        "DELETE FROM pending_objects WHERE write_id = ? RETURNING backend_name, size_bytes",
        (write_id,),
    ).fetchone()
    if row is None:
        return
    adjust_quota(tx, notes, row[0], now, reserved=-int(row[1]))


def txn_commit_object(
    tx: Tx,
    notes: Notes,
    reservation: Reservation,
    record: ObjectRecord,
    now: float,
    conditions: WriteConditions,
    events: Sequence[OutboxEvent] = (),
    companions: Sequence[ReplicaReservation] = (),
) -> list[CleanupItem] | IntentGone:
    """``companions``: further copies of the same bytes (write fan-out), each held as a
    cleanup row like a replica in flight; they become copies of the new version in the
    same transaction, so the version is never visible with fewer copies."""
    tx.dialect.lock_key(tx, record.bucket, record.key)
    current = tx.execute(
        f"SELECT write_id, etag FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}",
        (record.bucket, record.key),
    ).fetchone()
    if current is not None and current[0] == record.write_id:
        return []  # already committed: a retry of a call whose answer was lost
    pending = tx.execute(
        "SELECT bucket, object_key, backend_name, size_bytes FROM pending_objects"
        f" WHERE write_id = ?{tx.for_update()}",
        (reservation.write_id,),
    ).fetchone()
    if pending is None:
        return IntentGone(
            queue_backend_object(
                tx, notes, reservation.backend, reservation.storage_key, reservation.size,
                "intent_missing", now,
            )
        )
    if (pending[0], pending[1]) != (record.bucket, record.key):
        raise ValueError(
            f"intent {reservation.write_id} is for {pending[0]}/{pending[1]},"
            f" not {record.bucket}/{record.key}"
        )
    check_conditions(conditions, record.bucket, record.key, current)
    supersede_intents(tx, record.bucket, record.key, now, but=reservation.write_id)
    extra = _claim_companions(tx, notes, reservation, companions) if companions else []
    displaced = commit_write(
        tx, notes, reservation, record, str(pending[2]), int(pending[3]), now, extra=extra,
        fresh=current is None,
    )
    add_events(tx, events, now)
    return displaced


def _claim_companions(
    tx: Tx, notes: Notes, reservation: Reservation, companions: Sequence[ReplicaReservation]
) -> list[NewCopy]:
    """Take the held cleanup rows of ``companions`` (locked, then deleted): the copies they
    hold become locations.  A row the cleanup queue has claimed or removed (the copy
    outlived its hold) is skipped: its bytes are being deleted.  Quota is moved by
    :func:`commit_write` (orphan -> used), after every quota row is locked."""
    taken: list[NewCopy] = []
    backends = {reservation.backend}
    for companion in companions:
        row = tx.execute(
            "SELECT backend_name, storage_key, size_bytes, claimed_by FROM cleanup_queue"
            f" WHERE id = ?{tx.for_update()}",
            (companion.cleanup_id,),
        ).fetchone()
        if (
            row is None
            or row[3] is not None
            or (row[0], row[1]) != (companion.backend, companion.storage_key)
            or companion.backend in backends
        ):
            notes.warn(
                "companion copy {backend}/{storage_key} is no longer held; not recorded",
                backend=companion.backend, storage_key=companion.storage_key,
            )
            continue
        backends.add(companion.backend)
        tx.execute("DELETE FROM cleanup_queue WHERE id = ?", (companion.cleanup_id,))
        taken.append(NewCopy(0, companion.backend, companion.storage_key, int(row[2])))
    return taken


def supersede_intents(
    tx: Tx,
    bucket: str,
    key: str,
    now: float,
    *,
    but: str | None = None,
    created_before: float | None = None,
) -> None:
    """Mark the key's pending intents (all but ``but``; only those created at or before
    ``created_before`` when given) as made obsolete by the write or delete committing now.

    Their own commits still succeed (a write in flight that commits later is simply
    the newer version), but a write whose commit failed must never be promoted over a
    newer version or back after a delete: the pending reaper drops marked intents.
    Called before any quota row is locked (the one lock order: key, object row,
    intents, quotas).
    """
    sql = (
        "UPDATE pending_objects SET superseded_at = ?"
        " WHERE bucket = ? AND object_key = ? AND superseded_at IS NULL"
    )
    params: list[Any] = [now, bucket, key]
    if but is not None:
        sql += " AND write_id <> ?"
        params.append(but)
    if created_before is not None:
        sql += " AND created_at <= ?"
        params.append(created_before)
    tx.execute(sql, params)


def commit_write(
    tx: Tx,
    notes: Notes,
    reservation: Reservation,
    record: ObjectRecord,
    pending_backend: str,
    pending_size: int,
    now: float,
    extra: Sequence[NewCopy] = (),
    fresh: bool = False,
) -> list[CleanupItem]:
    """Make a reserved write the key's current version (the caller holds the key, its
    object row and the intent): the previous copies are orphaned, the intent and its
    reservation go, the stored bytes count as used.  ``extra`` are further copies whose
    bytes were held as orphaned (fan-out companions): they count as used now.  ``fresh``:
    the caller found no object row, so the key has no copies, tags or extents to replace
    (they reference the row), and the statements that would find none are skipped."""
    also_lock = (pending_backend, reservation.backend, *(copy.backend for copy in extra))
    if fresh:
        lock_quotas(tx, also_lock)
        displaced: list[CleanupItem] = []
    else:
        displaced = orphan_locations(
            tx, notes, record.bucket, record.key, "overwrite_displaced", now,
            keep=(reservation.backend, reservation.storage_key), also_lock=also_lock,
        )
    tx.execute("DELETE FROM pending_objects WHERE write_id = ?", (reservation.write_id,))
    if pending_backend == reservation.backend:  # the usual case: one row, other columns
        adjust_quota(tx, notes, pending_backend, now, reserved=-pending_size, used=reservation.size, count=1)
    else:
        adjust_quota(tx, notes, pending_backend, now, reserved=-pending_size)
        adjust_quota(tx, notes, reservation.backend, now, used=reservation.size, count=1)
    for copy in extra:
        adjust_quota(tx, notes, copy.backend, now, orphan=-copy.size, used=copy.size, count=1)
    write_object_row(
        tx, record,
        [NewCopy(0, reservation.backend, reservation.storage_key, reservation.size), *extra], now,
        fresh=fresh,
    )
    return displaced


@dataclass(frozen=True)
class NewCopy:
    """A backend object that becomes a copy of one extent of the object being written."""

    part_number: int
    backend: str
    storage_key: str
    size: int
    etag: str | None = None  # the part's MD5 (multi-extent objects)
    checksum_value: str | None = None
    compression_chunk_size: int | None = None  # a compressed part's (multi-extent objects)


def stored_size(record: ObjectRecord, copies: Sequence[NewCopy]) -> int:
    """``objects.size_bytes``: the bytes one copy of the object occupies (quotas count what
    the provider stores); stored as the client sent it, that is the client's size."""
    if not record.encrypted and not record.compressed:
        return record.size
    first: dict[int, int] = {}
    for copy in copies:
        first.setdefault(copy.part_number, copy.size)
    return sum(first.values())


def encryption_columns(record: ObjectRecord) -> tuple[Any, ...]:
    """``encrypted, wrapped_dek, base_nonce, key_id, plaintext_size`` of ``record``'s row
    (``base_nonce`` holds the object's identity bound into the chunks' authenticated data)."""
    if not record.encrypted:  # a compressed record keeps its logical size in plaintext_size too
        return (False, None, None, None, record.size if record.compressed else None)
    return (
        True, base64.b64decode(record.wrapped_dek), bytes.fromhex(record.crypto_id), record.key_id, record.size,
    )


def write_object_row(
    tx: Tx, record: ObjectRecord, copies: Sequence[NewCopy], now: float, *, fresh: bool = False
) -> None:
    """Make ``record`` the key's row with exactly ``copies`` as its extents' copies (the
    old locations are gone).  Copies of part 0 make a single-extent object; copies of
    parts 1.. make a multi-extent object whose extents are those parts, in order.
    ``fresh``: the key had no row, hence no tags or extents to drop."""
    tx.execute(
        "INSERT INTO objects (bucket, object_key, write_id, size_bytes, etag, content_type,"
        " headers, user_metadata, checksum_algorithm, checksum_value, parts_count, part_sizes,"
        " content_hash, encrypted, wrapped_dek, base_nonce, key_id, plaintext_size,"
        " last_modified, created_at, compression_chunk_size)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (bucket, object_key) DO UPDATE SET"
        " write_id = excluded.write_id, size_bytes = excluded.size_bytes,"
        " etag = excluded.etag, content_type = excluded.content_type,"
        " headers = excluded.headers, user_metadata = excluded.user_metadata,"
        " checksum_algorithm = excluded.checksum_algorithm,"
        " checksum_value = excluded.checksum_value, parts_count = excluded.parts_count,"
        " part_sizes = excluded.part_sizes, content_hash = excluded.content_hash,"
        " encrypted = excluded.encrypted, wrapped_dek = excluded.wrapped_dek,"
        " base_nonce = excluded.base_nonce, key_id = excluded.key_id,"
        " plaintext_size = excluded.plaintext_size, last_modified = excluded.last_modified,"
        " created_at = excluded.created_at, compression_chunk_size = excluded.compression_chunk_size",
        (
            record.bucket,
            record.key,
            record.write_id,
            stored_size(record, copies),
            record.etag,
            record.content_type,
            json.dumps(record.headers, sort_keys=True),
            json.dumps(record.user_metadata, sort_keys=True),
            record.checksum_algorithm,
            record.checksum_value,
            record.parts_count,
            None if record.part_sizes is None else json.dumps(list(record.part_sizes)),
            record.content_hash,
            *encryption_columns(record),
            record.last_modified,
            now,
            record.compression_chunk_size,
        ),
    )
    # A new version starts without the old version's tags (S3 PUT replaces them) and
    # without its extents.
    if not fresh:
        tx.execute(
            "DELETE FROM object_tags WHERE bucket = ? AND object_key = ?", (record.bucket, record.key)
        )
        tx.execute(
            "DELETE FROM object_parts WHERE bucket = ? AND object_key = ?", (record.bucket, record.key)
        )
    offset = 0
    written: set[int] = set()
    # Encrypted or compressed parts: the extents hold the client's bytes (record.part_sizes), the
    # copies the stored ones.
    plain = iter(record.part_sizes or ()) if record.encrypted or record.compressed else None
    for copy in sorted(copies, key=lambda c: c.part_number):
        if copy.part_number and copy.part_number not in written:
            written.add(copy.part_number)
            size = copy.size if plain is None else next(plain)
            tx.execute(
                "INSERT INTO object_parts (bucket, object_key, part_number, write_id, offset_bytes,"
                " size_bytes, etag, checksum_value, compression_chunk_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.bucket,
                    record.key,
                    copy.part_number,
                    record.write_id,
                    offset,
                    size,
                    copy.etag or "",
                    copy.checksum_value,
                    copy.compression_chunk_size,
                ),
            )
            offset += size
        tx.execute(
            "INSERT INTO object_locations (bucket, object_key, part_number, backend_name,"
            " storage_key, write_id, size_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.bucket,
                record.key,
                copy.part_number,
                copy.backend,
                copy.storage_key,
                record.write_id,
                copy.size,
                now,
            ),
        )


def _load_parts(tx: Tx, bucket: str, key: str, copies: dict[int, list[Location]]) -> tuple[Extent, ...]:
    """The extents of a multi-extent object (``copies``: its locations by part number)."""
    return tuple(
        Extent(
            int(number),
            int(offset),
            int(size),
            tuple(copies.get(int(number), ())),
            etag,
            checksum,
            None if chunk is None else int(chunk),
        )
        for number, offset, size, etag, checksum, chunk in tx.execute(
            "SELECT part_number, offset_bytes, size_bytes, etag, checksum_value, compression_chunk_size"
            " FROM object_parts"
            " WHERE bucket = ? AND object_key = ? ORDER BY part_number",
            (bucket, key),
        ).fetchall()
    )


def _json_dict(text: str) -> dict[str, str]:
    """A stored JSON object; most are empty (no metadata), and "{}" needs no parser."""
    if text == "{}":
        return {}
    loaded: dict[str, str] = json.loads(text)
    return loaded


def txn_get_object(tx: Tx, notes: Notes, bucket: str, key: str) -> ObjectRecord | None:
    """The key's current record, in one statement when it is a single-extent object: the
    object row joined with its copies (a row per copy).  Copies of part 0 mean a
    single-extent object, which has no object_parts rows (:func:`write_object_row`
    replaces them with every version, and only multi-extent versions write any), so
    only an object without a part-0 copy asks for its extents."""
    rows = tx.execute(
        "SELECT o.write_id, o.size_bytes, o.etag, o.last_modified, o.content_type, o.headers,"
        " o.user_metadata, o.checksum_algorithm, o.checksum_value, o.parts_count, o.part_sizes,"
        " o.content_hash, o.encrypted, o.wrapped_dek, o.base_nonce, o.key_id, o.plaintext_size,"
        " o.compression_chunk_size, l.part_number, l.backend_name, l.storage_key, l.size_bytes"
        " FROM objects o LEFT JOIN object_locations l ON l.bucket = o.bucket AND l.object_key = o.object_key"
        " WHERE o.bucket = ? AND o.object_key = ? ORDER BY l.part_number, l.created_at, l.backend_name",
        (bucket, key),
    ).fetchall()
    if not rows:
        return None
    row = rows[0]
    copies: dict[int, list[Location]] = {}
    if row[18] is not None:  # no copy at all: a LEFT JOIN's one row of NULLs
        for located in rows:
            copies.setdefault(int(located[18]), []).append(Location(located[19], located[20], int(located[21])))
    parts = () if copies and all(number == 0 for number in copies) else _load_parts(tx, bucket, key, copies)
    encrypted = bool(row[12])
    return ObjectRecord(
        bucket=bucket,
        key=key,
        write_id=row[0],
        size=int(row[1] if not encrypted and row[17] is None else row[16]),
        etag=row[2],
        last_modified=float(row[3]),
        content_type=row[4],
        headers=_json_dict(row[5]),
        user_metadata=_json_dict(row[6]),
        checksum_algorithm=row[7],
        checksum_value=row[8],
        parts_count=row[9],
        part_sizes=None if row[10] is None else tuple(json.loads(row[10])),
        content_hash=row[11],
        locations=tuple(copies.get(0, ())),
        parts=parts,
        encrypted=encrypted,
        wrapped_dek=base64.b64encode(bytes(row[13])).decode("ascii") if encrypted else "",
        crypto_id=bytes(row[14]).hex() if encrypted else "",
        key_id=str(row[15] or "") if encrypted else "",
        compression_chunk_size=None if row[17] is None else int(row[17]),
    )


def txn_delete_object(
    tx: Tx, notes: Notes, bucket: str, key: str, now: float, events: Sequence[OutboxEvent] = ()
) -> list[CleanupItem]:
    tx.dialect.lock_key(tx, bucket, key)
    found = tx.execute(
        f"SELECT 1 FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}", (bucket, key)
    ).fetchone()
    # Even when the key is absent: a failed write of it must not reappear after the delete.
    supersede_intents(tx, bucket, key, now)
    if found is None:
        return []
    return _remove_object(tx, notes, bucket, key, now, events)


def txn_delete_object_if(
    tx: Tx,
    notes: Notes,
    bucket: str,
    key: str,
    write_id: str,
    now: float,
    events: Sequence[OutboxEvent] = (),
) -> list[CleanupItem] | None:
    """Delete the key only while ``write_id`` is its current version (None otherwise).

    Pending intents are left alone: they are writes newer than the version deleted (its
    commit superseded every older one), and a lifecycle expiry must not drop them.
    """
    tx.dialect.lock_key(tx, bucket, key)
    found = tx.execute(
        f"SELECT write_id FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}", (bucket, key)
    ).fetchone()
    if found is None or str(found[0]) != write_id:
        return None
    return _remove_object(tx, notes, bucket, key, now, events)


def _remove_object(
    tx: Tx, notes: Notes, bucket: str, key: str, now: float, events: Sequence[OutboxEvent]
) -> list[CleanupItem]:
    """Drop the locked row of a key: its copies to the cleanup queue, ``events`` to the outbox."""
    items = orphan_locations(tx, notes, bucket, key, "delete", now)
    # object_tags go with the row (ON DELETE CASCADE)
    tx.execute("DELETE FROM objects WHERE bucket = ? AND object_key = ?", (bucket, key))
    add_events(tx, events, now)  # only when something was deleted
    return items
