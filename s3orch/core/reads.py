"""Reading one extent from whichever of its copies answers: healthy, cheap, fast copies first.

GET, HEAD-then-GET, copy sources and the replicator read an extent through
:class:`CopyReader`.  **The order** (:meth:`CopyReader.rank`, a stable sort, so the record's
order breaks the last ties) is, most significant first:

1. copies behind an open (or half-open) circuit breaker go last (their guarded client fails
   at once);
2. then copies on backends that failed a read in the last :data:`RECENT_FAILURE` seconds;
3. then the backend's ``read_cost`` (lower first: egress fees cost money on every read, so
   among healthy copies the cheapest serves, whatever its latency);
4. then the backend's recent header latency: the p95 of its last :data:`LATENCY_SAMPLES` header
   latencies of the last :data:`LATENCY_WINDOW` seconds, compared by :func:`latency_tier`
   (powers of two above 10 ms), so copies within a factor of two of each other keep the
   record's order instead of flapping on noise.  A backend without recent samples counts as
   fast: it is tried, and measured, again once its samples age out.

A copy whose GET fails before any header is skipped; so is, on the next attempt, a copy whose
body failed before its first byte (the extent stream opens a failed extent once more, see
:mod:`s3orch.core.extents`).  When every copy is unreachable the answer is 503, never 404: an
acknowledged write never reads as missing; 500 when no copy exists at all.

**Hedged reads** (``read_path.hedge_after``, off by default): when the first copy has not
answered with headers after ``hedge_after`` (``auto``: its backend's recent p95, once it has
:data:`AUTO_MIN_SAMPLES` samples, never below :data:`AUTO_FLOOR`), the same GET (same range) goes
to the next copy too; whichever answers headers first is served and the other request is
cancelled (its connection dropped, so none of its bytes is ever read).  At most one hedge per
read: a hedge adds at most one request.  The cancelled copy's elapsed time is recorded as a
latency sample (a lower bound), which is what moves a slow backend down the order after a
couple of reads.  ``s3o_hedged_reads_total{result}`` counts hedges by whether the hedged copy
served (``won``) or the first one still did (``lost``).

The degraded-mode broadcast (:mod:`s3orch.core.broadcast`) is the same open with a wider window.
"""

from __future__ import annotations

import math
from collections import deque
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
    SpliceSource,
    splice_source,
)
from s3orch.config.model import ReadPathConfig
from s3orch.core.fleet import BackendFleet
from s3orch.observe.placement_metrics import HEDGED_READS
from s3orch.s3 import errors
from s3orch.store.interface import Location
from s3orch.usage.counters import Delta

#: A backend that failed a read this recently is tried after the others.
RECENT_FAILURE = 30.0
#: Header latencies older than this no longer count.
LATENCY_WINDOW = 60.0
#: Header latencies kept per backend.
LATENCY_SAMPLES = 20
#: Latencies below this are all "fast" (tier 0); each doubling above it is one tier slower.
TIER_BASE = 0.010
#: ``hedge_after: auto`` hedges only once the backend has this many recent samples...
AUTO_MIN_SAMPLES = 5
#: ...and never sooner than this.
AUTO_FLOOR = 0.010


def latency_tier(seconds: float | None) -> int:
    """The order's latency class: 0 below :data:`TIER_BASE` (or unknown), +1 per doubling."""
    if seconds is None or seconds < TIER_BASE:
        return 0
    return int(math.log2(seconds / TIER_BASE)) + 1


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of a non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Latencies:
    """Each backend's recent header latencies (a small ring of ``(when, seconds)``)."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def observe(self, backend: str, seconds: float) -> None:
        ring = self._samples.setdefault(backend, deque(maxlen=LATENCY_SAMPLES))
        ring.append((self.clock.seconds(), max(0.0, seconds)))

    def recent(self, backend: str) -> list[float]:
        horizon = self.clock.seconds() - LATENCY_WINDOW
        return [seconds for when, seconds in self._samples.get(backend, ()) if when >= horizon]

    def p95(self, backend: str) -> float | None:
        """The backend's recent p95 header latency; None without recent samples."""
        recent = self.recent(backend)
        return percentile(recent, 0.95) if recent else None


