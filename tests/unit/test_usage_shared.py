"""Usage limits over shared counters (``redis.address``): two trackers (two gateways) on one
in-memory Redis double and one usage-store double, a Clock, one set of worker locks (one
database).  What each sees of the other's counts, the flush under lock 1007, a failed database
write, and Redis down then back (BEHAVIOURS §1.8)."""

from __future__ import annotations

from twisted.internet.task import Clock

from s3orch.config.model import BackendConfig
from s3orch.redis.shared import CounterKey
from s3orch.store.lock_ids import WorkerLock
from s3orch.store.locks import LocalWorkerLocks
from s3orch.usage.counters import Delta
from s3orch.usage.shared import LOAD_EVERY, SharedUsageCounters, previous_period
from s3orch.usage.tracker import UsageTracker
from tests.unit.test_redis_counters import DOWN, UP, FakeRedis, _counters
from tests.unit.test_usage_flush import MID_DECEMBER, Store, done

CONFIGS = [BackendConfig(name="b1", api_request_limit=10), BackendConfig(name="b2")]
PERIOD = "2026-12"


def gateway(redis: FakeRedis, store: Store, clock: Clock, name: str) -> tuple[UsageTracker, SharedUsageCounters]:
    shared = _counters(redis, clock, instance=name)
    counters = SharedUsageCounters(shared, clock, lambda: [c.name for c in CONFIGS], lambda: tracker.period())
    tracker = UsageTracker(lambda: CONFIGS, clock, counters)
    counters.bind(tracker.baseline, lambda: tracker.refresh(store))
    done(tracker.refresh(store))
    return tracker, counters


def two() -> tuple[FakeRedis, Store, Clock, UsageTracker, UsageTracker]:
    redis, store, clock = FakeRedis(), Store(), Clock()
    clock.advance(MID_DECEMBER)
    a, _ = gateway(redis, store, clock, "a")
    b, _ = gateway(redis, store, clock, "b")
    return redis, store, clock, a, b


def settle(clock: Clock, *trackers: UsageTracker) -> None:
    """Let pushes go out and the estimates age, then ask each tracker once (which reloads)."""
    clock.advance(0)
    clock.advance(LOAD_EVERY * 2)
    for tracker in trackers:
        tracker.usage("b1")


def test_each_gateway_sees_the_others_counts_and_refuses_the_call_that_crosses_the_limit() -> None:
    redis, _, clock, a, b = two()
    for _ in range(6):
        a.record("b1", Delta(1, 0, 0))
    for _ in range(3):
        b.record("b1", Delta(1, 0, 0))
    settle(clock, a, b)
    assert redis.counters[CounterKey("b1", PERIOD, "api_requests")] == 9
    assert a.usage("b1").api_requests == 9 and b.usage("b1").api_requests == 9
    assert a.exceeded("b1", Delta(1, 0, 0)) is None  # the 10th fits
    b.record("b1", Delta(1, 0, 0))
    assert b.exceeded("b1", Delta(1, 0, 0)) == "api_requests"  # its own add counts at once
    settle(clock, a)
    assert a.exceeded("b1", Delta(1, 0, 0)) == "api_requests"  # and the other's after one load


def test_the_flush_drains_redis_into_the_database_once_under_lock_1007() -> None:
    redis, store, clock, a, b = two()
    locks = LocalWorkerLocks()
    a.record("b1", Delta(4, 100, 0))
    b.record("b1", Delta(2, 0, 50))
    settle(clock, a, b)
    assert done(a.flush(store, locks=locks)) == 1
    assert store.rows[("b1", PERIOD)] == (6, 100, 50)
    assert redis.counters.get(CounterKey("b1", PERIOD, "api_requests"), 0) == 0
    # b's baseline is stale: it keeps its estimate (never lower) and re-reads the database.
    assert b.usage("b1") == Delta(6, 100, 50)
    settle(clock, a, b)
    b.record("b1", Delta(1, 0, 0))
    assert a.usage("b1") == Delta(6, 100, 50)
    settle(clock, a, b)
    assert a.usage("b1") == b.usage("b1") == Delta(7, 100, 50)
    a.record("b1", Delta(1, 0, 0))  # after a's flush, b sees a's new traffic too (re-read baseline)
    settle(clock, a, b)
    assert b.usage("b1") == Delta(8, 100, 50)
    # Lock 1007 held elsewhere: b writes nothing, drains nothing, only refreshes.
    done(locks.try_lock(WorkerLock.USAGE_FLUSH))
    assert done(b.flush(store, locks=locks)) == 0
    assert store.rows[("b1", PERIOD)] == (6, 100, 50)
    done(locks.release(WorkerLock.USAGE_FLUSH))
    done(b.flush(store, locks=locks))
    assert store.rows[("b1", PERIOD)] == (8, 100, 50)


def test_a_failed_database_write_gives_the_drained_counts_back_to_redis() -> None:
    redis, store, clock, a, b = two()
    a.record("b1", Delta(3, 0, 0))
    b.record("b2", Delta(0, 7, 0))
    settle(clock, a, b)
    store.fail = True
    try:
        done(a.flush(store, locks=LocalWorkerLocks()))
    except ConnectionError:
        pass
    else:
        raise AssertionError("the write was to fail")
    settle(clock, a, b)
    assert redis.counters[CounterKey("b1", PERIOD, "api_requests")] == 3
    assert redis.counters[CounterKey("b2", PERIOD, "egress_bytes")] == 7
    assert a.usage("b1").api_requests == 3 and b.usage("b2").egress_bytes == 7
    store.fail = False
    done(b.flush(store, locks=LocalWorkerLocks()))
    assert store.rows == {("b1", PERIOD): (3, 0, 0), ("b2", PERIOD): (0, 7, 0)}


def test_redis_down_counts_locally_keeps_the_estimate_and_the_replay_counts_once() -> None:
    redis, store, clock, a, b = two()
    locks = LocalWorkerLocks()
    a.record("b1", Delta(5, 0, 0))
    settle(clock, a, b)
    assert b.usage("b1").api_requests == 5
    redis.mode = DOWN
    for _ in range(4):  # failure_threshold 3: the breaker opens
        a.record("b1", Delta(1, 0, 0))
        b.record("b1", Delta(1, 0, 0))
        settle(clock, a, b)
    # Each still counts what it knew plus its own traffic; neither forgot the other's 5.
    assert a.usage("b1").api_requests >= 9 and b.usage("b1").api_requests >= 9
    done(a.flush(store, locks=locks))  # while down: a's local (pending) deltas only
    redis.mode = UP
    clock.advance(15.0)
    for tracker in (a, b):
        shared = tracker.counters.shared  # type: ignore[attr-defined]
        done(shared.probe())
    done(a.flush(store, locks=locks))
    done(b.flush(store, locks=locks))
    assert store.rows[("b1", PERIOD)] == (13, 0, 0)  # 5 + 4 + 4: none lost, none doubled
    settle(clock, a, b)
    assert a.usage("b1").api_requests == b.usage("b1").api_requests == 13


def test_the_flush_drains_the_previous_month_too() -> None:
    assert previous_period("2027-01") == "2026-12" and previous_period("2026-12") == "2026-11"
    redis, store, clock, a, _ = two()
    redis.counters[CounterKey("b1", "2026-11", "api_requests")] = 2  # booked on the last day
    done(a.flush(store, locks=LocalWorkerLocks()))
    assert store.rows[("b1", "2026-11")] == (2, 0, 0)
