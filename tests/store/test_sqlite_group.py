"""Group commit on the SQLite writer (:mod:`s3orch.store.sqlite_group`), on a real database file.

The writer thread is played by :class:`QueuedPool`: pool tasks wait until the test runs them,
so "several transactions queued when the writer picks up work" is exact, and every statement
the real connection runs is traced (COMMITs counted).  No threads, no sleeps.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from s3orch.config.model import DatabaseConfig
from s3orch.observe.db_metrics import DB_GROUP_COMMIT_SIZE
from s3orch.store import adbapi_typed
from s3orch.store import sqlite as sqlite_store
from s3orch.store.records import Intent
from s3orch.store.sqlite import SQLITE, SQLiteEngine, is_retryable
from s3orch.store.sqlite_group import GroupWriter
from s3orch.store.sqlstore import SQLStore
from s3orch.store.txn.base import Notes, RetryTransaction, Tx
from s3orch.testing.syncpool import SynchronousConnectionPool

NOW = 1_700_000_000.0


class FailingCommit:
    """A connection whose COMMIT fails (a disk error, or a process killed just before it)."""

    def __init__(self, conn: sqlite3.Connection, on_commit: Callable[[], None]) -> None:
        self._conn = conn
        self._on_commit = on_commit

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def cursor(self) -> Any:
        return _Cursor(self._conn.cursor(), self._on_commit)


class _Cursor:
    def __init__(self, cursor: sqlite3.Cursor, on_commit: Callable[[], None]) -> None:
        self._cursor = cursor
        self._on_commit = on_commit

    def execute(self, sql: str, params: Any = ()) -> Any:
        if sql == "COMMIT":
            self._on_commit()
        return self._cursor.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class QueuedPool:
    """The one writer connection; pool tasks wait in a list until :meth:`run_queued`."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        sqlite_store._open_writer(self.conn)
        self.conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        self.statements: list[str] = []
        self.conn.set_trace_callback(self.statements.append)
        self.tasks: list[tuple[Callable[..., Any], Deferred[Any]]] = []
        #: What the tasks get as their connection (a fault-injecting wrapper, or the real one).
        self.connection: Any = self.conn

    def runWithConnection(self, func: Callable[..., Any]) -> Deferred[Any]:  # noqa: N802 (adbapi's)
        d: Deferred[Any] = Deferred()
        self.tasks.append((func, d))
        return d

    def run_queued(self) -> None:
        """The writer thread works through everything queued (as adbapi's one thread would)."""
        while self.tasks:
            func, d = self.tasks.pop(0)
            d.callback(func(self.connection))

    def commits(self) -> int:
        return self.statements.count("COMMIT")


def writer(pool: Any, **kwargs: Any) -> GroupWriter:
    """A group writer as :class:`~s3orch.store.sqlite.SQLitePools` builds it, with a time
    budget no loaded test machine can spend (unless a test gives its own budget and clock)."""
    kwargs.setdefault("budget", 3600.0)
    return GroupWriter(
        cast(adbapi.ConnectionPool, pool),
        dialect=SQLITE,
        run_alone=sqlite_store._run_write,
        is_retryable=is_retryable,
        attempts=sqlite_store.LOCK_RETRIES,
        **kwargs,
    )


def rows(path: Path) -> dict[str, int]:
    """What another connection sees committed."""
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT k, v FROM t"))
    finally:
        conn.close()


def insert(tx: Tx, notes: Notes, key: str, value: int) -> str:
    tx.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value))
    return key


def insert_then_fail(tx: Tx, notes: Notes, key: str) -> str:
    tx.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, 0))
    raise ValueError(f"refused {key}")


