"""Quota rows: choosing a backend with room, and moving bytes between the counters.

Every byte a backend holds or will hold is in exactly one of ``bytes_used``,
``orphan_bytes`` and ``reserved_bytes`` of its ``backend_quotas`` row (see
:mod:`s3orch.store.interface`).  The helpers here are the only code that
changes those counters, always inside a write transaction that has locked the
rows in name order (:func:`lock_quotas`, the last step of the one lock order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from s3orch.store.records import QuotaRow
from s3orch.store.txn.base import Notes, Tx, marks

_QUOTA_COLUMNS = ("bytes_used", "orphan_bytes", "reserved_bytes", "object_count")


def choose_backend(
    names: Sequence[str], rows: dict[str, Sequence[Any]], size: int, strategy: str
) -> str | None:
    """The backend ``strategy`` chooses among ``names`` with room for ``size`` bytes.

    ``pack``: the first (config order) with room; ``spread``: the least utilised
    ((used + orphan + reserved) / limit; unlimited counts as 0), ties in config order.
    ``rows`` are quota rows (name, limit, used, orphan, reserved) by name.
    """
    fitting: list[tuple[Fraction, int, str]] = []
    for index, name in enumerate(names):
        # No row: sync_quota_limits never heard of it, so it has no limit.
        _, limit, used, orphan, reserved = rows.get(name, (name, 0, 0, 0, 0))
        occupied = int(used) + int(orphan) + int(reserved)
        if limit and int(limit) - occupied < size:
            continue
        ratio = Fraction(occupied, int(limit)) if limit else Fraction(0)
        fitting.append((ratio, index, name))
        if strategy == "pack":
            break
    return min(fitting)[2] if fitting else None


def lock_quotas(tx: Tx, backends: Iterable[str]) -> None:
    """Lock the existing quota rows of ``backends`` in name order (the one lock order)."""
    names = sorted(set(backends))
    if names and tx.dialect.row_locks:
        tx.execute(
            f"SELECT 1 FROM backend_quotas WHERE backend_name IN ({marks(len(names))})"
            " ORDER BY backend_name FOR UPDATE",
            names,
        )


def adjust_quota(
    tx: Tx,
    notes: Notes,
    backend: str,
    now: float,
    *,
    used: int = 0,
    orphan: int = 0,
    reserved: int = 0,
    count: int = 0,
) -> None:
    """Apply deltas to a backend's counters, clamping at 0 (a negative result is a bug).

    Deltas that only add (a reservation, an orphaned copy) cannot go negative: one UPDATE
    does it when the row exists (no read first)."""
    if used >= 0 and orphan >= 0 and reserved >= 0 and count >= 0:
        tx.execute(
            "UPDATE backend_quotas SET bytes_used = bytes_used + ?, orphan_bytes = orphan_bytes + ?,"
            " reserved_bytes = reserved_bytes + ?, object_count = object_count + ?, updated_at = ?"
            " WHERE backend_name = ?",
            (used, orphan, reserved, count, now, backend),
        )
        if tx.rowcount:
            return
    select = (
        "SELECT bytes_used, orphan_bytes, reserved_bytes, object_count"
        f" FROM backend_quotas WHERE backend_name = ?{tx.for_update()}"
    )
    row = tx.execute(select, (backend,)).fetchone()
    if row is None:
        tx.execute(
            "INSERT INTO backend_quotas (backend_name, bytes_limit, updated_at) VALUES (?, 0, ?)"
            " ON CONFLICT (backend_name) DO NOTHING",
            (backend, now),
        )
        row = tx.execute(select, (backend,)).fetchone()
    values: list[int] = []
    for column, old, delta in zip(_QUOTA_COLUMNS, row, (used, orphan, reserved, count)):
        new = int(old) + delta
        if new < 0:
            notes.warn(
                "quota counter {column} of backend {backend} would go negative"
                " ({old} + {delta}); clamped to 0",
                column=column,
                backend=backend,
                old=int(old),
                delta=delta,
            )
            new = 0
        values.append(new)
    tx.execute(
        "UPDATE backend_quotas SET bytes_used = ?, orphan_bytes = ?, reserved_bytes = ?,"
        " object_count = ?, updated_at = ? WHERE backend_name = ?",
        (*values, now, backend),
    )


def pick_backend(
    tx: Tx, candidates: Sequence[str], strategy: str, size: int, *, lock: bool
) -> str | None:
    """:func:`choose_backend` over the candidates' quota rows; ``lock`` keeps those rows
    locked until commit, so the check and the reservation see the same values."""
    names = list(dict.fromkeys(candidates))
    if not names:
        return None
    rows = tx.execute(
        "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes"
        f" FROM backend_quotas WHERE backend_name IN ({marks(len(names))}) ORDER BY backend_name"
        + (tx.for_update() if lock else ""),
        names,
    ).fetchall()
    return choose_backend(names, {row[0]: row for row in rows}, size, strategy)


def txn_sync_quota_limits(tx: Tx, notes: Notes, limits: dict[str, int], now: float) -> None:
    for backend, limit in sorted(limits.items()):
        tx.execute(
            "INSERT INTO backend_quotas (backend_name, bytes_limit, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (backend_name) DO UPDATE SET bytes_limit = excluded.bytes_limit,"
            " updated_at = excluded.updated_at",
            (backend, limit, now),
        )


def txn_get_quotas(tx: Tx, notes: Notes) -> dict[str, QuotaRow]:
    rows = tx.execute(
        "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes, object_count"
        " FROM backend_quotas ORDER BY backend_name"
    ).fetchall()
    return {row[0]: QuotaRow(*row) for row in rows}


def txn_object_counts(tx: Tx, notes: Notes) -> dict[str, int]:
    rows = tx.execute(
        "SELECT backend_name, object_count FROM backend_quotas ORDER BY backend_name"
    ).fetchall()
    return {row[0]: int(row[1]) for row in rows}
