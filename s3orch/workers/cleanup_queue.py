"""Retry backend deletes that failed (displaced overwrites, deletes, undone writes)."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.core.objects import ObjectService
from s3orch.store.locks import WorkerLock, WorkerLocks
from s3orch.workers.base import PeriodicWorker


class CleanupQueueWorker(PeriodicWorker):
    """Every minute, retry the cleanup rows whose backoff has passed.

    Rows are *claimed* for this instance (``owner``) before the backend deletes,
    so two instances never work on the same row even if both tick at once (the
    worker lock :attr:`WorkerLock.CLEANUP` normally keeps them apart; the claim
    is what makes it safe when it does not).  A claim older than ``claim_grace``
    seconds belongs to an instance presumed dead and is taken over.
    """

    def __init__(
        self,
        objects: ObjectService,
        clock: IReactorTime,
        interval: float = 60.0,
        batch: int = 50,
        *,
        owner: str = "s3orch",
        claim_grace: float = 300.0,
        locks: WorkerLocks | None = None,
    ) -> None:
        super().__init__("cleanup_queue", interval, clock, lock_id=WorkerLock.CLEANUP, locks=locks)
        self.objects = objects
        self.batch = batch
        self.owner = owner
        self.claim_grace = claim_grace

    async def tick(self) -> None:
        items = await self.objects.store.claim_cleanups(
            self.clock.seconds(), self.batch, self.owner, self.claim_grace
        )
        await self.objects.retry_cleanups(items)
