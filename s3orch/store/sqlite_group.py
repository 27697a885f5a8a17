"""Group commit for the SQLite writer: the write transactions already queued share one COMMIT.

With ``synchronous=FULL`` every COMMIT is an fsync, and the one writer connection runs one
transaction at a time, so under 16 concurrent small PUTs (two write transactions each) the
writer thread spent its time waiting for 32 fsyncs in a row.  :class:`GroupWriter` runs what is
already queued when the writer thread picks up work back to back inside ONE outer
``BEGIN IMMEDIATE`` transaction, each in its own SAVEPOINT, then COMMITs once:

- a transaction's error (or :class:`~s3orch.store.txn.base.RetryTransaction`) rolls back its own
  savepoint only, and fails (or re-runs, at once, in a fresh savepoint) that transaction only;
  the others' effects and results are untouched;
- every result, success or failure, is handed back only after the group's COMMIT returned, so
  nobody is told "done" before their commit is durable; a transaction's side effects outside
  SQLite (its :class:`~s3orch.store.txn.base.Notes`, logged by the store, and whatever its caller
  does next) come after that too;
- the transactions of a group run one after the other on the one connection holding the write
  lock, so ``BEGIN IMMEDIATE``'s promise holds: a reservation and its quota check never
  interleave with another; each sees the ones before it, exactly as if they had committed;
- a lone transaction (nothing else queued) runs exactly as before (:func:`run_txn`): no timer
  ever waits for company;
- a group holds at most :data:`GROUP_MAX` transactions and stops taking more once it has held
  the write lock for :data:`GROUP_BUDGET` seconds, so other processes on the file
  (``s3orch-admin``, ``server.processes`` > 1) never wait long behind one group.

When the group as a whole fails (its ``BEGIN IMMEDIATE`` or COMMIT fails, or an error ended the
outer transaction, as SQLite does on I/O errors and a full disk), nothing of it was committed
(SQLite never leaves a COMMIT's outcome unknown), and each of its transactions is run again
alone, with today's retries.  So one transaction's trouble never fails its neighbours, a
transaction that fails only at COMMIT fails alone, and on a failing disk each gets the answer
it would have had without grouping.  The price (running them again) is paid only on failure.

Results go back through the pool's own Deferred (one pool task per submitted transaction; a
task that finds the queue already drained by an earlier one answers nothing), so the
synchronous test pool keeps running every transaction on the calling thread, alone.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from s3orch.observe.db_metrics import DB_GROUP_COMMIT_SIZE
from s3orch.store import adbapi_typed
from s3orch.store.txn.base import Dialect, Notes, Tx

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Most transactions one COMMIT makes durable.
GROUP_MAX = 64
#: Seconds a group may hold the write lock before it stops taking more transactions.
GROUP_BUDGET = 0.05

_SAVEPOINT = "s3o_group_txn"

#: ``run_txn(conn, notes, fn, *args, **kwargs)``: one transaction alone, with its retries.
RunAlone = Callable[..., Any]


class _Job(Generic[_T]):
    """One submitted transaction: what to run, and (once known) how it ended."""

    __slots__ = ("args", "deferred", "fn", "kwargs", "notes", "outcome")

    def __init__(self, notes: Notes, fn: Callable[..., _T], args: Any, kwargs: Any) -> None:
        self.notes = notes
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.deferred: Deferred[_T] = Deferred()
        #: ``(True, result)`` or ``(False, Failure)``; set in the writer thread.
        self.outcome: tuple[bool, Any] | None = None

    def succeeded(self, result: Any) -> None:
        self.outcome = (True, result)

    def failed(self) -> None:
        """Record the exception being handled."""
        self.outcome = (False, Failure())

    def deliver(self) -> None:
        """Fire the Deferred (reactor thread) with the recorded outcome."""
        outcome = self.outcome
        if outcome is None:  # pragma: no cover - _drain records one for every job it took
            self.deferred.errback(Failure(RuntimeError("transaction lost by the group writer")))
        elif outcome[0]:
            self.deferred.callback(outcome[1])
        else:
            self.deferred.errback(outcome[1])


class _GroupFailed(Exception):
    """The outer transaction is gone without a COMMIT: every job of the group runs again alone."""


class GroupWriter:
    """Runs write transactions on a one-connection pool, committing queued ones together."""

    def __init__(
        self,
        pool: adbapi.ConnectionPool,
        *,
        dialect: Dialect,
        run_alone: RunAlone,
        is_retryable: Callable[[BaseException], bool],
        attempts: int,
        max_group: int = GROUP_MAX,
        budget: float = GROUP_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._dialect = dialect
        self._run_alone = run_alone
        self._is_retryable = is_retryable
        self._attempts = attempts
        self.max_group = max_group
        self.budget = budget
        self._clock = clock
        #: Submitted, not yet taken by the writer thread (append here, popleft there: both atomic).
        self._queue: deque[_Job[Any]] = deque()

    def submit(
        self,
        notes: Notes,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """``fn(tx, notes, *args)`` in a write transaction; fires once its COMMIT is durable.

        One pool task per call: a task takes every job queued when it starts (up to the cap),
        so there are always at least as many tasks to come as jobs waiting.
        """
        job: _Job[_T] = _Job(notes, fn, args, kwargs)
        self._queue.append(job)
        task = adbapi_typed.run_with_connection(self._pool, self._drain)
        task.addCallbacks(_deliver_all, self._task_failed)
        return job.deferred

    def _task_failed(self, failure: Failure) -> None:
        """The pool could not run a task (no connection): one waiting job gets that answer,
        as it would have without grouping (a task that ran never fails: see :meth:`_drain`)."""
        try:
            job = self._queue.popleft()
        except IndexError:
            return
        job.deferred.errback(failure)

    # -- the writer thread ------------------------------------------------------------------

    def _drain(self, conn: Any) -> list[_Job[Any]]:
        """Run the jobs queued now (pool thread); return them, each with its outcome."""
        available = min(len(self._queue), self.max_group)
        taken: list[_Job[Any]] = []
        if available == 0:
            return taken
        try:
            if available == 1:
                job = self._take()
                if job is not None:
                    taken.append(job)
                    self._alone(conn, job)
            else:
                try:
                    self._together(conn, available, taken)
                except _GroupFailed:
                    for job in taken:  # nothing of the group was kept: no outcome of it stands
                        job.outcome = None
                    for job in taken:
                        self._alone(conn, job)
        except BaseException:
            for job in taken:
                if job.outcome is None:
                    job.failed()
        return taken

    def _take(self) -> _Job[Any] | None:
        try:
            return self._queue.popleft()
        except IndexError:  # only if a failed pool task took it (:meth:`_task_failed`)
            return None

    def _alone(self, conn: Any, job: _Job[Any]) -> None:
        try:
            job.succeeded(self._run_alone(conn, job.notes, job.fn, *job.args, **job.kwargs))
        except Exception:
            job.failed()
            return
        DB_GROUP_COMMIT_SIZE.observe(1)

    def _together(self, conn: Any, available: int, taken: list[_Job[Any]]) -> None:
        """Up to ``available`` queued jobs in one outer transaction, each in a savepoint."""
        cur = conn.cursor()
        try:
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _GroupFailed() from exc
            started = self._clock()
            try:
                while len(taken) < available and (not taken or self._clock() - started < self.budget):
                    job = self._take()
                    if job is None:
                        break
                    taken.append(job)
                    self._in_savepoint(conn, cur, job)
                cur.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    cur.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error | _GroupFailed):
                    raise _GroupFailed() from exc
                for job in taken:  # rolled back: no result of this attempt may be reported
                    job.outcome = None
                raise
        finally:
            cur.close()
        DB_GROUP_COMMIT_SIZE.observe(len(taken))

    def _in_savepoint(self, conn: Any, cur: Any, job: _Job[Any]) -> None:
        """Run ``job`` in its own savepoint, re-running it there when it asks to be retried.

        No sleep between attempts: the group holds the write lock, so no other process is
        what a retry waits for; sleeping would only hold the lock longer.
        """
        for attempt in range(self._attempts):
            job.notes.warnings.clear()
            cur.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                result = job.fn(Tx(cur, self._dialect), job.notes, *job.args, **job.kwargs)
            except Exception as exc:
                if not conn.in_transaction:  # SQLite ended the outer transaction (I/O, full disk)
                    raise _GroupFailed() from exc
                job.failed()
                cur.execute(f"ROLLBACK TO {_SAVEPOINT}")
                cur.execute(f"RELEASE {_SAVEPOINT}")
                if attempt + 1 < self._attempts and self._is_retryable(exc):
                    continue
                return
            cur.execute(f"RELEASE {_SAVEPOINT}")
            job.succeeded(result)
            return


def _deliver_all(jobs: list[_Job[Any]]) -> None:
    """Fire the Deferreds of a finished task's jobs (reactor thread, after their COMMIT)."""
    for job in jobs:
        job.deliver()
