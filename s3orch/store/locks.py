"""Which instance runs a background worker: one lock per worker, asked of the engine.

Several s3orch instances may share one PostgreSQL database; each periodic worker
must run on one of them at a time, so a tick starts with ``try_lock`` and is
skipped (silently: another instance is doing the work) when it fails.  The
engine answers with its form of :class:`WorkerLocks`
(:meth:`~s3orch.store.engine.Engine.worker_locks`): session advisory locks on
PostgreSQL (:class:`~s3orch.store.postgres_locks.PostgresWorkerLocks`), kernel record
locks on a file beside the database on SQLite, shared by the processes of
``server.processes`` (:class:`~s3orch.store.file_locks.FileWorkerLocks`; an
in-memory database has the process mutex, :class:`LocalWorkerLocks`).  The lock
ids are in :mod:`s3orch.store.lock_ids`.

Every worker that changes shared state takes its lock (through
:class:`~s3orch.workers.base.PeriodicWorker`'s ``lock_id``); a worker that only
reads the database into this instance's own gauges (``QuotaMetricsWorker``)
takes none, since each instance must refresh its own ``/metrics``.  The lock
avoids duplicate work; it is not what keeps data correct: workers keep their
per-row safety (``FOR UPDATE SKIP LOCKED`` claims, row locks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from s3orch.store.lock_ids import WorkerLock

__all__ = ["LocalWorkerLocks", "WorkerLock", "WorkerLocks", "run_exclusive"]

_T = TypeVar("_T")


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
    """The single-instance (SQLite) form: a process mutex per worker id."""

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
