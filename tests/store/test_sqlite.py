"""SQLite-specific behaviour: migrations, connection settings, lock retries, clamping."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from s3orch.config.model import DatabaseConfig
from s3orch.store import StoreError, StoreUnavailable
from s3orch.store import sqlite as sqlite_store
from s3orch.store.migrate import MigrationError, current_version, discover, migrate, sql_dir
from s3orch.store.sqlite import SQLITE, SQLiteEngine, run_txn, split_sqlite_script
from s3orch.store.sqlstore import SQLStore
from s3orch.store.txn.base import Notes, Tx
from s3orch.store.txn.listing import prefix_upper_bound
from s3orch.store.txn.quota import adjust_quota

NOW = 1_700_000_000.0


def engine(path: Path) -> SQLiteEngine:
    return SQLiteEngine(DatabaseConfig(path=str(path)))


def sqlite_store_at(path: Path) -> SQLStore:
    return SQLStore(engine(path), reactor)


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def versions(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()


# --- migrations -------------------------------------------------------------------------


def test_migrations_apply_once_and_rerun_is_a_no_op(tmp_path: Path) -> None:
    conn = connect(tmp_path / "m.db")
    newest = discover(sql_dir("sqlite"))[-1].version
    applied = migrate(conn, engine(tmp_path / "m.db"))
    assert applied == [m.version for m in discover(sql_dir("sqlite"))]
    assert migrate(conn, engine(tmp_path / "m.db")) == []
    assert current_version(conn) == newest
    assert versions(conn)[0] == (1, "initial")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"objects", "object_locations", "backend_quotas", "cleanup_queue", "cleanup_dlq"} <= tables


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "m.db")
    migrate(conn, engine(tmp_path / "m.db"))
    conn.execute("INSERT INTO schema_version VALUES (9999, 'future', '2099-01-01')")
    with pytest.raises(MigrationError, match="schema version 9999 is newer than this s3orch knows"):
        migrate(conn, engine(tmp_path / "m.db"))


@pytest_twisted.ensureDeferred
async def test_store_refuses_to_start_on_a_newer_database(tmp_path: Path) -> None:
    conn = connect(tmp_path / "m.db")
    migrate(conn, engine(tmp_path / "m.db"))
    conn.execute("INSERT INTO schema_version VALUES (9999, 'future', '2099-01-01')")
    conn.close()
    store = sqlite_store_at(tmp_path / "m.db")
    with pytest.raises(MigrationError, match="upgrade s3orch"):
        await store.start()
    await store.close()


def test_a_failing_migration_is_rolled_back_whole(tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_first.sql").write_text("CREATE TABLE a (x INTEGER);")
    (sql / "0002_broken.sql").write_text("CREATE TABLE b (x INTEGER);\nINSERT INTO nowhere VALUES (1);")
    (sql / "README").write_text("not a migration")
    conn = connect(tmp_path / "m.db")
    with pytest.raises(MigrationError, match="0002_broken.sql failed"):
        migrate(conn, engine(tmp_path / "m.db"), sql)
    assert versions(conn) == [(1, "first")]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "a" in tables and "b" not in tables
    (sql / "0002_broken.sql").write_text("CREATE TABLE b (x INTEGER);")
    assert migrate(conn, engine(tmp_path / "m.db"), sql) == [2]


def test_duplicate_versions_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0001_b.sql").write_text("")
    with pytest.raises(MigrationError, match="two migrations with version 1"):
        discover(tmp_path)


def test_script_splitting_respects_strings_comments_and_triggers() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 'c;d'; END;
    INSERT INTO t VALUES ('e');  -- trailing
    /* block */ SELECT 1
    """
    statements = split_sqlite_script(script)
    assert len(statements) == 4
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    assert statements[3].endswith("SELECT 1")


# --- connection settings, retries, clamping ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connections_are_durable_wal(tmp_path: Path) -> None:
    store = sqlite_store_at(tmp_path / "s.db")
    await store.start()
    try:
        def pragmas(conn: Any) -> tuple[Any, ...]:
            return tuple(
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            )

        pools = store._pools
        assert isinstance(pools, sqlite_store.SQLitePools)
        for pool in (pools.writer, pools.readers):
            assert await pool.runWithConnection(pragmas) == ("wal", 2, 1, 5000)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_writes_wait_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    store = sqlite_store_at(tmp_path / "s.db")
    await store.start()
    other = connect(tmp_path / "s.db")
    try:
        other.execute("BEGIN IMMEDIATE")
        clock: Any = reactor
        clock.callLater(0.2, other.execute, "COMMIT")
        await store.sync_quota_limits({"b1": 5}, NOW)
        assert (await store.get_quotas())["b1"].bytes_limit == 5
    finally:
        other.close()
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_database_locked_past_the_retries_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 20)
    store = sqlite_store_at(tmp_path / "s.db")
    await store.start()
    other = connect(tmp_path / "s.db")
    try:
        other.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell, left open
        with pytest.raises(StoreUnavailable) as raised:
            await store.sync_quota_limits({"b1": 5}, NOW)
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        assert "s.db" in str(raised.value) and "locked" in str(raised.value)
        other.execute("COMMIT")
        await store.sync_quota_limits({"b1": 5}, NOW)  # and it serves again at once
    finally:
        other.close()
        await store.close()


def test_only_not_now_errors_count_as_unavailable() -> None:
    for text in ("database is locked", "disk I/O error", "database or disk is full"):
        assert sqlite_store.is_unavailable(sqlite3.OperationalError(text))
    for text in ("no such table: objects", "near \"SELEC\": syntax error"):
        assert not sqlite_store.is_unavailable(sqlite3.OperationalError(text))


def test_a_locked_transaction_is_retried_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store.time, "sleep", lambda _: None)
    conn = connect(tmp_path / "r.db")
    conn.execute("CREATE TABLE t (x INTEGER)")
    calls = []

    def txn(cur: Tx, notes: Notes) -> int:
        cur.execute("INSERT INTO t VALUES (1)")
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return 7

    assert run_txn(conn, "BEGIN IMMEDIATE", Notes(), txn) == 7
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # failed attempts left nothing
    calls.clear()

    def always_locked(cur: Tx, notes: Notes) -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        run_txn(conn, "BEGIN IMMEDIATE", Notes(), always_locked)
    assert not conn.in_transaction


def test_quota_counters_clamp_at_zero_and_say_so(tmp_path: Path) -> None:
    conn = connect(tmp_path / "q.db")
    migrate(conn, engine(tmp_path / "m.db"))
    notes = Notes()
    tx = Tx(conn.cursor(), SQLITE)
    adjust_quota(tx, notes, "b1", 0.0, used=10)
    adjust_quota(tx, notes, "b1", 0.0, used=-25, orphan=-1)
    row = conn.execute("SELECT bytes_used, orphan_bytes FROM backend_quotas").fetchone()
    assert row == (0, 0)
    assert [fields["column"] for _, fields in notes.warnings] == ["bytes_used", "orphan_bytes"]


def test_prefix_upper_bound() -> None:
    assert prefix_upper_bound("") is None
    assert prefix_upper_bound("ab") == "ac"
    assert prefix_upper_bound("a/") == "a0"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff\U0010ffff") is None
    assert prefix_upper_bound("x\ud7ff") == "x\ue000"


# --- start-up ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    store = sqlite_store_at(tmp_path / "missing-dir" / "s.db")
    with pytest.raises(StoreError, match="missing-dir"):
        await store.start()
    await store.close()