def result_of(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failure_of(d: Deferred[Any]) -> Failure:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box and isinstance(box[0], Failure), f"expected a failure, got {box}"
    failure: Failure = box[0]
    return failure


@pytest.fixture
def pool(tmp_path: Path) -> QueuedPool:
    return QueuedPool(tmp_path / "g.db")


# --- grouping --------------------------------------------------------------------------------


def test_queued_transactions_share_one_commit_and_answer_only_after_it(pool: QueuedPool, tmp_path: Path) -> None:
    group = writer(pool)
    seen_at_answer: list[tuple[int, dict[str, int]]] = []
    deferreds = [group.submit(Notes(), insert, f"k{i}", i) for i in range(5)]

    def answered(key: str) -> str:
        seen_at_answer.append((pool.commits(), rows(tmp_path / "g.db")))
        return key

    for d in deferreds:
        d.addCallback(answered)
    assert not seen_at_answer  # queued: nobody answered

    pool.run_queued()

    assert pool.commits() == 1
    assert [result_of(d) for d in deferreds] == [f"k{i}" for i in range(5)]
    everything = {f"k{i}": i for i in range(5)}
    # Every answer came after the one COMMIT, with every row already visible to others.
    assert seen_at_answer == [(1, everything)] * 5
    assert pool.statements.count("SAVEPOINT s3o_group_txn") == 5


def test_a_lone_transaction_runs_exactly_as_before(pool: QueuedPool) -> None:
    group = writer(pool)
    d = group.submit(Notes(), insert, "alone", 1)
    pool.run_queued()
    assert result_of(d) == "alone"
    assert [s.split()[0] for s in pool.statements] == ["BEGIN", "INSERT", "COMMIT"]


def test_the_group_is_capped(pool: QueuedPool, tmp_path: Path) -> None:
    group = writer(pool, max_group=2)
    deferreds = [group.submit(Notes(), insert, f"k{i}", i) for i in range(5)]
    pool.run_queued()
    assert pool.commits() == 3  # 2 + 2 + 1
    assert [result_of(d) for d in deferreds] == [f"k{i}" for i in range(5)]
    assert rows(tmp_path / "g.db") == {f"k{i}": i for i in range(5)}


def test_a_group_stops_taking_transactions_when_its_time_budget_is_spent(pool: QueuedPool) -> None:
    ticks = iter(range(100))
    group = writer(pool, budget=2.5, clock=lambda: float(next(ticks)))
    deferreds = [group.submit(Notes(), insert, f"k{i}", i) for i in range(5)]
    pool.run_queued()
    # Each group's clock reads 0 at BEGIN, then 1, 2 (still in budget), 3 (spent): 3 + 2.
    assert pool.commits() == 2
    assert [result_of(d) for d in deferreds] == [f"k{i}" for i in range(5)]


def test_commit_sizes_are_measured(pool: QueuedPool) -> None:
    def observed() -> tuple[float, float]:
        samples = {s.name: s.value for metric in DB_GROUP_COMMIT_SIZE.collect() for s in metric.samples}
        return samples["s3o_db_group_commit_size_count"], samples["s3o_db_group_commit_size_sum"]

    count, total = observed()
    group = writer(pool)
    for i in range(4):
        group.submit(Notes(), insert, f"k{i}", i)
    pool.run_queued()
    group.submit(Notes(), insert, "alone", 9)
    pool.run_queued()
    assert observed() == (count + 2, total + 5)


# --- one transaction's trouble stays its own --------------------------------------------------


def test_a_failing_transaction_leaves_the_others_effects_and_results(pool: QueuedPool, tmp_path: Path) -> None:
    group = writer(pool)
    a = group.submit(Notes(), insert, "a", 1)
    b = group.submit(Notes(), insert_then_fail, "b")
    c = group.submit(Notes(), insert, "c", 3)
    pool.run_queued()
    assert pool.commits() == 1
    assert (result_of(a), result_of(c)) == ("a", "c")
    assert failure_of(b).check(ValueError)
    assert rows(tmp_path / "g.db") == {"a": 1, "c": 3}  # b's own insert was rolled back


def test_a_retry_reruns_only_that_transaction(pool: QueuedPool, tmp_path: Path) -> None:
    runs: dict[str, int] = {"a": 0, "b": 0, "c": 0}

    def counted(tx: Tx, notes: Notes, key: str) -> int:
        runs[key] += 1
        tx.execute("INSERT INTO t (k, v) VALUES (?, ?)", (f"{key}{runs[key]}", runs[key]))
        if key == "b" and runs[key] == 1:
            notes.warn("first attempt of {key}", key=key)
            raise RetryTransaction("lost a race")
        return runs[key]

    group = writer(pool)
    notes_b = Notes()
    a = group.submit(Notes(), counted, "a")
    b = group.submit(notes_b, counted, "b")
    c = group.submit(Notes(), counted, "c")
    pool.run_queued()
    assert pool.commits() == 1
    assert (result_of(a), result_of(b), result_of(c)) == (1, 2, 1)
    assert runs == {"a": 1, "b": 2, "c": 1}
    assert rows(tmp_path / "g.db") == {"a1": 1, "b2": 2, "c1": 1}  # b's first attempt left nothing
    assert notes_b.warnings == []  # only the attempt that counted speaks


def test_a_transaction_that_keeps_asking_for_retries_fails_alone(pool: QueuedPool, tmp_path: Path) -> None:
    def always_retry(tx: Tx, notes: Notes) -> None:
        tx.execute("INSERT INTO t (k, v) VALUES ('r', 0)")
        raise RetryTransaction("never settles")

    group = writer(pool)
    a = group.submit(Notes(), insert, "a", 1)
    r = group.submit(Notes(), always_retry)
    pool.run_queued()
    assert result_of(a) == "a"
    assert failure_of(r).check(RetryTransaction)
    assert pool.statements.count("SAVEPOINT s3o_group_txn") == 1 + sqlite_store.LOCK_RETRIES
    assert rows(tmp_path / "g.db") == {"a": 1}


def test_a_transaction_that_fails_only_at_commit_is_run_alone_and_fails_alone(
    pool: QueuedPool, tmp_path: Path
) -> None:
    """A deferred foreign key is checked at COMMIT: the group's COMMIT fails, nothing of the
    group is kept, and each transaction runs again alone, so only the culprit fails."""
    pool.conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    pool.conn.execute(
        "CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )

    def orphan(tx: Tx, notes: Notes) -> None:
        tx.execute("INSERT INTO child (pid) VALUES (42)")

    group = writer(pool)
    a = group.submit(Notes(), insert, "a", 1)
    o = group.submit(Notes(), orphan)
    c = group.submit(Notes(), insert, "c", 3)
    pool.run_queued()
    assert (result_of(a), result_of(c)) == ("a", "c")
    assert failure_of(o).check(sqlite3.IntegrityError)
    assert rows(tmp_path / "g.db") == {"a": 1, "c": 3}
    assert pool.conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    assert pool.commits() == 4  # the group's (refused), a's, the orphan's (refused), c's


def test_a_failing_commit_fails_every_transaction_and_keeps_nothing(pool: QueuedPool, tmp_path: Path) -> None:
    def disk_error() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    pool.connection = FailingCommit(pool.conn, disk_error)
    group = writer(pool)
    deferreds = [group.submit(Notes(), insert, f"k{i}", i) for i in range(3)]
    pool.run_queued()
    for d in deferreds:
        assert "disk I/O error" in str(failure_of(d).value)
    assert rows(tmp_path / "g.db") == {}
    assert not pool.conn.in_transaction


def test_an_error_that_ends_the_outer_transaction_reruns_the_others_alone(
    pool: QueuedPool, tmp_path: Path
) -> None:
    """SQLite rolls the whole transaction back on some errors (I/O, full disk): the work of the
    group's earlier transactions is gone, so each runs again alone; only the culprit fails."""
    runs = {"a": 0}

    def counted_a(tx: Tx, notes: Notes) -> str:
        runs["a"] += 1
        return insert(tx, notes, "a", 1)

    def ends_everything(tx: Tx, notes: Notes) -> None:
        tx.execute("ROLLBACK")
        raise sqlite3.OperationalError("disk is full")

    group = writer(pool)
    a = group.submit(Notes(), counted_a)
    x = group.submit(Notes(), ends_everything)
    c = group.submit(Notes(), insert, "c", 3)
    pool.run_queued()
    assert (result_of(a), result_of(c)) == ("a", "c")
    assert failure_of(x).check(sqlite3.OperationalError)
    assert runs["a"] == 2
    assert rows(tmp_path / "g.db") == {"a": 1, "c": 3}


def test_a_pool_task_that_cannot_run_fails_one_waiting_transaction(tmp_path: Path) -> None:
    class NoConnection:
        def runWithConnection(self, func: Callable[..., Any]) -> Deferred[Any]:  # noqa: N802
            return fail(sqlite3.OperationalError("unable to open database file"))

    group = writer(NoConnection())
    d = group.submit(Notes(), insert, "a", 1)
    assert failure_of(d).check(sqlite3.OperationalError)


def test_a_process_killed_before_the_group_commit_leaves_nothing(tmp_path: Path) -> None:
    """A real crash: a child process runs a group and dies (``_exit``) right before its COMMIT."""
    path = tmp_path / "g.db"
    QueuedPool(path).conn.close()  # the schema
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            os.close(read_fd)
            pool = QueuedPool(path)
            answered: list[object] = []

            def crash() -> None:
                os.write(write_fd, f"{len(answered)}".encode())
                os._exit(9)

            pool.connection = FailingCommit(pool.conn, crash)
            group = writer(pool)
            for i in range(4):
                group.submit(Notes(), insert, f"k{i}", i).addBoth(answered.append)
            pool.run_queued()
        finally:
            os._exit(3)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    told = os.read(read_fd, 16)
    os.close(read_fd)
    assert os.WEXITSTATUS(status) == 9
    assert told == b"0"  # nobody had been answered when the process died
    assert rows(path) == {}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


# --- the store on a queued writer --------------------------------------------------------------


class QueuedConnectionPool(SynchronousConnectionPool):
    """adbapi's pool with the store's real connections; tasks wait until :meth:`run_queued`."""

    def start(self) -> None:
        super().start()
        self.tasks: list[tuple[Any, Any, Any, Deferred[Any]]] = []
        self.holding = False

    def runWithConnection(self, func: Any, *args: Any, **kw: Any) -> Deferred[Any]:  # noqa: N802
        if not getattr(self, "holding", False):
            return super().runWithConnection(func, *args, **kw)
        d: Deferred[Any] = Deferred()
        self.tasks.append((func, args, kw, d))
        return d

    def run_queued(self) -> None:
        self.holding = False
        while self.tasks:
            func, args, kw, d = self.tasks.pop(0)
            super().runWithConnection(func, *args, **kw).chainDeferred(d)


def test_concurrent_reservations_grouped_never_exceed_the_quota(tmp_path: Path) -> None:
    """16 reservations of 30 bytes against a 100-byte quota, all queued behind each other: one
    COMMIT, exactly three granted, and the quota row says exactly their 90 bytes."""
    pools_made: list[QueuedConnectionPool] = []

    def factory(*args: Any, **kwargs: Any) -> QueuedConnectionPool:
        made = QueuedConnectionPool(*args, **kwargs)  # type: ignore[no-untyped-call]
        pools_made.append(made)
        return made

    reactor = MemoryReactorClock()
    store = SQLStore(SQLiteEngine(DatabaseConfig(path=str(tmp_path / "s.db")), pool_factory=factory), reactor)
    result_of(Deferred.fromCoroutine(store.start()))
    result_of(Deferred.fromCoroutine(store.sync_quota_limits({"b1": 100}, NOW)))
    pools = store._pools
    assert isinstance(pools, sqlite_store.SQLitePools)
    pools.group.budget = 3600.0  # no group split by a loaded test machine
    for made in pools_made:
        made.start()
        made.holding = True
    writer_pool = pools_made[0]
    writer_conn = adbapi_typed.connect(writer_pool)
    statements: list[str] = []
    writer_conn.set_trace_callback(statements.append)
    intents = [
        Intent(write_id=f"w{i}", bucket="bk", key=f"k{i}", size=30, storage_key=f"bk/k{i}")
        for i in range(16)
    ]
    reservations = [
        Deferred.fromCoroutine(store.reserve(intent, ["b1"], "pack", NOW)) for intent in intents
    ]
    writer_pool.run_queued()
    granted = [r for r in map(result_of, reservations) if r is not None]
    assert statements.count("COMMIT") == 1
    assert len(granted) == 3
    for made in pools_made:
        made.run_queued()  # the readers too, from now on
    quotas = result_of(Deferred.fromCoroutine(store.get_quotas()))
    assert (quotas["b1"].bytes_used, quotas["b1"].reserved_bytes) == (0, 90)
    result_of(Deferred.fromCoroutine(store.close()))
