"""Open-loop pacing for the paced rows (1 KiB PUT/GET at a steady 100 requests/s): requests start
on a fixed schedule whatever the answers' pace, each on a free connection, and a request's latency
runs from when it was *due*, not from when it was sent.  A closed loop (send, wait, send) slows
down with the server and hides its stalls ("coordinated omission"); the original's p99 figures
are at a steady rate, so ours are too.  The clock and the sleep are parameters: the unit tests
drive the schedule with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

#: A start later than this behind its schedule counts as late (the client could not keep the pace:
#: the row's p99 then includes the client's own delay, and the table says so).
LATE_SLACK = 0.005


def schedule(rate: float, duration: float) -> list[float]:
    """Start offsets in seconds from the cell's start: ``rate`` requests a second for ``duration``
    seconds (at least one request), evenly spaced."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive, not {rate} and {duration}")
    count = max(1, round(rate * duration))
    return [index / rate for index in range(count)]


@dataclass
class PacedOutcome:
    """What a paced cell measured."""

    #: Seconds from each successful request's due time to its answer, in completion order.
    latencies: list[float] = field(default_factory=list)
    #: Requests started more than LATE_SLACK behind schedule, and the worst lag.
    late: int = 0
    max_lag: float = 0.0
    #: Most requests in flight at once (the connections the cell needed).
    max_in_flight: int = 0


async def run_paced(
    offsets: Sequence[float],
    request: Callable[[int], Awaitable[bool]],
    clock: Clock,
    sleep: Sleep,
) -> PacedOutcome:
    """Start ``request(i)`` at ``offsets[i]`` after now, without waiting for earlier answers; wait
    for all of them.  ``request`` returns whether it succeeded (it counts its own errors); only
    successes have a latency."""
    outcome = PacedOutcome()
    in_flight = 0
    begin = clock()

    async def one(index: int, due: float) -> None:
        nonlocal in_flight
        in_flight += 1
        outcome.max_in_flight = max(outcome.max_in_flight, in_flight)
        try:
            ok = await request(index)
        finally:
            in_flight -= 1
        if ok:
            outcome.latencies.append(clock() - due)

    tasks: list[asyncio.Task[None]] = []
    for index, offset in enumerate(offsets):
        due = begin + offset
        delay = due - clock()
        if delay > 0:
            await sleep(delay)
        lag = clock() - due
        if lag > LATE_SLACK:
            outcome.late += 1
        outcome.max_lag = max(outcome.max_lag, lag)
        tasks.append(asyncio.ensure_future(one(index, due)))
        # Let the new request reach its first await before the next start is computed.
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return outcome
