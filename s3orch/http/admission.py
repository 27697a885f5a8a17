"""Admission control: how many S3 requests may be in flight at once, as in s3-orchestrator
(the Go product s3orch re-creates).

One global pool (``server.max_concurrent_requests``), or split read and write
pools when both ``max_concurrent_reads`` and ``max_concurrent_writes`` are set.
HTTP requests never wait here: a full pool refuses at header time (the front end
answers ``503 SlowDown``).  With ``load_shed_threshold`` set, a request may also be
shed before the pool is full, with a probability rising linearly from 0 at
``floor(t x cap)`` requests in flight to 1 at ``cap``.

One credential may hold at most ``server.max_concurrent_per_credential`` slots of
each pool at once (0: a quarter of that pool, at least 1), so a single
tenant cannot take the whole pool; a request over its credential's share gets the
same ``503 SlowDown`` after authentication.

``server.admission_wait`` (0: refuse at once): a request that finds its pool full
waits, first come first served, up to that long for a slot (:meth:`Admission.wait_for`;
the channel holds the request back meanwhile, :class:`s3orch.http.site.Postponed`), and
leaves the queue when its client goes away.  A slot that frees goes to the first waiter,
never to a request arriving later.

Background workers (:meth:`Admission.for_worker`) take slots from the write pool (split
mode) or the global pool, and wait for one as long as it takes.  So that a storm of
replication cannot starve clients, workers together hold at most half of that pool
(:data:`WORKER_SHARE`, at least one slot): the other half is always the clients'.

Bookkeeping only: no I/O; the clock (for the wait's deadline) and the random source are
injected for tests.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from s3orch.config.model import ServerConfig
from s3orch.observe.metrics import ADMISSION_WAITS

READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})
#: The share of the write (or global) pool background workers may hold together.
WORKER_SHARE = 0.5


@dataclass(eq=False)
class _Waiter:
    """One request or worker queued for a slot of a pool."""

    ready: Deferred[Slot | None]
    worker: bool
    timer: IDelayedCall | None = None


@dataclass(eq=False)
class Pool:
    """A counted set of slots, and the FIFO queue of those waiting for one."""

    name: str
    capacity: int
    in_use: int = 0
    #: Slots held by background workers, at most ``worker_cap``.
    workers: int = 0
    waiters: deque[_Waiter] = field(default_factory=deque)

    @property
    def worker_cap(self) -> int:
        return max(1, int(self.capacity * WORKER_SHARE))

    def take(self, worker: bool = False) -> Slot:
        self.in_use += 1
        if worker:
            self.workers += 1
        return Slot(self, worker=worker)

    def released(self, slot: Slot) -> None:
        """A slot came back: the first waiter that may have it gets it, else the pool does."""
        self.in_use -= 1
        if slot.worker:
            self.workers -= 1
        for waiter in self.waiters:
            if waiter.worker and self.workers >= self.worker_cap:
                continue
            self.waiters.remove(waiter)
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            if not waiter.worker:
                ADMISSION_WAITS.labels("admitted").inc()
            waiter.ready.callback(self.take(waiter.worker))
            return


@dataclass
class Slot:
    """One admitted request's (or worker's) place in a pool; release it exactly once."""

    pool: Pool
    released: bool = False
    worker: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool.released(self)


@dataclass
class CredentialHold:
    """One admitted request counted against its credential's share; release exactly once."""

    admission: Admission
    credential: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._credential_released(self.credential)


