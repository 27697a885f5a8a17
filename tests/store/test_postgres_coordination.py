"""PostgreSQL coordination between instances: migrations under the advisory lock, and
worker locks held by one instance at a time."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import pytest_twisted
from twisted.internet import reactor

from s3orch.config.model import DatabaseConfig
from s3orch.store import StoreUnavailable
from s3orch.store.lock_ids import MIGRATION_LOCK_ID, WorkerLock, key_lock_id
from s3orch.store.locks import LocalWorkerLocks, WorkerLocks, run_exclusive
from s3orch.store.migrate import MigrationError, discover, migrate, sql_dir
from s3orch.store.postgres import PostgresEngine
from s3orch.store.postgres_locks import PostgresWorkerLocks
from s3orch.store.txn.base import Notes
from tests.store.conftest import PostgresDatabase, StoreFactory
from tests.store.test_contract import BUCKET, put
from tests.store.test_postgres import gather, in_txn, sleep, stores, terminate_sessions

#: The engine's migration answers (lock, per-file apply) for raw connections; its own
#: settings are never connected with.
PG_MIGRATIONS = PostgresEngine(DatabaseConfig(driver="postgres"))


# --- migrations -------------------------------------------------------------------------


def schema_connection(db: PostgresDatabase) -> tuple[Any, str]:
    schema = db.new_schema()
    return psycopg2.connect(db.schema_dsn(schema)), schema


def test_migrations_apply_once_and_a_newer_schema_is_refused(postgres_db: PostgresDatabase) -> None:
    conn, _ = schema_connection(postgres_db)
    try:
        assert migrate(conn, PG_MIGRATIONS) == [m.version for m in discover(sql_dir("postgres"))]
        assert migrate(conn, PG_MIGRATIONS) == []
        cur = conn.cursor()
        cur.execute("INSERT INTO schema_version VALUES (9999, 'future', '2099-01-01')")
        conn.commit()
        with pytest.raises(MigrationError, match="schema version 9999 is newer than this s3orch knows"):
            migrate(conn, PG_MIGRATIONS)
        cur.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        assert cur.fetchone()[0] is True  # the refusal released the migration lock
    finally:
        conn.close()


def test_a_failing_postgres_migration_is_rolled_back_whole(postgres_db: PostgresDatabase, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE a (x INTEGER);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE b (x INTEGER);\nINSERT INTO nowhere VALUES (1);")
    conn, schema = schema_connection(postgres_db)
    try:
        with pytest.raises(MigrationError, match="0002_broken.sql failed"):
            migrate(conn, PG_MIGRATIONS, tmp_path)
        cur = conn.cursor()
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
        assert {r[0] for r in cur.fetchall()} == {"schema_version", "a"}
        conn.rollback()
    finally:
        conn.close()


@pytest.mark.parametrize("slow", [False, True])
def test_concurrent_migrations_both_succeed_and_apply_once(
    postgres_db: PostgresDatabase, tmp_path: Path, slow: bool
) -> None:
    directory = sql_dir("postgres")
    if slow:  # a migration that takes a while: the others must wait, then find it done
        (tmp_path / "0001_slow.sql").write_text("SELECT pg_sleep(0.5);\nCREATE TABLE t (x INTEGER);")
        directory = tmp_path
    schema = postgres_db.new_schema()
    barrier = threading.Barrier(4)
    results: list[list[int]] = []
    failures: list[BaseException] = []

    def run() -> None:
        conn = psycopg2.connect(postgres_db.schema_dsn(schema))
        try:
            barrier.wait()
            results.append(migrate(conn, PG_MIGRATIONS, directory))
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
    expected = [m.version for m in discover(directory)]
    assert sorted(results) == [[], [], [], expected]
    conn = psycopg2.connect(postgres_db.schema_dsn(schema))
    try:
        cur = conn.cursor()
        cur.execute("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in cur.fetchall()] == expected
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_instances_starting_together_share_one_migration(pg_factory: StoreFactory) -> None:
    first, second = pg_factory.make(), pg_factory.make()
    try:
        await gather(first.start(), second.start())
        await put(first, "k", 1)
        assert (await second.get_object(BUCKET, "k")) is not None
    finally:
        await first.close()
        await second.close()


@pytest_twisted.ensureDeferred
async def test_a_start_waits_for_another_instances_migration_past_the_statement_timeout(
    pg_factory: StoreFactory,
) -> None:
    assert pg_factory.postgres is not None and pg_factory.schema is not None
    other = psycopg2.connect(pg_factory.postgres.schema_dsn(pg_factory.schema))
    other.autocommit = True
    try:
        other.cursor().execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        reactor.callLater(0.6, other.cursor().execute, "SELECT pg_advisory_unlock_all()")  # type: ignore[attr-defined]
        async with stores(pg_factory, 1, statement_timeout=0.2) as (store,):

            def timeout(cur: Any, notes: Notes) -> str:
                cur.execute("SHOW statement_timeout")
                return str(cur.fetchone()[0])

            assert await in_txn(store, timeout) == "200ms"  # restored after migrating
    finally:
        other.close()


@pytest_twisted.ensureDeferred
async def test_store_refuses_to_start_on_a_newer_database(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 1) as (store,):

        def future(cur: Any, notes: Notes) -> None:
            cur.execute("INSERT INTO schema_version VALUES (9999, 'future', '2099-01-01')")

        await in_txn(store, future)
    newer = pg_factory.make()
    with pytest.raises(MigrationError, match="upgrade s3orch"):
        await newer.start()
    await newer.close()


# --- worker locks ---------------------------------------------------------------------------


@asynccontextmanager
async def worker_locks(db: PostgresDatabase, count: int) -> AsyncIterator[list[PostgresWorkerLocks]]:
    params = dict(psycopg2.extensions.parse_dsn(db.dsn))
    made = [PostgresWorkerLocks(params, reactor) for _ in range(count)]
    try:
        yield made
    finally:
        for locks in made:
            await locks.close()


@pytest_twisted.ensureDeferred
async def test_a_worker_lock_is_held_by_one_instance_at_a_time(postgres_db: PostgresDatabase) -> None:
    async with worker_locks(postgres_db, 2) as (a, b):
        assert await a.try_lock(WorkerLock.CLEANUP)
        assert not await b.try_lock(WorkerLock.CLEANUP)
        assert not await a.try_lock(WorkerLock.CLEANUP)  # a second holder in the same process
        assert await b.try_lock(WorkerLock.REPLICATOR)  # other workers are independent
        await a.release(WorkerLock.CLEANUP)
        await a.release(WorkerLock.CLEANUP)  # releasing twice is harmless
        assert await b.try_lock(WorkerLock.CLEANUP)
        assert not await a.try_lock(WorkerLock.CLEANUP)


async def eventually_locked(locks: WorkerLocks, worker_id: int, within: float = 5.0) -> bool:
    """A session's end frees its locks a moment after the client lets go: poll briefly."""
    for _ in range(int(within / 0.05)):
        if await locks.try_lock(worker_id):
            return True
        await sleep(0.05)
    return False


