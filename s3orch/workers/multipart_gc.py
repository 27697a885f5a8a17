"""Abort multipart uploads nobody finished, so their parts stop holding quota.

Uploads older than ``cleanup_queue.multipart_stale_timeout`` are aborted: every
part (on whichever backend it was placed) is queued for deletion and every
reservation released.  Uploads left ``aborting`` by a crash or a backend
failure are finished the same way, as are the native uploads an older build
left on a backend (the schema migration marks them ``aborting``; they are
aborted on their backend).  Old completed/aborted tombstones are purged
(no orphan multipart upload remains once the workers are quiet).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import CleanupQueueConfig
from s3orch.core.uploads import MultipartService
from s3orch.store.locks import WorkerLock, WorkerLocks
from s3orch.workers.base import PeriodicWorker

#: s3-orchestrator checks hourly; a short stale timeout (tests, tight quotas) checks more often.
MAX_INTERVAL = 3600.0
MIN_INTERVAL = 1.0


def gc_interval(stale_timeout: float) -> float:
    """A quarter of the stale timeout, between 1 s and 1 h."""
    return max(MIN_INTERVAL, min(MAX_INTERVAL, stale_timeout / 4))


class MultipartGCWorker(PeriodicWorker):
    """Every ``gc_interval(cleanup_queue.multipart_stale_timeout)``, abort stale uploads
    (and refresh the gauge)."""

    def __init__(
        self,
        multipart: MultipartService,
        clock: IReactorTime,
        config: CleanupQueueConfig,
        *,
        locks: WorkerLocks | None,
    ) -> None:
        super().__init__(
            "multipart-gc",
            gc_interval(config.multipart_stale_timeout),
            clock,
            run_now=True,
            component="multipart_gc",
            lock_id=WorkerLock.MULTIPART_GC,
            locks=locks,
        )
        self.multipart = multipart

    async def tick(self) -> None:
        await self.multipart.abort_stale()
