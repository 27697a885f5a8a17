"""SQLite point reads on the reactor thread (``SQLitePools.run_point_read``): they answer
at once, see every committed write, never wait for a writer, and fall back to the reader
pool whenever SQLite would make them wait."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from s3orch.config.model import DatabaseConfig
from s3orch.store.sqlite import SQLiteEngine, SQLitePools, open_inline_reader
from s3orch.store.sqlstore import SQLStore
from s3orch.store.txn.base import Notes, Tx
from tests.store.test_contract import put

NOW = 1_700_000_000.0


async def started(path: Path) -> tuple[SQLStore, SQLitePools]:
    store = SQLStore(SQLiteEngine(DatabaseConfig(path=str(path))), reactor)
    await store.start()
    await store.sync_quota_limits({"b1": 0}, NOW)
    pools = store._pools
    assert isinstance(pools, SQLitePools) and pools.inline is not None
    return store, pools


def _forbid_pool(pools: SQLitePools, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every call that reaches the reader pool (instead of the inline connection)."""
    calls: list[Any] = []
    original = pools.readers.runWithConnection

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(pools.readers, "runWithConnection", recording)
    return calls


@pytest_twisted.ensureDeferred
async def test_a_point_read_answers_on_the_calling_thread_and_sees_the_last_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, pools = await started(tmp_path / "s.db")
    try:
        calls = _forbid_pool(pools, monkeypatch)
        threads: list[threading.Thread] = []

        def where(tx: Tx, notes: Notes) -> None:
            threads.append(threading.current_thread())

        answered = pools.run_point_read(Notes(), where)
        assert answered.called and threads == [threading.current_thread()]
        for size in (5, 7):  # an overwrite, read right after its commit
            await put(store, "k", size)
            record = await store.get_object("bkt", "k")
            assert record is not None and record.size == size
        assert await store.get_object("bkt", "missing") is None
        assert calls == []
    finally:
        await store.close()
    assert pools.inline is None


@pytest_twisted.ensureDeferred
async def test_a_writer_holding_the_lock_does_not_block_a_point_read(tmp_path: Path) -> None:
    store, pools = await started(tmp_path / "s.db")
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        await put(store, "k", 5)
        other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
        other.execute("UPDATE objects SET size_bytes = 99 WHERE object_key = 'k'")
        answered: Deferred[Any] = Deferred.fromCoroutine(store.get_object("bkt", "k"))
        assert answered.called  # no wait for the writer: its snapshot is the last commit
        record = await answered
        assert record is not None and record.size == 5
    finally:
        other.execute("ROLLBACK")
        other.close()
        await store.close()


class _BusyCursor:
    def execute(self, *args: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    def close(self) -> None:
        pass


class _BusyConnection:
    """What SQLite answers a reader in the rare moments WAL cannot admit it at once (the WAL
    being restarted, an exclusive-locking process): BUSY, at once, with busy_timeout 0."""

    in_transaction = False

    def cursor(self) -> _BusyCursor:
        return _BusyCursor()

    def close(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_a_busy_database_sends_the_read_to_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, pools = await started(tmp_path / "s.db")
    real = pools.inline
    try:
        await put(store, "k", 5)
        calls = _forbid_pool(pools, monkeypatch)
        pools.inline = _BusyConnection()  # type: ignore[assignment]
        answered: Deferred[Any] = Deferred.fromCoroutine(store.get_object("bkt", "k"))
        assert len(calls) == 1  # handed to the pool, whose readers wait with busy_timeout
        record = await answered
        assert record is not None and record.size == 5
    finally:
        pools.inline = real
        await store.close()


def test_the_inline_connection_never_waits(tmp_path: Path) -> None:
    """busy_timeout 0 and read-only: a lock costs a BUSY answer, never a wait on the reactor."""
    path = tmp_path / "s.db"
    sqlite3.connect(path).close()
    conn = open_inline_reader(str(path))
    try:
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 0
        assert conn.execute("PRAGMA query_only").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_a_bug_in_a_point_read_fails_its_deferred(tmp_path: Path) -> None:
    store, pools = await started(tmp_path / "s.db")
    try:
        def broken(tx: Tx, notes: Notes) -> None:
            tx.execute("SELECT 1")
            raise KeyError("bug")

        with pytest.raises(KeyError):
            await pools.run_point_read(Notes(), broken)
        # the connection is left outside any transaction, ready for the next read
        assert pools.inline is not None and not pools.inline.in_transaction
        assert await store.get_object("bkt", "nothing") is None
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_listing_without_delimiter_is_a_point_read_and_others_use_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of at most 1000 keys without a delimiter is one bounded range scan: answered at
    once on the inline connection, seeing the last commit; a delimiter (an unbounded number
    of seeks) or a larger page still goes to the reader pool, with the same answer."""
    store, pools = await started(tmp_path / "s.db")
    try:
        for key in ("a/1", "a/2", "b"):
            await put(store, key, 3)
        calls = _forbid_pool(pools, monkeypatch)
        answered = store.list_objects("bkt", "", "", "", 2)
        assert calls == []
        page = await answered
        assert [e.key for e in page.entries] == ["a/1", "a/2"]
        assert page.is_truncated and page.next_marker == "a/2"
        assert page.entries[0].size == 3 and isinstance(page.entries[0].last_modified, float)
        await put(store, "a/0", 4)  # read right after its commit
        page = await store.list_objects("bkt", "a/", "", "", 1000)
        assert [(e.key, e.size) for e in page.entries] == [("a/0", 4), ("a/1", 3), ("a/2", 3)]
        assert not page.is_truncated and page.next_marker is None
        assert calls == []

        grouped = await store.list_objects("bkt", "", "/", "", 1000)
        assert grouped.common_prefixes == ("a/",) and [e.key for e in grouped.entries] == ["b"]
        assert len(calls) == 1
        large = await store.list_objects("bkt", "", "", "a/0", 1001)
        assert [e.key for e in large.entries] == ["a/1", "a/2", "b"] and len(calls) == 2
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_one_statement_read_needs_no_transaction_and_a_longer_one_runs_in_one(
    tmp_path: Path,
) -> None:
    """A point read of one statement runs in autocommit (a snapshot of its own): a HEAD's
    lookup is one statement, no BEGIN or ROLLBACK.  A read that needs a second statement is
    run again whole inside one read transaction, so its statements see one snapshot."""
    store, pools = await started(tmp_path / "s.db")
    conn = pools.inline
    assert conn is not None
    try:
        await put(store, "k", 5)
        traced: list[str] = []
        conn.set_trace_callback(traced.append)
        record = await store.get_object("bkt", "k")
        assert record is not None and record.size == 5 and len(record.locations) == 1
        assert record.parts == ()
        assert len(traced) == 1 and traced[0].startswith("SELECT")

        seen: list[bool] = []

        def two(tx: Tx, notes: Notes) -> tuple[int, int]:
            first = tx.execute("SELECT 1").fetchone()[0]
            seen.append(conn.in_transaction)
            return first, tx.execute("SELECT 2").fetchone()[0]

        traced.clear()
        assert await pools.run_point_read(Notes(), two) == (1, 2)
        assert seen == [False, True]  # the second try holds one snapshot for both
        assert traced == ["SELECT 1", "BEGIN", "SELECT 1", "SELECT 2", "ROLLBACK"]
        assert not conn.in_transaction
    finally:
        conn.set_trace_callback(None)
        await store.close()
