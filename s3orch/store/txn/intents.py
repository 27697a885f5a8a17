"""Pending intents after a failed or unanswered commit: the pending reaper's transactions.

An intent whose write never committed is claimed (:func:`txn_stale_intents`,
like cleanup rows), its backend object is checked by the caller, and the
intent is resolved (:func:`txn_resolve_intent`): promoted exactly as its commit
would have been, dropped (reservation released, bytes queued for cleanup), or
given back for another try.  An intent superseded by a later write or delete of
its key is only ever dropped, so a failed write never reappears over newer data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from s3orch.s3.conditions import WriteConditions
from s3orch.store.records import (
    INTENT_ALREADY_RESOLVED,
    INTENT_AMBIGUOUS,
    INTENT_DROP,
    INTENT_DROPPED,
    INTENT_KEEP,
    INTENT_PROMOTE,
    INTENT_PROMOTED,
    INTENT_SUPERSEDED,
    IntentResolution,
    ObjectRecord,
    OutboxEvent,
    PendingIntent,
    Reservation,
)
from s3orch.store.txn.base import Notes, Tx, marks
from s3orch.store.txn.cleanup import queue_backend_object
from s3orch.store.txn.objects import commit_write, supersede_intents
from s3orch.store.txn.outbox import add_events
from s3orch.store.txn.quota import adjust_quota, lock_quotas

_INTENT_COLUMNS = (
    "write_id, bucket, object_key, backend_name, storage_key, size_bytes, created_at,"
    " superseded_at, etag, content_type, headers, user_metadata, checksum_algorithm,"
    " checksum_value, content_hash, parts_count, part_sizes, conditions, claimed_by, claimed_at"
)


def _pending_intent(row: Sequence[Any]) -> PendingIntent:
    return PendingIntent(
        write_id=row[0],
        bucket=row[1],
        key=row[2],
        backend=row[3],
        storage_key=row[4],
        size=int(row[5]),
        created_at=float(row[6]),
        superseded=row[7] is not None,
        promotable=row[8] is not None,
    )


def _intent_record(row: Sequence[Any], now: float) -> ObjectRecord:
    """The object row the intent's commit would have written (``_INTENT_COLUMNS`` order)."""
    return ObjectRecord(
        bucket=row[1],
        key=row[2],
        write_id=row[0],
        size=int(row[5]),
        etag=row[8],
        last_modified=now,  # the write becomes the current version now
        content_type=row[9] or "application/octet-stream",
        headers=json.loads(row[10] or "{}"),
        user_metadata=json.loads(row[11] or "{}"),
        checksum_algorithm=row[12],
        checksum_value=row[13],
        content_hash=row[14],
        parts_count=row[15],
        part_sizes=None if row[16] is None else tuple(json.loads(row[16])),
    )


def txn_stale_intents(
    tx: Tx, notes: Notes, now: float, min_age: float, limit: int, owner: str, grace: float
) -> list[PendingIntent]:
    # Claimable: old enough, and unclaimed (claimed_by NULL; claimed_at then is the time of
    # the last ambiguous try) or claimed by an instance presumed dead.  SKIP LOCKED as for
    # cleanup claims: rows another instance is claiming now are not waited for.
    rows = tx.execute(
        f"SELECT {_INTENT_COLUMNS} FROM pending_objects"
        " WHERE created_at <= ? AND (claimed_by IS NULL OR claimed_at <= ?)"
        " ORDER BY COALESCE(claimed_at, 0), created_at, write_id"
        f" LIMIT ?{tx.for_update(skip_locked=True)}",
        (now - min_age, now - grace, limit),
    ).fetchall()
    if rows:
        tx.execute(
            f"UPDATE pending_objects SET claimed_at = ?, claimed_by = ?"
            f" WHERE write_id IN ({marks(len(rows))})",
            (now, owner, *(row[0] for row in rows)),
        )
    for row in rows:
        if row[18] is not None:  # its claimer never resolved it: presumed dead
            notes.warn(
                "pending intent {write_id} ({bucket}/{key}) claimed by {claimer} {age:.0f}s ago"
                " was never resolved; taken over",
                write_id=row[0],
                bucket=row[1],
                key=row[2],
                claimer=row[18],
                age=now - float(row[19]),
            )
    return [_pending_intent(row) for row in rows]


def txn_resolve_intent(
    tx: Tx,
    notes: Notes,
    write_id: str,
    outcome: str,
    now: float,
    events: Sequence[OutboxEvent] = (),
) -> IntentResolution:
    if outcome not in (INTENT_PROMOTE, INTENT_DROP, INTENT_KEEP):
        raise ValueError(f"unknown intent outcome {outcome!r}")
    located = tx.execute(
        "SELECT bucket, object_key FROM pending_objects WHERE write_id = ?", (write_id,)
    ).fetchone()
    if located is None:
        return IntentResolution(INTENT_ALREADY_RESOLVED)
    bucket, key = located[0], located[1]
    # The lock order of a commit: the key, its object row, the intent, then quota rows.
    tx.dialect.lock_key(tx, bucket, key)
    current = tx.execute(
        f"SELECT write_id, etag FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}",
        (bucket, key),
    ).fetchone()
    row = tx.execute(
        f"SELECT {_INTENT_COLUMNS} FROM pending_objects WHERE write_id = ?{tx.for_update()}",
        (write_id,),
    ).fetchone()
    if row is None:
        return IntentResolution(INTENT_ALREADY_RESOLVED)
    if outcome == INTENT_KEEP:
        # Give the claim back; claimed_at stays as the time of this try (tried again
        # after the intents never tried).
        tx.execute(
            "UPDATE pending_objects SET claimed_by = NULL, claimed_at = ? WHERE write_id = ?",
            (now, write_id),
        )
        return IntentResolution(INTENT_AMBIGUOUS)
    intent = _pending_intent(row)
    status, reason = INTENT_DROPPED, ""
    if intent.superseded:
        status, reason = INTENT_SUPERSEDED, "a later write or delete of the key exists"
    elif not intent.promotable:
        reason = "the intent recorded no object metadata"
    elif outcome == INTENT_PROMOTE:
        violation = WriteConditions.from_json(row[17]).violation(
            None if current is None else str(current[1])
        )
        if violation is not None:
            reason = f"its condition failed ({violation})"
        else:
            # Older failed writes of the key must not be promoted over this one later.
            supersede_intents(tx, bucket, key, now, but=write_id, created_before=intent.created_at)
            reservation = Reservation(write_id, intent.backend, intent.storage_key, intent.size)
            displaced = commit_write(
                tx, notes, reservation, _intent_record(row, now), intent.backend, intent.size, now
            )
            add_events(tx, events, now)
            return IntentResolution(INTENT_PROMOTED, displaced)
    tx.execute("DELETE FROM pending_objects WHERE write_id = ?", (write_id,))
    lock_quotas(tx, [intent.backend])
    adjust_quota(tx, notes, intent.backend, now, reserved=-intent.size)
    # The bytes may exist (a HEAD that found nothing may have raced the upload's end).
    item = queue_backend_object(
        tx, notes, intent.backend, intent.storage_key, intent.size, "pending_dropped", now
    )
    return IntentResolution(status, [item] if item is not None else [], reason)


def txn_count_intents(tx: Tx, notes: Notes) -> int:
    return int(tx.execute("SELECT COUNT(*) FROM pending_objects").fetchone()[0])