@pytest_twisted.ensureDeferred
async def test_a_dead_instance_frees_its_worker_locks(postgres_db: PostgresDatabase) -> None:
    async with worker_locks(postgres_db, 2) as (a, b):
        assert await a.try_lock(WorkerLock.SCRUBBER)
        await a.close()  # the process goes away: its session, and the lock, with it
        assert await eventually_locked(b, WorkerLock.SCRUBBER)
        await b.release(WorkerLock.SCRUBBER)
        assert await b.try_lock(WorkerLock.SCRUBBER)
        assert terminate_sessions(postgres_db) >= 1  # b's connection is cut
        async with worker_locks(postgres_db, 1) as (c,):
            assert await eventually_locked(c, WorkerLock.SCRUBBER)
            await c.release(WorkerLock.SCRUBBER)
        await b.release(WorkerLock.SCRUBBER)  # its session is gone: nothing to release
        assert await b.try_lock(WorkerLock.SCRUBBER)  # b reconnects on its next call


@pytest_twisted.ensureDeferred
async def test_run_exclusive_skips_when_another_instance_holds_the_lock(postgres_db: PostgresDatabase) -> None:
    ran: list[str] = []

    async def work() -> str:
        ran.append("tick")
        return "done"

    async with worker_locks(postgres_db, 2) as (a, b):
        assert await run_exclusive(a, WorkerLock.LIFECYCLE, work) == (True, "done")
        assert await b.try_lock(WorkerLock.LIFECYCLE)
        assert await run_exclusive(a, WorkerLock.LIFECYCLE, work) == (False, None)
        assert ran == ["tick"]
    local: WorkerLocks = LocalWorkerLocks()
    assert await local.try_lock(WorkerLock.DRAIN) and not await local.try_lock(WorkerLock.DRAIN)
    await local.release(WorkerLock.DRAIN)
    assert await run_exclusive(local, WorkerLock.DRAIN, work) == (True, "done")
    await local.close()


@pytest_twisted.ensureDeferred
async def test_worker_locks_without_a_server_are_unavailable_not_a_driver_error() -> None:
    locks = PostgresWorkerLocks({"host": "127.0.0.1", "port": "1", "dbname": "x", "connect_timeout": 2}, reactor)
    try:
        with pytest.raises(StoreUnavailable):
            await locks.try_lock(WorkerLock.CLEANUP)
        with pytest.raises(StoreUnavailable):  # and says so again, without leaking a holder
            await locks.try_lock(WorkerLock.CLEANUP)
    finally:
        await locks.close()


def test_object_key_lock_ids_are_stable_signed_32_bit() -> None:
    assert key_lock_id("b", "k") == key_lock_id("b", "k")
    assert key_lock_id("b", "k") != key_lock_id("b", "k2")
    assert all(-(2**31) <= key_lock_id("b", f"k{i}") < 2**31 for i in range(100))


