"""Reading one extent from whichever of its copies answers: healthy copies first.

GET, HEAD-then-GET, copy sources and the replicator read an extent through
:class:`CopyReader`, which tries its copies in this order: copies on backends whose
circuit breaker is closed and that did not fail a read in the last
:data:`RECENT_FAILURE` seconds, then those that did, then those behind an open
breaker (whose guarded client fails at once).  The record's order is kept within
each group.  A copy whose GET fails (before any header) is skipped; so is, on the
next attempt, a copy whose body failed before its first byte (the extent stream
opens a failed extent once more, see :mod:`s3orch.core.extents`).  When every copy
is unreachable the answer is 503, never 404: an acknowledged write never reads as
missing; 500 when no copy exists at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orch.backend.breaker import CLOSED
from s3orch.backend.interface import (
    BackendError,
    BackendNotFound,
    BackendStream,
    IBodyConsumer,
    PushProducer,
)
from s3orch.core.fleet import BackendFleet
from s3orch.s3 import errors
from s3orch.store.interface import Location
from s3orch.usage.counters import Delta

#: A backend that failed a read this recently is tried after the others.
RECENT_FAILURE = 30.0


class CopyReader:
    """Opens one of several copies of the same bytes (one instance per process)."""

    log = Logger(namespace="s3orch.core")

    def __init__(self, fleet: BackendFleet, clock: IReactorTime) -> None:
        self.fleet = fleet
        self.clock = clock
        #: Backend -> when it last failed a read (cleared by a read that worked).
        self._failed: dict[str, float] = {}

    def order(self, locations: Sequence[Location]) -> list[Location]:
        """The configured copies of ``locations``, healthy ones first (see the module)."""
        now = self.clock.seconds()
        states = self.fleet.breaker_states()

        def rank(location: Location) -> tuple[bool, bool]:
            state = states.get(location.backend)
            open_breaker = state is not None and state.get("state") != CLOSED
            failed = self._failed.get(location.backend)
            return open_breaker, failed is not None and now - failed < RECENT_FAILURE

        return sorted((c for c in locations if self.fleet.client(c.backend) is not None), key=rank)

    def failed(self, backend: str) -> None:
        self._failed[backend] = self.clock.seconds()

    def worked(self, backend: str) -> None:
        self._failed.pop(backend, None)

    async def open(
        self, locations: Sequence[Location], byte_range: tuple[int, int] | None
    ) -> tuple[BackendStream, Location]:
        """Open the first copy that answers (see the module for the order and the errors)."""
        unavailable = 0
        ordered = self.order(locations)
        usage = self.fleet.usage
        if usage is not None and ordered:
            # Copies on backends past a monthly limit are skipped; all of them: 429 SlowDown.
            wanted = {location.backend: _egress(location, byte_range) for location in ordered}
            within = set(usage.filter(wanted, lambda name: Delta(1, wanted[name], 0), "read"))
            ordered = [location for location in ordered if location.backend in within]
            if not ordered:
                raise errors.UsageLimitSlowDown()
        for location in ordered:
            backend = self.fleet[location.backend]
            try:
                stream = await backend.get_object(location.storage_key, byte_range)
            except BackendNotFound:
                self.log.error(
                    "tracked object missing on its backend",
                    component="objects",
                    backend=location.backend,
                    storage_key=location.storage_key,
                )
                continue
            except BackendError as exc:
                unavailable += 1
                self.failed(location.backend)
                self.log.warn(
                    "backend GET failed; trying the next copy",
                    component="objects",
                    backend=location.backend,
                    error=str(exc),
                )
                continue
            self.worked(location.backend)
            if len(locations) > 1:
                expected = _egress(location, byte_range)
                stream = WatchedStream(stream, partial(self.failed, location.backend), expected)
            return stream, location
        if unavailable:
            raise errors.ServiceUnavailable("The storage backend holding this object is unavailable.")
        raise errors.InternalError("The object's data could not be found on any backend.")


def _egress(location: Location, byte_range: tuple[int, int] | None) -> int:
    """The bytes a GET of ``location`` (or of ``byte_range`` of it) will transfer."""
    return location.size if byte_range is None else byte_range[1] - byte_range[0] + 1


class _Counting:
    """A consumer that passes everything on and counts the body bytes."""

    def __init__(self, inner: IBodyConsumer) -> None:
        self.inner = inner
        self.received = 0

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        self.inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.inner.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.received += len(data)
        self.inner.write(data)


class WatchedStream:
    """A backend stream that reports (``on_failure``) a body failing before its first byte,
    so the next attempt at the extent starts on another copy."""

    def __init__(self, inner: BackendStream, on_failure: Callable[[], None], expected: int) -> None:
        self._inner = inner
        self._expected = expected
        self._on_failure = on_failure
        self.status = inner.status
        self.length = inner.length
        self.content_range = inner.content_range
        self.headers = inner.headers

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        counting = _Counting(consumer)
        delivered = self._inner.deliver(counting)

        def failed(reason: Failure) -> Failure:
            if counting.received == 0 and not reason.check(CancelledError):
                self._on_failure()
            return reason

        def ended(result: None) -> None:
            if counting.received == 0 and self._expected > 0:
                self._on_failure()  # a body that ended before its first byte (the caller sees it short)

        return delivered.addCallbacks(ended, failed)

    def cancel(self) -> None:
        self._inner.cancel()

    def __getattr__(self, name: str) -> Any:
        """Anything else is the wrapped stream's (what a test or a log looks at)."""
        return getattr(self._inner, name)
