"""The root service: the gateway's service tree, its ordered start-up and its phased, draining stop.

Every long-lived part of a running gateway is a named child of
:class:`GatewayService`: the listeners (``s3-listener``, ``metrics-listener``)
and every background worker (``cleanup-queue``, ``multipart-gc``,
``usage-flush``, ``pending-reaper``, ``backend-credentials``, ``breaker-watchdog``).  Whoever holds
the root finds one with ``getServiceNamed(name)``.

Start: database (migrations, quota limits) -> workers -> listeners -> ready.
Nothing listens before the database is up, so no request meets a store that is
not there.  Stop: stay ready for ``server.shutdown_delay`` (load balancers keep
routing while they notice) -> not ready -> stop listening -> workers (each
waits for its tick in flight) -> the closers (background cleanups settle,
backend pools, worker locks) -> database.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger

from s3orch.store.interface import MetadataStore, StoreError, StoreUnavailable

#: The two phases children start in (workers first) and stop in (listeners first).
WORKER = "worker"
LISTENER = "listener"


class GatewayService(MultiService):
    """Owns the store, the named children and the order in which everything starts and stops.

    Children are added with :meth:`add_worker` or :meth:`add_listener` (each must
    have a ``name``).  :attr:`ready` is true from the moment the database is up and
    every child started until the drain of a stop begins, while every child runs.
    """

    log = Logger(namespace="s3orch.service")

    def __init__(
        self,
        *,
        store: MetadataStore,
        quota_limits: Mapping[str, int],
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        log_observer: ILogObserver | None = None,
        on_start_failure: Callable[[], None] | None = None,
        clock: IReactorTime | None = None,
        shutdown_delay: float = 0.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted's MultiService is unannotated
        self.store = store
        #: What reloads this gateway's config on SIGHUP (``s3orch.reload.Reloader``), set by ``tap.build``.
        self.reloader: Any = None
        #: The bulk encryption passes (``s3orch.crypto.passes``), set by ``tap.build`` when a key is configured.
        self.encryption: Any = None
        #: compress-existing / decompress-existing (``s3orch.codec.passes``), set by ``tap.build``.
        self.compression: Any = None
        #: The run mode (``s3orch.modes``): which children ``tap.build`` gave this process.
        self.mode = "all"
        self.quota_limits = dict(quota_limits)
        self.closers = list(closers)
        #: Awaited after the database is up and before any child starts (state the request
        #: path needs from the start, such as the draining backends).
        self.preloads: list[Callable[[], Awaitable[Any]]] = []
        self.stopping = False
        self.log_observer = log_observer
        self.on_start_failure = on_start_failure
        self.started: Deferred[None] | None = None
        self.clock = clock
        #: Seconds to stay ready (and serving) after a stop is asked, before the drain.
        self.shutdown_delay = shutdown_delay
        self._phase: dict[str, str] = {}
        self._up = False
        #: The last configuration reload's outcome (status, at, error, changed,
        #: restart_required), filled by the reload; the admin API's ``reload-status``.
        self.last_reload: dict[str, Any] = {"status": "never"}

    # -- the tree -------------------------------------------------------------------------

    def add_worker(self, service: IService) -> None:
        """Add a background worker (started after the database, stopped after the listeners)."""
        self._add(service, WORKER)

    def add_listener(self, service: IService) -> None:
        """Add a listener (started last, once the workers run; stopped first)."""
        self._add(service, LISTENER)

    def _add(self, service: IService, phase: str) -> None:
        if not service.name:
            raise ValueError("a child of the gateway needs a name")
        service.setServiceParent(self)  # RuntimeError if the name is taken
        self._phase[service.name] = phase

    def removeService(self, service: IService) -> Deferred[None] | None:
        self._phase.pop(service.name, None)
        result: Deferred[None] | None = super().removeService(service)  # type: ignore[no-untyped-call]  # Twisted's MultiService is unannotated
        return result

    def _children(self, phase: str) -> list[IService]:
        return [child for child in self if self._phase.get(child.name) == phase]

    @property
    def workers(self) -> list[IService]:
        """The background workers, in the order they start."""
        return self._children(WORKER)

    @property
    def listeners(self) -> list[IService]:
        """The listeners, in the order they start."""
        return self._children(LISTENER)

    @property
    def ready(self) -> bool:
        """Serving: the database is up and every child runs (until the drain of a stop)."""
        return self._up and all(child.running for child in self)

    # -- twistd -----------------------------------------------------------------------------

    def setServiceParent(self, parent: Any) -> None:
        # twistd asks the application for a log observer after makeService:
        # hand it ours (JSON lines) instead of its default text log.
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]  # Twisted's MultiService is unannotated

    def privilegedStartService(self) -> None:
        # Not the children's: a TCPServer would bind its port here, and the gateway
        # listens only once the database is up (see startService).
        Service.privilegedStartService(self)

    # -- start ------------------------------------------------------------------------------

    def startService(self) -> None:
        # Not MultiService's: the children start in phases, after the database.
        Service.startService(self)
        self.started = Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        try:
            await self.store.start()
            # The store stamps the caller's time; without an injected clock, the machine's.
            now = self.clock.seconds() if self.clock is not None else time.time()
            await self.store.sync_quota_limits(self.quota_limits, now)
            for preload in self.preloads:
                await preload()
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
        self._up = True
        self.log.info(
            "s3orch is ready",
            component="service",
            mode=self.mode,
            workers=[child.name for child in self.workers],
            listeners=[child.name for child in self.listeners],
        )

    # -- stop -------------------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        # Not MultiService's: the phases below, in order, each waiting for the last.
        Service.stopService(self)
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
        self._up = False
        self.log.info("s3orch is stopping", component="service")
        for service in reversed(self.listeners):
            if service.running:
                await _maybe(service.stopService())
        for service in reversed(self.workers):
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
