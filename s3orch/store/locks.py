"""Which instance runs a background worker: one advisory lock per worker.

Several s3orch instances share one PostgreSQL database; each periodic worker
must run on one of them at a time, so a tick starts with ``try_lock`` and is
skipped (silently: another instance is doing the work) when it fails.  SQLite
means one instance, so there the lock is a process mutex.

Lock numbers (PostgreSQL advisory locks, single ``bigint`` key space)::

    id    holder                          kind
    1000  schema migrations (migrate.py)  session lock, waited for (pg_advisory_lock)
    1001  rebalancer                      worker, try-lock
    1002  replicator                      worker, try-lock
    1003  cleanup queue                   worker, try-lock
    1004  multipart GC                    worker, try-lock
    1005  lifecycle                       worker, try-lock
    1006  drain                           worker, try-lock
    1007  usage flush                     worker, try-lock
    1008  over-replication                worker, try-lock
    1009  reconcile                       worker, try-lock
    1010  scrubber                        worker, try-lock
    1011  notification outbox drain       worker, try-lock
    1012  pending reaper                  worker, try-lock (our addition; intents are
                                          also claimed per row, like cleanup rows)

Every worker that changes shared state takes its lock (through
:class:`~s3orch.workers.base.PeriodicWorker`'s ``lock_id``); a worker that only
reads the database into this instance's own gauges (``QuotaMetricsWorker``)
takes none, since each instance must refresh its own ``/metrics``.

The store also takes transaction-scoped locks in the *two-int4* key space,
which PostgreSQL keeps apart from the single-key space above (so they can
never collide): class :data:`OBJECT_KEY_LOCK_CLASS` serialises the writers of
one object key, :data:`UPLOAD_LIMIT_LOCK_CLASS` the upload count of one bucket.

Why session locks on one dedicated connection, not ``pg_try_advisory_xact_lock``
in the tick's transaction: a tick is many short transactions plus backend
calls that take minutes; an xact lock would keep one transaction open (and one
pooled connection idle in it) for the whole tick.  The cost: if the dedicated
connection drops mid-tick, PostgreSQL frees its locks and another instance may
start the same worker while this tick finishes.  Workers therefore keep their
per-row safety (``FOR UPDATE SKIP LOCKED`` claims, row locks); the advisory
lock avoids duplicate work, it is not what keeps data correct.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import psycopg2
from twisted.enterprise import adbapi
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from s3orch.store.interface import StoreUnavailable

if TYPE_CHECKING:
    from s3orch.store import DatabaseSection

_T = TypeVar("_T")

#: The session lock two instances starting together take around migrations.
MIGRATION_LOCK_ID = 1000

#: First key of the transaction-scoped per-object-key locks (``"S3"`` in ASCII).
OBJECT_KEY_LOCK_CLASS = 0x5333
#: First key of the per-bucket lock around counting open multipart uploads.
UPLOAD_LIMIT_LOCK_CLASS = 0x5334


class WorkerLock(enum.IntEnum):
    """The advisory lock id of each background worker (shared with the original product)."""

    REBALANCER = 1001
    REPLICATOR = 1002
    CLEANUP = 1003
    MULTIPART_GC = 1004
    LIFECYCLE = 1005
    DRAIN = 1006
    USAGE_FLUSH = 1007
    OVER_REPLICATION = 1008
    RECONCILE = 1009
    SCRUBBER = 1010
    NOTIFICATION_OUTBOX = 1011
    PENDING_REAPER = 1012


class WorkerLocks(Protocol):
    """Mutual exclusion of workers across instances (and within one)."""

    async def try_lock(self, worker_id: int) -> bool:
        """Take ``worker_id`` without waiting; False when anyone holds it, this process included."""

    async def release(self, worker_id: int) -> None:
        """Give ``worker_id`` back (a no-op when not held)."""

    async def close(self) -> None:
        """Drop every lock and the connection behind them."""


async def run_exclusive(
    locks: WorkerLocks, worker_id: int, work: Callable[[], Awaitable[_T]]
) -> tuple[bool, _T | None]:
    """Run ``work`` under ``worker_id``; ``(False, None)`` when the lock is taken elsewhere."""
    if not await locks.try_lock(worker_id):
        return False, None
    try:
        return True, await work()
    finally:
        await locks.release(worker_id)


class LocalWorkerLocks:
    """The SQLite (single instance) form: a process mutex per worker id."""

    def __init__(self) -> None:
        self._held: set[int] = set()

    async def try_lock(self, worker_id: int) -> bool:
        if worker_id in self._held:
            return False
        self._held.add(worker_id)
        return True

    async def release(self, worker_id: int) -> None:
        self._held.discard(worker_id)

    async def close(self) -> None:
        self._held.clear()


# --- PostgreSQL (runs in the lock connection's one pool thread) -----------------------


def _is_broken(conn: Any) -> bool:
    raw = getattr(conn, "_connection", conn)
    return raw is None or bool(getattr(raw, "closed", 0))


def _lock_call(conn: Any, sql: str, worker_id: int, acquire: bool) -> tuple[bool, bool]:
    """Run one lock function; returns (its answer, whether the session was lost first).

    A lost session has already lost every lock it held, so after reconnecting a
    try-lock is simply tried again and an unlock has nothing left to do.
    """
    lost = False
    for attempt in range(2):
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, (worker_id,))
                answer = bool(cur.fetchone()[0])
            finally:
                cur.close()
            conn.commit()  # session locks outlive the transaction; just do not leave one open
            return answer, lost
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if attempt or not _is_broken(conn):
                raise
            lost = True
            conn.reconnect()
            if not acquire:
                return False, lost
    raise AssertionError("unreachable")  # pragma: no cover


class PostgresWorkerLocks:
    """Session advisory locks on one dedicated connection (see the module docstring)."""

    _log = Logger(namespace="s3orch.store")

    def __init__(self, connect_kwargs: dict[str, Any], reactor: IReactorCore) -> None:
        from s3orch.store.postgres import open_connection

        self._held: set[int] = set()
        self._reactor = reactor
        # One thread, one connection: every lock of this instance lives in one session.
        self._pool: adbapi.ConnectionPool | None = adbapi.ConnectionPool(  # type: ignore[no-untyped-call]
            "psycopg2",
            cp_min=1,
            cp_max=1,
            cp_reconnect=True,
            cp_openfun=partial(open_connection, statement_timeout=0.0),
            cp_reactor=reactor,
            cp_name="s3orch-worker-locks",
            **connect_kwargs,
        )

    async def _call(self, sql: str, worker_id: int, acquire: bool) -> bool:
        if self._pool is None:
            raise RuntimeError("the worker locks are closed")
        from s3orch.store.postgres import UNAVAILABLE_ERRORS, run_with_connection

        try:
            answer, lost = await run_with_connection(
                self._pool, self._reactor, _lock_call, sql, worker_id, acquire
            )
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"worker locks: {exc}".strip()) from exc
        if lost:
            self._log.warn(
                "the worker-lock connection was lost; locks held by running workers"
                " may now be taken by another instance",
                component="store",
            )
        return bool(answer)

    async def try_lock(self, worker_id: int) -> bool:
        # Locks are re-entrant per session, so this process's own holders are kept here.
        if worker_id in self._held:
            return False
        self._held.add(worker_id)
        try:
            got = await self._call("SELECT pg_try_advisory_lock(%s)", worker_id, True)
        except BaseException:
            self._held.discard(worker_id)
            raise
        if not got:
            self._held.discard(worker_id)
        return got

    async def release(self, worker_id: int) -> None:
        if worker_id not in self._held:
            return
        try:
            await self._call("SELECT pg_advisory_unlock(%s)", worker_id, False)
        finally:
            self._held.discard(worker_id)

    async def close(self) -> None:
        self._held.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()  # type: ignore[no-untyped-call]  # ending the session frees its locks


def open_worker_locks(config: DatabaseSection, reactor: IReactorCore) -> WorkerLocks:
    """The worker locks matching ``database.driver`` (``config`` is the database section)."""
    if config.driver == "postgres":
        from s3orch.store.postgres import PostgresSettings

        return PostgresWorkerLocks(PostgresSettings.from_config(config).connect, reactor)
    return LocalWorkerLocks()
