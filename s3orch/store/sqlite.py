"""The SQLite engine: one s3orch instance on one database file.

Two adbapi pools: one connection for writes, so write transactions are
serialised by construction and ``BEGIN IMMEDIATE`` takes the write lock up
front (a reservation and its quota check can never interleave with another),
and a few connections for reads, which WAL lets run beside the writer.  Write
transactions queued behind each other share one COMMIT (one fsync), each in
its own savepoint (:mod:`s3orch.store.sqlite_group`).

The transactions themselves are the shared ones of :mod:`s3orch.store.txn`;
on SQLite they need no row locks (:class:`SQLiteDialect`: nobody else
writes while the one writer holds the write lock).  Each runs inside one
transaction that is rolled back on any error and retried when SQLite reports
the database locked (another process, e.g. ``s3orch-admin``, holding the write
lock past ``busy_timeout``); a rolled-back attempt left no trace, so a retry
is safe.  When the database stays locked, or the disk fails or fills, the
engine classifies the error as unavailable and the store raises
:class:`~s3orch.store.errors.StoreUnavailable`.

Tests may pass a ``pool_factory`` (an :class:`adbapi.ConnectionPool` subclass,
e.g. :class:`s3orch.testing.syncpool.SynchronousConnectionPool`) to run every
transaction on the calling thread; production uses adbapi's own pool.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from s3orch.config.model import DatabaseConfig
from s3orch.store import adbapi_typed
from s3orch.store.adbapi_typed import PoolFactory
from s3orch.store.errors import StoreError
from s3orch.store.file_locks import FileWorkerLocks, lock_file_path
from s3orch.store.locks import LocalWorkerLocks, WorkerLocks
from s3orch.store.migrate import Migration, MigrationError, migrate
from s3orch.store.sqlite_group import GroupWriter
from s3orch.store.txn.base import Notes, RetryTransaction, Tx

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: ``busy_timeout`` per attempt, and how many attempts a transaction gets.
BUSY_TIMEOUT_MS = 5000
LOCK_RETRIES = 3
READ_POOL_SIZE = 4

#: STRICT tables need 3.37; UPSERT and RETURNING are older.
MIN_SQLITE_VERSION = (3, 37, 0)

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
#: Primary result codes that mean "not now" (BUSY, LOCKED, IOERR, FULL, CANTOPEN).
_UNAVAILABLE_CODES = (_SQLITE_BUSY, _SQLITE_LOCKED, 10, 13, 14)


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


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot serve now (locked past the retries,
    I/O failing, disk full) rather than that the statement is wrong."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in _UNAVAILABLE_CODES
    text = str(exc)
    return any(word in text for word in ("locked", "busy", "disk I/O", "disk is full", "unable to open"))


def is_retryable(exc: BaseException) -> bool:
    """Whether running the whole transaction again may succeed: the database was
    locked by another process, or the transaction asked for it (a lost race)."""
    if isinstance(exc, RetryTransaction):
        return True
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def run_txn(
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
            if attempt + 1 < LOCK_RETRIES and is_retryable(exc):
                time.sleep(0.05 * (attempt + 1))
                continue
            raise
        finally:
            cur.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _run_write(
    conn: Any, notes: Notes, fn: Callable[Concatenate[Tx, Notes, _P], _T], *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    """A write transaction alone (the group writer's lone and fallback case)."""
    return run_txn(conn, "BEGIN IMMEDIATE", notes, fn, *args, **kwargs)


# --- migrations (plain connections, also used by s3orch-admin) --------------------------


def check_sqlite_version() -> None:
    """Refuse SQLite libraries too old for the schema (clearer than a syntax error)."""
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        need = ".".join(map(str, MIN_SQLITE_VERSION))
        raise MigrationError(f"SQLite {need} or newer is required; found {sqlite3.sqlite_version}")


def split_sqlite_script(script: str) -> list[str]:
    """Split a script into single statements (``execute`` runs one at a time).

    ``sqlite3.complete_statement`` knows about strings, comments and trigger
    bodies, so a ``;`` inside them does not end a statement.
    """
    statements: list[str] = []
    buffer = ""
    *pieces, last = script.split(";")
    for piece in pieces:
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if _has_code(buffer):
                statements.append(buffer.strip())
            buffer = ""
    buffer += last  # text after the last ';' (a statement without one, or comments)
    if _has_code(buffer):
        statements.append(buffer.strip())
    return statements


def _has_code(text: str) -> bool:
    """Whether ``text`` holds more than comments, whitespace and semicolons."""
    lines = (line.split("--", 1)[0] for line in text.splitlines())
    return any(line.strip().strip(";").strip() for line in lines)


# --- the engine ---------------------------------------------------------------------------


def open_inline_reader(path: str) -> sqlite3.Connection:
    """The reactor thread's own read-only connection for point reads (see :class:`SQLitePools`).

    ``busy_timeout = 0``: in WAL mode a reader never waits for the writer, and in the rare
    moments it would have to (the WAL being restarted, another process's exclusive lock)
    SQLite answers BUSY at once and the read goes to the pool instead of blocking the reactor.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _open_reader(conn)
        conn.execute("PRAGMA busy_timeout = 0")
    except BaseException:
        conn.close()
        raise
    return conn


class SQLitePools:
    """One store's pools: the one writer connection and the readers.

    ``inline``, when given, is a read-only connection used on the reactor thread for point
    reads (:meth:`run_point_read`): a HEAD's lookup by primary key takes tens of microseconds
    in SQLite, while the hop to a pool thread and back (queue, thread wake-up, GIL hand-over,
    reactor wake-up) cost a quarter of the reactor's time under 16 concurrent HEADs.  A listing
    page without a delimiter (one primary-key range scan of at most 1001 rows, about 10 million
    instructions, well under a millisecond when the pages are cached) qualifies too: in the pool
    the same work competes for the GIL with the reactor anyway, and then waits for its wake-up.
    """

    def __init__(
        self,
        writer: adbapi.ConnectionPool,
        readers: adbapi.ConnectionPool,
        inline: sqlite3.Connection | None = None,
    ) -> None:
        self.writer = writer
        self.readers = readers
        self.inline = inline
        #: Write transactions, the queued ones sharing one COMMIT (:mod:`s3orch.store.sqlite_group`).
        self.group = GroupWriter(
            writer, dialect=SQLITE, run_alone=_run_write, is_retryable=is_retryable, attempts=LOCK_RETRIES
        )

    def run_point_read(
        self,
        notes: Notes,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """A short read-only transaction (a lookup by key, a page of keys) on the calling thread when it can
        run without waiting; in the reader pool otherwise.

        One attempt, never a retry or a sleep here: any ``OperationalError`` (BUSY from a
        writer's WAL restart, another process's lock, a failing disk) sends the read to the
        pool, whose retries and error classification then decide, exactly as before.
        """
        conn = self.inline
        if conn is not None:
            notes.warnings.clear()
            try:
                return succeed(_run_inline(conn, notes, fn, *args, **kwargs))
            except sqlite3.OperationalError:
                pass
            except Exception:
                return fail()
        return self.run_transaction(True, True, notes, fn, *args, **kwargs)

    def run_transaction(
        self,
        read_only: bool,
        idempotent: bool,
        notes: Notes,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        # Reads take a plain BEGIN: one snapshot for the whole read, even when it takes
        # several queries.  ``idempotent`` needs no care here: SQLite never leaves a
        # COMMIT's outcome unknown to the caller.  Writes go through the group writer.
        if not read_only:
            return self.group.submit(notes, fn, *args, **kwargs)
        return adbapi_typed.run_with_connection(self.readers, run_txn, "BEGIN", notes, fn, *args, **kwargs)

    def close(self) -> None:
        inline, self.inline = self.inline, None
        if inline is not None:
            inline.close()
        for pool in (self.readers, self.writer):
            adbapi_typed.close(pool)


class _NeedsSnapshot(Exception):
    """A point read asked for a second statement outside a transaction (see :class:`_OneStatement`)."""


class _OneStatement(Tx):
    """A point read's first try: its one statement runs in autocommit, which in SQLite is a
    consistent snapshot of its own, so no BEGIN and ROLLBACK are needed around it.  A read
    that needs a second statement (a multi-extent object's parts) stops there and is run
    again whole in a read transaction: its statements must see one snapshot."""

    def __init__(self, cursor: Any) -> None:
        super().__init__(cursor, SQLITE)
        self._used = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Tx:
        if self._used:
            raise _NeedsSnapshot()
        self._used = True
        self.cursor.execute(sql, tuple(params))
        return self


def _run_inline(
    conn: sqlite3.Connection,
    notes: Notes,
    fn: Callable[Concatenate[Tx, Notes, _P], _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """``fn`` on ``conn``, once: in one statement if it can (:class:`_OneStatement`), else in one
    read transaction (the inline half of run_point_read)."""
    cur = conn.cursor()
    try:
        try:
            return fn(_OneStatement(cur), notes, *args, **kwargs)
        except _NeedsSnapshot:
            notes.warnings.clear()
        cur.execute("BEGIN")
        try:
            result = fn(Tx(cur, SQLITE), notes, *args, **kwargs)
        finally:
            if conn.in_transaction:
                cur.execute("ROLLBACK")  # a read: nothing to keep, and ROLLBACK cannot be BUSY
        return result
    finally:
        cur.close()


class SQLiteEngine:
    """Everything that is SQLite's: pools, migrations, locks, errors (see the module)."""

    name = "sqlite"
    dialect = SQLITE
    _log = Logger(namespace="s3orch.store")

    def __init__(self, config: DatabaseConfig, *, pool_factory: PoolFactory | None = None) -> None:
        self.path = str(config.path)
        self._pool_factory = pool_factory or adbapi_typed.DEFAULT_POOL
        #: Point reads on the reactor thread (:meth:`SQLitePools.run_point_read`).
        self.inline_reads = True

    def describe(self) -> str:
        return f"SQLite database {self.path}"

    # -- classification -----------------------------------------------------------------

    def is_unavailable(self, exc: BaseException) -> bool:
        return is_unavailable(exc)

    def is_retryable(self, exc: BaseException) -> bool:
        return is_retryable(exc)

    # -- pools --------------------------------------------------------------------------

    def _pool(self, reactor: IReactorCore, **kwargs: Any) -> adbapi.ConnectionPool:
        return self._pool_factory(
            "sqlite3",
            self.path,
            check_same_thread=False,  # adbapi closes connections from the reactor thread
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            cp_reactor=reactor,
            **kwargs,
        )

    async def open_pools(self, reactor: IReactorCore) -> SQLitePools:
        """Open the writer, bring the schema up to date on it, then open the readers."""
        check_sqlite_version()
        writer = self._pool(reactor, cp_min=1, cp_max=1, cp_openfun=_open_writer)
        try:
            applied = await adbapi_typed.run_with_connection(writer, migrate, self)
        except BaseException as exc:
            adbapi_typed.close(writer)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot use {self.describe()}: {exc}") from exc
            raise
        if applied:
            self._log.info(
                "applied schema migrations {versions} to {path}",
                versions=applied,
                path=self.path,
                component="store",
            )
        readers = self._pool(reactor, cp_min=1, cp_max=READ_POOL_SIZE, cp_openfun=_open_reader)
        # Point reads on the reactor thread only with adbapi's own pool: a test's pool factory
        # (e.g. the synchronous one) decides where every statement runs.
        inline = None
        if self.inline_reads and self._pool_factory is adbapi_typed.DEFAULT_POOL:
            try:
                inline = open_inline_reader(self.path)
            except sqlite3.Error:
                inline = None  # the pool still serves every read
        return SQLitePools(writer, readers, inline)

    def worker_locks(self, reactor: IReactorCore) -> WorkerLocks:
        """Every process on the database file (``server.processes``) shares the locks: kernel
        record locks on a file beside it (:mod:`s3orch.store.file_locks`)."""
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            return LocalWorkerLocks()  # one process by construction
        return FileWorkerLocks(lock_file_path(self.path))

    # -- migrations (see :class:`s3orch.store.migrate.Migrator`) ------------------------

    def check_library(self) -> None:
        check_sqlite_version()

    @contextmanager
    def migration_lock(self, conn: Any) -> Iterator[None]:
        """Nothing around the whole run: each file takes the write lock itself
        (``BEGIN IMMEDIATE`` in :meth:`apply_migration`) and re-checks its version
        under it, so a second process finds the work done."""
        yield

    def apply_migration(self, conn: Any, migration: Migration, applied_at: str) -> bool:
        """Apply one file in one ``BEGIN IMMEDIATE`` transaction; False if already applied.

        ``conn`` must be opened with ``isolation_level=None``.  ``executescript`` is
        avoided on purpose: it commits any open transaction first.
        """
        statements = split_sqlite_script(migration.sql())
        cur = conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute("SELECT 1 FROM schema_version WHERE version = ?", (migration.version,))
                if cur.fetchone() is not None:  # another process was first
                    cur.execute("ROLLBACK")
                    return False
                for statement in statements:
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, applied_at),
                )
                cur.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            return True
        finally:
            cur.close()

    def admin_connection(self) -> tuple[sqlite3.Connection, str]:
        """A writer connection for ``s3orch-admin`` (and where it points)."""
        check_sqlite_version()
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                _open_writer(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot use {self.describe()}: {exc}") from exc
        return conn, self.path
