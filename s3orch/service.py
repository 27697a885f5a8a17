"""The root service: ordered start-up and a phased, draining stop.

Start: database (migrations, quota limits) -> workers -> HTTP listener ->
ready.  Stop: stay ready for ``server.shutdown_delay`` (load balancers keep
routing while they notice) -> not ready -> stop listening -> let in-flight
work settle -> workers -> backend pools -> database.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger

from s3orch.store.interface import MetadataStore, StoreError, StoreUnavailable


class GatewayService(MultiService):
    """Owns the store and the order in which everything starts and stops."""

    log = Logger(namespace="s3orch.service")

    def __init__(
        self,
        *,
        store: MetadataStore,
        quota_limits: dict[str, int],
        workers: Sequence[IService],
        listeners: Sequence[IService],
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        log_observer: ILogObserver | None = None,
        on_start_failure: Callable[[], None] | None = None,
        clock: IReactorTime | None = None,
        shutdown_delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.store = store
        self.quota_limits = quota_limits
        self.workers = list(workers)
        self.listeners = list(listeners)
        self.closers = list(closers)
        self.ready = False
        self.stopping = False
        self.log_observer = log_observer
        self.on_start_failure = on_start_failure
        self.started: Deferred[None] | None = None
        self.clock = clock
        #: Seconds to stay ready (and serving) after a stop is asked, before the drain.
        self.shutdown_delay = shutdown_delay

    def setServiceParent(self, parent: Any) -> None:
        # twistd asks the application for a log observer after makeService:
        # hand it ours (JSON lines) instead of its default text log.
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        self.started = Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        try:
            await self.store.start()
            # The store stamps the caller's time; without an injected clock, the machine's.
            now = self.clock.seconds() if self.clock is not None else time.time()
            await self.store.sync_quota_limits(self.quota_limits, now)
            for service in self.workers + self.listeners:
                service.startService()
        except (StoreError, StoreUnavailable) as exc:
            # A message for the operator (schema too new, server unreachable), not a bug.
            self.log.critical("s3orch cannot start: {error}", component="service", error=str(exc))
            if self.on_start_failure is not None:
                self.on_start_failure()
            return
        except Exception:
            self.log.failure("start-up failed", component="service")
            if self.on_start_failure is not None:
                self.on_start_failure()
            return
        self.ready = True
        self.log.info("s3orch is ready", component="service")

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.stopping = True
        if self.shutdown_delay > 0 and self.clock is not None and self.ready:
            self.log.info(
                "s3orch is stopping in {delay}s (still ready meanwhile)",
                component="service",
                delay=self.shutdown_delay,
            )
            await deferLater(self.clock, self.shutdown_delay, lambda: None)
        self.ready = False
        self.log.info("s3orch is stopping", component="service")
        for service in self.listeners:
            if service.running:
                await _maybe(service.stopService())
        for service in self.workers:
            if service.running:
                await _maybe(service.stopService())
        for close in self.closers:
            try:
                await close()
            except Exception:
                self.log.failure("error while closing", component="service")
        try:
            await self.store.close()
        except Exception:
            self.log.failure("error while closing the database", component="service")


async def _maybe(result: Any) -> None:
    if isinstance(result, Deferred):
        await result
