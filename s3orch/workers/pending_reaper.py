"""When to resolve the writes whose commit failed (the resolution itself is core's).

Every ``write_path.pending_pattern.reaper_tick`` the reaper asks
:class:`~s3orch.core.intents.IntentResolver` to resolve up to ``batch_size``
intents at least ``min_age`` old: promote a write whose bytes arrived, drop one
whose bytes did not (see :mod:`s3orch.core.intents`).  Under the worker lock
:attr:`~s3orch.store.locks.WorkerLock.PENDING_REAPER` one instance reaps at a
time; intents are also claimed per row, so two instances never resolve the same
one even when both tick.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import PendingPatternConfig
from s3orch.core.intents import COMPONENT, IntentResolver
from s3orch.store.locks import WorkerLock, WorkerLocks
from s3orch.workers.base import PeriodicWorker


class PendingReaper(PeriodicWorker):
    """Every ``reaper_tick``, resolve up to ``batch_size`` intents at least ``min_age`` old.

    ``owner`` names this instance on its claims; a claim older than
    ``claim_grace`` (``cleanup_queue.claim_grace_period``) belongs to an instance
    presumed dead.
    """

    def __init__(
        self,
        resolver: IntentResolver,
        clock: IReactorTime,
        config: PendingPatternConfig,
        *,
        owner: str,
        claim_grace: float,
        locks: WorkerLocks | None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(
            "pending-reaper",
            config.reaper_tick,
            clock,
            component=COMPONENT,
            lock_id=WorkerLock.PENDING_REAPER,
            locks=locks,
            jitter=jitter,
        )
        self.resolver = resolver
        self.min_age = config.min_age
        self.batch = config.batch_size
        self.owner = owner
        self.claim_grace = claim_grace

    async def tick(self) -> None:
        await self.resolver.resolve_stale(
            min_age=self.min_age, batch=self.batch, owner=self.owner, claim_grace=self.claim_grace
        )
