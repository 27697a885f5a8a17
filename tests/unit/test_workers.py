"""Background workers: ticks, worker locks across instances, start-up jitter, claims.

Driven by ``task.Clock`` and a fake lock service; no sockets, threads or sleeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from s3orch.backend.memory import MemoryBackend
from s3orch.config import load_config_from_string
from s3orch.config.model import CleanupQueueConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.observe.metrics import WORKER_TICKS
from s3orch.store.interface import CleanupItem
from s3orch.store.locks import LocalWorkerLocks, WorkerLock
from s3orch.workers.base import PeriodicWorker
from s3orch.workers.cleanup_queue import CleanupQueueWorker


class FakeLocks:
    """One lock service shared by every "instance" of a test (like PostgreSQL's).

    ``taken_elsewhere`` holds ids another (invisible) instance holds; ``fail``
    makes the next calls raise, as a lost database connection would.
    """

    def __init__(self) -> None:
        self.held: dict[int, str] = {}
        self.taken_elsewhere: set[int] = set()
        self.calls: list[tuple[str, int]] = []
        self.fail: Exception | None = None

    async def try_lock(self, worker_id: int) -> bool:
        self.calls.append(("try", worker_id))
        if self.fail is not None:
            raise self.fail
        if worker_id in self.held or worker_id in self.taken_elsewhere:
            return False
        self.held[worker_id] = "held"
        return True

    async def release(self, worker_id: int) -> None:
        self.calls.append(("release", worker_id))
        self.held.pop(worker_id, None)

    async def close(self) -> None:
        self.held.clear()


class CountingWorker(PeriodicWorker):
    """Counts its ticks; a tick may be made to wait on ``gate`` or to raise."""

    def __init__(self, clock: Clock, locks: Any = None, *, jitter: float = 0.0, run_now: bool = True,
                 interval: float = 60.0) -> None:
        super().__init__(
            "test-worker",
            interval,
            clock,
            run_now=run_now,
            component="test_worker",
            lock_id=WorkerLock.CLEANUP if locks is not None else None,
            locks=locks,
            jitter=lambda: jitter,
        )
        self.ticks: list[float] = []
        self.gate: Deferred[None] | None = None
        self.error: Exception | None = None

    async def tick(self) -> None:
        self.ticks.append(self.clock.seconds())
        if self.gate is not None:
            await self.gate
        if self.error is not None:
            raise self.error


def ticks(result: str) -> float:
    return WORKER_TICKS.labels("test_worker", result)._value.get()


class PeriodicWorkerTests(SynchronousTestCase):
    def test_an_unlocked_worker_ticks_at_once_and_every_interval(self) -> None:
        clock = Clock()
        worker = CountingWorker(clock)
        worker.startService()
        clock.advance(60)
        clock.advance(60)
        self.assertEqual(worker.ticks, [0, 60, 120])
        worker.stopService()

    def test_a_locked_worker_starts_after_its_jitter_of_up_to_half_the_interval(self) -> None:
        clock = Clock()
        worker = CountingWorker(clock, FakeLocks(), jitter=0.5)
        worker.startService()
        clock.advance(14.9)
        self.assertEqual(worker.ticks, [])
        clock.advance(0.1)
        clock.advance(60)
        self.assertEqual(worker.ticks, [15.0, 75.0])
        worker.stopService()

    def test_jitter_is_bounded_by_half_the_interval(self) -> None:
        clock = Clock()
        worker = CountingWorker(clock, FakeLocks(), jitter=7.0)  # a bad jitter source
        worker.startService()
        clock.advance(30)
        self.assertEqual(worker.ticks, [30.0])
        worker.stopService()

    def test_each_tick_runs_under_the_lock_and_releases_it(self) -> None:
        clock = Clock()
        locks = FakeLocks()
        worker = CountingWorker(clock, locks)
        worker.startService()
        self.assertEqual(worker.ticks, [0])
        self.assertEqual(locks.calls, [("try", WorkerLock.CLEANUP), ("release", WorkerLock.CLEANUP)])
        self.assertEqual(locks.held, {})
        worker.stopService()

    def test_a_tick_is_skipped_silently_while_another_instance_holds_the_lock(self) -> None:
        clock = Clock()
        locks = FakeLocks()
        locks.taken_elsewhere.add(WorkerLock.CLEANUP)
        worker = CountingWorker(clock, locks)
        skipped, errors = ticks("skipped"), ticks("error")
        worker.startService()
        clock.advance(60)
        self.assertEqual(worker.ticks, [])
        self.assertEqual(ticks("skipped") - skipped, 2)
        self.assertEqual(ticks("error"), errors)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(worker._failures, 0)
        locks.taken_elsewhere.clear()  # the other instance stopped: this one takes over
        clock.advance(60)
        self.assertEqual(worker.ticks, [120])
        worker.stopService()

    def test_a_failing_tick_still_releases_the_lock_and_the_loop_goes_on(self) -> None:
        clock = Clock()
        locks = FakeLocks()
        worker = CountingWorker(clock, locks)
        worker.error = RuntimeError("backend down")
        worker.startService()
        self.assertEqual(locks.held, {})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        worker.error = None
        clock.advance(60)
        self.assertEqual(worker.ticks, [0, 60])
        self.assertEqual(worker._failures, 0)
        worker.stopService()

    def test_a_lock_service_that_fails_counts_an_error_and_the_loop_goes_on(self) -> None:
        clock = Clock()
        locks = FakeLocks()
        locks.fail = ConnectionError("database is down")
        worker = CountingWorker(clock, locks)
        errors = ticks("error")
        worker.startService()
        self.assertEqual(ticks("error") - errors, 1)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        locks.fail = None
        clock.advance(60)
        self.assertEqual(worker.ticks, [60])
        worker.stopService()

    def test_two_instances_never_tick_at_once(self) -> None:
        clock = Clock()
        locks = FakeLocks()
        first, second = CountingWorker(clock, locks), CountingWorker(clock, locks)
        first.gate = Deferred()  # a long tick
        first.startService()
        second.startService()
        clock.advance(60)
        self.assertEqual((first.ticks, second.ticks), ([0], []))
        first.gate.callback(None)
        clock.advance(60)
        self.assertEqual(second.ticks, [120])
        first.stopService()
        second.stopService()

    def test_stopping_before_the_jitter_ran_cancels_the_start(self) -> None:
        clock = Clock()
        worker = CountingWorker(clock, FakeLocks(), jitter=0.9)
        worker.startService()
        self.assertIsNone(worker.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(600)
        self.assertEqual(worker.ticks, [])

    def test_stopping_waits_for_the_tick_in_flight_which_releases_its_lock_first(self) -> None:
        clock = Clock()
        locks = FakeLocks()
        worker = CountingWorker(clock, locks)
        worker.gate = Deferred()
        worker.startService()
        stopped = worker.stopService()
        assert stopped is not None
        self.assertNoResult(stopped)
        self.assertEqual(locks.held, {WorkerLock.CLEANUP: "held"})
        worker.gate.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(locks.held, {})

    def test_run_once_honours_the_lock_too(self) -> None:
        clock = Clock()
        locks = FakeLocks()
        locks.taken_elsewhere.add(WorkerLock.CLEANUP)
        worker = CountingWorker(clock, locks)
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(worker.run_once())))
        self.assertEqual(worker.ticks, [])

    def test_local_locks_exclude_within_one_process(self) -> None:
        locks = LocalWorkerLocks()
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(locks.try_lock(1003))))
        self.assertFalse(self.successResultOf(Deferred.fromCoroutine(locks.try_lock(1003))))
        self.successResultOf(Deferred.fromCoroutine(locks.release(1003)))
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(locks.try_lock(1003))))


class FakeCleanupStore:
    """The cleanup calls of a store."""

    def __init__(self, items: list[CleanupItem]) -> None:
        self.items = items
        self.claims: list[tuple[float, int, str, float]] = []
        self.done: list[int] = []

    async def claim_cleanups(self, now: float, limit: int, owner: str, grace: float) -> list[CleanupItem]:
        self.claims.append((now, limit, owner, grace))
        claimed, self.items = self.items[:limit], self.items[limit:]
        return claimed

    async def cleanup_done(self, ids: Sequence[int], now: float) -> None:
        self.done.extend(ids)


class CleanupQueueWorkerTests(SynchronousTestCase):
    def test_ticks_claim_due_rows_for_this_instance_and_delete_them(self) -> None:
        clock = Clock()
        clock.advance(1000)
        items = [CleanupItem(i, "b1", f"k{i}", 10, "delete") for i in range(3)]
        store = FakeCleanupStore(items)
        backend = MemoryBackend("b1")
        backend.objects.update({item.storage_key: b"x" * 10 for item in items})
        cleanups = Cleanups(
            store=store,  # type: ignore[arg-type]
            fleet=BackendFleet([], {"b1": backend}),
            clock=clock,
            concurrency=4,
        )
        locks = FakeLocks()
        worker = CleanupQueueWorker(
            cleanups, clock, CleanupQueueConfig(claim_grace_period=300.0), owner="host:42:abc", locks=locks, batch=2
        )
        self.assertEqual((worker.name, worker.lock_id, worker.interval), ("cleanup-queue", WorkerLock.CLEANUP, 60.0))
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(worker.run_once())))
        self.assertEqual(store.claims, [(1000.0, 2, "host:42:abc", 300.0)])
        self.assertEqual(sorted(store.done), [0, 1])
        self.assertEqual(sorted(backend.objects), ["k2"])  # the third waits for the next tick
        self.assertEqual(locks.calls, [("try", 1003), ("release", 1003)])


    def test_the_queue_runs_at_most_cleanup_queue_concurrency_deletes_at_once(self) -> None:
        """``cleanup_queue.concurrency`` bounds the worker's deletes, apart from the requests'
        bound (``server.delete_concurrency``, 16 here)."""
        pending: list[Deferred[None]] = []

        class SlowBackend:
            async def delete_object(self, key: str) -> None:
                d: Deferred[None] = Deferred()
                pending.append(d)
                await d

        clock = Clock()
        store = FakeCleanupStore([CleanupItem(i, "b1", f"k{i}", 1, "delete") for i in range(7)])
        cleanups = Cleanups(
            store=store,  # type: ignore[arg-type]
            fleet=BackendFleet([], {"b1": SlowBackend()}),  # type: ignore[dict-item]
            clock=clock,
            concurrency=16,
        )
        worker = CleanupQueueWorker(
            cleanups, clock, CleanupQueueConfig(concurrency=3), owner="o", locks=None, batch=50
        )
        tick = Deferred.fromCoroutine(worker.run_once())
        in_flight: list[int] = []
        while not all(d.called for d in pending) or len(pending) < 7:
            waiting = [d for d in pending if not d.called]
            in_flight.append(len(waiting))
            waiting[0].callback(None)
        self.assertTrue(self.successResultOf(tick))
        self.assertEqual((max(in_flight), len(pending), sorted(store.done)), (3, 7, list(range(7))))


class BuildTests(SynchronousTestCase):
    """tap.build gives every shared-state worker the instance's worker locks."""

    def test_workers_get_locks_an_owner_and_the_claim_grace_and_locks_close_after_them(self) -> None:
        from s3orch.tap import build
        from s3orch.workers.multipart_gc import MultipartGCWorker
        from s3orch.workers.quota_metrics import QuotaMetricsWorker

        config = load_config_from_string(
            """
server: {listen_addr: "127.0.0.1:0"}
database: {driver: sqlite, path: "/nonexistent/s3orch.db"}
cleanup_queue: {claim_grace_period: 90s}
buckets:
  - name: photos
    credentials: [{access_key_id: AK, secret_access_key: SK}]
backends:
  - {name: b1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: k, secret_access_key: s}
"""
        )
        service = build(config, MemoryReactorClock())
        cleanup = service.getServiceNamed("cleanup-queue")
        assert isinstance(cleanup, CleanupQueueWorker)
        self.assertIsInstance(cleanup.locks, LocalWorkerLocks)
        self.assertEqual(cleanup.lock_id, WorkerLock.CLEANUP)
        self.assertEqual(cleanup.claim_grace, 90.0)
        self.assertRegex(cleanup.owner, r"^.+:\d+:[0-9a-f]{8}$")
        gc = service.getServiceNamed("multipart-gc")
        assert isinstance(gc, MultipartGCWorker)
        self.assertIs(gc.locks, cleanup.locks)
        self.assertEqual(gc.lock_id, WorkerLock.MULTIPART_GC)
        usage = service.getServiceNamed("usage-flush")
        assert isinstance(usage, QuotaMetricsWorker)
        self.assertFalse(usage.exclusive)  # per-instance gauges
        assert cleanup.locks is not None
        self.assertIn(cleanup.locks.close, service.closers)
