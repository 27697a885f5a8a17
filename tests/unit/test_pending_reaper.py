"""Pending-intent resolution (``s3orch.core.intents``: what it decides from a backend
HEAD, what it counts) and the pending reaper that schedules it (how it ticks).

Driven by ``task.Clock``, ``MemoryBackend`` and an in-memory fake of the store's
intent calls (the store's own behaviour is the contract suite's:
tests/store/test_contract_pending.py).  No sockets, threads or sleeps.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from s3orch.backend.interface import BackendError
from s3orch.backend.memory import MemoryBackend
from s3orch.config import load_config_from_string
from s3orch.config.model import PendingPatternConfig, UsageFlushConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.intents import IntentResolver
from s3orch.observe.metrics import CLEANUP_ENQUEUED, PENDING_DEPTH, PENDING_RESOLVED
from s3orch.store.interface import (
    INTENT_ALREADY_RESOLVED,
    INTENT_AMBIGUOUS,
    INTENT_DROP,
    INTENT_DROPPED,
    INTENT_KEEP,
    INTENT_PROMOTE,
    INTENT_PROMOTED,
    INTENT_SUPERSEDED,
    CleanupItem,
    IntentResolution,
    PendingIntent,
    StoreUnavailable,
)
from s3orch.store.locks import WorkerLock
from s3orch.workers.pending_reaper import PendingReaper
from tests.unit.test_workers import FakeLocks

T = TypeVar("T")
NOW = 1_700_000_000.0


class FakeIntentStore:
    """The intent calls of a store: answers what the test scripted, records what was asked.

    ``resolve_intent`` answers like the real store for the outcome asked (promote ->
    promoted with ``displaced``; drop -> dropped or superseded with the upload queued;
    keep -> ambiguous), unless ``answers`` overrides it for a write id.
    """

    def __init__(self, intents: list[PendingIntent]) -> None:
        self.intents = list(intents)
        self.claims: list[tuple[float, float, int, str, float]] = []
        self.resolved: list[tuple[str, str, float]] = []
        self.answers: dict[str, IntentResolution | Exception] = {}
        self.displaced: list[CleanupItem] = []
        self.done: list[int] = []
        self.failed: list[int] = []
        self._ids = 100

    async def stale_intents(
        self, now: float, min_age: float, limit: int, owner: str = "", grace: float = 300.0
    ) -> list[PendingIntent]:
        self.claims.append((now, min_age, limit, owner, grace))
        stale = [i for i in self.intents if i.created_at <= now - min_age][:limit]
        return stale

    async def resolve_intent(
        self, write_id: str, outcome: str, now: float, *, events: Sequence[object] = ()
    ) -> IntentResolution:
        self.resolved.append((write_id, outcome, now))
        answer = self.answers.get(write_id)
        if isinstance(answer, Exception):
            raise answer
        intent = next((i for i in self.intents if i.write_id == write_id), None)
        if answer is None:
            if intent is None:
                answer = IntentResolution(INTENT_ALREADY_RESOLVED)
            elif outcome == INTENT_KEEP:
                answer = IntentResolution(INTENT_AMBIGUOUS)
            elif outcome == INTENT_PROMOTE:
                answer = IntentResolution(INTENT_PROMOTED, list(self.displaced))
            else:
                self._ids += 1
                item = CleanupItem(self._ids, intent.backend, intent.storage_key, intent.size, "pending_dropped")
                status = INTENT_SUPERSEDED if intent.superseded else INTENT_DROPPED
                answer = IntentResolution(status, [item])
        if answer.status != INTENT_AMBIGUOUS:
            self.intents = [i for i in self.intents if i.write_id != write_id]
        return answer

    async def count_intents(self) -> int:
        return len(self.intents)

    async def cleanup_done(self, ids: list[int], now: float) -> None:
        self.done.extend(ids)

    async def cleanup_failed(self, item_id: int, error: str, now: float) -> bool:
        self.failed.append(item_id)
        return False


def pending(name: str, size: int = 5, *, backend: str = "b1", age: float = 600.0, **flags: bool) -> PendingIntent:
    return PendingIntent(
        write_id=f"w-{name}",
        bucket="bkt",
        key=name,
        backend=backend,
        storage_key=f"bkt/{name}/w-{name}",
        size=size,
        created_at=NOW - age,
        **flags,
    )


def resolved(status: str) -> float:
    return PENDING_RESOLVED.labels(status)._value.get()


def enqueued(reason: str) -> float:
    return CLEANUP_ENQUEUED.labels(reason)._value.get()


class ReaperTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.b1 = MemoryBackend("b1")
        self.b2 = MemoryBackend("b2")

    def resolver(self, store: FakeIntentStore, concurrency: int = 8) -> IntentResolver:
        fleet = BackendFleet([], {"b1": self.b1, "b2": self.b2})
        cleanups = Cleanups(store=store, fleet=fleet, clock=self.clock, concurrency=16)  # type: ignore[arg-type]
        return IntentResolver(
            store=store,  # type: ignore[arg-type]
            fleet=fleet,
            cleanups=cleanups,
            clock=self.clock,
            concurrency=concurrency,
        )

    def reaper(
        self, store: FakeIntentStore, config: PendingPatternConfig = PendingPatternConfig(), **kwargs: Any
    ) -> PendingReaper:
        kwargs.setdefault("jitter", lambda: 0.0)
        kwargs.setdefault("owner", "test")
        kwargs.setdefault("claim_grace", 300.0)
        kwargs.setdefault("locks", None)
        return PendingReaper(self.resolver(store), self.clock, config, **kwargs)

    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coro))

    def stored(self, intent: PendingIntent, data: bytes | None = None, backend: MemoryBackend | None = None) -> None:
        (backend or self.b1).objects[intent.storage_key] = data if data is not None else b"x" * intent.size

    def test_bytes_present_with_the_expected_size_are_promoted_and_displaced_copies_deleted(self) -> None:
        intent = pending("k", 5)
        self.stored(intent)
        self.b2.objects["bkt/k/old"] = b"old"
        store = FakeIntentStore([intent])
        store.displaced = [CleanupItem(7, "b2", "bkt/k/old", 3, "overwrite_displaced")]
        before, displaced = resolved("promoted"), enqueued("overwrite_displaced")
        statuses = self.wait(self.resolver(store).resolve_all([intent]))
        self.assertEqual(statuses, [INTENT_PROMOTED])
        self.assertEqual(store.resolved, [("w-k", INTENT_PROMOTE, NOW)])
        self.assertEqual(self.b1.calls, [("head_object", intent.storage_key)])
        self.assertEqual(self.b1.objects, {intent.storage_key: b"xxxxx"})  # kept: it is the object now
        self.assertEqual(self.b2.objects, {})  # the previous copy went at once
        self.assertEqual(store.done, [7])
        self.assertEqual((resolved("promoted") - before, enqueued("overwrite_displaced") - displaced), (1, 1))

    def test_absent_bytes_are_dropped_and_the_key_deleted_in_case_an_upload_lands_late(self) -> None:
        intent = pending("k")
        store = FakeIntentStore([intent])
        before = resolved("dropped")
        self.assertEqual(self.wait(self.resolver(store).resolve_all([intent])), [INTENT_DROPPED])
        self.assertEqual(store.resolved, [("w-k", INTENT_DROP, NOW)])
        self.assertEqual(
            self.b1.calls, [("head_object", intent.storage_key), ("delete_object", intent.storage_key)]
        )
        self.assertEqual(store.done, [101])  # orphan bytes released at once: quota exact
        self.assertEqual(resolved("dropped") - before, 1)

    def test_a_backend_error_other_than_404_keeps_the_intent_for_a_later_try(self) -> None:
        intent = pending("k")
        self.stored(intent)
        self.b1.fail_next("head_object", error=BackendError("forbidden", status=403, code="AccessDenied"))
        store = FakeIntentStore([intent])
        before = resolved("ambiguous")
        resolver = self.resolver(store)
        self.assertEqual(self.wait(resolver.resolve_all([intent])), [INTENT_AMBIGUOUS])
        self.assertEqual(store.resolved, [("w-k", INTENT_KEEP, NOW)])
        self.assertEqual(resolved("ambiguous") - before, 1)
        self.assertEqual(self.wait(resolver.resolve_all([intent])), [INTENT_PROMOTED])  # next tick

    def test_bytes_of_another_size_are_not_the_write_and_are_dropped(self) -> None:
        intent = pending("k", 5)
        self.stored(intent, b"1234")
        store = FakeIntentStore([intent])
        self.assertEqual(self.wait(self.resolver(store).resolve_all([intent])), [INTENT_DROPPED])
        self.assertEqual(store.resolved[0][1], INTENT_DROP)

    def test_a_head_without_a_usable_content_length_is_ambiguous(self) -> None:
        intent = pending("k")
        self.stored(intent)

        async def no_length(storage_key: str) -> dict[str, str]:
            return {"etag": '"x"'}

        self.b1.head_object = no_length  # type: ignore[method-assign]
        store = FakeIntentStore([intent])
        self.assertEqual(self.wait(self.resolver(store).resolve_all([intent])), [INTENT_AMBIGUOUS])

    def test_superseded_or_undescribed_intents_are_dropped_without_a_backend_call(self) -> None:
        old = pending("old", superseded=True)
        bare = pending("bare", promotable=False)
        store = FakeIntentStore([old, bare])
        store.answers["w-bare"] = IntentResolution(
            INTENT_DROPPED, [], "the intent recorded no object metadata"
        )
        dropped = resolved("dropped")
        statuses = self.wait(self.resolver(store).resolve_all([old, bare]))
        self.assertEqual(statuses, [INTENT_SUPERSEDED, INTENT_DROPPED])
        self.assertEqual([r[1] for r in store.resolved], [INTENT_DROP, INTENT_DROP])
        self.assertEqual(self.b1.calls, [("delete_object", old.storage_key)])  # no HEAD at all
        self.assertEqual(resolved("dropped") - dropped, 2)  # superseded counts as dropped

    def test_an_intent_on_a_backend_no_longer_configured_is_dropped(self) -> None:
        intent = pending("k", backend="gone")
        store = FakeIntentStore([intent])
        self.assertEqual(self.wait(self.resolver(store).resolve_all([intent])), [INTENT_DROPPED])
        self.assertEqual(store.done, [101])  # its cleanup row is simply finished

    def test_an_intent_resolved_meanwhile_is_counted_already_resolved(self) -> None:
        intent = pending("k")
        self.stored(intent)
        store = FakeIntentStore([intent])
        store.answers["w-k"] = IntentResolution(INTENT_ALREADY_RESOLVED)
        before = resolved("already_resolved")
        self.assertEqual(self.wait(self.resolver(store).resolve_all([intent])), [INTENT_ALREADY_RESOLVED])
        self.assertEqual(resolved("already_resolved") - before, 1)

    def test_one_failing_intent_does_not_stop_the_others_and_a_database_failure_fails_the_tick(self) -> None:
        intents = [pending("a"), pending("b"), pending("c")]
        for intent in intents:
            self.stored(intent)
        store = FakeIntentStore(intents)
        store.answers["w-a"] = StoreUnavailable("connection refused")
        store.answers["w-b"] = RuntimeError("a bug")
        reaper = self.reaper(store)
        failure = self.failureResultOf(Deferred.fromCoroutine(reaper.resolver.resolve_all(intents)))
        failure.trap(StoreUnavailable)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # the bug is logged
        self.assertEqual([r[0] for r in store.resolved], ["w-a", "w-b", "w-c"])
        self.assertEqual([i.write_id for i in store.intents], ["w-a", "w-b"])  # c was promoted
        self.assertFalse(self.wait(reaper.run_once()))  # as a tick: failed, logged, counted
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_ticks_claim_stale_intents_under_lock_1012_and_refresh_the_depth(self) -> None:
        fresh, stale = pending("fresh", age=10), pending("stale", age=400)
        self.stored(stale)
        store = FakeIntentStore([fresh, stale])
        locks = FakeLocks()
        reaper = self.reaper(
            store,
            PendingPatternConfig(reaper_tick=60.0, min_age=300.0, batch_size=7),
            owner="host:1:abc",
            claim_grace=90.0,
            locks=locks,
        )
        self.assertEqual(
            (reaper.name, reaper.component, reaper.lock_id),
            ("pending-reaper", "pending_reaper", WorkerLock.PENDING_REAPER),
        )
        reaper.startService()
        self.clock.advance(60)
        self.assertEqual(store.claims, [(NOW + 60, 300.0, 7, "host:1:abc", 90.0)])
        self.assertEqual(store.resolved, [("w-stale", INTENT_PROMOTE, NOW + 60)])
        self.assertEqual(PENDING_DEPTH._value.get(), 1)  # the fresh one, still in flight
        self.assertEqual(locks.calls, [("try", 1012), ("release", 1012)])
        locks.taken_elsewhere.add(WorkerLock.PENDING_REAPER)
        self.clock.advance(60)
        self.assertEqual(len(store.claims), 1)  # another instance reaps this minute
        locks.taken_elsewhere.clear()
        self.clock.advance(300)
        self.assertEqual(store.resolved[-1], ("w-fresh", INTENT_DROP, NOW + 420))  # now stale; no bytes
        self.assertEqual(PENDING_DEPTH._value.get(), 0)
        reaper.stopService()

    def test_heads_run_at_most_concurrency_at_once(self) -> None:
        intents = [pending(f"k{i}") for i in range(5)]
        gates: list[Deferred[None]] = []
        active = [0]
        most = [0]

        async def slow_head(storage_key: str) -> dict[str, str]:
            active[0] += 1
            most[0] = max(most[0], active[0])
            gate: Deferred[None] = Deferred()
            gates.append(gate)
            await gate
            active[0] -= 1
            return {"content-length": "5"}

        self.b1.head_object = slow_head  # type: ignore[method-assign]
        store = FakeIntentStore(intents)
        done = Deferred.fromCoroutine(self.resolver(store, concurrency=2).resolve_all(intents))
        while gates:
            self.assertLessEqual(active[0], 2)
            gates.pop(0).callback(None)
        self.assertEqual(self.successResultOf(done), [INTENT_PROMOTED] * 5)
        self.assertEqual(most[0], 2)


class BuildTests(SynchronousTestCase):
    CONFIG = """
