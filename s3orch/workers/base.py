"""A background worker: a Service that runs one async tick on an interval.

A LoopingCall whose function raises stops forever, so every tick is caught,
logged with its component and counted (``s3o_worker_*``, in
:mod:`s3orch.observe.metrics`); ticks never overlap (a slow tick delays the
next one instead of stacking up).  A worker is a named child of the gateway's
service tree (:class:`~s3orch.service.GatewayService`), started and stopped with it.

Several instances on one PostgreSQL database run each worker on one of them
at a time: a worker given a :class:`~s3orch.store.locks.WorkerLock` id and the
instance's :class:`~s3orch.store.locks.WorkerLocks` takes that advisory lock
around every tick and skips the tick, silently, while another instance holds
it (counted as ``result="skipped"``).  Locked workers start after a random
delay of up to half their interval, so instances started together do not
contend at the same instant forever after.  On SQLite the locks are a process
mutex and the same code runs.

Each pass that runs (not one skipped for the lock) gets its own audit correlation id
(:func:`s3orch.observe.audit.background_run`), which the pass's audit events carry, and is
framed by ``<component>.start`` and ``<component>.complete`` audit events; the workers that run
every few seconds or only refresh state (quota gauges, the notifier, the breaker watchdog:
``audited=False``) write no frame, so their passes do not flood the audit log.

The workers that call the backends (:data:`SLOT_WORKERS`) share the admission pools with
HTTP requests, as in s3-orchestrator: given the gateway's
:class:`~s3orch.http.admission.Admission` (``admission``, set by ``s3orch.tap.build``),
each pass holds one slot of the write pool (split mode) or the global pool, and waits for
it; workers together hold at most half of that pool, so clients always keep the rest.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from s3orch.http.admission import Admission, Slot
from s3orch.observe.audit import audit, background_run
from s3orch.observe.metrics import WORKER_FAILURES, WORKER_LAST_SUCCESS, WORKER_TICKS
from s3orch.store.interface import StoreUnavailable
from s3orch.store.locks import WorkerLocks, run_exclusive

#: Workers whose passes call the backends: each pass holds an admission slot.
SLOT_WORKERS = frozenset({
    "replicator", "over-replication", "cleanup-queue", "drain", "lifecycle", "pending-reaper", "multipart-gc",
    "rebalancer", "reconcile", "scrubber",
})


class PeriodicWorker(Service):
    """Subclasses implement ``tick``; ``interval`` is in seconds.

    ``name`` is the worker's name in the service tree (``cleanup-queue``: what
    ``getServiceNamed`` finds it by); ``component`` its name in logs and
    in the ``service`` label of the worker metrics (``cleanup_queue``, the names
    s3-orchestrator's logs and metrics use).

    ``lock_id`` (a :class:`~s3orch.store.locks.WorkerLock`) and ``locks`` make
    the worker exclusive across instances; ``jitter`` returns a fraction in
    [0, 1) of half the interval to wait before the first tick of a locked worker
    (injected so tests are deterministic).
    """

    log = Logger(namespace="s3orch.workers")

    def __init__(
        self,
        name: str,
        interval: float,
        clock: IReactorTime,
        run_now: bool = False,
        *,
        component: str,
        lock_id: int | None = None,
        locks: WorkerLocks | None = None,
        jitter: Callable[[], float] = random.random,
        audited: bool = True,
    ) -> None:
        self.name = name
        self.component = component
        self.interval = interval
        self.clock = clock
        self.run_now = run_now
        self.lock_id = lock_id
        self.locks = locks
        self.jitter = jitter
        self.audited = audited
        self._loop: LoopingCall | None = None
        self._delayed_start: IDelayedCall | None = None
        self._loop_done: Deferred[LoopingCall] | None = None
        self._failures = 0
        #: What the last tick did (``status()``): when it started and ended, how, and why not.
        self._last_started: float | None = None
        self._last_finished: float | None = None
        self._last_result: str | None = None
        self._last_error: str | None = None
        #: The admission pools a pass takes a slot from (None: passes are not admitted).
        self.admission: Admission | None = None
        self._slot_wait: Deferred[Slot | None] | None = None

    @property
    def exclusive(self) -> bool:
        """Whether ticks run under a worker lock."""
        return self.lock_id is not None and self.locks is not None

    async def tick(self) -> None:
        raise NotImplementedError

    async def _locked_tick(self) -> bool:
        """One tick under the worker's lock; False when another holder has it."""
        assert self.locks is not None and self.lock_id is not None
        ran, _ = await run_exclusive(self.locks, self.lock_id, self._audited_tick)
        return ran

    async def _audited_tick(self) -> None:
        """One pass under its own correlation id, which the pass's audit events carry as
        their request_id; an ``audited`` worker also writes ``<component>.start`` and
        ``<component>.complete`` (with the result) around it."""
        with background_run(self.component):
            if not self.audited:
                await self.tick()
                return
            started = self.clock.seconds()
            audit(f"{self.component}.start")
            result = "error"
            try:
                await self.tick()
                result = "success"
            finally:
                duration = round(self.clock.seconds() - started, 6)
                audit(f"{self.component}.complete", result=result, duration=duration)

    async def run_once(self) -> bool:
        """Run one tick now; True when it succeeded or was skipped because another
        instance holds the worker's lock (also used by tests and admin calls).

        With ``admission`` set, the tick first waits for an admission slot and holds it
        throughout; a worker stopped while it waits gives up quietly (False)."""
        slot: Slot | None = None
        if self.admission is not None:
            self._slot_wait = self.admission.for_worker()
            try:
                slot = await self._slot_wait
            except CancelledError:
                return False
            finally:
                self._slot_wait = None
        try:
            return await self._run_once()
        finally:
            if slot is not None:
                slot.release()

    async def _run_once(self) -> bool:
        self._last_started = self.clock.seconds()
        try:
            if self.exclusive:
                if not await self._locked_tick():
                    WORKER_TICKS.labels(self.component, "skipped").inc()
                    self._finished("skipped")
                    return True
            else:
                await self._audited_tick()
        except StoreUnavailable as exc:
            # Expected while the database restarts: say so without a traceback.
            self._count_failure()
            self._finished("error", f"database unavailable: {exc}")
            self.log.warn(
                "worker tick failed: database unavailable: {error}", component=self.component, error=str(exc)
            )
            return False
        except Exception as exc:
            self._count_failure()
            self._finished("error", f"{type(exc).__name__}: {exc}")
            self.log.failure("worker tick failed", component=self.component)
            return False
        self._finished("success")
        self._failures = 0
        WORKER_TICKS.labels(self.component, "success").inc()
        WORKER_FAILURES.labels(self.component).set(0)
        WORKER_LAST_SUCCESS.labels(self.component).set(self.clock.seconds())
        return True

    def _finished(self, result: str, error: str | None = None) -> None:
        self._last_finished = self.clock.seconds()
        self._last_result = result
        self._last_error = error[:500] if error is not None else None

    def status(self) -> dict[str, Any]:
        """The worker as the admin API's ``workers`` shows it: its last tick, how it ended,
        when the next one runs and who held its lock (for operators, JSON-ready)."""
        if not self.exclusive:
            holder = None
        elif self._last_result == "skipped":
            holder = "another instance"
        elif self._last_result is None:
            holder = "unknown"
        else:
            holder = "this instance"
        next_run: float | None = None
        delayed = self._delayed_start
        if delayed is not None and delayed.active():
            next_run = delayed.getTime()
        elif self._loop is not None and self._loop.running:
            call = getattr(self._loop, "call", None)
            if call is not None and call.active():
                next_run = call.getTime()
            # no call pending: a tick is running now (the next is scheduled when it ends)
        return {
            "name": self.name,
            "component": self.component,
            "running": bool(self.running),
            "interval_seconds": self.interval,
            "last_tick_at": self._last_started,
            "last_finished_at": self._last_finished,
            "last_result": self._last_result,
            "last_error": self._last_error,
            "consecutive_failures": self._failures,
            "next_run_at": next_run,
            "lock_id": self.lock_id if self.exclusive else None,
            "lock_holder": holder,
        }

    def _count_failure(self) -> None:
        self._failures += 1
        WORKER_TICKS.labels(self.component, "error").inc()
        WORKER_FAILURES.labels(self.component).set(self._failures)

    def _tick(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.run_once())

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        if self.interval <= 0:
            return
        delay = max(0.0, min(1.0, self.jitter())) * self.interval / 2 if self.exclusive else 0.0
        if delay > 0:
            self._delayed_start = self.clock.callLater(delay, self._start_loop)
        else:
            self._start_loop()

    def set_interval(self, interval: float) -> None:
        """A new interval (a SIGHUP reload): the next tick is ``interval`` from now.

        A tick in flight finishes first; the loop then goes on at the new pace. Not running
        (or waiting for its first, jittered tick): the interval is used when the loop starts.
        """
        self.interval = interval
        loop = self._loop
        if loop is None or not loop.running:
            return
        loop.interval = interval
        if loop.call is not None:  # waiting between ticks, not inside one
            loop.reset()

    def _start_loop(self) -> None:
        self._delayed_start = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop_done = self._loop.start(self.interval, now=self.run_now)

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        if self._slot_wait is not None:
            self._slot_wait.cancel()  # waiting for an admission slot: leave the queue
        delayed, self._delayed_start = self._delayed_start, None
        if delayed is not None and delayed.active():
            delayed.cancel()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            done = self._loop_done
            loop.stop()
            return done
        return None
