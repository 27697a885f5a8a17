"""Per-backend circuit breakers (``backend_circuit_breaker.*``, BEHAVIOURS §1.27).

A dead backend must not cost every request a full ``backend_timeout``.  Each backend gets a
:class:`Breaker`; :class:`BreakerBackend` wraps its client (the :class:`ObjectBackend`
protocol) so that every call passes through it:

* **closed**: calls go through; ``failure_threshold`` consecutive failures open it.  Any
  backend error counts except HTTP 404 (a missing key is an answer, not an outage); a call
  the caller cancelled or that failed on our side counts neither way.
* **open**: calls fail at once with :class:`CircuitOpen` (a :class:`BackendUnavailable`: no
  connect, no timeout wait), so writes fail over to the next backend and reads to the next
  copy.  After ``open_timeout`` plus a jitter drawn afresh on each opening (up to a quarter of
  ``open_timeout``, so backends that failed together do not probe together) the next organic
  call goes through as the single probe: the breaker is half-open.
* **half-open**: the probe's success closes it, its failure opens it again; every other call
  fails at once meanwhile.  A probe in flight for more than :data:`STALE_PROBE` seconds (a
  backend that accepted the connection and never answered) is given up: by the next call
  (which becomes the probe) or by :class:`~s3orch.workers.breaker_watchdog.BreakerWatchdog`,
  which puts the breaker back to open so low-traffic backends never stay stuck half-open.

Each call's outcome is matched to the state it was admitted in (an *epoch*), so a slow call
that started before a transition cannot close or open the breaker after it.

:class:`Breaker` itself knows nothing of S3: the database breaker
(:mod:`s3orch.core.degraded`) is one too, with its own refusal, no jitter and its own
idea of which errors count.
"""

from __future__ import annotations

import random as _random
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orch.backend.interface import (
    BackendError,
    BackendNotFound,
    BackendStream,
    BackendUnavailable,
    Clock,
    IBodyConsumer,
    ListedObject,
    ObjectBackend,
    SpliceSource,
    splice_source,
)
from s3orch.notify.events import CIRCUIT_CLOSED, CIRCUIT_OPENED
from s3orch.observe.audit import audit
from s3orch.observe.metrics import BREAKER_REJECTIONS, BREAKER_STATE, BREAKER_TRANSITIONS
from s3orch.payload import Payload

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"
#: The gauge's value of each state (``s3o_circuit_breaker_state``), as the original's.
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}
#: Seconds after which a probe still in flight is given up.
STALE_PROBE = 120.0

#: ``on_transition(backend, old_state, new_state)``: where events (``backend.circuit.opened``
#: and ``.closed``) are sent from; called after the state changed, exceptions logged and ignored.
TransitionHook = Callable[[str, str, str], object]

_log = Logger(namespace="s3orch.backend.breaker")


class CircuitOpen(BackendUnavailable):
    """The backend's breaker is open (or its single probe is in flight): the call was not made."""


@dataclass(frozen=True)
class Ticket:
    """One admitted call: the epoch it was admitted in, and whether it is the probe."""

    epoch: int
    probe: bool


def counts_as_failure(exc: BaseException) -> bool:
    """Whether a call's exception trips the breaker: any backend error but a 404."""
    if isinstance(exc, BackendNotFound):
        return False
    return isinstance(exc, BackendError) and exc.status != 404