server: {{listen_addr: "127.0.0.1:0"}}
database: {{driver: sqlite, path: "/nonexistent/s3orch.db"}}
cleanup_queue: {{claim_grace_period: 90s}}
write_path: {{pending_pattern: {pending}}}
buckets:
  - name: photos
    credentials: [{{access_key_id: AK, secret_access_key: SK}}]
backends:
  - {{name: b1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: k, secret_access_key: s}}
"""

    def build(self, pending: str) -> dict[str, Any]:
        from twisted.internet.testing import MemoryReactorClock

        from s3orch.tap import build

        config = load_config_from_string(self.CONFIG.format(pending=pending))
        service = build(config, MemoryReactorClock())
        return {w.name: w for w in service.workers}

    def test_the_reaper_runs_with_the_configured_tick_age_batch_and_the_instances_claims(self) -> None:
        workers = self.build("{reaper_tick: 2m, min_age: 10m, batch_size: 20}")
        reaper = workers["pending-reaper"]
        self.assertIsInstance(reaper, PendingReaper)
        self.assertEqual((reaper.interval, reaper.min_age, reaper.batch), (120.0, 600.0, 20))
        self.assertEqual((reaper.lock_id, reaper.claim_grace), (WorkerLock.PENDING_REAPER, 90.0))
        cleanup = workers["cleanup-queue"]
        self.assertIs(reaper.locks, cleanup.locks)
        self.assertEqual(reaper.owner, cleanup.owner)  # one name per instance

    def test_the_defaults_are_one_minute_five_minutes_fifty(self) -> None:
        reaper = self.build("{}")["pending-reaper"]
        self.assertEqual((reaper.interval, reaper.min_age, reaper.batch), (60.0, 300.0, 50))

    def test_disabled_means_no_reaper(self) -> None:
        self.assertNotIn("pending-reaper", self.build("{enabled: false}"))


class DepthGaugeTests(SynchronousTestCase):
    def test_every_instance_refreshes_the_depth_with_its_quota_gauges(self) -> None:
        from s3orch.workers.quota_metrics import QuotaMetricsWorker

        class Store:
            async def get_quotas(self) -> dict[str, Any]:
                return {}

            async def count_intents(self) -> int:
                return 3

            async def cleanup_queue_page(self, limit: int) -> tuple[int, list[object]]:
                return 0, []

            async def cleanup_dlq_page(self, backend: str | None, limit: int) -> tuple[int, int, list[object]]:
                return 0, 0, []

        worker = QuotaMetricsWorker(Store(), Clock(), UsageFlushConfig())  # type: ignore[arg-type]
        self.assertFalse(worker.exclusive)
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(worker.run_once())))
        self.assertEqual(PENDING_DEPTH._value.get(), 3)
