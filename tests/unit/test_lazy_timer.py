"""LazyTimer: a countdown re-armed by stamping its due time, one reactor call at most."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from s3orch.http.lazy_timer import LazyTimer


def _timer() -> tuple[LazyTimer, Clock, list[float]]:
    clock = Clock()
    fired: list[float] = []
    return LazyTimer(clock, lambda: fired.append(clock.seconds())), clock, fired


def test_fires_once_its_delay_after_arming() -> None:
    timer, clock, fired = _timer()
    timer.arm(10)
    clock.advance(9.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [10.0] and not timer.armed
    clock.advance(100)
    assert fired == [10.0]


def test_rearming_later_moves_the_due_time_without_a_second_reactor_call() -> None:
    timer, clock, fired = _timer()
    timer.arm(10)
    for _ in range(50):
        clock.advance(5)
        timer.arm(10)
        assert len(clock.getDelayedCalls()) == 1
    due = clock.seconds() + 10
    clock.advance(9)
    assert fired == []
    clock.advance(1)
    assert fired == [due]


def test_disarmed_it_never_fires_and_arming_again_counts_from_then() -> None:
    timer, clock, fired = _timer()
    timer.arm(10)
    clock.advance(5)
    timer.disarm()
    clock.advance(20)
    assert fired == []
    timer.arm(10)
    clock.advance(10)
    assert fired == [35.0]


def test_a_shorter_delay_brings_the_pending_call_forward() -> None:
    timer, clock, fired = _timer()
    timer.arm(100)
    timer.arm(3)
    clock.advance(3)
    assert fired == [3.0]


def test_stop_cancels_the_pending_reactor_call() -> None:
    timer, clock, fired = _timer()
    timer.arm(10)
    timer.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(20)
    assert fired == []


def test_a_keep_alive_connection_schedules_no_timer_per_request_and_times_out_from_its_last_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unit.test_server_timeouts import _connect

    scheduled: list[float] = []
    call_later = MemoryReactorClock.callLater

    def counting(self: MemoryReactorClock, delay: float, fn: Any, *args: Any, **kwargs: Any) -> Any:
        scheduled.append(delay)
        return call_later(self, delay, fn, *args, **kwargs)

    monkeypatch.setattr(MemoryReactorClock, "callLater", counting)
    protocol, transport, clock, _ = _connect()  # idle_timeout 120s, read_header_timeout 10s
    for _ in range(30):
        protocol.dataReceived(b"GET /health HTTP/1.1\r\nHost: gw.test\r\n\r\n")  # type: ignore[attr-defined]
        assert transport.value().endswith(b"\r\n")
        transport.clear()
        clock.advance(5)
    # idle, header and read deadline wake up now and then (every 10 s at most), not per request
    assert len(scheduled) <= 150 / 10 + 5
    assert not transport.disconnecting
    clock.advance(114)  # 119 s after the last answer
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
