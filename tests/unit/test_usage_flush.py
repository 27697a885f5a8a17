"""The usage counters seam, the additive flush and its adaptive pace (BEHAVIOURS §1.8).

In-memory doubles and ``twisted.internet.task.Clock`` only: a store double whose ``add_usage``
adds like the SQL upsert (and can fail), a recording event sink.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from s3orch.config.model import BackendConfig, UsageFlushConfig
from s3orch.notify.events import CAPACITY_WARNING
from s3orch.store.interface import QuotaRow
from s3orch.store.interface_usage import UsageRow
from s3orch.usage.counters import Delta, LocalCounters
from s3orch.usage.tracker import UsageTracker
from s3orch.workers.quota_metrics import CAPACITY_WARNING_EVERY, QuotaMetricsWorker

#: 2026-12-15 12:00 UTC.
MID_DECEMBER = 1797336000.0


class Store:
    """``add_usage``/``get_usage`` as the SQL store does them, plus what the worker reads."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[int, int, int]] = {}
        self.fail = False
        #: While set, add_usage waits for it (a flush in flight).
        self.gate: Deferred[None] | None = None

    async def add_usage(
        self, deltas: Mapping[tuple[str, str], tuple[int, int, int]], period: str
    ) -> dict[str, UsageRow]:
        if self.gate is not None:
            await self.gate
        if self.fail:
            raise ConnectionError("database gone")
        for key, delta in deltas.items():
            old = self.rows.get(key, (0, 0, 0))
            self.rows[key] = (old[0] + delta[0], old[1] + delta[1], old[2] + delta[2])
        return await self.get_usage(period)

    async def get_usage(self, period: str | None, backend: str | None = None) -> dict[str, UsageRow]:
        return {b: UsageRow(b, p, *v) for (b, p), v in self.rows.items() if p == period}

    async def get_quotas(self) -> dict[str, QuotaRow]:
        return {"b1": QuotaRow("b1", 0, 0, 0, 0, 0)}

    async def count_intents(self) -> int:
        return 0

    async def cleanup_queue_page(self, limit: int) -> tuple[int, list[Any]]:
        return 0, []

    async def cleanup_dlq_page(self, backend: str | None, limit: int) -> tuple[int, int, list[Any]]:
        return 0, 0, []


class Sink:
    enabled = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def events(self, *args: Any, **kwargs: Any) -> tuple[()]:
        return ()

    async def emit(self, event_type: str, subject: str, data: Mapping[str, Any], *, key: str | None = None) -> None:
        self.sent.append((event_type, subject, dict(data)))


def done(d: Any) -> Any:
    results: list[Any] = []
    ensureDeferred(d).addBoth(results.append)
    (result,) = results
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def setup(api_limit: int = 100) -> tuple[UsageTracker, Store, Clock]:
    clock = Clock()
    clock.advance(MID_DECEMBER)
    configs = [BackendConfig(name="b1", api_request_limit=api_limit), BackendConfig(name="b2")]
    return UsageTracker(lambda: configs, clock), Store(), clock


def test_local_counters_keep_a_taken_batch_pending_until_commit_and_restore_it_on_rollback() -> None:
    counters = LocalCounters()
    counters.add("b1", "2026-12", Delta(1, 2, 3))
    batch = counters.take_for_flush()
    assert batch == {("b1", "2026-12"): Delta(1, 2, 3)}
    counters.add("b1", "2026-12", Delta(1, 0, 0))
    assert counters.pending("b1", "2026-12") == Delta(2, 2, 3)  # still counted while in flight
    counters.rollback(batch)
    assert counters.pending("b1", "2026-12") == Delta(2, 2, 3)
    again = counters.take_for_flush()
    assert again == {("b1", "2026-12"): Delta(2, 2, 3)}
    counters.commit(again)
    assert counters.pending("b1", "2026-12") == Delta() and counters.take_for_flush() == {}


