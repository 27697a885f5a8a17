"""A countdown that is re-armed and disarmed without touching the reactor's timer heap.

A keep-alive connection arms and disarms its deadlines for every request: Twisted's idle
timeout (``TimeoutMixin``: cancelled when a request's headers are in, scheduled again when
it is answered) and the front door's header and read deadlines.  With ``callLater`` and
``cancel`` that is three timers scheduled and three cancelled per request, each a heap
operation plus the reactor's clean-up of cancelled calls.  Here a countdown only stamps
its due time; one reactor call per countdown is pending at most, and when it fires it
compares the stamp with the clock: disarmed, it does nothing; re-armed for later, it sleeps
again until then; due, it fires.  ``write_deadline.py`` uses one for response stalls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime


class LazyTimer:
    """Calls ``fire`` once ``delay`` seconds after the last :meth:`arm`, unless disarmed first.

    :meth:`arm` schedules a reactor call only when none is pending or the pending one is
    due too late (a shorter delay than before); :meth:`disarm` schedules and cancels nothing.
    :meth:`stop` also cancels the pending call (connection lost: the reactor must not keep
    the protocol alive until the call would have fired).
    """

    __slots__ = ("_clock", "_fire", "_due", "_call")

    def __init__(self, clock: IReactorTime, fire: Callable[[], Any]) -> None:
        self._clock = clock
        self._fire = fire
        #: When ``fire`` is due (None: disarmed).
        self._due: float | None = None
        self._call: Any = None

    @property
    def armed(self) -> bool:
        return self._due is not None

    def arm(self, delay: float) -> None:
        clock = self._clock
        due = clock.seconds() + delay
        self._due = due
        call = self._call
        if call is None:
            self._call = clock.callLater(delay, self._check)
        elif call.getTime() > due:  # pending for a later time: bring it forward
            call.reset(delay)

    def disarm(self) -> None:
        self._due = None

    def stop(self) -> None:
        self._due = None
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _check(self) -> None:
        self._call = None
        due = self._due
        if due is None:
            return
        now = self._clock.seconds()
        if now < due:  # re-armed since this call was scheduled: sleep until the new due time
            self._call = self._clock.callLater(due - now, self._check)
            return
        self._due = None
        self._fire()
