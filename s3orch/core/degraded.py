"""The database circuit breaker and the degraded mode it switches (``circuit_breaker.*``,
BEHAVIOURS §1.26), wired by :func:`s3orch.tap.build`.

Without it, a database outage costs every request the engine's own connect timeout and
retries before its 503.  :class:`DatabaseBreaker` puts the state machine of
:mod:`s3orch.backend.breaker` in front of the metadata store (:meth:`DatabaseBreaker.guard`):
``failure_threshold`` consecutive genuine database errors (:class:`StoreUnavailable`, but not
a full disk, nor any answer of the database such as a failed condition) open it; while open
every store call fails at once with :class:`DatabaseDegraded` (a StoreUnavailable, so the
front door answers 503 with Retry-After, never 500); after ``open_timeout`` the next call is
the single probe, whose success closes it.  The database breaker draws no jitter: there is
one database, so there are no breakers to spread out.

While it is open the gateway is *degraded*: :meth:`DatabaseBreaker.write_refusal` refuses
writes (PUT, POST, DELETE: puts, copies, deletes, multipart) with 503 before their body is
read, with a Retry-After of the seconds until the probe is due, counted in
``s3o_degraded_write_rejections_total{operation}``; listings get 503 from the store at once;
reads are answered by :mod:`s3orch.core.degraded_reads` (the location cache and journal);
``/health`` answers ``{"status":"degraded"}`` (:meth:`DatabaseBreaker.degraded`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import CancelledError

from s3orch.backend.breaker import CLOSED, Breaker, Ticket
from s3orch.backend.interface import Clock
from s3orch.config.model import CircuitBreakerConfig
from s3orch.observe.metrics import DEGRADED_WRITE_REJECTIONS
from s3orch.s3 import errors
from s3orch.store.interface import MetadataStore, StoreUnavailable

#: The breaker's name (the ``name`` label of ``s3o_circuit_breaker_*``).
DATABASE = "database"
#: HTTP methods that change something: refused while degraded.
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})
#: Store calls that never go through the breaker (the service's start-up and shutdown).
_UNGUARDED = frozenset({"start", "close"})
#: What a full disk says (SQLite, PostgreSQL, the OS): not an outage the breaker may act on.
_DISK_FULL = ("database or disk is full", "no space left on device", "disk full", "diskfull")


class DatabaseDegraded(StoreUnavailable):
    """The database breaker is open: the call was not made."""


def counts_as_outage(exc: BaseException) -> bool:
    """A genuine database error: StoreUnavailable, unless the disk is full."""
    if not isinstance(exc, StoreUnavailable) or isinstance(exc, DatabaseDegraded):
        return False
    said = f"{exc} {exc.__cause__ or ''}".lower()
    return not any(words in said for words in _DISK_FULL)


class DatabaseBreaker:
    """The database's breaker, the guarded store, and what degraded mode refuses."""

    def __init__(
        self,
        config: CircuitBreakerConfig,
        clock: Clock,
        on_transition: Callable[[str, str, str], object] | None = None,
    ) -> None:
        self.clock = clock
        self.breaker = Breaker(
            DATABASE,
            failure_threshold=config.failure_threshold,
            open_timeout=config.open_timeout,
            clock=clock,
            on_transition=on_transition,
            subject=DATABASE,
            jitter_fraction=0.0,
            refuse=lambda name: DatabaseDegraded("database unavailable (circuit breaker open)"),
        )

    def guard(self, store: MetadataStore) -> MetadataStore:
        """``store`` with every call but start/close going through the breaker."""
        return cast(MetadataStore, _GuardedStore(store, self))

    def degraded(self) -> bool:
        """Whether the gateway runs degraded now (``/health``): the breaker is not closed."""
        return self.breaker.state != CLOSED

    def write_refusal(self, method: str, operation: str) -> errors.S3Error | None:
        """The 503 a write gets while degraded, or None to let it go on.

        A write arriving when the probe is due goes on: its first store call is the probe.
        """
        if method not in WRITE_METHODS or self.breaker.would_admit():
            return None
        DEGRADED_WRITE_REJECTIONS.labels(operation).inc()
        wait = max(1, math.ceil(self.breaker.retry_at - self.clock.seconds()))
        return errors.ServiceUnavailable(
            "database unavailable, writes are temporarily rejected"
        ).with_headers([("Retry-After", str(wait))])

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        ticket: Ticket = self.breaker.admit()
        try:
            result = await method(*args, **kwargs)
        except BaseException as exc:
            if counts_as_outage(exc):
                self.breaker.failed(ticket, exc)
            elif isinstance(exc, CancelledError) or not isinstance(exc, Exception):
                self.breaker.abandoned(ticket)  # cancelled: no verdict
            else:
                self.breaker.succeeded(ticket)  # the database answered (a refusal, a full disk)
            raise
        self.breaker.succeeded(ticket)
        return result


class _GuardedStore:
    """A MetadataStore proxy: each async method call goes through :meth:`DatabaseBreaker.call`.

    The wrapper of each method is made once and kept as an instance attribute (no
    ``__getattr__``, ``inspect`` and closure per call: a HEAD makes one store call, and this
    proxy cost a fifth of it); it looks the store's method up at each call, so a store whose
    methods change (a test's monkeypatch, a switchable double) is still called as it is now.
    """

    def __init__(self, store: MetadataStore, breaker: DatabaseBreaker) -> None:
        self._store = store
        self._breaker = breaker

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if name in _UNGUARDED or name.startswith("_") or not inspect.iscoroutinefunction(target):
            return target
        store, call = self._store, self._breaker.call

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            return await call(getattr(store, name), *args, **kwargs)

        guarded.__name__ = name
        self.__dict__[name] = guarded
        return guarded
