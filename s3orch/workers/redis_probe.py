"""The Redis probe: every 5 s, retry what the shared counters could not send, and replay the
local deltas into Redis once its breaker lets a probe through (BEHAVIOURS §1.8).

Counters are per process, so it runs on every instance that has Redis configured, without a
lock: the replay is additive and each instance's batches are applied once
(:mod:`s3orch.redis.shared`).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.redis.counters import PROBE_INTERVAL, SharedCounters
from s3orch.workers.base import PeriodicWorker


class RedisProbe(PeriodicWorker):
    def __init__(self, counters: SharedCounters, clock: IReactorTime, interval: float = PROBE_INTERVAL) -> None:
        super().__init__("redis-probe", interval, clock, component="redis_probe", audited=False)
        self.counters = counters

    async def tick(self) -> None:
        await self.counters.probe()
