"""PostgreSQL-specific behaviour: several instances on one database, retries, dropped
connections and connection settings (migrations and worker locks across instances:
``test_postgres_coordination.py``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults

from s3orch.config.model import DatabaseConfig
from s3orch.s3.conditions import WriteConditions
from s3orch.store import StoreError, StoreUnavailable
from s3orch.store import postgres as pg
from s3orch.store.interface import PreconditionConflict
from s3orch.store.postgres import PostgresEngine
from s3orch.store.postgres_connection import PostgresSettings
from s3orch.store.sqlstore import SQLStore
from s3orch.store.txn.base import Notes
from tests.store.conftest import PostgresDatabase, StoreFactory
from tests.store.test_contract import BUCKET, NOW, counters, intent, put, quota, record_for
from tests.store.test_contract_multipart import opened, part


@asynccontextmanager
async def stores(factory: StoreFactory, count: int, **overrides: Any) -> AsyncIterator[list[Any]]:
    """``count`` started stores (separate pools: separate "instances") on one schema."""
    opened: list[Any] = []
    try:
        for _ in range(count):
            s = factory.make(**overrides)
            await s.start()
            opened.append(s)
        yield opened
    finally:
        for s in opened:
            await s.close()


def gather(*coroutines: Any) -> Deferred[list[Any]]:
    return gatherResults([Deferred.fromCoroutine(c) for c in coroutines])


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


async def in_txn(store: SQLStore, fn: Callable[..., Any], *args: Any, read_only: bool = False) -> Any:
    """Run a raw ``fn(cur, notes, *args)`` through the store's pool and transaction runner."""
    return await store._call(read_only, True, fn, *args)


def backend_pid(cur: Any, notes: Notes) -> int:
    cur.execute("SELECT pg_backend_pid()")
    return int(cur.fetchone()[0])


def terminate_sessions(db: PostgresDatabase, application_name: str = "s3orch") -> int:
    """Kill our server sessions, as a PostgreSQL restart or a network cut would."""
    conn = db.connect()
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s"
            " AND pid <> pg_backend_pid()",
            (application_name,),
        )
        return int(cur.fetchone()[0])
    finally:
        conn.close()


# --- several instances on one database ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_two_instances_reserving_concurrently_never_exceed_a_quota(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 2) as (a, b):
        await a.sync_quota_limits({"b1": 1000, "b2": 500}, NOW)
        # both candidate orders at once: one lock order still serialises them
        attempts = [
            (a if i % 2 else b).reserve(
                intent(f"k{i}", 150), ["b1", "b2"] if i % 3 else ["b2", "b1"], "pack", NOW
            )
            for i in range(40)
        ]
        granted = [r for r in await gather(*attempts) if r is not None]
        quotas = await b.get_quotas()
        for name in ("b1", "b2"):
            row = quotas[name]
            assert row.reserved_bytes == 150 * sum(1 for r in granted if r.backend == name)
            assert row.reserved_bytes <= row.bytes_limit
        assert len(granted) == 6 + 3  # 1000 // 150 + 500 // 150


@pytest_twisted.ensureDeferred
async def test_one_intent_reserved_by_two_instances_at_once_is_reserved_once(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 2) as (a, b):
        await a.sync_quota_limits({"b1": 1000}, NOW)
        for round_ in range(5):
            it = intent(f"k{round_}", 10)
            results = await gather(*((a, b)[i % 2].reserve(it, ["b1"], "pack", NOW) for i in range(6)))
            assert len(set(results)) == 1 and results[0] is not None
        assert (await quota(a, "b1")).reserved_bytes == 50


@pytest_twisted.ensureDeferred
async def test_concurrent_commits_of_a_new_key_leave_one_version_and_exact_quota(
    pg_factory: StoreFactory,
) -> None:
    async with stores(pg_factory, 2) as (a, b):
        await a.sync_quota_limits({"b1": 10**6, "b2": 10**6}, NOW)
        for round_ in range(6):
            key = f"race{round_}"
            reservations = []
            for i in range(4):
                s = (a, b)[i % 2]
                res = await s.reserve(intent(key, 10 + i), [("b1", "b2")[i % 2]], "pack", NOW)
                assert res is not None
                reservations.append((s, res, 10 + i))
            results = await gather(
                *(s.commit_object(res, record_for(res, key, size), NOW) for s, res, size in reservations)
            )
            current = await a.get_object(BUCKET, key)
            assert current is not None and len(current.locations) == 1
            (winner,) = [(res, size) for _, res, size in reservations if res.write_id == current.write_id]
            assert current.locations[0].storage_key == winner[0].storage_key
            displaced = sorted(item.storage_key for items in results for item in items)
            losers = sorted(res.storage_key for _, res, _ in reservations if res is not winner[0])
            assert displaced == losers  # every other copy queued exactly once
        quotas = await a.get_quotas()
        used = sum(q.bytes_used for q in quotas.values())
        orphan = sum(q.orphan_bytes for q in quotas.values())
        assert sum(q.object_count for q in quotas.values()) == 6
        assert sum(q.reserved_bytes for q in quotas.values()) == 0
        assert used + orphan == 6 * (10 + 11 + 12 + 13)


