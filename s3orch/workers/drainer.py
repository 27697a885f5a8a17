"""The drain worker: every interval (and at start-up), move copies off the draining backends.

Drains are persisted, so a restarted gateway picks them up on its first tick; each
tick also refreshes the fleet's in-memory set of draining backends, so a drain
started or cancelled by another instance reaches this one's placement within one
interval.  Under its own worker lock (one mover at a time on a shared database).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.core.drain import Drainer, DrainPass
from s3orch.store.locks import WorkerLock, WorkerLocks
from s3orch.workers.base import PeriodicWorker

#: Seconds between passes (the fleet's draining set is at most this stale on other instances).
DRAIN_INTERVAL = 30.0


class DrainWorker(PeriodicWorker):
    """Runs :meth:`Drainer.run_pass` every :data:`DRAIN_INTERVAL`."""

    def __init__(
        self, drainer: Drainer, clock: IReactorTime, *, locks: WorkerLocks | None,
        interval: float = DRAIN_INTERVAL, move: bool = True,
    ) -> None:
        super().__init__(
            "drain", interval, clock, run_now=True, component="drain",
            lock_id=WorkerLock.DRAIN if move else None, locks=locks if move else None,
        )
        self.drainer = drainer
        #: False in a process that serves only the S3 API: it refreshes its placement's
        #: draining set, and moves nothing.
        self.move = move
        #: The last tick's passes.
        self.last: list[DrainPass] = []

    async def tick(self) -> None:
        if self.move:
            self.last = await self.drainer.run_pass()
        else:
            await self.drainer.refresh()
