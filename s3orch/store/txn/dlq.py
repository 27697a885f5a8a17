"""Operator views of the cleanup queue and the dead-letter table, and the DLQ's two exits.

A dead-letter row is a backend object whose delete failed too often; its bytes still count
as ``orphan_bytes``.  An operator either requeues it (the cause was fixed: the worker tries
again from scratch) or writes it off (the object was deleted by hand, or the leak is
accepted): then, and only then, its bytes are released.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from s3orch.store.records import DeadCleanup, QueuedCleanup
from s3orch.store.txn.base import Notes, Tx, marks
from s3orch.store.txn.quota import adjust_quota, lock_quotas

_DLQ_COLUMNS = (
    "id, original_id, backend_name, storage_key, reason, size_bytes, attempts, last_error,"
    " first_enqueued_at, moved_at"
)


def _dead(row: Sequence[Any]) -> DeadCleanup:
    return DeadCleanup(
        int(row[0]), int(row[1]), row[2], row[3], row[4], int(row[5]), int(row[6]), row[7],
        float(row[8]), float(row[9]),
    )


def txn_cleanup_queue_page(tx: Tx, notes: Notes, limit: int) -> tuple[int, list[QueuedCleanup]]:
    depth = int(tx.execute("SELECT COUNT(*) FROM cleanup_queue").fetchone()[0])
    rows = tx.execute(
        "SELECT id, backend_name, storage_key, reason, size_bytes, attempts, next_retry, last_error,"
        " created_at, claimed_by FROM cleanup_queue ORDER BY next_retry, id LIMIT ?",
        (limit,),
    ).fetchall()
    return depth, [
        QueuedCleanup(
            int(r[0]), r[1], r[2], r[3], int(r[4]), int(r[5]), float(r[6]), r[7], float(r[8]), r[9]
        )
        for r in rows
    ]


def _where(ids: Sequence[int] | None, backend: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if ids is not None:
        clauses.append(f"id IN ({marks(len(ids))})" if ids else "1 = 0")
        params += list(ids)
    if backend is not None:
        clauses.append("backend_name = ?")
        params.append(backend)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def txn_cleanup_dlq_page(
    tx: Tx, notes: Notes, backend: str | None, limit: int
) -> tuple[int, int, list[DeadCleanup]]:
    where, params = _where(None, backend)
    count, size = tx.execute(
        f"SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM cleanup_dlq{where}", params
    ).fetchone()
    rows = tx.execute(
        f"SELECT {_DLQ_COLUMNS} FROM cleanup_dlq{where} ORDER BY id LIMIT ?", (*params, limit)
    ).fetchall()
    return int(count), int(size), [_dead(r) for r in rows]


def _take(
    tx: Tx, ids: Sequence[int] | None, backend: str | None, limit: int
) -> list[DeadCleanup]:
    where, params = _where(ids, backend)
    rows = tx.execute(
        f"SELECT {_DLQ_COLUMNS} FROM cleanup_dlq{where} ORDER BY id LIMIT ?{tx.for_update()}",
        (*params, limit),
    ).fetchall()
    return [_dead(r) for r in rows]


def txn_requeue_dlq(
    tx: Tx, notes: Notes, ids: Sequence[int] | None, backend: str | None, limit: int, now: float
) -> list[int]:
    rows = _take(tx, ids, backend, limit)
    if not rows:
        return []
    lock_quotas(tx, [row.backend for row in rows])
    for row in rows:
        inserted = tx.execute(
            "INSERT INTO cleanup_queue (backend_name, storage_key, reason, size_bytes, attempts,"
            " next_retry, last_error, created_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?)"
            " ON CONFLICT (backend_name, storage_key) DO NOTHING RETURNING id",
            (row.backend, row.storage_key, row.reason, row.size, now, row.last_error, row.first_enqueued_at),
        ).fetchone()
        if inserted is None:
            # Queued again meanwhile: that row counts the bytes already.
            adjust_quota(tx, notes, row.backend, now, orphan=-row.size)
    tx.execute(
        f"DELETE FROM cleanup_dlq WHERE id IN ({marks(len(rows))})", [row.id for row in rows]
    )
    return [row.id for row in rows]


def txn_write_off_dlq(
    tx: Tx, notes: Notes, ids: Sequence[int] | None, backend: str | None, limit: int, now: float
) -> tuple[int, int]:
    rows = _take(tx, ids, backend, limit)
    if not rows:
        return 0, 0
    lock_quotas(tx, [row.backend for row in rows])
    tx.execute(
        f"DELETE FROM cleanup_dlq WHERE id IN ({marks(len(rows))})", [row.id for row in rows]
    )
    for row in rows:
        adjust_quota(tx, notes, row.backend, now, orphan=-row.size)
    return len(rows), sum(row.size for row in rows)
