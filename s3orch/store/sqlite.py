"""The SQLite metadata store (single instance).

Two adbapi pools: one connection for writes, so write transactions are
serialised by construction and ``BEGIN IMMEDIATE`` takes the write lock up
front (a reservation and its quota check can never interleave with another),
and a few connections for reads, which WAL lets run beside the writer.

The transactions themselves are the shared ones of :mod:`s3orch.store.txn`;
on SQLite they need no row locks (:class:`SQLiteDialect`: nobody else
writes while the one writer holds the write lock).  Each runs inside one
transaction that is rolled back on any error and retried when SQLite reports
the database locked (another process, e.g. ``s3orch-admin``, holding the write
lock past ``busy_timeout``); a rolled-back attempt left no trace, so a retry
is safe.  When the database stays locked, or the disk fails or fills, the
store raises :class:`~s3orch.store.interface.StoreUnavailable`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from twisted.enterprise import adbapi
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from s3orch.store import migrate
from s3orch.store.interface import StoreError, StoreUnavailable
from s3orch.store.sqlstore import SQLStore
from s3orch.store.txn import Notes, RetryTransaction, Tx

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: ``busy_timeout`` per attempt, and how many attempts a transaction gets.
BUSY_TIMEOUT_MS = 5000
LOCK_RETRIES = 3
READ_POOL_SIZE = 4

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
#: Primary result codes that mean "not now" (BUSY, LOCKED, IOERR, FULL, CANTOPEN).
_UNAVAILABLE_CODES = (_SQLITE_BUSY, _SQLITE_LOCKED, 10, 13, 14)

__all__ = ["SQLITE", "SQLiteDialect", "SQLiteStore", "StoreError"]


class SQLiteDialect:
    """The shared SQL as SQLite takes it: ``?`` markers, no row locks (one writer)."""

    placeholder = "?"
    row_locks = False

    def lock_key(self, tx: Tx, bucket: str, key: str) -> None:
        """Nothing to do: the write transaction already excludes every other writer."""

    def lock_bucket_uploads(self, tx: Tx, bucket: str) -> None:
        """Nothing to do: the write transaction already excludes every other writer."""


SQLITE = SQLiteDialect()


# --- connections and transactions (run in pool threads) -------------------------------


def _open_connection(conn: sqlite3.Connection, *, read_only: bool) -> None:
    """Per-connection settings (adbapi ``cp_openfun``).

    ``synchronous=FULL``: in WAL mode NORMAL can lose the last acknowledged
    transactions on power loss, and an acknowledged write must survive.
    """
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"SQLite database cannot use WAL journal mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if read_only:
        conn.execute("PRAGMA query_only = ON")


def _open_writer(conn: sqlite3.Connection) -> None:
    _open_connection(conn, read_only=False)


def _open_reader(conn: sqlite3.Connection) -> None:
    _open_connection(conn, read_only=True)


def admin_connection(config: Any) -> tuple[sqlite3.Connection, str]:
    """A writer connection to ``config.path`` for ``s3orch-admin`` (and where it points)."""
    migrate.check_sqlite_version()
    try:
        conn = sqlite3.connect(config.path, isolation_level=None)
        try:
            _open_writer(conn)
        except BaseException:
            conn.close()
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"cannot use SQLite database {config.path}: {exc}") from exc
    return conn, str(config.path)


def is_unavailable(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says the database cannot serve now (locked past the retries,
    I/O failing, disk full) rather than that the statement is wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in _UNAVAILABLE_CODES
    text = str(exc)
    return any(word in text for word in ("locked", "busy", "disk I/O", "disk is full", "unable to open"))


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _run_txn(
    conn: Any,
    begin: str,
    notes: Notes,
    fn: Callable[Concatenate[Tx, Notes, _P], _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """Run ``fn`` in one transaction, retrying the whole of it when the database is locked."""
    for attempt in range(LOCK_RETRIES):
        notes.warnings.clear()
        cur = conn.cursor()
        try:
            cur.execute(begin)
            try:
                result = fn(Tx(cur, SQLITE), notes, *args, **kwargs)
                cur.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            return result
        except (sqlite3.OperationalError, RetryTransaction) as exc:
            retry = isinstance(exc, RetryTransaction) or _is_locked(exc)
            if attempt + 1 < LOCK_RETRIES and retry:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise
        finally:
            cur.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _run_migrations(conn: Any) -> list[int]:
    return migrate.migrate(conn, "sqlite")


# --- the store ------------------------------------------------------------------------


class SQLiteStore(SQLStore):
    """:class:`~s3orch.store.interface.MetadataStore` on one SQLite file (one instance only)."""

    _log = Logger(namespace="s3orch.store")

    def __init__(self, path: str | Path, reactor: IReactorCore) -> None:
        self.path = str(path)
        self._reactor = reactor
        self._writer: adbapi.ConnectionPool | None = None
        self._readers: adbapi.ConnectionPool | None = None

    def _pool(self, **kwargs: Any) -> adbapi.ConnectionPool:
        return adbapi.ConnectionPool(  # type: ignore[no-untyped-call]
            "sqlite3",
            self.path,
            check_same_thread=False,  # adbapi closes connections from the reactor thread
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            cp_reactor=self._reactor,
            **kwargs,
        )

    async def start(self) -> None:
        migrate.check_sqlite_version()
        self._writer = self._pool(cp_min=1, cp_max=1, cp_openfun=_open_writer)
        try:
            applied = await self._writer.runWithConnection(  # type: ignore[no-untyped-call]
                _run_migrations
            )
        except BaseException as exc:
            self._writer.close()  # type: ignore[no-untyped-call]
            self._writer = None
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot use SQLite database {self.path}: {exc}") from exc
            raise
        if applied:
            self._log.info(
                "applied schema migrations {versions} to {path}",
                versions=applied,
                path=self.path,
                component="store",
            )
        self._readers = self._pool(cp_min=1, cp_max=READ_POOL_SIZE, cp_openfun=_open_reader)

    async def close(self) -> None:
        for pool in (self._readers, self._writer):
            if pool is not None:
                pool.close()  # type: ignore[no-untyped-call]
        self._readers = self._writer = None

    async def _call(
        self,
        read_only: bool,
        idempotent: bool,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        # Reads take a plain BEGIN: one snapshot for the whole read, even when it takes
        # several queries.  ``idempotent`` needs no care here: SQLite never leaves a
        # COMMIT's outcome unknown to the caller.
        pool = self._readers if read_only else self._writer
        if pool is None:
            raise StoreError("the store is not started")
        begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        notes = Notes()
        try:
            result = await pool.runWithConnection(  # type: ignore[no-untyped-call]
                _run_txn, begin, notes, fn, *args, **kwargs
            )
        except sqlite3.OperationalError as exc:
            if is_unavailable(exc):
                raise StoreUnavailable(f"SQLite database {self.path}: {exc}") from exc
            raise
        finally:
            for fmt, fields in notes.warnings:
                self._log.warn(fmt, component="store", **fields)
        return cast(_T, result)
