"""The stall watchdog of one backend request (``server.backend_timeout``): the request's
Deferred is cancelled when it makes no progress (connect, response headers, each chunk of
an upload) for the timeout."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred

from s3orch.backend.interface import Clock, Timer

__all__ = ["Watchdog"]


class Watchdog:
    """Cancels a request Deferred when it makes no progress for ``timeout`` s."""

    def __init__(self, clock: Clock, timeout: float, target: Deferred[Any]) -> None:
        self.expired = False
        self._timeout = timeout
        self._target = target
        self._call = cast(Timer, clock.callLater(timeout, self._expire))

    def _expire(self) -> None:
        self.expired = True
        self._target.cancel()

    def poke(self) -> None:
        """Progress was made: restart the countdown."""
        if self._call.active():
            self._call.reset(self._timeout)

    def stop(self) -> None:
        if self._call.active():
            self._call.cancel()