class Breaker:
    """The state machine of one breaker (a backend's, or the database's); ``clock`` and
    ``random`` are injected."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        open_timeout: float,
        clock: Clock,
        random: Callable[[], float] = _random.random,
        on_transition: TransitionHook | None = None,
        subject: str = "backend",
        jitter_fraction: float = 0.25,
        refuse: Callable[[str], Exception] | None = None,
    ) -> None:
        """``subject`` names what is guarded in log lines and audit events (``backend``,
        ``database``); ``jitter_fraction`` of ``open_timeout`` bounds the jitter; ``refuse(name)``
        is the exception a refused call raises (default :class:`CircuitOpen`)."""
        self.name = name
        self.subject = subject
        self.jitter_fraction = jitter_fraction
        self.refuse = refuse or (lambda name: CircuitOpen("circuit breaker open", backend=name))
        self.failure_threshold = failure_threshold
        self.open_timeout = open_timeout
        self.clock = clock
        self.random = random
        self.on_transition = on_transition
        self.state = CLOSED
        #: Consecutive failures counted while closed.
        self.failures = 0
        #: When an open breaker lets its probe through (clock seconds); 0 while closed.
        self.retry_at = 0.0
        #: When the probe in flight started; None when none is.
        self.probe_started: float | None = None
        self.opened_at: float | None = None
        self._epoch = 0
        BREAKER_STATE.labels(name).set(STATE_VALUES[CLOSED])

    # -- admission -----------------------------------------------------------------------

    def would_admit(self) -> bool:
        """Whether a call now would go through (closed, or the probe is due): what write
        placement asks so that an open backend is not even reserved on."""
        now = self.clock.seconds()
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return now >= self.retry_at
        return self._probe_free(now)

    def admit(self) -> Ticket:
        """Let one call through, or raise :class:`CircuitOpen` at once."""
        now = self.clock.seconds()
        if self.state == CLOSED:
            return Ticket(self._epoch, probe=False)
        if self.state == OPEN and now >= self.retry_at:
            self._move(HALF_OPEN)
            return self._dispatch_probe(now)
        if self.state == HALF_OPEN and self._probe_free(now):
            return self._dispatch_probe(now)
        BREAKER_REJECTIONS.labels(self.name).inc()
        raise self.refuse(self.name)

    def _probe_free(self, now: float) -> bool:
        started = self.probe_started
        return started is None or now - started > STALE_PROBE

    def _dispatch_probe(self, now: float) -> Ticket:
        self._epoch += 1  # a stale probe still in flight no longer decides anything
        self.probe_started = now
        return Ticket(self._epoch, probe=True)

    # -- outcomes ------------------------------------------------------------------------

    def succeeded(self, ticket: Ticket) -> None:
        """The call got an answer (a 404 included)."""
        if ticket.epoch != self._epoch:
            return
        if self.state == HALF_OPEN and ticket.probe:
            self._move(CLOSED)
        elif self.state == CLOSED:
            self.failures = 0

    def failed(self, ticket: Ticket, error: BaseException | None = None) -> None:
        """The call failed in a way that counts (:func:`counts_as_failure`)."""
        if ticket.epoch != self._epoch:
            return
        if self.state == HALF_OPEN and ticket.probe:
            self._move(OPEN, error)
        elif self.state == CLOSED:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self._move(OPEN, error)

    def abandoned(self, ticket: Ticket) -> None:
        """The call ended without a verdict on the backend (cancelled, or failed on our side):
        a probe's turn passes to the next call."""
        if ticket.epoch == self._epoch and ticket.probe and self.state == HALF_OPEN:
            self.probe_started = None

    def reset_stale_probe(self) -> bool:
        """The watchdog's job: a probe in flight for over :data:`STALE_PROBE` seconds puts the
        breaker back to open, due for a new probe at once; True when it did."""
        now = self.clock.seconds()
        started = self.probe_started
        if self.state != HALF_OPEN or started is None or now - started <= STALE_PROBE:
            return False
        _log.warn(
            "{subject} circuit breaker probe stuck for {seconds:.0f}s; reset to open",
            component="circuit_breaker",
            subject=self.subject,
            backend=self.name,
            seconds=now - started,
        )
        self._move(OPEN, retry_at=now)
        return True

    # -- transitions ---------------------------------------------------------------------

    def _move(self, new: str, error: BaseException | None = None, *, retry_at: float | None = None) -> None:
        old, now = self.state, self.clock.seconds()
        self.state = new
        self._epoch += 1
        self.probe_started = None
        if new == OPEN:
            if retry_at is None:
                retry_at = now + self.open_timeout * (1 + self.random() * self.jitter_fraction)
            self.retry_at = retry_at
            if old == CLOSED:
                self.opened_at = now
        elif new == CLOSED:
            self.failures = 0
            self.retry_at = 0.0
            self.opened_at = None
        BREAKER_STATE.labels(self.name).set(STATE_VALUES[new])
        BREAKER_TRANSITIONS.labels(self.name, old, new).inc()
        if new == OPEN and old == CLOSED:
            _log.warn(
                "{subject} circuit breaker opened after {failures} consecutive failures; "
                "calls fail at once until a probe at +{delay:.1f}s",
                component="circuit_breaker",
                subject=self.subject,
                backend=self.name,
                failures=self.failures,
                delay=self.retry_at - now,
                error=str(error) if error is not None else None,
            )
            audit(f"{self.subject}.circuit.opened", backend=self.name, failures=self.failures)
        elif new == OPEN and old == HALF_OPEN and error is not None:
            _log.info(
                "{subject} circuit breaker probe failed; open again until +{delay:.1f}s",
                component="circuit_breaker",
                subject=self.subject,
                backend=self.name,
                delay=self.retry_at - now,
                error=str(error) if error is not None else None,
            )
        elif new == CLOSED:
            _log.info(
                "{subject} circuit breaker closed", component="circuit_breaker", subject=self.subject, backend=self.name
            )
            audit(f"{self.subject}.circuit.closed", backend=self.name)
        if self.on_transition is not None:
            try:
                self.on_transition(self.name, old, new)
            except Exception:
                _log.failure("circuit breaker transition hook failed", component="circuit_breaker")

    def snapshot(self) -> dict[str, Any]:
        """The breaker for ``/admin/api/status``: JSON-ready, times in clock seconds."""
        return {
            "state": self.state,
            "consecutive_failures": self.failures,
            "failure_threshold": self.failure_threshold,
            "opened_at": self.opened_at,
            "probe_at": self.retry_at if self.state == OPEN else None,
            "probe_in_flight": self.state == HALF_OPEN and self.probe_started is not None,
        }


