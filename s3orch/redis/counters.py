"""Usage counters shared by every gateway through Redis, local while Redis is down (BEHAVIOURS §1.8).

The usage limits (``s3orch.core`` usage accounting) book each request's calls and bytes here
(:meth:`SharedCounters.add`), ask the unflushed totals when they decide (:meth:`load`) and the
flush moves them to PostgreSQL (:meth:`drain`, under worker lock 1007: it is a destructive read).

Every :meth:`add` lands in a local map first; while Redis is up the map is pushed at the next
reactor turn, so the adds of one turn (and of every turn a push is in flight) travel together
as one numbered :class:`~s3orch.redis.shared.Batch`.  What a gateway knows is therefore always
exact: a delta is either *pending* (local, not sent), *in flight*, *in doubt* (sent, its reply
lost: it may or may not have been applied) or applied.  In-doubt batches are sent again, first,
with their own numbers, and :data:`~s3orch.redis.shared.APPLY_SCRIPT` applies each number once:
no loss and no double count across any failure of the connection (the reasoning is in
:mod:`s3orch.redis.shared`).

A breaker (``redis.failure_threshold`` consecutive failures, ``redis.open_timeout``; the idiom
of :class:`s3orch.backend.breaker.Breaker`, which it is) switches to local counting: adds stay
pending, :meth:`load` answers from the local map (this instance's traffic only: the multi-instance
blind spot of running without Redis) and :meth:`drain` hands the local deltas to the flush.
:class:`~s3orch.workers.redis_probe.RedisProbe` calls :meth:`probe` every 5 s; once the open
timeout has passed the probe is the replay itself: every in-doubt batch and the pending map as
one new batch, in ONE ``MULTI``/``EXEC``.  Local deltas leave the in-doubt list only when EXEC's
reply says they are applied, so a replay cut short is retried, never lost nor doubled.

Not covered: deltas still local when the process dies (as the original: a crash loses the
unflushed counts of one instance), and a batch left in doubt longer than
:data:`~s3orch.redis.shared.APPLIED_TTL` (7 days of Redis answering no probe).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from s3orch.backend.breaker import CLOSED, Breaker, Ticket
from s3orch.config.features import RedisConfig
from s3orch.observe.metrics import REDIS_FALLBACK_ACTIVE, REDIS_OPERATIONS
from s3orch.redis.client import RedisClient, RedisUnavailable
from s3orch.redis.resp import ReplyError
from s3orch.redis.shared import Batch, CounterKey, RedisCounterStore

__all__ = ["CounterStore", "RedisStartupError", "SharedCounters", "from_config"]

#: Seconds between probes while Redis is down (the original's health probe).
PROBE_INTERVAL = 5.0

_log = Logger(namespace="s3orch.redis.counters")


class RedisStartupError(Exception):
    """Redis is configured and did not answer at start-up: the gateway refuses to start."""


class CounterStore(Protocol):
    """Where shared counters live (:class:`~s3orch.redis.shared.RedisCounterStore`, or a
    test's in-memory double).  ``apply`` and ``drain`` are idempotent per batch number and per
    token; :class:`RedisUnavailable` means the outcome is unknown."""

    address: str

    async def ping(self) -> None: ...

    async def apply(self, batches: Sequence[Batch]) -> None: ...

    async def load(self, counters: Sequence[CounterKey]) -> list[int]: ...

    async def drain(self, token: str, counters: Sequence[CounterKey]) -> list[int]: ...

    async def close(self) -> None: ...


def _merge(into: dict[CounterKey, int], deltas: Iterable[tuple[CounterKey, int]]) -> None:
    for counter, delta in deltas:
        into[counter] = into.get(counter, 0) + delta


class SharedCounters:
    """Counters by :class:`CounterKey`: shared through ``store`` while it answers, local while
    its breaker is open."""

    def __init__(
        self,
        store: CounterStore,
        *,
        failure_threshold: int,
        open_timeout: float,
        clock: IReactorTime,
        new_token: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self.clock = clock
        self.new_token = new_token
        self.breaker = Breaker(
            "redis",
            failure_threshold=failure_threshold,
            open_timeout=open_timeout,
            clock=clock,
            subject="redis",
            jitter_fraction=0.0,
            refuse=lambda name: RedisUnavailable("redis circuit breaker open"),
            on_transition=self._transition,
        )
        #: Deltas not sent yet.
        self._pending: dict[CounterKey, int] = {}
        #: Batches being sent now, and batches whose sending failed (outcome unknown).
        self._in_flight: list[Batch] = []
        self._in_doubt: list[Batch] = []
        #: A drain whose reply was lost: (token, counters), sent again before any other.
        self._drain_in_doubt: tuple[str, list[CounterKey]] | None = None
        self._seq = 0
        self._lock = DeferredLock()  # one push or drain at a time: batches leave in number order
        self._push_call: IDelayedCall | None = None
        self._pushing = False
        REDIS_FALLBACK_ACTIVE.set(0)

    # -- state -----------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Whether counts are shared now (the breaker is closed)."""
        return self.breaker.state == CLOSED

    def _transition(self, name: str, old: str, new: str) -> None:
        REDIS_FALLBACK_ACTIVE.set(0 if new == CLOSED else 1)
        if new == CLOSED:
            _log.info("redis is back: counters are shared again", component="redis")
        elif old == CLOSED:
            _log.warn(
                "redis unavailable: counting locally until a probe succeeds", component="redis",
                address=self.store.address,
            )

    def local(self) -> dict[CounterKey, int]:
        """Every delta this instance holds that Redis may not have (pending, in flight, in doubt)."""
        out = dict(self._pending)
        for batch in (*self._in_flight, *self._in_doubt):
            _merge(out, batch.deltas.items())
        return out

    def status(self) -> dict[str, Any]:
        """For the admin status: mode, breaker and how much is held locally."""
        return {
            "address": self.store.address,
            "shared": self.shared,
            "breaker": self.breaker.snapshot(),
            "pending_counters": len(self._pending),
            "batches_in_doubt": len(self._in_doubt),
        }

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        """PING Redis once; :class:`RedisStartupError` (naming ``redis.address``) if it does not answer."""
        try:
            await self.store.ping()
        except (RedisUnavailable, ReplyError) as exc:
            REDIS_OPERATIONS.labels("ping", "error").inc()
            raise RedisStartupError(f"redis.address {self.store.address}: Redis did not answer PING: {exc}") from exc
        REDIS_OPERATIONS.labels("ping", "success").inc()

    async def close(self) -> None:
        """Push what is pending (if Redis answers) and close the connection."""
        if self._push_call is not None and self._push_call.active():
            self._push_call.cancel()
        self._push_call = None
        await self._lock.acquire()  # a push or drain in flight ends first
        self._lock.release()
        if self.shared and (self._pending or self._in_doubt):
            await self.push()
        await self.store.close()

    # -- counting --------------------------------------------------------------------------

    def add(self, counter: CounterKey, delta: int) -> None:
        """Book ``delta`` on ``counter``; it reaches Redis at the next reactor turn (or at the
        replay after an outage)."""
        if delta == 0:
            return
        self._pending[counter] = self._pending.get(counter, 0) + delta
        self._schedule_push()

    def add_all(self, deltas: Mapping[CounterKey, int]) -> None:
        """Book several deltas (a flush whose database write failed gives its drain back)."""
        for counter, delta in deltas.items():
            self.add(counter, delta)

    def _schedule_push(self) -> None:
        if self._push_call is None and not self._pushing and self.shared:
            self._push_call = self.clock.callLater(0, self._push_now)

    def _push_now(self) -> None:
        self._push_call = None
        Deferred.fromCoroutine(self.push())

    async def push(self) -> bool:
        """Send the in-doubt batches and the pending deltas in one transaction (with nothing to
        send, PING): whether Redis took them.  Refused at once while the breaker is open; when
        its open timeout has passed this is the probe, and on success the breaker closes.  One
        push at a time: a call while one runs returns False at once (the running one sends
        again, when it ends, whatever was added meanwhile)."""
        if self._pushing:
            return False
        self._pushing = True
        try:
            await self._lock.acquire()
            try:
                return await self._push_locked()
            finally:
                self._lock.release()
        finally:
            self._pushing = False
            if self._pending and self.shared:
                self._schedule_push()

    async def _push_locked(self) -> bool:
        try:
            ticket = self.breaker.admit()
        except RedisUnavailable:
            return False
        batches = list(self._in_doubt)
        if self._pending:
            self._seq += 1
            batches.append(Batch(self._seq, self._pending))
            self._pending = {}
        self._in_doubt, self._in_flight = [], batches
        operation = "pipeline_add" if batches else "ping"
        try:
            if batches:
                await self.store.apply(batches)
            else:
                await self.store.ping()
        except Exception as exc:
            self._in_flight, self._in_doubt = [], batches
            self._failed(ticket, operation, exc)
            return False
        finally:
            self._in_flight = []
        REDIS_OPERATIONS.labels(operation, "success").inc()
        self.breaker.succeeded(ticket)
        if len(batches) > 1 or (batches and batches[0].seq != self._seq):
            _log.info(
                "replayed {count} batches of local counter deltas into redis", component="redis", count=len(batches)
            )
        return True

    def _failed(self, ticket: Ticket, operation: str, exc: BaseException) -> None:
        REDIS_OPERATIONS.labels(operation, "error").inc()
        self.breaker.failed(ticket, exc)
        if not isinstance(exc, (RedisUnavailable, ReplyError)):
            _log.failure("redis {operation} failed", component="redis", operation=operation)

    async def probe(self) -> None:
        """The probe worker's tick: push what is left (retrying in-doubt batches) while shared;
        the replay once the open breaker lets a probe through."""
        if self.shared and not (self._pending or self._in_doubt):
            return
        if self.shared or self.breaker.would_admit():
            await self.push()

    # -- reading ---------------------------------------------------------------------------

    async def load(self, counters: Sequence[CounterKey]) -> dict[CounterKey, int]:
        """The unflushed total of each counter: Redis's value (every instance's counts) plus
        this instance's deltas not known to be in it; this instance's deltas alone while Redis
        is down.  An in-doubt delta is counted even if Redis has it: an estimate that errs high
        for one round trip rather than let a limit be overshot."""
        counters = list(counters)
        if self.shared:
            try:
                ticket = self.breaker.admit()
            except RedisUnavailable:
                ticket = None
            if ticket is not None:
                # What Redis cannot include yet, taken as MGET is written: deltas not sent, and
                # in-doubt ones.  A batch in flight was written before MGET on the same
                # connection, so Redis answers MGET with it applied.
                unsent = dict(self._pending)
                for batch in self._in_doubt:
                    _merge(unsent, batch.deltas.items())
                try:
                    values = await self.store.load(counters)
                except Exception as exc:
                    self._failed(ticket, "pipeline_load", exc)
                else:
                    self.breaker.succeeded(ticket)
                    REDIS_OPERATIONS.labels("pipeline_load", "success").inc()
                    return {counter: value + unsent.get(counter, 0) for counter, value in zip(counters, values)}
        mine = self.local()
        return {counter: mine.get(counter, 0) for counter in counters}

    async def drain(self, counters: Sequence[CounterKey]) -> dict[CounterKey, int]:
        """For the flush (under lock 1007): take the counters' unflushed deltas, zeroing them
        where they are kept, and return them for PostgreSQL.  While shared, Redis's counters (a
        destructive GETSET; a drain whose reply was lost is resolved by the next call, which
        returns what it read instead of reading ``counters``); while Redis is down, this
        instance's pending deltas.  In-doubt batches are never drained locally: they are Redis's
        until a replay says otherwise.  Raises :class:`RedisUnavailable` when Redis failed now
        (the flush tries again next time).  A caller whose database write fails gives the
        result back with :meth:`add_all`."""
        await self._lock.acquire()
        try:
            return await self._drain_locked(list(counters))
        finally:
            self._lock.release()

    async def _drain_locked(self, counters: list[CounterKey]) -> dict[CounterKey, int]:
        if not self.shared:
            taken = {c: self._pending.pop(c) for c in counters if c in self._pending}
            return taken
        ticket = self.breaker.admit()
        if self._drain_in_doubt is not None:
            token, counters = self._drain_in_doubt
        else:
            token = self.new_token()
            self._drain_in_doubt = (token, counters)
        try:
            values = await self.store.drain(token, counters)
        except Exception as exc:
            self._failed(ticket, "getset", exc)
            raise RedisUnavailable(f"drain failed: {exc}") from exc
        self._drain_in_doubt = None
        self.breaker.succeeded(ticket)
        REDIS_OPERATIONS.labels("getset", "success").inc()
        return {counter: value for counter, value in zip(counters, values) if value}


def from_config(config: RedisConfig, reactor: Any, instance: str | None = None) -> SharedCounters:
    """The counters ``redis.*`` asks for (``config.enabled``): call :meth:`SharedCounters.start`
    before serving (it refuses to start when Redis does not answer), add
    :class:`~s3orch.workers.redis_probe.RedisProbe` as a worker, and :meth:`SharedCounters.close`
    after the final usage flush.  ``instance`` names this process's batches (default: random)."""
    client = RedisClient.from_address(reactor, config.address, password=config.password)
    store = RedisCounterStore(client, config.key_prefix, instance or uuid.uuid4().hex)
    return SharedCounters(
        store, failure_threshold=config.failure_threshold, open_timeout=config.open_timeout, clock=reactor
    )
