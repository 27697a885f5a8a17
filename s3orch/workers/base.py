"""A background worker: a Service that runs one async tick on an interval.

A LoopingCall whose function raises stops forever, so every tick is caught,
logged with its component and counted; ticks never overlap (a slow tick
delays the next one instead of stacking up).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from s3orch.observe.metrics import REGISTRY

WORKER_TICKS = Counter(
    "s3o_worker_ticks_total", "Worker ticks by outcome", ["service", "result"], registry=REGISTRY
)
WORKER_LAST_SUCCESS = Gauge(
    "s3o_worker_last_success_timestamp_seconds",
    "Unix time of the last successful tick",
    ["service"],
    registry=REGISTRY,
)
WORKER_FAILURES = Gauge(
    "s3o_worker_consecutive_failures",
    "Consecutive failed ticks since the last success",
    ["service"],
    registry=REGISTRY,
)


class PeriodicWorker(Service):
    """Subclasses implement ``tick``; ``interval`` is in seconds."""

    log = Logger(namespace="s3orch.workers")

    def __init__(self, name: str, interval: float, clock: IReactorTime, run_now: bool = False) -> None:
        self.name = name
        self.interval = interval
        self.clock = clock
        self.run_now = run_now
        self._loop: LoopingCall | None = None
        self._failures = 0

    async def tick(self) -> None:
        raise NotImplementedError

    async def run_once(self) -> bool:
        """Run one tick now; True when it succeeded (also used by tests and admin calls)."""
        try:
            await self.tick()
        except Exception:
            self._failures += 1
            WORKER_TICKS.labels(self.name, "error").inc()
            WORKER_FAILURES.labels(self.name).set(self._failures)
            self.log.failure("worker tick failed", component=self.name)
            return False
        self._failures = 0
        WORKER_TICKS.labels(self.name, "success").inc()
        WORKER_FAILURES.labels(self.name).set(0)
        WORKER_LAST_SUCCESS.labels(self.name).set(self.clock.seconds())
        return True

    def _tick(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.run_once())

    def startService(self) -> None:
        super().startService()
        if self.interval > 0:
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=self.run_now)

    def stopService(self) -> Deferred[Any] | None:  # type: ignore[override]
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            d = loop.deferred
            loop.stop()
            return d
        return None