class Breakers:
    """Every backend's breaker, by backend name: what the fleet and the watchdog hold."""

    def __init__(self, breakers: Iterable[Breaker]) -> None:
        self._breakers = {breaker.name: breaker for breaker in breakers}

    def __getitem__(self, name: str) -> Breaker:
        return self._breakers[name]

    def available(self, name: str) -> bool:
        """Whether a write may be placed on ``name`` now (unknown names are not guarded)."""
        breaker = self._breakers.get(name)
        return breaker is None or breaker.would_admit()

    def set_transition_hook(self, hook: TransitionHook | None) -> None:
        """Where every breaker reports its transitions (the event notifier, once wired)."""
        for breaker in self._breakers.values():
            breaker.on_transition = hook

    def states(self) -> dict[str, dict[str, Any]]:
        return {name: breaker.snapshot() for name, breaker in self._breakers.items()}

    def reset_stale_probes(self) -> list[str]:
        """Give up every probe stuck half-open; the names of the breakers reset."""
        return [name for name, breaker in self._breakers.items() if breaker.reset_stale_probe()]


#: ``emit(event_type, subject, data)``: an event sink's ``emit`` (``s3orch.notify.sink``).
Emit = Callable[[str, str, Mapping[str, Any]], Coroutine[Any, Any, None]]


def transition_events(emit: Emit) -> TransitionHook:
    """A transition hook sending ``backend.circuit.opened`` when a closed breaker opens and
    ``backend.circuit.closed`` when a probe closes it (subject: the backend); the sink writes
    them in a transaction of its own, without holding up the call that tripped the breaker."""

    def hook(name: str, old: str, new: str) -> None:
        if new == OPEN and old == CLOSED:
            event_type = CIRCUIT_OPENED
        elif new == CLOSED:
            event_type = CIRCUIT_CLOSED
        else:
            return
        ensureDeferred(emit(event_type, name, {"backend": name, "state": new, "previous_state": old}))

    return hook


