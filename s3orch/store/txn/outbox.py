"""The notification outbox: webhook deliveries written with the change that causes them.

:func:`add_events` is called inside another transaction (a commit, a delete, a
Complete, a cleanup row moving to the dead-letter table), so an event exists if
and only if its change committed: a crash before delivery leaves the row, and
the notifier sends it after the restart.  The notifier works the outbox under
its worker lock, one row per event and endpoint, so an endpoint that is down
backs off on its own rows only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from s3orch.store.records import OutboxEntry, OutboxEvent
from s3orch.store.txn.base import Notes, Tx, marks

#: Longest ``last_error`` kept (a receiver's error page can be long).
MAX_ERROR_TEXT = 2000

_COLUMNS = (
    "id, endpoint, event_id, event_type, subject, payload, attempts, next_attempt, created_at"
)


def add_events(tx: Tx, events: Sequence[OutboxEvent], now: float) -> None:
    """Insert deliveries, due at once, in the caller's transaction."""
    for event in events:
        tx.execute(
            "INSERT INTO notification_outbox (endpoint, event_id, event_type, subject, payload,"
            " attempts, next_attempt, created_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            (event.endpoint, event.event_id, event.event_type, event.subject, event.payload, now, now),
        )


def txn_enqueue_events(tx: Tx, notes: Notes, events: Sequence[OutboxEvent], now: float) -> None:
    """Events not tied to another transaction (a service starting, a capacity warning)."""
    add_events(tx, events, now)


def _entry(row: Sequence[Any]) -> OutboxEntry:
    return OutboxEntry(
        id=int(row[0]),
        endpoint=str(row[1]),
        event_id=str(row[2]),
        event_type=str(row[3]),
        subject=str(row[4]),
        payload=str(row[5]),
        attempts=int(row[6]),
        next_attempt=float(row[7]),
        created_at=float(row[8]),
    )


def txn_due_events(tx: Tx, notes: Notes, now: float, limit: int) -> list[OutboxEntry]:
    """Deliveries whose time has come, oldest first."""
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM notification_outbox WHERE next_attempt <= ?"
        " ORDER BY next_attempt, id LIMIT ?",
        (now, limit),
    ).fetchall()
    return [_entry(row) for row in rows]


def txn_events_done(tx: Tx, notes: Notes, ids: Sequence[int]) -> None:
    """Delivered (or dropped): the rows go."""
    tx.execute(f"DELETE FROM notification_outbox WHERE id IN ({marks(len(ids))})", tuple(ids))


def txn_event_failed(
    tx: Tx, notes: Notes, event_id: int, error: str, next_attempt: float
) -> int:
    """Count a failed attempt and set the next one; the attempts so far (0: row gone)."""
    row = tx.execute(
        f"SELECT attempts FROM notification_outbox WHERE id = ?{tx.for_update()}", (event_id,)
    ).fetchone()
    if row is None:
        return 0
    attempts = int(row[0]) + 1
    tx.execute(
        "UPDATE notification_outbox SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
        (attempts, next_attempt, error[:MAX_ERROR_TEXT], event_id),
    )
    return attempts


def txn_count_events(tx: Tx, notes: Notes) -> int:
    """Rows waiting (the queue depth gauge)."""
    row = tx.execute("SELECT COUNT(*) FROM notification_outbox").fetchone()
    return int(row[0])
