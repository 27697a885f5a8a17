"""``circuit_breaker.parallel_broadcast``: while degraded, open an object's copies at once.

In degraded mode (the database breaker open) the original asks its backends in config order, or
all of them at once with the losers cancelled.  Ours knows each object's copies from the location
journal, so the broadcast is over those copies: with ``parallel_broadcast`` the first copy to
answer serves the read and the other opens are cancelled (a stream that answered too late is
cancelled too); ``degraded_broadcast_parallelism`` caps how many opens are in flight at once (a
rolling window: a failed open starts the next copy; 0 = no cap).  Otherwise, and whenever the
database answers, copies are tried in order (:meth:`ObjectService._open_copies`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred

from s3orch.backend.interface import BackendError, BackendNotFound, BackendStream
from s3orch.core.objects import ObjectService
from s3orch.s3 import errors
from s3orch.store.records import Location


class BroadcastingObjectService(ObjectService):
    """An ObjectService whose reads race the copies while ``racing()`` says so."""

    def __init__(self, *, racing: Callable[[], bool], parallelism: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.racing = racing
        self.parallelism = parallelism

    async def _open_copies(
        self, locations: Sequence[Location], byte_range: tuple[int, int] | None
    ) -> tuple[BackendStream, Location]:
        if len(locations) < 2 or not self.racing():
            return await super()._open_copies(locations, byte_range)
        return await _Race(self, locations, byte_range).run()


class _Race:
    """One parallel open of an object's copies (see the module)."""

    def __init__(
        self, service: BroadcastingObjectService, locations: Sequence[Location], byte_range: tuple[int, int] | None
    ) -> None:
        self.service = service
        self.byte_range = byte_range
        self.waiting = [loc for loc in locations if service.fleet.client(loc.backend) is not None]
        self.running: dict[Location, Deferred[BackendStream]] = {}
        self.unavailable = 0
        self.result: Deferred[tuple[BackendStream, Location]] = Deferred()

    async def run(self) -> tuple[BackendStream, Location]:
        window = self.service.parallelism or len(self.waiting)
        for _ in range(min(window, len(self.waiting))):
            if self.result.called:  # an open answered at once
                break
            self._start_next()
        self._maybe_done()
        return await self.result

    def _start_next(self) -> None:
        location = self.waiting.pop(0)
        backend = self.service.fleet.client(location.backend)
        assert backend is not None
        opening = Deferred.fromCoroutine(backend.get_object(location.storage_key, self.byte_range))
        self.running[location] = opening
        opening.addCallbacks(
            lambda stream: self._won(location, stream), lambda failure: self._lost(location, failure.value)
        )

    def _won(self, location: Location, stream: BackendStream) -> None:
        self.running.pop(location, None)
        if self.result.called:
            stream.cancel()  # answered after another copy won
            return
        self.result.callback((stream, location))
        for loser in list(self.running.values()):
            loser.cancel()

    def _lost(self, location: Location, error: BaseException) -> None:
        self.running.pop(location, None)
        if self.result.called or isinstance(error, CancelledError):
            return
        if isinstance(error, BackendNotFound):
            self.service.log.error(
                "tracked object missing on its backend", component="objects",
                backend=location.backend, storage_key=location.storage_key,
            )
        elif isinstance(error, BackendError):
            self.unavailable += 1
        else:  # not a backend's answer: a bug, reported as such
            self.result.errback(error)
            for other in list(self.running.values()):
                other.cancel()
            return
        if self.waiting:
            self._start_next()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.running or self.waiting or self.result.called:
            return
        if self.unavailable:
            self.result.errback(errors.ServiceUnavailable("The storage backend holding this object is unavailable."))
        else:
            self.result.errback(errors.InternalError("The object's data could not be found on any backend."))