def guard(
    clients: Mapping[str, ObjectBackend],
    *,
    failure_threshold: int,
    open_timeout: float,
    clock: Clock,
    random: Callable[[], float] = _random.random,
    on_transition: TransitionHook | None = None,
) -> tuple[dict[str, ObjectBackend], Breakers]:
    """Wrap each client in a :class:`BreakerBackend` with a breaker of its own."""
    breakers = [
        Breaker(
            name,
            failure_threshold=failure_threshold,
            open_timeout=open_timeout,
            clock=clock,
            random=random,
            on_transition=on_transition,
        )
        for name in clients
    ]
    wrapped: dict[str, ObjectBackend] = {
        b.name: BreakerBackend(clients[b.name], b) for b in breakers
    }
    return wrapped, Breakers(breakers)


class BreakerBackend:
    """An :class:`ObjectBackend` whose every call goes through ``breaker`` first."""

    def __init__(self, inner: ObjectBackend, breaker: Breaker) -> None:
        self.inner = inner
        self.breaker = breaker
        self.name = inner.name

    async def _call(self, call: Callable[[], Awaitable[T]]) -> tuple[T, Ticket]:
        ticket = self.breaker.admit()
        try:
            result = await call()
        except BaseException as exc:
            if counts_as_failure(exc):
                self.breaker.failed(ticket, exc)
            elif isinstance(exc, BackendError):
                self.breaker.succeeded(ticket)  # a 404: the backend answered
            else:
                self.breaker.abandoned(ticket)
            raise
        self.breaker.succeeded(ticket)
        return result, ticket

    async def put_object(self, storage_key: str, payload: Payload) -> str:
        etag, _ = await self._call(lambda: self.inner.put_object(storage_key, payload))
        return etag

    async def get_object(self, storage_key: str, byte_range: tuple[int, int] | None = None) -> BackendStream:
        stream, ticket = await self._call(lambda: self.inner.get_object(storage_key, byte_range))
        return _GuardedStream(stream, self.breaker, ticket)

    async def head_object(self, storage_key: str) -> dict[str, str]:
        headers, _ = await self._call(lambda: self.inner.head_object(storage_key))
        return headers

    async def delete_object(self, storage_key: str) -> None:
        await self._call(lambda: self.inner.delete_object(storage_key))

    async def copy_object(self, source_key: str, dest_key: str) -> str:
        etag, _ = await self._call(lambda: self.inner.copy_object(source_key, dest_key))
        return etag

    async def list_keys(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[tuple[str, int]], str | None]:
        page, _ = await self._call(lambda: self.inner.list_keys(prefix, continuation, max_keys))
        return page

    async def list_objects(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[ListedObject], str | None]:
        page, _ = await self._call(lambda: self.inner.list_objects(prefix, continuation, max_keys))
        return page

    async def abort_multipart_upload(self, storage_key: str, upload_id: str) -> None:
        await self._call(lambda: self.inner.abort_multipart_upload(storage_key, upload_id))

    async def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str]]:
        uploads, _ = await self._call(lambda: self.inner.list_multipart_uploads(prefix))
        return uploads

    async def close(self) -> None:
        await self.inner.close()


class _GuardedStream:
    """A GET's stream whose body cut short counts as a failure of the call that opened it
    (the call itself counted as a success when the headers arrived)."""

    def __init__(self, inner: BackendStream, breaker: Breaker, ticket: Ticket) -> None:
        self._inner = inner
        self._breaker = breaker
        self._ticket = ticket
        self.status = inner.status
        self.length = inner.length
        self.content_range = inner.content_range
        self.headers = inner.headers

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        def count(failure: Failure) -> Failure:
            error = failure.value
            if error is not None and counts_as_failure(error):
                self._breaker.failed(self._ticket, error)
            return failure

        delivered = self._inner.deliver(consumer)
        delivered.addErrback(count)
        return delivered

    def splice_source(self) -> SpliceSource | None:
        """The inner stream's: the bytes pass unchanged, and a lent body that fails still
        fails ``deliver`` (counted above)."""
        return splice_source(self._inner)

    def cancel(self) -> None:
        self._inner.cancel()
