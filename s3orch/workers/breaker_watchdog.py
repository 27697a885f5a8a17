"""The backend circuit breakers' watchdog: no breaker stays stuck half-open.

A probe sent to a backend that accepted the connection and never answered stays in flight
until ``backend_timeout``, or forever on a hung transfer; on a backend nobody calls, no next
call notices it either.  Every minute this worker puts each breaker whose probe has been in
flight for over two minutes back to open, due for a new probe at once (BEHAVIOURS §1.27).
Breakers are per process, so it runs on every instance, in every run mode, without a lock.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.backend.breaker import Breakers
from s3orch.workers.base import PeriodicWorker

#: Seconds between checks, as the original's.
WATCHDOG_INTERVAL = 60.0


class BreakerWatchdog(PeriodicWorker):
    def __init__(self, breakers: Breakers, clock: IReactorTime, interval: float = WATCHDOG_INTERVAL) -> None:
        super().__init__(
            "breaker-watchdog", interval, clock, component="circuit_breaker_watchdog", audited=False
        )
        self.breakers = breakers

    async def tick(self) -> None:
        self.breakers.reset_stale_probes()
