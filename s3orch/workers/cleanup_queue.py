"""Retry backend deletes that failed (displaced overwrites, deletes, undone writes)."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import CleanupQueueConfig
from s3orch.core.cleanup import Cleanups
from s3orch.store.locks import WorkerLock, WorkerLocks
from s3orch.workers.base import PeriodicWorker

#: The queue is worked every minute, 50 rows a tick (as s3-orchestrator does).
INTERVAL = 60.0
BATCH = 50


class CleanupQueueWorker(PeriodicWorker):
    """Every minute, retry the cleanup rows whose backoff has passed.

    Rows are *claimed* for this instance (``owner``) before the backend deletes,
    so two instances never work on the same row even if both tick at once (the
    worker lock :attr:`WorkerLock.CLEANUP` normally keeps them apart; the claim
    is what makes it safe when it does not).  A claim older than
    ``cleanup_queue.claim_grace_period`` belongs to an instance presumed dead and
    is taken over.  At most ``cleanup_queue.concurrency`` backend deletes run at once.
    """

    def __init__(
        self,
        cleanups: Cleanups,
        clock: IReactorTime,
        config: CleanupQueueConfig,
        *,
        owner: str,
        locks: WorkerLocks | None,
        interval: float = INTERVAL,
        batch: int = BATCH,
    ) -> None:
        super().__init__(
            "cleanup-queue",
            interval,
            clock,
            component="cleanup_queue",
            lock_id=WorkerLock.CLEANUP,
            locks=locks,
        )
        self.cleanups = cleanups
        self.batch = batch
        self.owner = owner
        self.claim_grace = config.claim_grace_period
        self.concurrency = config.concurrency

    async def tick(self) -> None:
        await self.cleanups.retry_due(self.owner, self.batch, self.claim_grace, self.concurrency)
