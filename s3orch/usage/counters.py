"""The unflushed usage deltas: a small seam between the tracker and where deltas live.

:class:`UsageCounters` is all the tracker needs.  :class:`LocalCounters` keeps them in this
process's memory; a shared implementation (Redis INCRBY) plugs in behind the same five calls.

The flush protocol keeps counts exact across a failed database write::

    batch = counters.take_for_flush()   # the deltas so far move aside (still counted by pending())
    ... write batch additively to the DB in one transaction ...
    counters.commit(batch)              # the DB has them: forget them (same reactor turn as the
                                        # tracker's new baseline, so nothing is counted twice)
    counters.rollback(batch)            # the write failed: they go back to pending

A shared implementation must keep ``pending`` synchronous (it is asked on the request path):
serve it from what the shared store last said, plus what this process added since
(:class:`~s3orch.usage.shared.SharedUsageCounters`, Redis).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Batch", "Delta", "LocalCounters", "UsageCounters", "ZERO"]


@dataclass(slots=True)
class Delta:
    """API calls and bytes out of (egress) and into (ingress) one backend.

    Never changed once made (not ``frozen``: this is on the request path, and a frozen
    dataclass is several times slower to build)."""

    api_requests: int = 0
    egress_bytes: int = 0
    ingress_bytes: int = 0

    def __add__(self, other: Delta) -> Delta:
        return Delta(
            self.api_requests + other.api_requests,
            self.egress_bytes + other.egress_bytes,
            self.ingress_bytes + other.ingress_bytes,
        )

    def __bool__(self) -> bool:
        return bool(self.api_requests or self.egress_bytes or self.ingress_bytes)


ZERO = Delta()

#: ``(backend, period)`` -> the deltas taken for one flush.
Batch = Mapping[tuple[str, str], Delta]


class UsageCounters(Protocol):
    """Where deltas not yet in the database live (see the module for the flush protocol)."""

    def add(self, backend: str, period: str, delta: Delta) -> None:
        """Count ``delta`` against ``backend`` in ``period`` (``YYYY-MM``)."""

    def pending(self, backend: str, period: str) -> Delta:
        """Everything counted and not yet committed to the database (taken batches included)."""

    def take_for_flush(self) -> Batch | Awaitable[Batch]:
        """The deltas to write now; they stay in :meth:`pending` until commit or rollback
        (a shared implementation drains the shared store: awaitable)."""

    def commit(self, batch: Batch) -> None:
        """``batch`` is in the database: stop counting it."""

    def rollback(self, batch: Batch) -> None:
        """``batch`` did not reach the database: count it as pending again."""


class LocalCounters:
    """:class:`UsageCounters` in this process's memory (each instance its own: see README for
    the overshoot bound with several instances)."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], Delta] = {}
        self._taken: dict[tuple[str, str], Delta] = {}

    def add(self, backend: str, period: str, delta: Delta) -> None:
        key = (backend, period)
        self._pending[key] = self._pending.get(key, ZERO) + delta

    def pending(self, backend: str, period: str) -> Delta:
        key = (backend, period)
        return self._pending.get(key, ZERO) + self._taken.get(key, ZERO)

    def take_for_flush(self) -> Batch:
        batch = {key: delta for key, delta in self._pending.items() if delta}
        self._pending = {}
        for key, delta in batch.items():
            self._taken[key] = self._taken.get(key, ZERO) + delta
        return batch

    def commit(self, batch: Batch) -> None:
        self._forget(batch)

    def rollback(self, batch: Batch) -> None:
        self._forget(batch)
        for key, delta in batch.items():
            self._pending[key] = self._pending.get(key, ZERO) + delta

    def _forget(self, batch: Batch) -> None:
        for key, delta in batch.items():
            left = self._taken.get(key, ZERO) + Delta(-delta.api_requests, -delta.egress_bytes, -delta.ingress_bytes)
            if left:
                self._taken[key] = left
            else:
                self._taken.pop(key, None)
