"""The transaction base every engine and every domain module shares.

:class:`Tx` is a DB-API cursor inside one transaction speaking the shared SQL
(``?`` markers); :class:`Dialect` is what differs between engines inside a
transaction; :class:`Notes` collects what a transaction noticed, for the store
to log from the reactor thread; :class:`RetryTransaction` is how a transaction
asks its engine to run it again.

The retry contract: an engine runs a ``txn_*`` function inside one transaction,
rolls back on any error, and may run the whole function again (SQLite
``database is locked``; PostgreSQL serialization failures and deadlocks, a
connection lost before COMMIT).  So every transaction function is idempotent
under retry, and decides everything from what it reads inside the transaction,
plus its arguments: it never reads the wall clock (``now`` is an argument).
How often and after which errors an engine retries is the engine's
(:mod:`s3orch.store.sqlite`, :mod:`s3orch.store.postgres`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol


class RetryTransaction(Exception):
    """A transaction lost a race it can only resolve by running again (a duplicate insert:
    another attempt of the same call committed first); engines retry it like a conflict."""


@dataclass
class Notes:
    """Anomalies one transaction noticed, logged after it finishes (in the reactor thread)."""

    warnings: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def warn(self, fmt: str, **fields: Any) -> None:
        self.warnings.append((fmt, fields))


class Dialect(Protocol):
    """What differs between engines inside a transaction (see the module docstring)."""

    #: The engine's parameter marker for the shared SQL's ``?``.
    placeholder: str
    #: Whether other writers run concurrently, so statements lock what they decide on.
    row_locks: bool

    def lock_key(self, tx: Tx, bucket: str, key: str) -> None:
        """Serialise the writers of one object key until the transaction ends (even
        while the key has no row to lock)."""

    def lock_bucket_uploads(self, tx: Tx, bucket: str) -> None:
        """Serialise the counting of one bucket's active multipart uploads."""


@lru_cache(maxsize=512)
def _translate(sql: str, placeholder: str) -> str:
    return sql.replace("?", placeholder)


class Tx:
    """A DB-API cursor inside one transaction, taking the shared SQL (``?`` markers)."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self.cursor = cursor
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Tx:
        if self.dialect.placeholder != "?":
            sql = _translate(sql, self.dialect.placeholder)
        if params:
            self.cursor.execute(sql, tuple(params))
        else:
            self.cursor.execute(sql)
        return self

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)

    def for_update(self, *, skip_locked: bool = False) -> str:
        """The row-lock clause for a SELECT that decides a write ("" without row locks)."""
        if not self.dialect.row_locks:
            return ""
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"


def marks(count: int) -> str:
    """``?, ?, ...`` for an ``IN`` list of ``count`` values."""
    return ", ".join("?" * count)


def txn_ping(tx: Tx, notes: Notes) -> None:
    tx.execute("SELECT 1").fetchone()
