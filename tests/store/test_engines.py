"""Engines: which one a config selects, what each answers, the migration lock, and the
synchronous pool hook for tests."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from s3orch.config.model import DatabaseConfig
from s3orch.store import (
    UnsupportedDriver,
    engine_for,
    migrate_database,
    open_store,
    open_worker_locks,
)
from s3orch.store.lock_ids import MIGRATION_LOCK_ID, WorkerLock
from s3orch.store.locks import LocalWorkerLocks
from s3orch.store.migrate import discover, migrate, sql_dir
from s3orch.store.postgres import PostgresEngine
from s3orch.store.postgres_locks import PostgresWorkerLocks
from s3orch.store.sqlite import SQLiteEngine
from s3orch.store.sqlstore import SQLStore
from s3orch.store.txn.base import Notes, Tx
from s3orch.testing.syncpool import SynchronousConnectionPool
from tests.store.conftest import PostgresDatabase, StoreFactory
from tests.store.test_contract import BUCKET, NOW, intent, record_for

# --- selection ---------------------------------------------------------------------------


def test_the_driver_selects_the_engine_and_its_settings(tmp_path: Path) -> None:
    sqlite = engine_for(DatabaseConfig(path=str(tmp_path / "f.db")))
    assert isinstance(sqlite, SQLiteEngine) and sqlite.path == str(tmp_path / "f.db")
    postgres = engine_for(DatabaseConfig(host="db", database="s3", user="u", max_conns=3, min_conns=1))
    assert isinstance(postgres, PostgresEngine)
    assert (postgres.settings.max_conns, postgres.settings.connect["dbname"]) == (3, "s3")
    assert postgres.describe() == "PostgreSQL database db:5432/s3"
    assert sqlite.describe() == f"SQLite database {tmp_path / 'f.db'}"


def test_an_unknown_driver_is_refused_by_every_entry_point(tmp_path: Path) -> None:
    config = DatabaseConfig(driver="mysql", path=str(tmp_path / "f.db"))
    for call in (
        lambda: engine_for(config),
        lambda: open_store(config, MemoryReactorClock()),
        lambda: open_worker_locks(config, MemoryReactorClock()),
        lambda: migrate_database(config),
    ):
        with pytest.raises(UnsupportedDriver, match="mysql"):
            call()


def test_a_pool_factory_is_refused_for_postgres() -> None:
    with pytest.raises(UnsupportedDriver, match="sqlite"):
        engine_for(DatabaseConfig(host="db"), pool_factory=SynchronousConnectionPool)


def test_open_store_builds_the_store_on_the_selected_engine(tmp_path: Path) -> None:
    store = open_store(DatabaseConfig(host="db", database="s3"), MemoryReactorClock())
    assert isinstance(store, SQLStore) and isinstance(store.engine, PostgresEngine)
    store = open_store(DatabaseConfig(path=str(tmp_path / "f.db")), MemoryReactorClock())
    assert isinstance(store, SQLStore) and isinstance(store.engine, SQLiteEngine)


def test_worker_locks_follow_the_engine() -> None:
    reactor = MemoryReactorClock()  # the PostgreSQL locks connect lazily: nothing opens here
    assert isinstance(open_worker_locks(DatabaseConfig(path="x.db"), reactor), LocalWorkerLocks)
    locks = open_worker_locks(DatabaseConfig(host="db"), reactor)
    assert isinstance(locks, PostgresWorkerLocks)
    assert Deferred.fromCoroutine(locks.close()).called  # closing needs no connection either
    assert [int(w) for w in WorkerLock] == list(range(1001, 1013))


def test_each_engine_classifies_its_own_errors() -> None:
    sqlite, postgres = SQLiteEngine(DatabaseConfig(path="x.db")), PostgresEngine(DatabaseConfig(host="db"))
    locked = sqlite3.OperationalError("database is locked")
    assert sqlite.is_unavailable(locked) and sqlite.is_retryable(locked)
    syntax = sqlite3.OperationalError('near "SELEC": syntax error')
    assert not sqlite.is_unavailable(syntax) and not sqlite.is_retryable(syntax)
    assert not sqlite.is_unavailable(psycopg2.OperationalError("x"))
    assert postgres.is_unavailable(psycopg2.OperationalError("server closed the connection"))
    assert postgres.is_retryable(psycopg2.errors.SerializationFailure("conflict"))
    assert not postgres.is_retryable(psycopg2.errors.UniqueViolation("duplicate"))
    assert not postgres.is_unavailable(locked)


# --- the migration lock, per engine -----------------------------------------------------------


def test_migrations_from_four_connections_at_once_apply_each_version_once(
    store_factory: StoreFactory,
) -> None:
    engine = store_factory.engine()
    barrier = threading.Barrier(4)
    results: list[list[int]] = []
    failures: list[BaseException] = []

    def run() -> None:
        conn = store_factory.connect()
        try:
            barrier.wait()
            results.append(migrate(conn, engine))
        except BaseException as exc:
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    expected = [m.version for m in discover(sql_dir(store_factory.kind))]
    # Each version is applied by exactly one connection (SQLite: whoever takes each file's
    # write lock first; PostgreSQL: whoever holds the session lock, the others find it done).
    assert sorted(v for applied in results for v in applied) == expected
    conn = store_factory.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in cur.fetchall()] == expected
    finally:
        conn.close()


def _try_migration_lock(db: PostgresDatabase) -> bool:
    other = db.connect()
    other.autocommit = True
    try:
        cur = other.cursor()
        cur.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        got = bool(cur.fetchone()[0])
        if got:
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
        return got
    finally:
        other.close()


def test_the_postgres_migration_lock_is_held_for_the_block_and_released_after_a_failure(
    postgres_db: PostgresDatabase,
) -> None:
    engine = PostgresEngine(DatabaseConfig(host="unused"))  # only its migration answers are used
    conn = postgres_db.connect()
    try:
        with engine.migration_lock(conn):
            assert not _try_migration_lock(postgres_db)  # another instance waits
        assert _try_migration_lock(postgres_db)
        with pytest.raises(RuntimeError), engine.migration_lock(conn):
            raise RuntimeError("a migration failed")
        assert _try_migration_lock(postgres_db)  # a failure does not keep others out
    finally:
        conn.close()


def test_the_sqlite_migration_lock_is_each_files_write_lock(tmp_path: Path) -> None:
    """Nothing is held around the run; each file waits for the write lock and re-checks its
    version under it, so a file another process applied first is skipped, not re-applied."""
    engine = SQLiteEngine(DatabaseConfig(path=str(tmp_path / "m.db")))
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_first.sql").write_text("CREATE TABLE a (x INTEGER);")
    first = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    second = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    with engine.migration_lock(first):
        assert not first.in_transaction  # no lock taken for the whole run
    assert migrate(first, engine, sql) == [1]
    (migration,) = discover(sql)
    assert engine.apply_migration(second, migration, "2020-01-01T00:00:00+00:00") is False
    assert not second.in_transaction
    first.close()
    second.close()


def test_admin_migration_reports_what_it_applied(tmp_path: Path) -> None:
    config = DatabaseConfig(path=str(tmp_path / "admin.db"))
    newest = discover(sql_dir("sqlite"))[-1].version
    report = migrate_database(config)
    assert (report.database, report.before, report.after) == (str(tmp_path / "admin.db"), 0, newest)
    assert report.applied == tuple(m.version for m in discover(sql_dir("sqlite")))
    again = migrate_database(config)
    assert (again.before, again.after, again.applied) == (newest, newest, ())


# --- the synchronous pool hook ------------------------------------------------------------


class SynchronousPoolTests(SynchronousTestCase):
    """With :class:`SynchronousConnectionPool`, every store call has its answer at once, on
    the calling thread, without the reactor running (what a clock-driven harness needs)."""

    def setUp(self) -> None:
        path = Path(self.mktemp())
        path.mkdir()
        self.reactor = MemoryReactorClock()
        config = DatabaseConfig(path=str(path / "sync.db"))
        self.store = SQLStore(
            engine_for(config, pool_factory=SynchronousConnectionPool), self.reactor
        )
        self.successResultOf(Deferred.fromCoroutine(self.store.start()))
        self.addCleanup(lambda: self.successResultOf(Deferred.fromCoroutine(self.store.close())))

    def test_transactions_run_on_the_calling_thread_with_no_reactor(self) -> None:
        def thread_id(tx: Tx, notes: Notes) -> int:
            tx.execute("SELECT 1").fetchone()
            return threading.get_ident()

        for read_only in (True, False):
            ran_on = self.successResultOf(
                Deferred.fromCoroutine(self.store._call(read_only, True, thread_id))
            )
            self.assertEqual(ran_on, threading.get_ident())
        self.assertFalse(self.reactor.running)

    def test_a_write_and_its_read_complete_synchronously(self) -> None:
        def run(coro: Any) -> Any:
            return self.successResultOf(Deferred.fromCoroutine(coro))

        run(self.store.sync_quota_limits({"b1": 100}, NOW))
        res = run(self.store.reserve(intent("k", 10), ["b1"], "pack", NOW))
        self.assertEqual(run(self.store.commit_object(res, record_for(res, "k", 10), NOW)), [])
        got = run(self.store.get_object(BUCKET, "k"))
        self.assertEqual((got.size, got.locations[0].backend), (10, "b1"))
        self.assertEqual(run(self.store.get_quotas())["b1"].bytes_used, 10)
