"""The usage counters behind the seam when ``redis.address`` is set: every gateway's unflushed
deltas in Redis (:class:`~s3orch.redis.counters.SharedCounters`), the request path synchronous.

What is read when (effective usage = what the tracker adds up, BEHAVIOURS §1.8):

* :meth:`SharedUsageCounters.add` (request path) books the delta on the shared counters, which
  push it to Redis at the next reactor turn (one INCRBY batch per turn), and on ``since``.
* :meth:`SharedUsageCounters.pending` (request path) answers from memory: the *estimate* made by
  the last load (DB baseline + Redis totals, i.e. every instance's flushed and unflushed counts)
  plus this instance's adds since that load started.  When the estimate is older than
  :data:`LOAD_EVERY` it starts a new load in the background (one at a time) and answers from
  the old one meanwhile.
* A load reads Redis (MGET, plus this instance's deltas Redis may not have yet) FIRST and the
  database baseline the tracker holds SECOND: a flush that drains Redis into the database
  between the two reads is then counted twice (an estimate that errs high), never missed.
  When the new estimate is below the old one (someone else flushed and this instance's
  baseline is stale; or Redis is down and only local deltas are known) the baseline is re-read
  from the database (while Redis answers) and the estimate kept at least at the old one: usage within a period only
  grows, so the higher of two honest estimates is the better one.
* The flush (:meth:`take_for_flush`, run under worker lock 1007 by the caller) drains Redis
  (GETSET to 0, once per drain token) into the batch the tracker writes to the database; a failed
  write gives the batch back additively (:meth:`rollback`).

Overshoot bound with Redis: what the other instances booked during the age of this instance's
estimate (at most :data:`LOAD_EVERY` plus one Redis round trip) -- README "Shared counters".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.redis.counters import SharedCounters
from s3orch.redis.shared import CounterKey
from s3orch.usage.counters import ZERO, Batch, Delta

__all__ = ["KINDS", "LOAD_EVERY", "SharedUsageCounters"]

#: Seconds an estimate of the shared totals is used before the request path reloads it.
LOAD_EVERY = 0.1
#: The counter kinds, in :class:`Delta` order (the Redis key's last part).
KINDS = ("api_requests", "egress_bytes", "ingress_bytes")

_log = Logger(namespace="s3orch.usage.shared")

Key = tuple[str, str]


def _values(delta: Delta) -> tuple[int, int, int]:
    return delta.api_requests, delta.egress_bytes, delta.ingress_bytes


def _max(a: Delta, b: Delta) -> Delta:
    return Delta(max(a.api_requests, b.api_requests), max(a.egress_bytes, b.egress_bytes),
                 max(a.ingress_bytes, b.ingress_bytes))


def _minus(a: Delta, b: Delta) -> Delta:
    return Delta(a.api_requests - b.api_requests, a.egress_bytes - b.egress_bytes, a.ingress_bytes - b.ingress_bytes)


def _below(a: Delta, b: Delta) -> bool:
    return any(x < y for x, y in zip(_values(a), _values(b)))


def previous_period(period: str) -> str:
    """The ``YYYY-MM`` before ``period`` (a flush drains it too: counts booked on the last day)."""
    year, month = int(period[:4]), int(period[5:7])
    return f"{year - 1:04d}-12" if month == 1 else f"{year:04d}-{month - 1:02d}"


class SharedUsageCounters:
    """:class:`~s3orch.usage.counters.UsageCounters` over :class:`SharedCounters`.

    ``backends()`` names the backends whose counters are read and drained; ``period()`` is the
    tracker's.  :meth:`bind` gives the tracker's baseline and how to re-read it (the tracker
    is built after the counters)."""

    def __init__(
        self,
        shared: SharedCounters,
        clock: IReactorTime,
        backends: Callable[[], Iterable[str]],
        period: Callable[[], str],
        load_every: float = LOAD_EVERY,
    ) -> None:
        self.shared = shared
        self.clock = clock
        self.backends = backends
        self.period = period
        self.load_every = load_every
        self._baseline: Callable[[str, str], Delta] = lambda backend, period: ZERO
        self._reread: Callable[[], Awaitable[None]] | None = None
        #: Total usage (baseline + every instance's unflushed counts) as of the last load's start.
        self._estimate: dict[Key, Delta] = {}
        #: This instance's adds since the last load started, and since the running one started.
        self._since: dict[Key, Delta] = {}
        self._next_since: dict[Key, Delta] | None = None
        self._loaded_at = float("-inf")
        self._loading = False
        self._waiting: list[Deferred[None]] = []

    def bind(self, baseline: Callable[[str, str], Delta], reread: Callable[[], Awaitable[None]]) -> None:
        """The tracker's stored baseline of ``(backend, period)`` and how to read it again."""
        self._baseline = baseline
        self._reread = reread

    # -- the request path --------------------------------------------------------------------

    def add(self, backend: str, period: str, delta: Delta) -> None:
        for kind, value in zip(KINDS, _values(delta)):
            if value:
                self.shared.add(CounterKey(backend, period, kind), value)
        key = (backend, period)
        self._since[key] = self._since.get(key, ZERO) + delta
        if self._next_since is not None:
            self._next_since[key] = self._next_since.get(key, ZERO) + delta

    def total(self, backend: str, period: str) -> Delta:
        """The effective usage before any proposed operation (what the tracker ends up adding)."""
        key = (backend, period)
        baseline = self._baseline(backend, period)
        return _max(self._estimate.get(key, baseline), baseline) + self._since.get(key, ZERO)

    def pending(self, backend: str, period: str) -> Delta:
        if not self._loading and self.clock.seconds() - self._loaded_at >= self.load_every:
            self.reload()
        return _minus(self.total(backend, period), self._baseline(backend, period))

    # -- loading the shared totals -----------------------------------------------------------

    def reload(self) -> Deferred[None]:
        """Load the shared totals now (or wait for the load running); never fails."""
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        if not self._loading:
            self._loading = True
            self._loaded_at = self.clock.seconds()
            Deferred.fromCoroutine(self._load())
        return waiting

    async def _load(self) -> None:
        try:
            await self._load_once()
        except Exception:  # the estimate stays as it was; the next call loads again
            _log.failure("loading the shared usage counters failed", component="redis")
        finally:
            self._loading = False
            self._next_since = None
            waiting, self._waiting = self._waiting, []
            for each in waiting:
                each.callback(None)

    async def _load_once(self) -> None:
        period = self.period()
        names = list(self.backends())
        keys = [(name, period) for name in names]
        before = {key: self.total(*key) for key in keys}
        self._next_since = {}
        # Redis first (with this instance's unsent deltas: SharedCounters.load takes them as it
        # writes MGET), the database second: see the module docstring.
        counters = [CounterKey(name, period, kind) for name in names for kind in KINDS]
        values = await self.shared.load(counters)

        def candidates() -> dict[Key, Delta]:
            return {
                key: self._baseline(*key)
                + Delta(*(values[CounterKey(key[0], key[1], kind)] for kind in KINDS))
                for key in keys
            }

        found = candidates()
        # Only while shared: with Redis down the reading is this instance's deltas alone, always
        # lower, and the database cannot tell more (the others' counts are local to them).
        stale = self.shared.shared and any(_below(found[key], before[key]) for key in keys)
        if self._reread is not None and stale:
            await self._reread()
            found = candidates()
        self._estimate = {key: _max(found[key], before[key]) for key in keys}
        self._since = self._next_since or {}

    # -- the flush (UsageCounters' protocol; the caller holds lock 1007) ---------------------

    async def take_for_flush(self) -> Batch:
        """Drain this and the previous period's counters (Redis's while shared, this instance's
        local deltas while Redis is down) into a batch for the database."""
        period = self.period()
        counters = [
            CounterKey(name, p, kind)
            for p in (period, previous_period(period))
            for name in self.backends()
            for kind in KINDS
        ]
        drained = await self.shared.drain(counters)
        batch: dict[Key, Delta] = {}
        for counter, value in drained.items():
            key = (counter.backend, counter.period)
            batch[key] = batch.get(key, ZERO) + Delta(*(value if kind == counter.kind else 0 for kind in KINDS))
        return {key: delta for key, delta in batch.items() if delta}

    def commit(self, batch: Batch) -> None:
        """The drained deltas are in the database: nothing is held for them here (the
        tracker's new baseline has them; the estimate is reloaded at once)."""
        self.reload()

    def rollback(self, batch: Batch) -> None:
        """The database write failed: the drained deltas go back to the counters, additively."""
        self.shared.add_all(
            {
                CounterKey(backend, period, kind): value
                for (backend, period), delta in batch.items()
                for kind, value in zip(KINDS, _values(delta))
                if value
            }
        )

    def status(self) -> Mapping[str, Any]:
        return self.shared.status()
