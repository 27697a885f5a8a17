"""``write_timeout`` as stamps checked by one timer (s3orch/http/write_deadline.py).

The channel is a bare :class:`WriteDeadline` over a task.Clock: pauses and resumes are
what the transport would call, the clock is the only time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.task import Clock

from s3orch.http.write_deadline import WriteDeadline
from s3orch.observe.metrics import WRITE_TIMEOUTS

TIMEOUT = 30.0


@dataclass
class _Site:
    reactor: Clock
    write_timeout: float | None = TIMEOUT


class _Transport:
    """A socket transport's buffer as pending_write_bytes reads it."""

    def __init__(self) -> None:
        self.dataBuffer = b"x" * 1000
        self.offset = 0
        self._tempDataLen = 0
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class _Channel(WriteDeadline):
    def __init__(self, clock: Clock, timeout: float | None = TIMEOUT) -> None:
        self.site = _Site(clock, timeout)
        self.transport: Any = _Transport()
        self.timers_started = 0
        call_later = clock.callLater

        def counting(delay: float, fn: Any, *args: Any, **kwargs: Any) -> Any:
            self.timers_started += 1  # every reactor call the deadline schedules
            return call_later(delay, fn, *args, **kwargs)

        clock.callLater = counting  # type: ignore[method-assign]

    # what S3Channel.pauseProducing / resumeProducing add to HTTPChannel's
    def pause(self) -> None:
        self._write_stalled()

    def resume(self) -> None:
        self._write_flowing()


def test_a_stalled_client_is_aborted_at_write_timeout_not_before() -> None:
    clock = Clock()
    channel = _Channel(clock)
    before = WRITE_TIMEOUTS._value.get()
    channel.pause()
    clock.advance(TIMEOUT - 0.1)
    assert not channel.transport.aborted
    clock.advance(0.1)
    assert channel.transport.aborted
    assert WRITE_TIMEOUTS._value.get() == before + 1


def test_a_progressing_client_is_never_aborted_and_pauses_start_no_timers() -> None:
    clock = Clock()
    channel = _Channel(clock)
    # A large GET: the buffer fills and drains hundreds of times a second, for 10 timeouts.
    for _ in range(int(10 * TIMEOUT / 0.01)):
        channel.pause()
        clock.advance(0.005)
        channel.resume()
        clock.advance(0.005)
        assert len(clock.getDelayedCalls()) <= 1
    assert not channel.transport.aborted
    # One timer per write_timeout at most (it wakes, finds no stall or a later one, sleeps again),
    # not one per pause: 30,000 pauses here.
    assert channel.timers_started <= 11


def test_a_stall_after_progress_gets_a_full_write_timeout_of_its_own() -> None:
    clock = Clock()
    channel = _Channel(clock)
    channel.pause()
    clock.advance(20)
    channel.resume()  # the client read
    clock.advance(5)
    channel.pause()  # stalled again at t=25: its deadline is t=55, not the timer's t=30
    clock.advance(TIMEOUT - 0.5)  # t=54.5: past the first stall's deadline (t=30)
    assert not channel.transport.aborted
    clock.advance(0.5)
    assert channel.transport.aborted


def test_repeated_pauses_do_not_move_the_deadline() -> None:
    clock = Clock()
    channel = _Channel(clock)
    channel.pause()
    clock.advance(20)
    channel.pause()  # still the same stall (no resume in between)
    clock.advance(10)
    assert channel.transport.aborted


def test_bytes_the_kernel_took_while_paused_count_as_progress() -> None:
    clock = Clock()
    channel = _Channel(clock)
    channel.pause()  # 1000 bytes pending
    clock.advance(20)
    channel.transport.offset = 10  # a slow reader took 10 bytes
    clock.advance(10)  # deadline: progress seen, another write_timeout from now
    assert not channel.transport.aborted
    clock.advance(TIMEOUT - 0.1)
    assert not channel.transport.aborted
    clock.advance(0.1)  # nothing more taken
    assert channel.transport.aborted


def test_a_watched_answer_is_aborted_even_without_a_pause() -> None:
    clock = Clock()
    channel = _Channel(clock)
    channel._watch_write_now(TIMEOUT)  # a rejection the client must take
    clock.advance(TIMEOUT)
    assert channel.transport.aborted


def test_stopping_the_watch_cancels_the_timer() -> None:
    clock = Clock()
    channel = _Channel(clock)
    channel.pause()
    channel._stop_write_watch()  # connection lost
    assert clock.getDelayedCalls() == []
    clock.advance(10 * TIMEOUT)
    assert not channel.transport.aborted


def test_no_write_timeout_no_timer() -> None:
    clock = Clock()
    channel = _Channel(clock, timeout=None)
    channel.pause()
    assert clock.getDelayedCalls() == []
