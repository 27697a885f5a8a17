"""The rebalancer worker: with ``rebalance.enabled``, a pass every ``rebalance.interval``.

Each tick is one :meth:`~s3orch.core.rebalance.Rebalancer.run_pass` under advisory lock
1001 (one instance at a time on a shared PostgreSQL database), first after the worker
base's start-up jitter.  The admin API's ``POST /admin/api/rebalance`` runs a pass through
:meth:`run_now_pass` under the same lock, with its NDJSON progress -- also when the
rebalancer is switched off (the worker is then built but never ticks), with the configured
settings or, as the original does, spread with the defaults when no ``rebalance`` is set.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import RebalanceConfig
from s3orch.core.rebalance import Rebalancer, RebalanceResult
from s3orch.core.replication import PassProgress
from s3orch.observe.audit import audit, background_run, current_id
from s3orch.store.locks import WorkerLock, WorkerLocks, run_exclusive
from s3orch.workers.base import PeriodicWorker


class RebalanceWorker(PeriodicWorker):
    """Every ``rebalance.interval``, one batch of moves (none while ``enabled`` is false)."""

    def __init__(
        self,
        rebalancer: Rebalancer,
        clock: IReactorTime,
        config: RebalanceConfig,
        *,
        locks: WorkerLocks | None,
        **options: Any,
    ) -> None:
        super().__init__(
            "rebalancer",
            config.interval,
            clock,
            component="rebalance",
            lock_id=WorkerLock.REBALANCER,
            locks=locks,
            **options,
        )
        self.rebalancer = rebalancer
        #: The last pass's result (ticks and admin calls alike).
        self.last: RebalanceResult | None = None

    @property
    def enabled(self) -> bool:
        return self.rebalancer.config.enabled

    async def run_once(self) -> bool:
        """A tick while ``rebalance.enabled`` is false does nothing (no lock, no audit frame):
        the loop always runs, so a reload can switch the rebalancer on or off."""
        if not self.enabled:
            return True
        return await super().run_once()

    def status(self) -> dict[str, Any]:
        return {**super().status(), "enabled": self.enabled}

    def reconfigure(self, config: RebalanceConfig) -> None:
        """New settings (a SIGHUP reload): the next pass uses them (``enabled`` included);
        a new ``interval`` counts from now."""
        self.rebalancer.config = config
        if config.interval != self.interval:
            self.set_interval(config.interval)

    async def tick(self) -> None:
        """A scheduled pass: the worker base binds its correlation id and writes the
        ``rebalance.start``/``rebalance.complete`` audit frame around it."""
        self.last = await self.rebalancer.run_pass(run_id=current_id())

    async def run_now_pass(
        self, progress: PassProgress | None = None, config: RebalanceConfig | None = None
    ) -> RebalanceResult | None:
        """One pass now (an operator asked), under the worker's lock; None when another
        instance (or this one's tick) holds it."""

        async def work() -> RebalanceResult:
            with background_run(self.component) as run_id:
                started = self.clock.seconds()
                audit("rebalance.start", trigger="admin")
                outcome = "error"
                try:
                    done = await self.rebalancer.run_pass(progress, run_id=run_id, config=config)
                    outcome = "success"
                    return done
                finally:
                    audit("rebalance.complete", result=outcome, duration=round(self.clock.seconds() - started, 6))

        if self.locks is None:
            result: RebalanceResult | None = await work()
        else:
            ran, result = await run_exclusive(self.locks, WorkerLock.REBALANCER, work)
            if not ran:
                return None
        self.last = result
        return result
