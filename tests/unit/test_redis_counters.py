"""SharedCounters with an in-memory Redis double and a Clock: batching, the breaker's fallback to
local counting, the probe, the replay in one transaction, and exactly-once under every way a
connection can fail (refused before applying, applied with the reply lost, applied late)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from s3orch.observe.metrics import REDIS_FALLBACK_ACTIVE, REDIS_OPERATIONS
from s3orch.redis.client import RedisUnavailable
from s3orch.redis.counters import RedisStartupError, SharedCounters
from s3orch.redis.shared import Batch, CounterKey
from s3orch.workers.redis_probe import RedisProbe
from tests.support.fuzz import examples

A = CounterKey("b1", "2026-12", "api_requests")
B = CounterKey("b2", "2026-12", "egress_bytes")

UP, DOWN, LOST, LATE = "up", "down", "lost", "late"


class FakeRedis:
    """One Redis: counters, each instance's last applied batch number, drain records -- what the
    scripts of ``s3orch.redis.shared`` keep.  ``mode``: ``up``; ``down`` (refused, nothing
    applied); ``lost`` (applied, the reply lost); ``late`` (the reply lost, applied only when
    :meth:`deliver_late` runs: a send that reaches Redis after its retry)."""

    def __init__(self) -> None:
        self.counters: dict[CounterKey, int] = {}
        self.applied: dict[str, int] = {}
        self.drains: dict[str, list[int]] = {}
        self.mode = UP
        #: When set, apply waits for it (a slow Redis) before doing what ``mode`` says.
        self.hold: Deferred[None] | None = None
        self.late: list[tuple[str, list[Batch]]] = []
        self.apply_calls: list[list[Batch]] = []

    def _apply(self, instance: str, batches: Sequence[Batch]) -> None:
        for batch in batches:
            if batch.seq > self.applied.get(instance, 0):
                for counter, delta in batch.deltas.items():
                    self.counters[counter] = self.counters.get(counter, 0) + delta
                self.applied[instance] = batch.seq

    def deliver_late(self) -> None:
        late, self.late = self.late, []
        for instance, batches in late:
            self._apply(instance, batches)


class FakeStore:
    def __init__(self, redis: FakeRedis, instance: str) -> None:
        self.redis = redis
        self.instance = instance
        self.address = "fake-redis:6379"
        self.closed = False

    def _refuse(self) -> None:
        if self.redis.mode == DOWN:
            raise RedisUnavailable("connection refused")

    async def ping(self) -> None:
        self._refuse()
        if self.redis.mode != UP:
            raise RedisUnavailable("no reply")

    async def apply(self, batches: Sequence[Batch]) -> None:
        self._refuse()
        self.redis.apply_calls.append(list(batches))
        if self.redis.hold is not None:
            await self.redis.hold
        if self.redis.mode == LATE:
            self.redis.late.append((self.instance, [Batch(b.seq, dict(b.deltas)) for b in batches]))
            raise RedisUnavailable("no reply")
        self.redis._apply(self.instance, batches)
        if self.redis.mode == LOST:
            raise RedisUnavailable("connection lost after EXEC")

    async def load(self, counters: Sequence[CounterKey]) -> list[int]:
        self._refuse()
        return [self.redis.counters.get(c, 0) for c in counters]

    async def drain(self, token: str, counters: Sequence[CounterKey]) -> list[int]:
        self._refuse()
        if token not in self.redis.drains:
            self.redis.drains[token] = [self.redis.counters.pop(c, 0) for c in counters]
        if self.redis.mode != UP:
            raise RedisUnavailable("reply lost")
        return self.redis.drains[token]

    async def close(self) -> None:
        self.closed = True


def _counters(redis: FakeRedis, clock: Clock, instance: str = "i1", threshold: int = 3) -> SharedCounters:
    tokens = iter(range(1_000_000))
    return SharedCounters(
        FakeStore(redis, instance),
        failure_threshold=threshold,
        open_timeout=15.0,
        clock=clock,
        new_token=lambda: f"{instance}-t{next(tokens)}",
    )


def _run(coro: object) -> object:
    d = Deferred.fromCoroutine(coro)  # type: ignore[arg-type]
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "the fake store never waits: every call completes at once"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def _ops(operation: str, status: str) -> float:
    return REDIS_OPERATIONS.labels(operation, status)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_adds_of_one_turn_reach_redis_as_one_batch() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock)
    for _ in range(5):
        counters.add(A, 1)
    counters.add(B, 4096)
    counters.add(B, 0)
    assert redis.counters == {}
    before = _ops("pipeline_add", "success")
    clock.advance(0)
    assert redis.counters == {A: 5, B: 4096}
    assert redis.apply_calls == [[Batch(1, {A: 5, B: 4096})]]
    assert _ops("pipeline_add", "success") == before + 1
    assert _run(counters.load([A, B])) == {A: 5, B: 4096}


def test_a_slow_redis_gets_one_push_at_a_time_carrying_everything_added_meanwhile() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock)
    redis.hold = Deferred()
    for _ in range(500):  # 500 turns with one add each while the first push waits
        counters.add(A, 1)
        clock.advance(0)
    assert len(redis.apply_calls) == 1
    held, redis.hold = redis.hold, None
    held.callback(None)
    clock.advance(0)
    assert [[b.seq for b in call] for call in redis.apply_calls] == [[1], [2]]
    assert redis.counters == {A: 500} and counters.local() == {}


def test_start_fails_naming_the_address_when_redis_does_not_answer() -> None:
    redis, clock = FakeRedis(), Clock()
    redis.mode = DOWN
    with pytest.raises(RedisStartupError, match=r"redis.address fake-redis:6379: Redis did not answer PING"):
        _run(_counters(redis, clock).start())
    redis.mode = UP
    _run(_counters(redis, clock).start())


def test_failures_open_the_breaker_and_counting_goes_on_locally() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock)
    redis.mode = DOWN
    for i in range(3):
        counters.add(A, 1)
        clock.advance(0)
        assert counters.shared is (i < 2)
    assert REDIS_FALLBACK_ACTIVE._value.get() == 1  # type: ignore[attr-defined]
    calls = len(redis.apply_calls)
    for _ in range(10):
        counters.add(A, 1)
        clock.advance(0)
    assert len(redis.apply_calls) == calls  # open: no call is even tried
    assert _run(counters.load([A])) == {A: 13}  # this instance's counts, local
    assert counters.status()["shared"] is False


def test_the_probe_replays_every_local_delta_in_one_transaction_after_the_open_timeout() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock, threshold=1)
    probe = RedisProbe(counters, clock)
    probe.startService()
    redis.counters[A] = 100  # another instance's counts
    redis.mode = DOWN
    counters.add(A, 1)
    clock.advance(0)
    assert not counters.shared
    for _ in range(7):
        counters.add(A, 2)
        counters.add(B, 10)
    redis.mode = UP
    clock.advance(10)  # two probe ticks, before the open timeout: nothing sent
    assert redis.apply_calls == [] and not counters.shared
    clock.advance(5)  # 15 s: the probe is due
    assert counters.shared
    assert REDIS_FALLBACK_ACTIVE._value.get() == 0  # type: ignore[attr-defined]
    assert len(redis.apply_calls) == 1  # ONE transaction: the in-doubt batch, then the rest
    (replay,) = redis.apply_calls
    assert [b.seq for b in replay] == [1, 2]
    assert redis.counters == {A: 115, B: 70}
    assert counters.local() == {}
    probe.stopService()


def test_an_applied_batch_whose_reply_was_lost_is_not_counted_twice() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock)
    redis.mode = LOST
    counters.add(A, 3)
    clock.advance(0)
    assert redis.counters == {A: 3}  # applied, but the gateway cannot know
    assert counters.local() == {A: 3}  # in doubt: still held
    assert _run(counters.load([A])) == {A: 6}  # errs high, never low, while in doubt
    redis.mode = UP
    counters.add(A, 1)
    clock.advance(0)
    assert redis.counters == {A: 4}
    assert counters.local() == {}


def test_a_send_applied_after_its_retry_is_not_counted_twice() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock)
    redis.mode = LATE
    counters.add(A, 3)
    clock.advance(0)
    redis.mode = UP
    _run(counters.probe())  # the retry: batch 1 again
    assert redis.counters == {A: 3}
    redis.deliver_late()  # the first send arrives now
    assert redis.counters == {A: 3}


def test_a_replay_cut_short_keeps_the_deltas_and_its_retry_applies_them_once() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock, threshold=1)
    redis.mode = DOWN
    counters.add(A, 5)
    clock.advance(0)
    counters.add(A, 6)
    redis.mode = LOST  # the replay is applied, its reply lost
    clock.advance(15)
    _run(counters.probe())
    assert redis.counters == {A: 11} and not counters.shared
    assert counters.local() == {A: 11}  # zeroed only once EXEC's reply says so
    redis.mode = DOWN  # the next replay is refused before applying
    clock.advance(15)
    _run(counters.probe())
    assert counters.local() == {A: 11}
    redis.mode = UP
    clock.advance(15)
    _run(counters.probe())
    assert counters.shared and counters.local() == {} and redis.counters == {A: 11}


def test_drain_takes_redis_counts_once_even_when_its_reply_is_lost() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock)
    counters.add(A, 7)
    counters.add(B, 9)
    clock.advance(0)
    redis.mode = LOST
    with pytest.raises(RedisUnavailable):
        _run(counters.drain([A, B]))
    assert redis.counters == {}  # read and zeroed in Redis, the values lost in transit
    redis.mode = UP
    counters.add(A, 1)
    clock.advance(0)
    assert _run(counters.drain([A, B])) == {A: 7, B: 9}  # the same drain, answered from its record
    assert _run(counters.drain([A, B])) == {A: 1}


def test_while_down_the_drain_takes_pending_deltas_but_never_in_doubt_ones() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock, threshold=1)
    redis.mode = LOST
    counters.add(A, 2)  # applied in Redis, reply lost: in doubt
    clock.advance(0)
    assert not counters.shared
    counters.add(A, 5)
    counters.add(B, 1)
    assert _run(counters.drain([A])) == {A: 5}  # for PostgreSQL directly, as without Redis
    assert counters.local() == {A: 2, B: 1}
    redis.mode = UP
    clock.advance(15)
    _run(counters.probe())
    assert redis.counters == {A: 2, B: 1}


def test_close_pushes_what_is_pending_and_closes_the_store() -> None:
    redis, clock = FakeRedis(), Clock()
    counters = _counters(redis, clock)
    counters.add(A, 1)
    _run(counters.close())
    assert redis.counters == {A: 1}
    assert counters.store.closed  # type: ignore[attr-defined]
    assert clock.getDelayedCalls() == []


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from([A, B]), st.integers(1, 1000)),
        st.tuples(st.just("mode"), st.sampled_from([UP, DOWN, LOST, LATE]), st.just(0)),
        st.tuples(st.just("turn"), st.sampled_from([0.0, 5.0, 16.0]), st.just(0)),
        st.tuples(st.just("drain"), st.just(None), st.just(0)),
        st.tuples(st.just("late"), st.just(None), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=examples(1000), deadline=None)
@given(_steps)
def test_whatever_fails_and_when_every_add_is_counted_exactly_once(steps: list[tuple[str, object, int]]) -> None:
    """Two instances; any sequence of adds, failures, late deliveries, drains and time; then
    Redis answers again: drained + in Redis == added, exactly."""
    redis, clock = FakeRedis(), Clock()
    instances = [_counters(redis, clock, "i1"), _counters(redis, clock, "i2", threshold=1)]
    probes = [RedisProbe(c, clock) for c in instances]
    for probe in probes:
        probe.startService()
    added: dict[CounterKey, int] = {}
    flushed: dict[CounterKey, int] = {}
    for n, (kind, arg, value) in enumerate(steps):
        counters = instances[n % 2]
        if kind == "add":
            assert isinstance(arg, CounterKey)
            counters.add(arg, value)
            added[arg] = added.get(arg, 0) + value
        elif kind == "mode":
            redis.mode = str(arg)
        elif kind == "turn":
            clock.advance(float(arg))  # type: ignore[arg-type]
        elif kind == "late":
            redis.deliver_late()
        else:
            try:
                got = _run(counters.drain([A, B]))
            except RedisUnavailable:
                continue
            for counter, delta in got.items():  # type: ignore[attr-defined]
                flushed[counter] = flushed.get(counter, 0) + delta
    redis.mode = UP
    redis.deliver_late()
    for _ in range(4):
        clock.advance(16)
    for counters in instances:
        assert counters.shared and counters.local() == {}, counters.status()
        # A drain left in doubt is resolved by the next one.
        for counter, delta in _run(counters.drain([A, B])).items():  # type: ignore[attr-defined]
            flushed[counter] = flushed.get(counter, 0) + delta
    total = {c: flushed.get(c, 0) + redis.counters.get(c, 0) for c in (A, B)}
    assert total == {c: added.get(c, 0) for c in (A, B)}
    for probe in probes:
        probe.stopService()


def test_from_config_takes_the_original_keys() -> None:
    from twisted.internet.testing import MemoryReactorClock

    from s3orch.config.features import RedisConfig
    from s3orch.redis.counters import from_config
    from s3orch.redis.shared import RedisCounterStore

    counters = from_config(
        RedisConfig(address="redis.example:6380", password="pw", key_prefix="tenant", failure_threshold=4,
                    open_timeout=20.0),
        MemoryReactorClock(),
        instance="gw-1",
    )
    store = counters.store
    assert isinstance(store, RedisCounterStore)
    assert store.address == "redis.example:6380" and store.client.password == "pw"
    assert store.key(A) == "tenant:usage:b1:2026-12:api_requests" and store.applied_key == "tenant:applied:gw-1"
    assert (counters.breaker.failure_threshold, counters.breaker.open_timeout) == (4, 20.0)