def test_the_flush_is_additive_and_zeroes_deltas_only_after_the_commit() -> None:
    usage, store, _ = setup()
    store.rows[("b1", "2026-12")] = (10, 0, 0)  # another instance's flushes
    done(usage.refresh(store))
    usage.record("b1", Delta(1, 0, 5))
    store.fail = True
    with pytest.raises(ConnectionError):
        done(usage.flush(store))
    assert usage.usage("b1") == Delta(11, 0, 5)  # nothing lost
    store.fail = False
    store.gate = Deferred()
    flushing = ensureDeferred(usage.flush(store))
    usage.record("b1", Delta(1, 0, 0))  # booked while the flush is in flight
    assert usage.usage("b1") == Delta(12, 0, 5)
    gate, store.gate = store.gate, None
    gate.callback(None)
    assert flushing.called
    assert store.rows[("b1", "2026-12")] == (11, 0, 5)  # added to, not overwritten
    assert usage.usage("b1") == Delta(12, 0, 5)  # neither double-counted nor lost
    done(usage.flush(store))
    assert store.rows[("b1", "2026-12")] == (12, 0, 5) and usage.usage("b1") == Delta(12, 0, 5)


def test_effective_usage_includes_the_proposed_call() -> None:
    usage, _, _ = setup(api_limit=2)
    usage.record("b1", Delta(1))
    assert usage.exceeded("b1", Delta(1)) is None  # 2 of 2
    usage.record("b1", Delta(1))
    assert usage.exceeded("b1", Delta(1)) == "api_requests"
    assert usage.exceeded("b2", Delta(1, 10**12, 10**12)) is None  # unlimited


def test_adaptive_flush_goes_fast_past_the_threshold_and_back() -> None:
    usage, store, clock = setup(api_limit=100)
    config = UsageFlushConfig(interval=30.0, adaptive_enabled=True, adaptive_threshold=0.8, fast_interval=5.0)
    worker = QuotaMetricsWorker(store, clock, config, usage=usage)  # type: ignore[arg-type]
    worker.startService()
    assert worker.interval == 30.0
    usage.record("b1", Delta(79))
    clock.advance(30)
    assert worker.interval == 30.0 and store.rows[("b1", "2026-12")] == (79, 0, 0)
    usage.record("b1", Delta(1))  # 80%
    clock.advance(30)
    assert worker.interval == 5.0
    clock.advance(5)  # the next flush comes 5 s later
    assert worker.status()["last_tick_at"] == clock.seconds()
    clock.advance(20 * 86400)  # January: nothing used yet, back to the normal pace
    assert worker.interval == 30.0
    worker.configure(UsageFlushConfig(interval=10.0))  # a reload
    assert worker.interval == 10.0
    worker.stopService()


def test_a_backend_near_a_usage_limit_warns_at_most_hourly() -> None:
    usage, store, clock = setup(api_limit=10)
    sink = Sink()
    worker = QuotaMetricsWorker(store, clock, UsageFlushConfig(), sink, usage)  # type: ignore[arg-type]
    usage.record("b1", Delta(7))
    assert done(worker.run_once()) and sink.sent == []
    usage.record("b1", Delta(1))
    assert done(worker.run_once()) and done(worker.run_once())
    assert [(t, s, d["limit_type"], d["utilisation"]) for t, s, d in sink.sent] == [
        (CAPACITY_WARNING, "b1", "api_requests", 0.8)
    ]
    clock.advance(CAPACITY_WARNING_EVERY)
    assert done(worker.run_once()) and len(sink.sent) == 2


def test_reloaded_limits_apply_to_the_next_check() -> None:
    clock = Clock()
    clock.advance(MID_DECEMBER)
    holder = {"configs": (BackendConfig(name="b1", api_request_limit=1),)}
    usage = UsageTracker(lambda: holder["configs"], clock)
    usage.record("b1", Delta(1))
    assert usage.exceeded("b1", Delta(1)) == "api_requests"
    holder["configs"] = (BackendConfig(name="b1", api_request_limit=2),)  # what a SIGHUP does to the fleet
    assert usage.exceeded("b1", Delta(1)) is None
    holder["configs"] = (BackendConfig(name="b1"),)
    assert not usage.limited() and usage.filter(["b1"], lambda name: Delta(10**9), "write") == ["b1"]
