"""The integrity scrubber worker: with ``integrity.enabled`` and a ``scrubber_interval`` above
0, a pass every interval (the worker always exists, idle otherwise, as a reload may switch it
on) (after start-up jitter) under advisory lock 1010, so one instance at a
time scrubs a shared PostgreSQL database.  Each pass verifies ``scrubber_batch_size`` of the
least recently verified copies (:meth:`~s3orch.core.integrity.Scrubber.run_pass`) and refreshes
the ``s3o_integrity_*`` gauges.  ``POST /admin/api/scrub`` runs a pass now under the same lock.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import IntegrityConfig
from s3orch.core.integrity import Progress, Scrubber, ScrubResult
from s3orch.observe.audit import audit, background_run
from s3orch.observe.metrics import INTEGRITY_NEVER_VERIFIED, INTEGRITY_OLDEST_UNVERIFIED
from s3orch.store.locks import WorkerLock, WorkerLocks, run_exclusive
from s3orch.workers.base import PeriodicWorker

#: When ``scrubber_interval`` is 0 (no schedule), the worker still exists for the admin route.
_IDLE_INTERVAL = 24 * 3600.0


class ScrubberWorker(PeriodicWorker):
    """Every ``integrity.scrubber_interval``, one scrub pass (none when the interval is 0)."""

    def __init__(
        self, scrubber: Scrubber, clock: IReactorTime, config: IntegrityConfig, *, locks: WorkerLocks | None
    ) -> None:
        super().__init__(
            "scrubber",
            config.scrubber_interval or _IDLE_INTERVAL,
            clock,
            component="scrubber",
            lock_id=WorkerLock.SCRUBBER,
            locks=locks,
        )
        self.scrubber = scrubber
        self.last: ScrubResult | None = None

    @property
    def scheduled(self) -> bool:
        config = self.scrubber.config
        return config.enabled and config.scrubber_interval > 0

    def reconfigure(self, config: IntegrityConfig) -> None:
        """New settings (a SIGHUP reload): batch size and read verification at once, the
        interval from the next tick."""
        self.scrubber.config = config
        interval = config.scrubber_interval or _IDLE_INTERVAL
        if interval != self.interval:
            self.set_interval(interval)

    async def _locked_tick(self) -> bool:
        if not self.scheduled:
            return True  # integrity off or no schedule: no lock, no query
        return await super()._locked_tick()

    async def tick(self) -> None:
        if not self.scheduled:
            return
        self.last = await self.scrubber.run_pass()
        await self.refresh_gauges()

    async def refresh_gauges(self) -> None:
        never, oldest = await self.scrubber.store.integrity_stats()
        INTEGRITY_NEVER_VERIFIED.set(never)
        INTEGRITY_OLDEST_UNVERIFIED.set(0 if oldest is None else max(0.0, self.clock.seconds() - oldest))

    async def run_now_pass(self, progress: Progress | None = None, batch_size: int | None = None) -> ScrubResult | None:
        """One pass now (an operator asked), under the worker's lock; None when it is held."""

        async def work() -> ScrubResult:
            with background_run(self.component):
                audit("scrubber.start", trigger="admin")
                outcome = "error"
                try:
                    done = await self.scrubber.run_pass(progress, batch_size)
                    outcome = "success"
                    return done
                finally:
                    audit("scrubber.complete", result=outcome)

        if self.locks is None:
            result: ScrubResult | None = await work()
        else:
            ran, result = await run_exclusive(self.locks, WorkerLock.SCRUBBER, work)
            if not ran:
                return None
        self.last = result
        await self.refresh_gauges()
        return result
