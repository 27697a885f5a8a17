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
most ``concurrency`` at once (``server.delete_concurrency``); the queue worker's retries
have their own bound (``cleanup_queue.concurrency``), so a backlog being worked off never
holds the slots the requests' deletes need.
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
from s3orch.store.interface import INTENT_DROP, CleanupItem, MetadataStore


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

    async def retry(
        self, items: Sequence[CleanupItem], *, from_queue: bool = False, limit: DeferredSemaphore | None = None
    ) -> None:
        """Try the backend deletes of queued rows (at most ``limit``'s tokens at once, by
        default ``concurrency``); remove the rows that succeeded.

        ``from_queue``: the queue worker's retries, each success audited
        (``cleanup_queue.processed``); a request's own deletes are its storage event."""
        if not items:
            return
        slots = self._limit if limit is None else limit
        done: list[int] = []

        async def one(item: CleanupItem) -> None:
            backend = self.fleet.client(item.backend)
            if backend is None:
                done.append(item.id)  # backend gone from the config: nothing to delete
                return
            try:
                await slots.run(lambda: Deferred.fromCoroutine(backend.delete_object(item.storage_key)))
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

    async def retry_due(
        self, owner: str, batch: int, claim_grace: float, concurrency: int | None = None
    ) -> int:
        """Claim up to ``batch`` rows whose backoff has passed for this instance (``owner``)
        and retry them, ``concurrency`` deletes at once (default: the requests' bound); a
        claim older than ``claim_grace`` seconds belongs to an instance presumed dead and
        is taken over.  Returns how many rows were claimed."""
        items = await self.store.claim_cleanups(self.clock.seconds(), batch, owner, claim_grace)
        for item in items:
            if item.reclaimed:
                CLEANUP_STALE_CLAIMS.labels(item.backend).inc()
                audit("cleanup_queue.claim_recovered", backend=item.backend, storage_key=item.storage_key)
        limit = None if concurrency is None else DeferredSemaphore(max(1, concurrency))
        await self.retry(items, from_queue=True, limit=limit)
        return len(items)

    async def abandon(self, write_id: str, error: BaseException) -> None:
        """Give up a write whose backend PUT failed with ``error``, before the next backend
        is tried: its intent and reservation go.  A backend that answered (an HTTP error)
        stored nothing; one that never answered -- timed out, reset, garbled its answer, or
        the call was cancelled -- may have stored the bytes all the same, so its storage key
        is queued for deletion (merely releasing the reservation leaked them, I4).

        The delete is left to the queue worker, after the queue's grace (a minute): a
        delete sent now could race a PUT still landing on a slow backend, and a hung
        backend must not cost the failover another timeout.  A delete of bytes that never
        arrived is a harmless 404.
        """
        if isinstance(error, BackendError) and error.status is not None:
            await self.store.release(write_id, self.clock.seconds())
            return
        resolution = await self.store.resolve_intent(write_id, INTENT_DROP, self.clock.seconds())
        CLEANUP_ENQUEUED.labels("write_failed").inc(len(resolution.cleanup))

    async def abandon_part(self, attempt_id: str) -> None:
        """:meth:`abandon` for a part upload whose backend call failed; its key is always
        queued (the store's ``release_part``), whatever the failure."""
        queued = await self.store.release_part(attempt_id, self.clock.seconds())
        CLEANUP_ENQUEUED.labels("part_failed").inc(len(queued))

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