class CopyReader:
    """Opens one of several copies of the same bytes (one instance per process)."""

    log = Logger(namespace="s3orch.core")

    def __init__(self, fleet: BackendFleet, clock: IReactorTime, read_path: ReadPathConfig | None = None) -> None:
        self.fleet = fleet
        self.clock = clock
        self.read_path = read_path or ReadPathConfig()
        self.latencies = Latencies(clock)
        #: Backend -> when it last failed a read (cleared by a read that worked).
        self._failed: dict[str, float] = {}

    def rank(self, backend: str, states: dict[str, dict[str, Any]] | None = None) -> tuple[bool, bool, float, int]:
        """The sort key of a copy on ``backend`` (see the module for the rule); ``states``: the
        fleet's breaker states, when the caller has them already."""
        state = (self.fleet.breaker_states() if states is None else states).get(backend)
        open_breaker = state is not None and state.get("state") != CLOSED
        failed = self._failed.get(backend)
        recently_failed = failed is not None and self.clock.seconds() - failed < RECENT_FAILURE
        config = self.fleet.config(backend)
        cost = config.read_cost if config is not None else 0.0
        return open_breaker, recently_failed, cost, latency_tier(self.latencies.p95(backend))

    def order(self, locations: Sequence[Location]) -> list[Location]:
        """The configured copies of ``locations``, best first (see the module)."""
        configured = [c for c in locations if self.fleet.client(c.backend) is not None]
        if len(configured) < 2:
            return configured
        states = self.fleet.breaker_states()
        return sorted(configured, key=lambda location: self.rank(location.backend, states))

    def failed(self, backend: str) -> None:
        self._failed[backend] = self.clock.seconds()

    def worked(self, backend: str) -> None:
        self._failed.pop(backend, None)

    def hedge_delay(self, backend: str) -> float | None:
        """How long a read waits for ``backend``'s headers before asking the next copy too;
        None: no hedge."""
        if self.read_path.hedge_auto:
            recent = self.latencies.recent(backend)
            if len(recent) < AUTO_MIN_SAMPLES:
                return None
            return max(AUTO_FLOOR, percentile(recent, 0.95))
        delay = self.read_path.hedge_delay
        return delay if delay > 0 else None

    async def open(
        self,
        locations: Sequence[Location],
        byte_range: tuple[int, int] | None,
        *,
        window: int = 1,
        hedge: bool = True,
    ) -> tuple[BackendStream, Location]:
        """Open the first copy that answers (see the module for the order and the errors).

        ``window`` copies are asked at once (a failure starts the next one); with one, and
        ``hedge``, a slow first copy is hedged as ``read_path.hedge_after`` says.
        """
        ordered = self.order(locations)
        usage = self.fleet.usage
        if usage is not None and ordered:
            # Copies on backends past a monthly limit are skipped; all of them: 429 SlowDown.
            wanted = {location.backend: _egress(location, byte_range) for location in ordered}
            within = set(usage.filter(wanted, lambda name: Delta(1, wanted[name], 0), "read"))
            ordered = [location for location in ordered if location.backend in within]
            if not ordered:
                raise errors.UsageLimitSlowDown()
        opening = _Open(self, ordered, byte_range, window=max(1, window), hedge=hedge)
        stream, location = await opening.run()
        if len(locations) > 1:
            expected = _egress(location, byte_range)
            stream = WatchedStream(stream, partial(self.failed, location.backend), expected)
        return stream, location