@pytest_twisted.ensureDeferred
async def test_concurrent_if_none_match_commits_let_exactly_one_win(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 2) as (a, b):
        await a.sync_quota_limits({"b1": 10**6}, NOW)
        reservations = []
        for i in range(6):
            s = (a, b)[i % 2]
            res = await s.reserve(intent("once", 5), ["b1"], "pack", NOW)
            reservations.append((s, res))

        async def commit(s: Any, res: Any) -> bool:
            try:
                await s.commit_object(res, record_for(res, "once", 5), NOW, WriteConditions(None, ("*",)))
            except PreconditionConflict:
                await s.release(res.write_id, NOW)
                return False
            return True

        outcomes = await gather(*(commit(s, res) for s, res in reservations))
        assert sorted(outcomes) == [False] * 5 + [True]
        assert counters(await quota(a, "b1")) == (5, 0, 0, 1)


@pytest_twisted.ensureDeferred
async def test_concurrent_if_match_commits_over_one_etag_let_exactly_one_win(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 2) as (a, b):
        await a.sync_quota_limits({"b1": 10**6}, NOW)
        await put(a, "k", 1)
        current = await a.get_object(BUCKET, "k")
        assert current is not None
        reservations = []
        for i in range(6):
            s = (a, b)[i % 2]
            res = await s.reserve(intent("k", 7), ["b1"], "pack", NOW)
            reservations.append((s, res))

        async def commit(s: Any, res: Any) -> bool:
            try:  # each write replaces the ETag: only one can find the one it names
                await s.commit_object(res, record_for(res, "k", 7), NOW, WriteConditions((current.etag,), None))
            except PreconditionConflict as exc:
                assert exc.violation == "If-Match"
                await s.release(res.write_id, NOW)
                return False
            return True

        outcomes = await gather(*(commit(s, res) for s, res in reservations))
        assert sorted(outcomes) == [False] * 5 + [True]
        assert counters(await quota(a, "b1")) == (7, 1, 0, 1)


@pytest_twisted.ensureDeferred
async def test_skip_locked_claims_never_hand_a_row_to_two_instances(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 2) as (a, b):
        await a.sync_quota_limits({"b1": 10**6}, NOW)
        ids = set()
        for i in range(60):
            await put(a, f"k{i}", 1)
            (item,) = await a.delete_object(BUCKET, f"k{i}", NOW)
            ids.add(item.id)
        claims = await gather(
            *(
                (a, b)[i % 2].claim_cleanups(NOW + 100, 4, f"instance-{i % 2}", 300.0)
                for i in range(30)
            )
        )
        handed = [item.id for batch in claims for item in batch]
        assert len(handed) == len(set(handed))  # never the same row twice
        assert set(handed) == ids  # 30 claims of 4 cover all 60 rows


@pytest_twisted.ensureDeferred
async def test_a_claim_skips_rows_locked_by_another_transaction(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 1) as (a,):
        await a.sync_quota_limits({"b1": 10**6}, NOW)
        items = []
        for i in range(3):
            await put(a, f"k{i}", 1)
            items += await a.delete_object(BUCKET, f"k{i}", NOW)
        assert pg_factory.postgres is not None and pg_factory.schema is not None
        other = psycopg2.connect(pg_factory.postgres.schema_dsn(pg_factory.schema))
        try:
            cur = other.cursor()  # another instance in the middle of claiming the first row
            cur.execute("SELECT id FROM cleanup_queue WHERE id = %s FOR UPDATE", (items[0].id,))
            claimed = await a.claim_cleanups(NOW + 100, 10, "a", 300.0)
            assert [i.id for i in claimed] == [items[1].id, items[2].id]
            other.rollback()  # answered by the server: the row lock is gone (close() is not)
        finally:
            other.close()
        assert [i.id for i in await a.claim_cleanups(NOW + 100, 10, "a", 300.0)] == [items[0].id]


@pytest_twisted.ensureDeferred
async def test_reads_see_one_snapshot_while_another_instance_overwrites(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 2) as (reader, writer):
        await writer.sync_quota_limits({"b1": 0}, NOW)
        await put(writer, "hot", 1)

        async def overwrite() -> None:
            for i in range(40):
                await put(writer, "hot", 2 + i)

        async def read() -> None:
            for _ in range(120):
                got = await reader.get_object(BUCKET, "hot")
                assert got is not None and len(got.locations) == 1
                # each write's storage key embeds its write id: metadata and copy agree
                assert got.write_id in got.locations[0].storage_key
                assert got.size == got.locations[0].size

        await gather(overwrite(), read(), read())


