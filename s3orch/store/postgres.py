"""The PostgreSQL engine: many s3orch instances on one database.

The transactions are the shared ones of :mod:`s3orch.store.txn` (the SQLite
engine runs the same functions); what differs is how correctness survives
concurrent writers in other processes, and that is :class:`PostgresDialect`
plus the transaction runner here:

* Write transactions run at READ COMMITTED and lock what they decide on
  (``FOR UPDATE`` on the rows, in one order: object key, object row,
  locations, quota rows by name); a commit also takes a transaction-scoped
  advisory lock on its (bucket, key), which covers a key that has no row yet.
  When PostgreSQL still reports a deadlock (40P01) or a serialization failure
  (40001), the whole transaction function is retried.
* Reads that take several queries (an object and its locations, a listing)
  run in one REPEATABLE READ, READ ONLY snapshot, so an overwrite committing
  in between can never pair one version's metadata with another's copies.
* A connection that drops is reopened and the transaction retried when that
  is safe: always when it failed before COMMIT was sent; after that only if
  re-running it is a no-op (a retried reserve finds its intent, a retried
  commit finds its write current and returns []).  When the server stays
  away the engine classifies the error as unavailable and the store raises
  :class:`~s3orch.store.errors.StoreUnavailable`.
* Cleanup rows are claimed with ``FOR UPDATE SKIP LOCKED`` plus
  ``claimed_at``/``claimed_by``, so two instances never work on the same row.
* Instances starting together migrate under the session advisory lock
  :data:`~s3orch.store.lock_ids.MIGRATION_LOCK_ID`, waited for, so the second
  finds the work done.

Timestamps are epoch-second doubles and JSON is text, as in SQLite, so both
engines read back identical records.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg2
import psycopg2.errors
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from s3orch.config.model import DatabaseConfig
from s3orch.store import adbapi_typed
from s3orch.store.errors import StoreError
from s3orch.store.lock_ids import (
    MIGRATION_LOCK_ID,
    OBJECT_KEY_LOCK_CLASS,
    UPLOAD_LIMIT_LOCK_CLASS,
    key_lock_id,
)
from s3orch.store.locks import WorkerLocks
from s3orch.store.migrate import Migration, migrate
from s3orch.store.postgres_connection import (
    UNAVAILABLE_ERRORS,
    AgedConnection,
    PostgresSettings,
    check_server,
    is_broken,
    open_connection,
    raw_connection,
    run_with_connection,
    set_statement_timeout,
)
from s3orch.store.postgres_locks import PostgresWorkerLocks
from s3orch.store.txn.base import Notes, RetryTransaction, Tx

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Attempts per transaction (serialization failures, deadlocks, dropped connections).
TXN_ATTEMPTS = 5


class PostgresDialect:
    """The shared SQL as PostgreSQL takes it: ``%s`` markers, row locks, advisory key locks."""

    placeholder = "%s"
    row_locks = True

    def lock_key(self, tx: Tx, bucket: str, key: str) -> None:
        tx.execute(
            "SELECT pg_advisory_xact_lock(?, ?)", (OBJECT_KEY_LOCK_CLASS, key_lock_id(bucket, key))
        )

    def lock_bucket_uploads(self, tx: Tx, bucket: str) -> None:
        tx.execute(
            "SELECT pg_advisory_xact_lock(?, ?)", (UPLOAD_LIMIT_LOCK_CLASS, key_lock_id(bucket, ""))
        )


POSTGRES = PostgresDialect()


# --- transactions (run in pool threads) ------------------------------------------------


def is_retryable(exc: BaseException) -> bool:
    """A failure that running the transaction again resolves (on a working connection)."""
    if isinstance(exc, RetryTransaction | psycopg2.errors.SerializationFailure | psycopg2.errors.DeadlockDetected):
        return True
    return getattr(exc, "pgcode", None) in ("40001", "40P01")


def is_unavailable(exc: BaseException) -> bool:
    """The server, or the connection to it, is away (or too slow: statement timeout)."""
    return isinstance(exc, UNAVAILABLE_ERRORS)


def _reconnect(conn: Any) -> None:
    reconnect = getattr(conn, "reconnect", None)
    if reconnect is None:  # a bare connection (tests): nothing to reopen with
        raise StoreError("the database connection was lost")
    reconnect()


def _recycle_if_old(conn: Any, lifetime: float) -> None:
    opened = getattr(raw_connection(conn), "opened_at", 0.0)
    if lifetime > 0 and opened and time.monotonic() - opened > lifetime:
        _reconnect(conn)


def run_txn(
    conn: Any,
    read_only: bool,
    idempotent: bool,
    lifetime: float,
    notes: Notes,
    fn: Callable[Concatenate[Tx, Notes, _P], _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """Run ``fn`` in one transaction, retrying the whole of it when that is safe.

    ``idempotent`` says whether re-running after an unknown COMMIT outcome (the
    connection died while committing) does no harm.
    """
    for attempt in range(1, TXN_ATTEMPTS + 1):
        notes.warnings.clear()
        _recycle_if_old(conn, lifetime)
        commit_sent = False
        try:
            # Carried by psycopg2's own BEGIN, so it costs no round trip.
            raw_connection(conn).set_session(
                isolation_level="REPEATABLE READ" if read_only else "READ COMMITTED",
                readonly=read_only,
            )
            cur = conn.cursor()
            try:
                result = fn(Tx(cur, POSTGRES), notes, *args, **kwargs)
            finally:
                cur.close()
            commit_sent = True
            conn.commit()
            return result
        except BaseException as exc:
            broken = is_broken(conn)
            if not broken:
                try:
                    raw_connection(conn).rollback()
                except psycopg2.Error:
                    broken = True  # the connection died under the failed transaction
            lost = broken and isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
            if attempt < TXN_ATTEMPTS:
                if is_retryable(exc) and not broken:
                    time.sleep(random.uniform(0, 0.01 * 2**attempt))
                    continue
                if lost and (idempotent or not commit_sent):
                    _reconnect(conn)
                    continue
            if broken:
                try:  # leave the thread a working connection rather than a dead one
                    _reconnect(conn)
                except Exception:  # the server is still away: the next call connects afresh
                    pass
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _run_migrations(conn: Any, engine: PostgresEngine) -> list[int]:
    """Migrate without the configured statement timeout: a migration, or the wait for
    another instance's migration, may take longer than any single query should."""
    cur = conn.cursor()
    try:
        cur.execute("SET statement_timeout = 0")
        conn.commit()
        return migrate(conn, engine)
    finally:
        conn.rollback()
        set_statement_timeout(cur, engine.settings.statement_timeout)
        conn.commit()
        cur.close()


