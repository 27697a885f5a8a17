"""The rate limiter's sweep of idle buckets (:mod:`s3orch.http.ratelimit`)."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from s3orch.http.ratelimit import RateLimiter
from s3orch.workers.base import PeriodicWorker

#: Buckets dropped per reactor turn.
SWEEP_BATCH = 20_000


class RateLimitSweeper(PeriodicWorker):
    """Drops idle buckets every ``rate_limit.cleanup_interval`` (in every run mode: the
    admin API is served in each).  The interval is the one at start."""

    def __init__(self, limiter: RateLimiter, clock: IReactorTime) -> None:
        super().__init__(
            "rate-limit-sweep", limiter.config.cleanup_interval, clock, component="rate_limit", audited=False
        )
        self.limiter = limiter

    async def tick(self) -> None:
        # In steps, yielding the reactor between them: a million idle buckets would
        # otherwise hold it for a second or more.
        while not self.limiter.sweep(SWEEP_BATCH)[1]:
            await deferLater(self.clock, 0, lambda: None)
