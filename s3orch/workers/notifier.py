"""Deliver the notification outbox to the webhook endpoints (``notifications.endpoints``).

Every 2 s, under its worker lock (:attr:`WorkerLock.NOTIFICATION_OUTBOX`, so one
instance delivers), the notifier reads the due rows (one per event and endpoint)
and POSTs each row's CloudEvents body (:mod:`s3orch.notify.delivery`).  A 2xx
deletes the row.  Anything else counts a failed attempt and retries after
``2^min(attempts, 6)`` seconds, until the endpoint's ``max_retries`` attempts
have failed: then the row is dropped, counted, logged and audited
(``notification.dropped``).  Each endpoint's rows
back off on their own, so one endpoint down delays nobody else.  Rows wait in the
database meanwhile: a crash or restart loses nothing, and they are sent after.

The notifier also announces its instance's life (``service.started`` when it
starts, ``service.stopping`` when it stops), through the same outbox.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import NotificationEndpoint
from s3orch.notify.delivery import Poster, endpoint_label, request_headers
from s3orch.notify.events import SERVICE_STARTED, SERVICE_STOPPING
from s3orch.notify.sink import EventSink
from s3orch.observe.audit import audit
from s3orch.observe.metrics import (
    NOTIFICATION_DROPPED,
    NOTIFICATION_DURATION,
    NOTIFICATION_FAILED,
    NOTIFICATION_QUEUE_DEPTH,
    NOTIFICATION_SENT,
)
from s3orch.store.interface import MetadataStore, OutboxEntry
from s3orch.store.locks import WorkerLock, WorkerLocks
from s3orch.workers.base import PeriodicWorker

#: s3-orchestrator drains its outbox every 2 s.
INTERVAL = 2.0
BATCH = 100
#: Deliveries in flight at once.
CONCURRENCY = 10
MAX_BACKOFF_EXPONENT = 6


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones."""
    return float(2 ** min(max(attempts, 0), MAX_BACKOFF_EXPONENT))


class Notifier(PeriodicWorker):
    """The outbox drainer (see the module); ``poster`` sends the HTTP requests."""

    def __init__(
        self,
        store: MetadataStore,
        sink: EventSink,
        endpoints: Sequence[NotificationEndpoint],
        poster: Poster,
        clock: IReactorTime,
        *,
        locks: WorkerLocks | None,
        instance: str = "",
        interval: float = INTERVAL,
        batch: int = BATCH,
    ) -> None:
        super().__init__(
            "notifier",
            interval,
            clock,
            run_now=True,
            component="notifier",
            audited=False,  # a pass every 2 s: its drops are audited, not the passes
            lock_id=WorkerLock.NOTIFICATION_OUTBOX,
            locks=locks,
        )
        self.store = store
        self.sink = sink
        self.endpoints = {e.url: e for e in endpoints}
        self.poster = poster
        self.batch = batch
        self.instance = instance or socket.gethostname()
        self._limit = DeferredSemaphore(CONCURRENCY)
        self._announced: Deferred[None] | None = None

    def startService(self) -> None:
        self._announced = Deferred.fromCoroutine(
            self.sink.emit(SERVICE_STARTED, self.instance, {"instance": self.instance})
        )
        super().startService()

    def stopService(self) -> Deferred[Any]:
        async def stop() -> None:
            await self.sink.emit(SERVICE_STOPPING, self.instance, {"instance": self.instance})
            done = super(Notifier, self).stopService()
            if done is not None:
                await done

        return Deferred.fromCoroutine(stop())

    async def tick(self) -> None:
        due = await self.store.due_events(self.clock.seconds(), self.batch)
        finished: list[int] = []
        errors: list[Exception] = []

        async def one(entry: OutboxEntry) -> None:
            try:
                if await self._limit.run(lambda: Deferred.fromCoroutine(self._deliver(entry))):
                    finished.append(entry.id)
            except Exception as exc:  # recording a failure failed (the database): tried next tick
                errors.append(exc)

        await DeferredList([Deferred.fromCoroutine(one(e)) for e in due], consumeErrors=True)
        if finished:
            await self.store.events_done(finished)
        NOTIFICATION_QUEUE_DEPTH.set(await self.store.count_events())
        if errors:
            raise errors[0]  # the tick counts as failed, and is logged

    async def _deliver(self, entry: OutboxEntry) -> bool:
        """One attempt; True when the row is finished (delivered or dropped)."""
        endpoint = self.endpoints.get(entry.endpoint)
        label = endpoint_label(entry.endpoint)
        if endpoint is None:
            NOTIFICATION_DROPPED.labels(label, entry.event_type).inc()
            self.log.warn(
                "notification {event_id} ({event_type}) dropped: endpoint {endpoint} is no longer configured",
                component="notifier", event_id=entry.event_id, event_type=entry.event_type, endpoint=label,
            )
            return True
        body = entry.payload.encode()
        started = self.clock.seconds()
        try:
            status = await self.poster.post(
                entry.endpoint, body, request_headers(body, endpoint.secret), endpoint.timeout
            )
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        NOTIFICATION_DURATION.labels(label).observe(max(0.0, self.clock.seconds() - started))
        if not error:
            NOTIFICATION_SENT.labels(label, entry.event_type).inc()
            return True
        NOTIFICATION_FAILED.labels(label, entry.event_type).inc()
        attempts = entry.attempts + 1
        if attempts >= max(1, endpoint.max_retries):
            NOTIFICATION_DROPPED.labels(label, entry.event_type).inc()
            audit(
                "notification.dropped", event_id=entry.event_id, event_type=entry.event_type,
                endpoint=label, attempts=attempts,
            )
            self.log.warn(
                "notification {event_id} ({event_type}) to {endpoint} dropped after {attempts}"
                " failed attempts: {error}",
                component="notifier", event_id=entry.event_id, event_type=entry.event_type,
                endpoint=label, attempts=attempts, error=error,
            )
            return True
        await self.store.event_failed(entry.id, error, self.clock.seconds() + backoff(attempts))
        return False
