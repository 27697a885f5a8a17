"""The reconcile worker: with ``reconcile.enabled``, a pass over every backend each ``reconcile.interval``.

Each tick is one :meth:`~s3orch.core.reconcile.Reconciler.run_pass` under advisory lock 1009,
so one instance at a time reconciles on a shared PostgreSQL database.  The worker exists
even when reconcile is off (then it never ticks): the admin API's ``POST
/admin/api/reconcile`` and ``POST /admin/api/sync`` run through it, under the same lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import ReconcileConfig
from s3orch.core.reconcile import Reconciler, ReconcileResult
from s3orch.core.replication import PassProgress
from s3orch.core.sync import Importer, SyncResult
from s3orch.observe.audit import audit, background_run, current_id
from s3orch.store.locks import WorkerLock, WorkerLocks, run_exclusive
from s3orch.workers.base import PeriodicWorker

_T = TypeVar("_T")


class ReconcileWorker(PeriodicWorker):
    """Every ``reconcile.interval`` when enabled (not at start-up), reconcile every backend."""

    def __init__(
        self,
        reconciler: Reconciler,
        importer: Importer,
        clock: IReactorTime,
        config: ReconcileConfig,
        *,
        locks: WorkerLocks | None,
    ) -> None:
        super().__init__(
            "reconcile",
            config.interval if config.enabled else 0.0,
            clock,
            component="reconcile",
            lock_id=WorkerLock.RECONCILE,
            locks=locks,
        )
        self.reconciler = reconciler
        self.importer = importer
        #: The last pass's result (ticks and admin calls alike).
        self.last: ReconcileResult | None = None

    async def tick(self) -> None:
        """A scheduled pass (the worker base frames it with ``reconcile.start``/``.complete``)."""
        self.last = await self.reconciler.run_pass(run_id=current_id())

    async def _exclusive(self, trigger: str, work: Callable[[str], Awaitable[_T]]) -> tuple[bool, _T | None]:
        """``work(run_id)`` now, framed by audit events, under the worker's lock; (False, None)
        when another instance (or this one's tick) holds it."""

        async def framed() -> _T:
            with background_run(self.component) as run_id:
                started = self.clock.seconds()
                audit(f"{self.component}.start", trigger=trigger)
                outcome = "error"
                try:
                    done = await work(run_id)
                    outcome = "success"
                    return done
                finally:
                    audit(f"{self.component}.complete", result=outcome, trigger=trigger,
                          duration=round(self.clock.seconds() - started, 6))

        if self.locks is None:
            return True, await framed()
        return await run_exclusive(self.locks, WorkerLock.RECONCILE, framed)

    async def run_now_pass(
        self, backend: str | None = None, progress: PassProgress | None = None
    ) -> ReconcileResult | None:
        """One pass now (an operator asked); None when the lock is held elsewhere."""
        ran, result = await self._exclusive(
            "admin", lambda run_id: self.reconciler.run_pass(backend, progress, run_id=run_id)
        )
        if ran and result is not None:
            self.last = result
        return result if ran else None

    async def sync(
        self, backend: str, bucket: str, prefix: str, dry_run: bool, progress: PassProgress | None = None
    ) -> SyncResult | None:
        """Import ``backend``'s objects into ``bucket`` (under the reconcile lock, so a pass
        never sees half an import); None when the lock is held elsewhere."""
        ran, result = await self._exclusive(
            "sync",
            lambda run_id: self.importer.sync(backend, bucket, prefix, dry_run=dry_run, progress=progress),
        )
        return result if ran else None
