"""tests.support.polling, on a fake clock: it stops at the first poll that sees the condition,
backs off from quick polls to gentle ones, and gives up at the timeout with the last value."""

from __future__ import annotations

from tests.support.polling import MAX_INTERVAL, poll, wait_for


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_poll_returns_the_first_value_that_satisfies_and_stops_polling() -> None:
    fake = FakeTime()
    values = iter(range(100))
    got = poll(lambda: next(values), lambda v: v >= 3, 10, clock=fake.clock, sleep=fake.sleep)
    assert got == 3
    assert len(fake.sleeps) == 3
    assert fake.sleeps == sorted(fake.sleeps) and fake.sleeps[0] < 0.01


def test_poll_gives_up_at_the_timeout_with_the_last_value() -> None:
    fake = FakeTime()
    calls = []
    got = poll(lambda: calls.append(1) or len(calls), lambda v: False, 5, clock=fake.clock, sleep=fake.sleep)
    assert got == len(calls) > 1
    assert fake.now == 5
    assert max(fake.sleeps) == MAX_INTERVAL


def test_wait_for_says_whether_the_condition_came_true() -> None:
    assert wait_for(lambda: True, 0)
    assert not wait_for(lambda: False, 0)
