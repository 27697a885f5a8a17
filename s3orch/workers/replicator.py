"""The replicator worker: with ``replication.factor`` above 1, a pass at start-up, then every interval.

Each tick is one :meth:`~s3orch.core.replication.Replicator.run_pass` under the
replicator's worker lock (one instance at a time on a shared PostgreSQL database).
The admin API's ``POST /admin/api/replicate`` runs a pass through :meth:`run_now_pass`,
under the same lock, with its NDJSON progress.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import ReplicationConfig
from s3orch.core.replication import PassProgress, PassResult, Replicator
from s3orch.observe.audit import audit, background_run, current_id
from s3orch.store.locks import WorkerLock, WorkerLocks, run_exclusive
from s3orch.workers.base import PeriodicWorker


class ReplicatorWorker(PeriodicWorker):
    """Every ``replication.worker_interval``, copy what is missing (``run_now``: at start-up too)."""

    def __init__(
        self,
        replicator: Replicator,
        clock: IReactorTime,
        config: ReplicationConfig,
        *,
        locks: WorkerLocks | None,
    ) -> None:
        super().__init__(
            "replicator",
            config.worker_interval,
            clock,
            run_now=True,
            component="replication",
            lock_id=WorkerLock.REPLICATOR,
            locks=locks,
        )
        self.replicator = replicator
        #: The last pass's result (ticks and admin calls alike).
        self.last: PassResult | None = None

    def reconfigure(self, config: ReplicationConfig) -> None:
        """New settings (a SIGHUP reload): the next pass uses them, the next tick is one new
        ``worker_interval`` from now."""
        self.replicator.config = config
        if config.worker_interval != self.interval:
            self.set_interval(config.worker_interval)

    async def tick(self) -> None:
        """A scheduled pass: the worker base binds its correlation id and writes the
        ``replication.start``/``replication.complete`` audit frame around it."""
        self.last = await self.replicator.run_pass(run_id=current_id())

    async def run_now_pass(self, progress: PassProgress | None = None) -> PassResult | None:
        """One pass now (an operator asked), under the worker's lock; None when another
        instance (or this one's tick) holds it."""

        async def work() -> PassResult:
            # Its own correlation id and audit frame, as a scheduled pass has.
            with background_run(self.component) as run_id:
                started = self.clock.seconds()
                audit("replication.start", trigger="admin")
                outcome = "error"
                try:
                    done = await self.replicator.run_pass(progress, run_id=run_id)
                    outcome = "success"
                    return done
                finally:
                    audit("replication.complete", result=outcome, duration=round(self.clock.seconds() - started, 6))

        if self.locks is None:
            result: PassResult | None = await work()
        else:
            ran, result = await run_exclusive(self.locks, WorkerLock.REPLICATOR, work)
            if not ran:
                return None
        self.last = result
        return result
