"""The over-replication cleaner worker: with ``replication.factor`` above 1, a pass every
``replication.worker_interval`` (the original runs it on the replication interval and batch size).

Each tick is one :meth:`~s3orch.core.over_replication.OverReplicationCleaner.run_pass` under
advisory lock 1008, so one instance at a time cleans on a shared PostgreSQL database; the
admin API's ``POST /admin/api/over-replication`` runs a pass through :meth:`run_now_pass`
under the same lock, with its NDJSON progress.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import ReplicationConfig
from s3orch.core.over_replication import CleanResult, OverReplicationCleaner
from s3orch.core.replication import PassProgress
from s3orch.observe.audit import audit, background_run, current_id
from s3orch.store.locks import WorkerLock, WorkerLocks, run_exclusive
from s3orch.workers.base import PeriodicWorker


class OverReplicationWorker(PeriodicWorker):
    """Every ``replication.worker_interval``, remove excess copies (not at start-up: the
    replicator's first pass runs then, and a recovered backend's breaker needs a moment)."""

    def __init__(
        self,
        cleaner: OverReplicationCleaner,
        clock: IReactorTime,
        config: ReplicationConfig,
        *,
        locks: WorkerLocks | None,
    ) -> None:
        super().__init__(
            "over-replication",
            config.worker_interval,
            clock,
            component="over_replication",
            lock_id=WorkerLock.OVER_REPLICATION,
            locks=locks,
        )
        self.cleaner = cleaner
        #: The last pass's result (ticks and admin calls alike).
        self.last: CleanResult | None = None

    def reconfigure(self, config: ReplicationConfig) -> None:
        """New settings (a SIGHUP reload): the next tick is one new ``worker_interval`` from
        now (the cleaner reads the factor and batch size from the replicator's settings)."""
        if config.worker_interval != self.interval:
            self.set_interval(config.worker_interval)

    async def tick(self) -> None:
        """A scheduled pass: the worker base binds its correlation id and writes the
        ``over_replication.start``/``over_replication.complete`` audit frame around it."""
        self.last = await self.cleaner.run_pass(run_id=current_id())

    async def run_now_pass(
        self, progress: PassProgress | None = None, batch_size: int | None = None
    ) -> CleanResult | None:
        """One pass now (an operator asked), under the worker's lock; None when another
        instance (or this one's tick) holds it."""

        async def work() -> CleanResult:
            with background_run(self.component) as run_id:
                started = self.clock.seconds()
                audit("over_replication.start", trigger="admin")
                outcome = "error"
                try:
                    done = await self.cleaner.run_pass(progress, run_id=run_id, batch_size=batch_size)
                    outcome = "success"
                    return done
                finally:
                    audit("over_replication.complete", result=outcome,
                          duration=round(self.clock.seconds() - started, 6))

        if self.locks is None:
            result: CleanResult | None = await work()
        else:
            ran, result = await run_exclusive(self.locks, WorkerLock.OVER_REPLICATION, work)
            if not ran:
                return None
        self.last = result
        return result
