"""Monthly usage rows (``backend_usage``, one per backend and ``YYYY-MM`` period).

Flushes are additive (``+=``), never a write of an absolute value, so instances sharing one
database each add their own deltas and none overwrites another's.
"""

from __future__ import annotations

from collections.abc import Mapping

from s3orch.store.interface_usage import UsageRow
from s3orch.store.txn.base import Notes, Tx

_COLUMNS = "backend_name, period, api_requests, egress_bytes, ingress_bytes"


def txn_add_usage(
    tx: Tx, notes: Notes, deltas: Mapping[tuple[str, str], tuple[int, int, int]], period: str
) -> dict[str, UsageRow]:
    """Add each ``(backend, period) -> (api, egress, ingress)`` to its row; then every row of
    ``period`` (the new baseline), read in the same transaction."""
    for (backend, row_period), (api, egress, ingress) in sorted(deltas.items()):
        tx.execute(
            f"INSERT INTO backend_usage ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (backend_name, period) DO UPDATE SET"
            " api_requests = backend_usage.api_requests + excluded.api_requests,"
            " egress_bytes = backend_usage.egress_bytes + excluded.egress_bytes,"
            " ingress_bytes = backend_usage.ingress_bytes + excluded.ingress_bytes",
            (backend, row_period, api, egress, ingress),
        )
    return txn_usage(tx, notes, period, None)


def txn_usage(tx: Tx, notes: Notes, period: str | None, backend: str | None) -> dict[str, UsageRow]:
    """The rows of ``period`` (every period: the latest of each backend when None), only
    ``backend``'s when given; keyed by backend."""
    where, args = [], []
    if period is not None:
        where.append("period = ?")
        args.append(period)
    if backend is not None:
        where.append("backend_name = ?")
        args.append(backend)
    sql = f"SELECT {_COLUMNS} FROM backend_usage"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = tx.execute(sql + " ORDER BY backend_name, period", args).fetchall()
    return {row[0]: UsageRow(row[0], row[1], int(row[2]), int(row[3]), int(row[4])) for row in rows}
