"""Deleting backend objects nothing references any more.

Every transaction that unreferences backend bytes (an overwrite, a delete, an
aborted upload, a dropped intent) queues them in the store's cleanup table in
the same transaction; :class:`Cleanups` then deletes them on their backends:

* :meth:`Cleanups.run` right away, while the request that unreferenced them waits;
* :meth:`Cleanups.in_background` without making the request wait (overwrites);
* :meth:`Cleanups.retry_due` from the queue, for the rows whose backend delete
  failed before (the cleanup-queue worker's tick).

A row is removed once its backend delete succeeded; a failed delete stays
queued with a backoff, so nothing leaks: once the workers are quiet every
backend object is referenced, queued, or in the dead-letter table.  Backend deletes run at
most ``concurrency`` at once (``server.delete_concurrency``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import BackendError
from s3orch.core.fleet import BackendFleet
from s3orch.notify.emit import cleanup_exhausted
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.audit import audit
from s3orch.observe.metrics import (
    CLEANUP_DLQ_ENQUEUED,
    CLEANUP_ENQUEUED,
    CLEANUP_PROCESSED,
    CLEANUP_STALE_CLAIMS,
)
from s3orch.store.interface import CleanupItem, MetadataStore


class Cleanups:
    """The backend deletes of queued cleanup rows (one instance per process)."""

    log = Logger(namespace="s3orch.core.cleanup")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        clock: IReactorTime,
        concurrency: int,
        events: EventSink = NULL_SINK,
    ) -> None:
        self.events = events
        self.store = store
        self.fleet = fleet
        self.clock = clock
        self._limit = DeferredSemaphore(max(1, concurrency))
        self._background: set[Deferred[Any]] = set()

    async def run(self, items: Sequence[CleanupItem], reason: str) -> None:
        """Delete just-queued rows' objects now (counted under ``reason``); failures stay queued."""
        if not items:
            return
        CLEANUP_ENQUEUED.labels(reason).inc(len(items))
        await self.retry(items)

    async def retry(self, items: Sequence[CleanupItem], *, from_queue: bool = False) -> None:
        """Try the backend deletes of queued rows; remove the rows that succeeded.

        ``from_queue``: the queue worker's retries, each success audited
        (``cleanup_queue.processed``); a request's own deletes are its storage event."""
        if not items:
            return
        done: list[int] = []

        async def one(item: CleanupItem) -> None:
            backend = self.fleet.client(item.backend)
            if backend is None:
                done.append(item.id)  # backend gone from the config: nothing to delete
                return
            try:
                await self._limit.run(
                    lambda: Deferred.fromCoroutine(backend.delete_object(item.storage_key))
                )
            except BackendError as exc:
                moved = await self.store.cleanup_failed(
                    item.id, str(exc), self.clock.seconds(),
                    # written only if this failure moves the row to the dead-letter table
                    exhausted_events=cleanup_exhausted(self.events, item, str(exc)),
                )
                if moved:
                    CLEANUP_PROCESSED.labels("exhausted").inc()
                    CLEANUP_DLQ_ENQUEUED.labels(item.backend).inc()
                    audit(
                        "cleanup_queue.exhausted_to_dlq", backend=item.backend,
                        storage_key=item.storage_key, reason=item.reason, size=item.size, error=str(exc),
                    )
                else:
                    CLEANUP_PROCESSED.labels("retry").inc()
                return
            CLEANUP_PROCESSED.labels("success").inc()
            if from_queue:
                audit(
                    "cleanup_queue.processed", backend=item.backend, storage_key=item.storage_key,
                    reason=item.reason, size=item.size,
                )
            done.append(item.id)

        await DeferredList(
            [Deferred.fromCoroutine(one(item)) for item in items], consumeErrors=True
        )
        if done:
            await self.store.cleanup_done(done, self.clock.seconds())

    async def retry_due(self, owner: str, batch: int, claim_grace: float) -> int:
        """Claim up to ``batch`` rows whose backoff has passed for this instance (``owner``)
        and retry them; a claim older than ``claim_grace`` seconds belongs to an instance
        presumed dead and is taken over.  Returns how many rows were claimed."""
        items = await self.store.claim_cleanups(self.clock.seconds(), batch, owner, claim_grace)
        for item in items:
            if item.reclaimed:
                CLEANUP_STALE_CLAIMS.labels(item.backend).inc()
                audit("cleanup_queue.claim_recovered", backend=item.backend, storage_key=item.storage_key)
        await self.retry(items, from_queue=True)
        return len(items)

    def in_background(self, items: Sequence[CleanupItem], reason: str) -> None:
        """:meth:`run` without waiting; :meth:`quiesce` waits for these."""
        if not items:
            return
        if reason == "overwrite_displaced":
            for item in items:
                audit("storage.overwrite_displaced", backend=item.backend, storage_key=item.storage_key, size=item.size)
        d = Deferred.fromCoroutine(self.run(items, reason))
        self._background.add(d)

        def forget(result: object) -> None:
            self._background.discard(d)

        d.addErrback(
            lambda f: self.log.failure("background cleanup failed", f, component="objects")
        )
        d.addBoth(forget)

    async def quiesce(self) -> None:
        """Wait for the background cleanups (shutdown, tests)."""
        while self._background:
            await DeferredList(list(self._background), consumeErrors=True)
