"""Copy order by cost and recent latency, and hedged reads (s3orch.core.reads), with in-memory
backends and task.Clock: a hedge fires after ``hedge_after`` and not before, the first headers win,
the other GET is cancelled before any of its bytes is read, and the order learns from it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from s3orch.backend.breaker import guard
from s3orch.backend.memory import MemoryBackend, MemoryStream
from s3orch.config import ConfigError, load_config_from_string
from s3orch.config.model import BackendConfig, ReadPathConfig
from s3orch.core.fleet import BackendFleet
from s3orch.core.reads import AUTO_MIN_SAMPLES, LATENCY_WINDOW, CopyReader, latency_tier
from s3orch.observe.metrics import REGISTRY
from s3orch.store.interface import Location
from tests.unit.test_config import BASE, merge

NAMES = ("b1", "b2", "b3")
DATA = b"0123456789"


class Slow:
    """A backend whose GET headers arrive ``delay`` seconds (of the test's clock) later."""

    def __init__(self, inner: MemoryBackend, clock: Clock) -> None:
        self.inner = inner
        self.name = inner.name
        self.clock = clock
        self.delay = 0.0
        self.ranges: list[tuple[int, int] | None] = []
        self.cancelled = 0
        self.streams: list[MemoryStream] = []

    async def get_object(self, storage_key: str, byte_range: tuple[int, int] | None = None) -> MemoryStream:
        self.ranges.append(byte_range)
        if self.delay > 0:
            def cancel(_: Deferred[None]) -> None:
                self.cancelled += 1
                timer.cancel()

            waiting: Deferred[None] = Deferred(cancel)
            timer = self.clock.callLater(self.delay, waiting.callback, None)
            await waiting
        stream = await self.inner.get_object(storage_key, byte_range)
        self.streams.append(stream)
        return stream

    async def close(self) -> None:
        pass


def rig(
    hedge_after: str = "0s", costs: dict[str, float] | None = None, breakers: bool = False
) -> tuple[CopyReader, dict[str, Slow], Clock, Any]:
    clock = Clock()
    backends = {}
    for name in NAMES:
        memory = MemoryBackend(name)
        memory.objects["k"] = DATA
        backends[name] = Slow(memory, clock)
    clients: dict[str, Any] = dict(backends)
    guards = None
    if breakers:
        clients, guards = guard(clients, failure_threshold=1, open_timeout=60.0, clock=clock)
    configs = [BackendConfig(name=n, read_cost=(costs or {}).get(n, 0.0)) for n in NAMES]
    fleet = BackendFleet(configs, clients, guards)
    return CopyReader(fleet, clock, ReadPathConfig(hedge_after=hedge_after)), backends, clock, guards


def copies() -> tuple[Location, ...]:
    return tuple(Location(name, "k", len(DATA)) for name in NAMES)


def start(reader: CopyReader, byte_range: tuple[int, int] | None = None) -> tuple[Deferred[Any], list[Any]]:
    out: list[Any] = []
    opening = Deferred.fromCoroutine(reader.open(copies(), byte_range))
    opening.addBoth(out.append)
    return opening, out


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.data += data


def hedges(result: str) -> float:
    return REGISTRY.get_sample_value("s3o_hedged_reads_total", {"result": result}) or 0.0


# --- hedging -----------------------------------------------------------------------------------


def test_a_hedge_fires_after_hedge_after_and_the_first_headers_win_the_other_get_cancelled() -> None:
    reader, backends, clock, _ = rig("100ms")
    backends["b1"].delay = 5.0
    won = hedges("won")
    _, out = start(reader)
    clock.advance(0.099)
    assert out == [] and backends["b2"].ranges == []  # not before hedge_after
    clock.advance(0.002)
    ((stream, location),) = out
    assert location.backend == "b2" and backends["b2"].ranges == [None]
    assert backends["b1"].cancelled == 1 and backends["b1"].streams == []  # no byte of the loser
    assert backends["b3"].ranges == []  # one hedge, not a broadcast
    assert hedges("won") == won + 1
    sink = Sink()
    stream.deliver(sink)
    assert sink.data == DATA
    clock.advance(10)
    assert backends["b1"].streams == []  # its timer was cancelled with it


def test_when_the_first_copy_answers_before_the_hedge_the_hedge_is_cancelled_and_counted_lost() -> None:
    reader, backends, clock, _ = rig("100ms")
    backends["b1"].delay = 0.3
    backends["b2"].delay = 0.5
    lost = hedges("lost")
    _, out = start(reader)
    clock.advance(0.1)
    assert backends["b2"].ranges == [None]
    clock.advance(0.2)
    ((_, location),) = out
    assert location.backend == "b1"
    assert backends["b2"].cancelled == 1 and backends["b2"].streams == []
    assert hedges("lost") == lost + 1


def test_a_cancelled_loser_is_not_a_failure_for_its_breaker_nor_the_order() -> None:
    reader, backends, clock, guards = rig("100ms", breakers=True)  # threshold 1: one failure opens
    backends["b1"].delay = 5.0
    _, out = start(reader)
    clock.advance(0.1)
    assert out[0][1].backend == "b2" and backends["b1"].cancelled == 1
    assert guards.states()["b1"]["state"] == "closed"
    assert reader.rank("b1")[:2] == (False, False)  # only slower: not failed


def test_ranges_apply_to_the_hedged_get_too() -> None:
    reader, backends, clock, _ = rig("50ms")
    backends["b1"].delay = 5.0
    _, out = start(reader, (2, 5))
    clock.advance(0.05)
    ((stream, location),) = out
    assert backends["b1"].ranges == [(2, 5)] and backends["b2"].ranges == [(2, 5)]
    sink = Sink()
    stream.deliver(sink)
    assert sink.data == DATA[2:6]


def test_hedging_is_off_by_default_and_a_slow_copy_is_simply_waited_for() -> None:
    reader, backends, clock, _ = rig()
    backends["b1"].delay = 5.0
    _, out = start(reader)
    clock.advance(4.9)
    assert out == [] and backends["b2"].ranges == []
    clock.advance(0.1)
    assert out[0][1].backend == "b1"


def test_a_failed_first_copy_fails_over_at_once_and_the_hedge_timer_follows_the_next_copy() -> None:
    reader, backends, clock, _ = rig("100ms")
    backends["b1"].inner.fail.add("get_object")
    backends["b2"].delay = 5.0
    _, out = start(reader)
    assert backends["b2"].ranges == [None]  # failover, no waiting
    clock.advance(0.1)
    ((_, location),) = out
    assert location.backend == "b3"  # hedged b2 after hedge_after
    assert backends["b2"].cancelled == 1


def test_a_reader_that_gives_up_cancels_every_get_in_flight() -> None:
    reader, backends, clock, _ = rig("100ms")
    backends["b1"].delay = backends["b2"].delay = 5.0
    opening, out = start(reader)
    clock.advance(0.1)
    opening.cancel()
    assert isinstance(out[0], Failure) and out[0].check(CancelledError)
    assert backends["b1"].cancelled == 1 and backends["b2"].cancelled == 1
    clock.advance(10)
    assert backends["b1"].streams == [] and backends["b2"].streams == [] and not clock.getDelayedCalls()


def test_the_slow_backend_moves_last_after_two_hedged_reads_then_nothing_waits_for_it() -> None:
    reader, backends, clock, _ = rig("100ms")
    for _ in range(10):  # a healthy history
        start(reader)
    backends["b1"].delay = 2.0
    for _ in range(2):
        _, out = start(reader)
        clock.advance(0.1)
        assert out[0][1].backend == "b2"
    assert [c.backend for c in reader.order(copies())] == ["b2", "b3", "b1"]
    calls = len(backends["b1"].ranges)
    _, out = start(reader)
    assert out[0][1].backend == "b2" and len(backends["b1"].ranges) == calls
    clock.advance(LATENCY_WINDOW + 1)  # its samples age out: tried (and measured) again
    assert reader.order(copies())[0].backend == "b1"


@pytest.mark.parametrize("samples", [AUTO_MIN_SAMPLES - 1, AUTO_MIN_SAMPLES])
def test_auto_hedges_at_the_backends_recent_p95_once_it_has_enough_samples(samples: int) -> None:
    reader, backends, clock, _ = rig("auto")
    for name in NAMES:
        for _ in range(samples):
            reader.latencies.observe(name, 0.2)
    backends["b1"].delay = 5.0
    _, out = start(reader)
    clock.advance(0.19)
    assert out == [] and backends["b2"].ranges == []
    clock.advance(0.02)
    if samples < AUTO_MIN_SAMPLES:  # too few samples to know its p95: no hedge, b1 is waited for
        assert out == [] and backends["b2"].ranges == []
        clock.advance(5)
        assert out[0][1].backend == "b1"
    else:
        assert out[0][1].backend == "b2"


# --- order ----------------------------------------------------------------------------------


def test_cost_orders_healthy_copies_and_health_beats_cost() -> None:
    reader, backends, _, guards = rig(costs={"b1": 2.0, "b2": 0.0, "b3": 1.0}, breakers=True)
    assert [c.backend for c in reader.order(copies())] == ["b2", "b3", "b1"]
    guards["b2"]._move("open")
    assert [c.backend for c in reader.order(copies())] == ["b3", "b1", "b2"]
    reader.failed("b3")
    assert [c.backend for c in reader.order(copies())] == ["b1", "b3", "b2"]


def test_latency_breaks_cost_ties_and_is_compared_by_doublings() -> None:
    reader, _, clock, _ = rig(costs={"b1": 1.0, "b2": 1.0, "b3": 0.5})
    for _ in range(5):
        reader.latencies.observe("b1", 0.400)
        reader.latencies.observe("b2", 0.012)
        reader.latencies.observe("b3", 3.0)  # slow but cheapest: cost dominates
    assert [c.backend for c in reader.order(copies())] == ["b3", "b2", "b1"]
    for _ in range(20):
        reader.latencies.observe("b1", 0.015)  # within a doubling of b2: record order again
    assert [c.backend for c in reader.order(copies())] == ["b3", "b1", "b2"]
    assert latency_tier(None) == latency_tier(0.005) == 0 < latency_tier(0.012) < latency_tier(0.4)


def test_a_recent_error_beats_a_better_latency_and_cost() -> None:
    reader, backends, clock, _ = rig(costs={"b2": 1.0, "b3": 1.0})
    reader.latencies.observe("b2", 1.0)
    backends["b1"].inner.fail_next("get_object")
    _, out = start(reader)
    assert out[0][1].backend == "b3"  # b1 failed, b2 slow
    assert [c.backend for c in reader.order(copies())] == ["b3", "b2", "b1"]


# --- config ---------------------------------------------------------------------------------


def _load(overrides: dict[str, Any]) -> Any:
    return load_config_from_string(yaml.safe_dump(merge(BASE, overrides)), {})


def test_read_path_hedge_after_and_read_cost_load_and_are_checked() -> None:
    config = _load({})
    assert config.read_path.hedge_delay == 0 and not config.read_path.hedge_auto
    assert config.backends[0].read_cost == 0.0
    assert _load({"read_path": {"hedge_after": "250ms"}}).read_path.hedge_delay == 0.25
    assert _load({"read_path": {"hedge_after": "auto"}}).read_path.hedge_auto
    for bad in ("soon", "-1s", "5"):
        with pytest.raises(ConfigError, match="read_path.hedge_after"):
            _load({"read_path": {"hedge_after": bad}})
    backends = [dict(b, read_cost=-1) for b in BASE["backends"]]
    with pytest.raises(ConfigError, match="read_cost"):
        _load({"backends": backends})
