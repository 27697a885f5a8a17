"""Waiting for a condition in tests that drive real processes: poll it, never sleep a guess.

A real gateway, backend or database does its work in its own time; a test that must wait for
it polls the condition it waits for -- quickly at first (most conditions hold within
milliseconds), backing off to a gentle rate for the slow ones -- and stops at the first poll
that sees it.  The timeout is a ceiling for a broken system, not a duration the test spends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["poll", "wait_for"]

T = TypeVar("T")

#: First pause between polls, and the longest one (the pause grows by half each time).
FIRST_INTERVAL = 0.005
MAX_INTERVAL = 0.1


def poll(
    fetch: Callable[[], T],
    until: Callable[[T], object],
    timeout: float = 10.0,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """``fetch()`` until ``until(value)`` holds or ``timeout`` seconds have passed.

    Returns the last value fetched either way, so the caller's assertion on it shows the state
    it found (a better failure message than "timed out").  ``clock`` and ``sleep`` are for the
    tests of this helper.
    """
    deadline = clock() + timeout
    interval = FIRST_INTERVAL
    while True:
        value = fetch()
        if until(value) or clock() >= deadline:
            return value
        sleep(min(interval, max(0.0, deadline - clock())))
        interval = min(interval * 1.5, MAX_INTERVAL)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds (polled as :func:`poll` does)."""
    return bool(poll(predicate, bool, timeout))
