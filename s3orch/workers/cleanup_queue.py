"""Retry backend deletes that failed (displaced overwrites, deletes, undone writes)."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.core.objects import ObjectService
from s3orch.workers.base import PeriodicWorker


class CleanupQueueWorker(PeriodicWorker):
    """Every minute, retry the cleanup rows whose backoff has passed."""

    def __init__(self, objects: ObjectService, clock: IReactorTime, interval: float = 60.0, batch: int = 50) -> None:
        super().__init__("cleanup_queue", interval, clock)
        self.objects = objects
        self.batch = batch

    async def tick(self) -> None:
        items = await self.objects.store.due_cleanups(self.clock.seconds(), self.batch)
        await self.objects.retry_cleanups(items)
