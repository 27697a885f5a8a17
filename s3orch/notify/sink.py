"""The seam between what happens and the outbox: :class:`EventSink`.

The core asks a sink for the outbox rows of an event (:meth:`EventSink.events`) and
hands them to the store call that makes the change, so the event commits with it
(the transactional outbox).  An event not caused by a transaction (a service
starting, a capacity warning) goes through :meth:`EventSink.emit`, in a transaction
of its own.  Without endpoints the sink is :data:`NULL_SINK`: no rows, no cost.

The sink is passed explicitly to whoever emits; nothing reaches for a global.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.config.model import NotificationEndpoint
from s3orch.notify.events import CloudEvent, new_event_id, wants
from s3orch.observe.metrics import NOTIFICATION_STORE_ERRORS
from s3orch.store.interface import MetadataStore, OutboxEvent


class EventSink(Protocol):
    """Where events go (see the module)."""

    @property
    def enabled(self) -> bool:
        """Whether any endpoint is configured."""

    def events(
        self, event_type: str, subject: str, data: Mapping[str, Any], *, key: str | None = None
    ) -> tuple[OutboxEvent, ...]:
        """The outbox rows of one event (one per endpoint that wants it; maybe none) for
        the caller to write in its transaction.  ``key``: the object key of a data event."""

    async def emit(
        self, event_type: str, subject: str, data: Mapping[str, Any], *, key: str | None = None
    ) -> None:
        """Write one event in a transaction of its own; never raises (logged and counted)."""


class _NullSink:
    """No endpoints: nothing is written."""

    enabled = False

    def events(
        self, event_type: str, subject: str, data: Mapping[str, Any], *, key: str | None = None
    ) -> tuple[OutboxEvent, ...]:
        return ()

    async def emit(
        self, event_type: str, subject: str, data: Mapping[str, Any], *, key: str | None = None
    ) -> None:
        return None


#: The sink when ``notifications.endpoints`` is empty.
NULL_SINK: EventSink = _NullSink()


class OutboxSink:
    """Events for the configured endpoints, written to the store's outbox."""

    log = Logger(namespace="s3orch.notify")
    enabled = True

    def __init__(
        self,
        endpoints: Sequence[NotificationEndpoint],
        store: MetadataStore,
        clock: IReactorTime,
        *,
        new_id: Callable[[], str] = new_event_id,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.store = store
        self.clock = clock
        self.new_id = new_id

    def events(
        self, event_type: str, subject: str, data: Mapping[str, Any], *, key: str | None = None
    ) -> tuple[OutboxEvent, ...]:
        targets = [e.url for e in self.endpoints if wants(e, event_type, key)]
        if not targets:
            return ()
        event = CloudEvent(self.new_id(), event_type, subject, self.clock.seconds(), data)
        body = event.body()
        return tuple(OutboxEvent(url, event.id, event_type, subject, body) for url in targets)

    async def emit(
        self, event_type: str, subject: str, data: Mapping[str, Any], *, key: str | None = None
    ) -> None:
        rows = self.events(event_type, subject, data, key=key)
        if not rows:
            return
        try:
            await self.store.enqueue_events(rows, self.clock.seconds())
        except Exception as exc:
            NOTIFICATION_STORE_ERRORS.inc()
            self.log.warn(
                "notification {event_type} for {subject} not recorded: {error}",
                component="notifier",
                event_type=event_type,
                subject=subject,
                error=str(exc),
            )


def sink_for(
    endpoints: Sequence[NotificationEndpoint], store: MetadataStore, clock: IReactorTime
) -> EventSink:
    """:class:`OutboxSink` for the endpoints, :data:`NULL_SINK` without any."""
    return OutboxSink(endpoints, store, clock) if endpoints else NULL_SINK
