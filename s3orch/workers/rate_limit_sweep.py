"""The rate limiter's sweep of idle buckets (:mod:`s3orch.http.ratelimit`)."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.http.ratelimit import RateLimiter
from s3orch.workers.base import PeriodicWorker


class RateLimitSweeper(PeriodicWorker):
    """Drops idle buckets every ``rate_limit.cleanup_interval`` (in every run mode: the
    admin API is served in each).  The interval is the one at start."""

    def __init__(self, limiter: RateLimiter, clock: IReactorTime) -> None:
        super().__init__(
            "rate-limit-sweep", limiter.config.cleanup_interval, clock, component="rate_limit", audited=False
        )
        self.limiter = limiter

    async def tick(self) -> None:
        self.limiter.sweep()