class _Open:
    """One open of an extent's copies: a rolling window of GETs, plus at most one hedge."""

    def __init__(
        self,
        reader: CopyReader,
        ordered: list[Location],
        byte_range: tuple[int, int] | None,
        *,
        window: int,
        hedge: bool,
    ) -> None:
        self.reader = reader
        self.byte_range = byte_range
        self.window = window
        self.waiting = ordered
        #: attempt number -> (copy, its GET, when it started)
        self.running: dict[int, tuple[Location, Deferred[BackendStream], float]] = {}
        self.attempts = 0
        self.may_hedge = hedge and window == 1
        self.hedge_timer: Any = None
        self.hedged: int | None = None  # the attempt a hedge started
        self.unavailable = 0
        self.done = False
        self.result: Deferred[tuple[BackendStream, Location]] = Deferred(self._cancelled)

    def run(self) -> Deferred[tuple[BackendStream, Location]]:
        for _ in range(min(self.window, len(self.waiting))):
            if self.done:  # an open answered at once
                break
            self._start_next()
        self._maybe_done()
        return self.result

    def _start_next(self) -> int:
        location = self.waiting.pop(0)
        backend = self.reader.fleet[location.backend]
        self.attempts += 1
        attempt = self.attempts
        started = self.reader.clock.seconds()
        opening = Deferred.fromCoroutine(backend.get_object(location.storage_key, self.byte_range))
        self.running[attempt] = (location, opening, started)
        opening.addCallbacks(partial(self._answered, attempt), partial(self._failed, attempt))
        if self.may_hedge and not self.done and attempt in self.running and self.waiting:
            self._arm(location)
        return attempt

    def _arm(self, location: Location) -> None:
        self._disarm()
        delay = self.reader.hedge_delay(location.backend)
        if delay is not None:
            self.hedge_timer = self.reader.clock.callLater(delay, self._hedge)

    def _disarm(self) -> None:
        if self.hedge_timer is not None and self.hedge_timer.active():
            self.hedge_timer.cancel()
        self.hedge_timer = None

    def _hedge(self) -> None:
        """The first copy is slow: ask the next one too (once per read)."""
        self.hedge_timer = None
        if self.done or not self.waiting:
            return
        self.may_hedge = False
        self.hedged = self.attempts + 1  # before it starts: it may answer at once
        self._start_next()

    def _answered(self, attempt: int, stream: BackendStream) -> None:
        location, _, started = self.running.pop(attempt)
        now = self.reader.clock.seconds()
        self.reader.latencies.observe(location.backend, now - started)
        self.reader.worked(location.backend)
        if self.done:
            stream.cancel()  # answered after another copy won: never read a byte of it
            return
        self.done = True
        self._disarm()
        if self.hedged is not None:
            HEDGED_READS.labels("won" if attempt == self.hedged else "lost").inc()
        for loser, _, loser_started in self.running.values():
            self.reader.latencies.observe(loser.backend, now - loser_started)  # at least this slow
        self._cancel_running()
        self.result.callback((stream, location))

    def _failed(self, attempt: int, failure: Failure) -> None:
        location, _, _ = self.running.pop(attempt)
        error = failure.value
        if self.done or isinstance(error, CancelledError):
            return
        if isinstance(error, BackendNotFound):
            self.reader.log.error(
                "tracked object missing on its backend",
                component="objects",
                backend=location.backend,
                storage_key=location.storage_key,
            )
        elif isinstance(error, BackendError):
            self.unavailable += 1
            self.reader.failed(location.backend)
            self.reader.log.warn(
                "backend GET failed; trying the next copy",
                component="objects",
                backend=location.backend,
                error=str(error),
            )
        else:  # not a backend's answer: a bug, reported as such
            self.done = True
            self._disarm()
            self._cancel_running()
            self.result.errback(failure)
            return
        if self.waiting:
            self._start_next()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.running or self.waiting or self.done:
            return
        self.done = True
        self._disarm()
        if self.unavailable:
            self.result.errback(errors.ServiceUnavailable("The storage backend holding this object is unavailable."))
        else:
            self.result.errback(errors.InternalError("The object's data could not be found on any backend."))

    def _cancel_running(self) -> None:
        for _, opening, _ in list(self.running.values()):
            opening.cancel()

    def _cancelled(self, result: Deferred[Any]) -> None:
        """The reader gave up (the client went away): cancel every GET still in flight."""
        self.done = True
        self._disarm()
        self._cancel_running()


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
        self._counting: _Counting | None = None

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        counting = self._counting = _Counting(consumer)
        delivered = self._inner.deliver(counting)

        def failed(reason: Failure) -> Failure:
            if counting.received == 0 and not reason.check(CancelledError):
                self._on_failure()
            return reason

        def ended(result: None) -> None:
            if counting.received == 0 and self._expected > 0:
                self._on_failure()  # a body that ended before its first byte (the caller sees it short)

        return delivered.addCallbacks(ended, failed)

    def splice_source(self) -> SpliceSource | None:
        """The inner stream's, once the first byte came through here: what this wrapper
        watches (a body failing before its first byte) is settled by then."""
        if self._counting is None or not self._counting.received:
            return None
        return splice_source(self._inner)

    def cancel(self) -> None:
        self._inner.cancel()

    def __getattr__(self, name: str) -> Any:
        """Anything else is the wrapped stream's (what a test or a log looks at)."""
        return getattr(self._inner, name)