@pytest_twisted.ensureDeferred
async def test_part_reservations_from_two_instances_stay_exact_through_an_abort(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 2) as (a, b):
        await a.sync_quota_limits({"b1": 2000}, NOW)
        other = await a.reserve(intent("unrelated", 500), ["b1"], "pack", NOW)  # must stay reserved
        assert other is not None
        up = await opened(a)
        attempts = [uuid.uuid4().hex for _ in range(24)]
        results = await gather(
            *(
                (a, b)[i % 2].reserve_part(
                    BUCKET, "big", up.upload_id, 1 + i % 3, 100, attempt, f"key-{attempt}", ["b1"], "pack", NOW
                )
                for i, attempt in enumerate(attempts)
            )
        )
        granted = {attempt: r for attempt, r in zip(attempts, results) if r is not None}
        assert len(granted) == 15  # (2000 - 500) // 100
        assert (await quota(a, "b1")).reserved_bytes == 2000
        # parts committing and attempts released while another instance aborts the upload
        names = list(granted)
        await b.begin_abort(BUCKET, "big", up.upload_id, NOW)
        await gather(
            a.finish_abort(up.upload_id, NOW),
            *((a, b)[i % 2].release_part(attempt, NOW) for i, attempt in enumerate(names[:8])),
            *(
                (a, b)[i % 2].commit_part(attempt, part(1, 100, granted[attempt]), NOW)
                for i, attempt in enumerate(names[8:])
            ),
        )
        # Nothing released twice, and every attempt not released by its caller is queued
        # for cleanup exactly once (its bytes may exist), counted as orphaned.
        row = await quota(b, "b1")
        queued = await b.due_cleanups(NOW + 10**6, 100)
        assert row.reserved_bytes == 500 and row.bytes_used == 0
        assert len({i.storage_key for i in queued}) == len(queued)
        assert row.orphan_bytes == 100 * len(queued)
        assert {i.storage_key for i in queued} >= {f"key-{a}" for a in names[8:]}


# --- retries and dropped connections ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_conflicting_transaction_is_retried_whole(pg_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg.time, "sleep", lambda _: None)
    async with stores(pg_factory, 1) as (store,):
        calls: list[int] = []
        errors = [psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected]

        def txn(cur: Any, notes: Notes) -> int:
            cur.execute("INSERT INTO worker_state (worker_name, updated_at) VALUES (%s, 0)", (f"w{len(calls)}",))
            calls.append(1)
            if errors:
                raise errors.pop(0)("conflict")
            return 7

        assert await in_txn(store, txn) == 7
        assert len(calls) == 3

        def names(cur: Any, notes: Notes) -> list[str]:
            cur.execute("SELECT worker_name FROM worker_state")
            return [r[0] for r in cur.fetchall()]

        assert await in_txn(store, names) == ["w2"]  # the failed attempts left nothing

        def always(cur: Any, notes: Notes) -> None:
            raise psycopg2.errors.DeadlockDetected("again")

        # once the retries are spent the caller sees the database as unavailable (a 503)
        with pytest.raises(StoreUnavailable) as raised:
            await in_txn(store, always)
        assert isinstance(raised.value.__cause__, psycopg2.errors.DeadlockDetected)
        await store.ping()


@pytest_twisted.ensureDeferred
async def test_a_connection_killed_mid_transaction_is_reopened_and_the_work_retried(
    pg_factory: StoreFactory,
) -> None:
    async with stores(pg_factory, 1) as (store,):
        pids: list[int] = []

        def txn(cur: Any, notes: Notes) -> int:
            pid = backend_pid(cur, notes)
            pids.append(pid)
            if len(pids) == 1:
                cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            return pid

        final = await in_txn(store, txn)
        assert len(pids) == 2 and pids[0] != pids[1] == final


@pytest_twisted.ensureDeferred
async def test_the_store_survives_a_database_restart(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 1) as (store,):
        await store.sync_quota_limits({"b1": 1000}, NOW)
        await gather(*(store.get_quotas() for _ in range(8)))  # open every pooled connection
        assert pg_factory.postgres is not None
        assert terminate_sessions(pg_factory.postgres) >= 1
        for i in range(12):  # every stale connection is met and replaced
            await put(store, f"k{i}", 1)
        assert counters(await quota(store, "b1")) == (12, 0, 0, 12)