class Refused(Exception):
    """The request is not admitted: ``reason`` is "capacity" (pool full), "shed" (load
    shedding) or "credential" (its credential holds its share of the pool)."""

    def __init__(self, reason: str, pool: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pool = pool


class Admission:
    """Decides, per request method, whether a request gets a slot now."""

    def __init__(
        self,
        *,
        max_requests: int,
        max_reads: int = 0,
        max_writes: int = 0,
        shed_threshold: float = 0.0,
        per_credential: int = 0,
        random_source: Callable[[], float] = random.random,
        wait: float = 0.0,
        clock: IReactorTime | None = None,
    ) -> None:
        self.split = max_reads > 0 and max_writes > 0
        self.reads: Pool | None = None
        self.writes: Pool | None = None
        self.global_pool: Pool | None = None
        if self.split:
            self.reads = Pool("read", max_reads)
            self.writes = Pool("write", max_writes)
        elif max_requests > 0:
            self.global_pool = Pool("global", max_requests)
        # else: only one split pool configured -> no admission control at all (as s3-orchestrator)
        self.shed_threshold = shed_threshold if 0 < shed_threshold < 1 else 0.0
        self.random = random_source
        #: Explicit per-credential cap (0: a quarter of the request's pool).
        self.per_credential = per_credential
        #: Slots held per "pool/credential"; an entry disappears when its count reaches 0.
        self.by_credential: dict[str, int] = {}
        #: Seconds a request may wait for a slot (``server.admission_wait``; needs ``clock``).
        self.wait = wait if clock is not None else 0.0
        self.clock = clock

    @classmethod
    def from_config(
        cls,
        server: ServerConfig,
        random_source: Callable[[], float] = random.random,
        clock: IReactorTime | None = None,
    ) -> Admission:
        return cls(
            wait=server.admission_wait,
            clock=clock,
            max_requests=server.max_concurrent_requests,
            max_reads=server.max_concurrent_reads,
            max_writes=server.max_concurrent_writes,
            shed_threshold=server.load_shed_threshold,
            per_credential=server.max_concurrent_per_credential,
            random_source=random_source,
        )

    def pool_for(self, method: str) -> Pool | None:
        """The pool a request with this method draws from (None: not limited)."""
        if self.split:
            if method in READ_METHODS:
                return self.reads
            if method in WRITE_METHODS:
                return self.writes
            return None
        return self.global_pool

    def shed_probability(self, pool: Pool) -> float:
        """Chance of shedding one more request given the pool's current occupancy."""
        if not self.shed_threshold or pool.capacity <= 0:
            return 0.0
        floor = math.floor(self.shed_threshold * pool.capacity)
        if pool.in_use < floor:
            return 0.0
        if pool.capacity <= floor:
            return 1.0
        return min(1.0, (pool.in_use - floor) / (pool.capacity - floor))

    def admit(self, method: str) -> Slot | None:
        """A slot for this request, None if it is not limited; raises Refused."""
        pool = self.pool_for(method)
        if pool is None:
            return None
        if pool.in_use >= pool.capacity:
            raise Refused("capacity", pool.name)
        probability = self.shed_probability(pool)
        if probability > 0 and self.random() < probability:
            raise Refused("shed", pool.name)
        return pool.take()

    def wait_for(self, method: str) -> Deferred[Slot | None] | None:
        """When this request's pool is full and ``admission_wait`` is set: a Deferred that fires
        with a slot as soon as one is this request's, or with None when the wait is over (the
        request then tries :meth:`admit` again).  None: decide now.  Cancelling the Deferred
        (the client went away) takes the request out of the queue."""
        pool = self.pool_for(method)
        if pool is None or self.wait <= 0 or self.clock is None or pool.in_use < pool.capacity:
            return None
        waiter = self._enqueue(pool, worker=False)
        waiter.timer = self.clock.callLater(self.wait, self._give_up, pool, waiter)
        return waiter.ready

    def worker_pool(self) -> Pool | None:
        """The pool background workers draw from: the write pool, or the global one."""
        return self.writes if self.split else self.global_pool

    def for_worker(self) -> Deferred[Slot | None]:
        """A slot for one background pass (None: no admission control): at once when the pool
        has room and workers hold less than their share, else when one is released to it
        (first come first served with requests).  Cancelling it leaves the queue."""
        pool = self.worker_pool()
        if pool is None:
            return succeed(None)
        if pool.in_use < pool.capacity and pool.workers < pool.worker_cap and not pool.waiters:
            return succeed(pool.take(worker=True))
        return self._enqueue(pool, worker=True).ready

    def _enqueue(self, pool: Pool, *, worker: bool) -> _Waiter:
        def cancel(_: Deferred[Slot | None]) -> None:
            if waiter in pool.waiters:
                pool.waiters.remove(waiter)
                if not worker:
                    ADMISSION_WAITS.labels("gone").inc()
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()

        waiter = _Waiter(Deferred(cancel), worker)
        pool.waiters.append(waiter)
        return waiter

    def _give_up(self, pool: Pool, waiter: _Waiter) -> None:
        if waiter in pool.waiters:
            pool.waiters.remove(waiter)
            ADMISSION_WAITS.labels("timeout").inc()
            waiter.ready.callback(None)

    def credential_limit(self, slot: Slot | None) -> int | None:
        """How many slots one credential may hold for a request holding ``slot`` (None: no cap)."""
        if self.per_credential > 0:
            return self.per_credential
        if slot is None:
            return None
        return max(1, slot.pool.capacity // 4)

    def admit_credential(self, credential: str, slot: Slot | None) -> CredentialHold | None:
        """Count an authenticated request against its credential's share of its pool.

        Shares are per pool: reads in flight do not use up a credential's share of
        the write pool.  Raises Refused("credential") when the share is taken.
        """
        limit = self.credential_limit(slot)
        if limit is None:
            return None
        pool = slot.pool.name if slot is not None else "none"
        key = f"{pool}/{credential}"
        held = self.by_credential.get(key, 0)
        if held >= limit:
            raise Refused("credential", pool)
        self.by_credential[key] = held + 1
        return CredentialHold(self, key)

    def _credential_released(self, credential: str) -> None:
        held = self.by_credential.get(credential, 0) - 1
        if held > 0:
            self.by_credential[credential] = held
        else:
            self.by_credential.pop(credential, None)