# --- the engine ----------------------------------------------------------------------------


class PostgresPools:
    """One store's pool of connections (one per thread, up to ``max_conns``)."""

    def __init__(self, pool: adbapi.ConnectionPool, reactor: IReactorCore, lifetime: float) -> None:
        self.pool = pool
        self._reactor = reactor
        self._lifetime = lifetime

    def run_transaction(
        self,
        read_only: bool,
        idempotent: bool,
        notes: Notes,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        return run_with_connection(
            self.pool, self._reactor, run_txn, read_only, idempotent, self._lifetime, notes, fn,
            *args, **kwargs,
        )

    def run_point_read(
        self,
        notes: Notes,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """Every PostgreSQL statement is a network round trip: always in the pool."""
        return self.run_transaction(True, True, notes, fn, *args, **kwargs)

    def close(self) -> None:
        adbapi_typed.close(self.pool)


class PostgresEngine:
    """Everything that is PostgreSQL's: pools, migrations, locks, errors (see the module)."""

    name = "postgres"
    dialect = POSTGRES
    _log = Logger(namespace="s3orch.store")

    def __init__(self, config: DatabaseConfig) -> None:
        self.settings = PostgresSettings.from_config(config)

    def describe(self) -> str:
        return f"PostgreSQL database {self.settings.describe()}"

    # -- classification -----------------------------------------------------------------

    def is_unavailable(self, exc: BaseException) -> bool:
        return is_unavailable(exc)

    def is_retryable(self, exc: BaseException) -> bool:
        return is_retryable(exc)

    # -- pools --------------------------------------------------------------------------

    async def open_pools(self, reactor: IReactorCore) -> PostgresPools:
        """Open the pool, check the server, bring the schema up to date."""
        settings = self.settings
        pool = adbapi_typed.DEFAULT_POOL(
            "psycopg2",
            cp_min=min(settings.min_conns, settings.max_conns),
            cp_max=max(settings.max_conns, 1),
            cp_reconnect=True,
            cp_openfun=partial(open_connection, statement_timeout=settings.statement_timeout),
            cp_reactor=reactor,
            cp_name="s3orch-postgres",
            connection_factory=AgedConnection,
            **settings.connect,
        )
        try:
            await run_with_connection(pool, reactor, check_server, settings)
            applied = await run_with_connection(pool, reactor, _run_migrations, self)
        except BaseException as exc:
            adbapi_typed.close(pool)
            if isinstance(exc, psycopg2.Error):
                raise StoreError(f"cannot use {self.describe()}: {exc}".strip()) from exc
            raise
        if applied:
            self._log.info(
                "applied schema migrations {versions} to {where}",
                versions=applied,
                where=settings.describe(),
                component="store",
            )
        return PostgresPools(pool, reactor, settings.max_conn_lifetime)

    def worker_locks(self, reactor: IReactorCore) -> WorkerLocks:
        """Session advisory locks, shared by every instance on the database."""
        return PostgresWorkerLocks(self.settings.connect, reactor)

    # -- migrations (see :class:`s3orch.store.migrate.Migrator`) ------------------------

    def check_library(self) -> None:
        """psycopg2 speaks to every supported server; the server is checked on connect."""

    @contextmanager
    def migration_lock(self, conn: Any) -> Iterator[None]:
        """Hold the migration advisory lock for the block (waiting for another holder).

        A session lock, so it spans the per-file transactions; it is released at the
        end, or by PostgreSQL itself if the connection dies first.
        """
        cur = conn.cursor()
        try:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
            cur.fetchone()
            conn.commit()
            yield
        finally:
            try:
                conn.rollback()  # leave no aborted transaction in the way of the unlock
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
                cur.fetchone()
                conn.commit()
            except Exception:  # the connection is gone, and its lock with it
                pass
            finally:
                cur.close()

    def apply_migration(self, conn: Any, migration: Migration, applied_at: str) -> bool:
        """Apply one file in one transaction: DDL is transactional on PostgreSQL, so a
        failing file leaves nothing behind.  The whole file goes in one ``execute``."""
        cur = conn.cursor()
        try:
            cur.execute("SELECT 1 FROM schema_version WHERE version = %s", (migration.version,))
            if cur.fetchone() is not None:
                conn.rollback()
                return False
            cur.execute(migration.sql())
            cur.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, applied_at),
            )
            conn.commit()
            return True
        except BaseException:
            conn.rollback()
            raise
        finally:
            cur.close()

    def admin_connection(self) -> tuple[Any, str]:
        """A plain connection for ``s3orch-admin`` (no statement timeout), and where it points."""
        settings = self.settings
        try:
            conn = psycopg2.connect(**settings.connect)
            try:
                open_connection(conn, statement_timeout=0.0)
                check_server(conn, settings)
            except BaseException:
                conn.close()
                raise
        except psycopg2.Error as exc:
            raise StoreError(f"cannot use {self.describe()}: {exc}".strip()) from exc
        return conn, settings.describe()