class _LostAtCommit:
    """A connection whose COMMIT dies on the wire: the outcome is unknown."""

    def __init__(self) -> None:
        self.closed = 0
        self.reconnects = 0

    def set_session(self, **settings: Any) -> None:
        pass

    def cursor(self) -> Any:
        return SimpleNamespace(execute=lambda *a: None, close=lambda: None)

    def commit(self) -> None:
        if not self.reconnects:
            self.closed = 2
            raise psycopg2.OperationalError("server closed the connection unexpectedly")

    def rollback(self) -> None:
        raise AssertionError("a broken connection is not rolled back")

    def reconnect(self) -> None:
        self.reconnects += 1
        self.closed = 0


def test_an_unknown_commit_outcome_is_retried_only_when_idempotent() -> None:
    calls: list[int] = []

    def txn(cur: Any, notes: Notes) -> str:
        calls.append(1)
        return "done"

    assert pg.run_txn(_LostAtCommit(), False, True, 0.0, Notes(), txn) == "done"
    assert len(calls) == 2
    calls.clear()
    conn = _LostAtCommit()
    with pytest.raises(psycopg2.OperationalError):
        pg.run_txn(conn, False, False, 0.0, Notes(), txn)
    assert len(calls) == 1 and conn.reconnects == 1  # not re-run, but left usable


@pytest_twisted.ensureDeferred
async def test_connections_older_than_max_conn_lifetime_are_replaced(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 1, min_conns=1, max_conns=1, max_conn_lifetime=0.2) as (store,):
        first = await in_txn(store, backend_pid)
        assert await in_txn(store, backend_pid) == first
        await sleep(0.3)
        assert await in_txn(store, backend_pid) != first


# --- connection settings -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sessions_are_named_and_time_limited(pg_factory: StoreFactory) -> None:
    async with stores(pg_factory, 1, statement_timeout=0.25) as (store,):

        def settings(cur: Any, notes: Notes) -> tuple[str, str, str]:
            cur.execute(
                "SELECT current_setting('application_name'), current_setting('statement_timeout'),"
                " current_setting('transaction_isolation')"
            )
            return tuple(cur.fetchone())

        assert await in_txn(store, settings) == ("s3orch", "250ms", "read committed")
        assert (await in_txn(store, settings, read_only=True))[2] == "repeatable read"

        def slow(cur: Any, notes: Notes) -> None:
            cur.execute("SELECT pg_sleep(2)")

        with pytest.raises(StoreUnavailable) as raised:
            await in_txn(store, slow)
        assert isinstance(raised.value.__cause__, psycopg2.errors.QueryCanceled)
        await store.ping()  # the connection stays usable


def test_settings_from_config_default_to_tls_and_keep_the_password_out_of_repr() -> None:
    config = DatabaseConfig(host="db.example", database="s3", user="u", password="hunter2")
    settings = PostgresSettings.from_config(config)
    assert settings.connect["sslmode"] == "require"
    assert (settings.connect["host"], settings.connect["port"], settings.connect["dbname"]) == ("db.example", "5432", "s3")
    assert (settings.min_conns, settings.max_conns, settings.max_conn_lifetime) == (10, 50, 300.0)
    assert settings.connect["connect_timeout"] == 10 and settings.connect["keepalives"] == 1
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.describe()


def test_a_dsn_wins_over_the_separate_fields() -> None:
    config = DatabaseConfig(
        dsn="postgresql://app@pg.internal:6432/meta?sslmode=verify-full&connect_timeout=3",
        user="ignored",
        password="pw",
    )
    assert config.driver == "postgres"
    connect = PostgresSettings.from_config(config).connect
    assert connect["host"] == "pg.internal" and connect["port"] == "6432"
    assert (connect["user"], connect["dbname"], connect["sslmode"]) == ("app", "meta", "verify-full")
    assert connect["connect_timeout"] == "3" and connect["password"] == "pw"  # filled in


@pytest_twisted.ensureDeferred
async def test_an_unreachable_server_is_a_clear_error(postgres_db: PostgresDatabase) -> None:
    config = DatabaseConfig(
        dsn="host=127.0.0.1 port=1 dbname=x connect_timeout=2", ssl_mode="disable", max_conns=1
    )
    store = SQLStore(PostgresEngine(config), reactor)
    with pytest.raises(StoreError, match="127.0.0.1:1/x"):
        await store.start()
    with pytest.raises(StoreError, match="not started"):
        await store.ping()


@pytest_twisted.ensureDeferred
async def test_a_database_not_in_utf8_is_refused(postgres_db: PostgresDatabase) -> None:
    name = f"s3orch_test_ascii_{uuid.uuid4().hex[:8]}"
    admin = postgres_db.connect(dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(
        f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    )
    try:
        dsn = psycopg2.extensions.make_dsn(postgres_db.dsn, dbname=name)
        store = SQLStore(PostgresEngine(DatabaseConfig(dsn=dsn, ssl_mode="prefer", max_conns=1)), reactor)
        with pytest.raises(StoreError, match="SQL_ASCII"):
            await store.start()
    finally:
        admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()
