"""Resolving the writes whose commit failed: promote them if their bytes arrived, else drop them.

A PUT writes a pending intent (reserving quota) before sending the bytes to a
fresh backend key, and its commit deletes the intent.  When the commit fails
(the database went away after the backend PUT) the client gets a 5xx and the
intent stays, holding its reservation, with the bytes maybe on the backend.
:class:`IntentResolver` claims intents at least ``min_age`` old (so writes still
in flight are left alone) and HEADs each one's backend object:

* present with the intent's size: **promote** -- the write becomes the key's
  current version exactly as its commit would have made it (the previous
  copies are queued for cleanup), unless a later write or delete of the key
  superseded it, or its condition (If-None-Match / If-Match) no longer holds:
  then it is dropped;
* absent (404), or not what the write stored: **drop** -- the reservation is
  released and the backend key queued for cleanup;
* any other backend error: **keep** (ambiguous) -- tried again on a later pass.

Intents already marked superseded, or recording no object metadata, are
dropped without a backend call.  The store re-checks everything in the
resolving transaction, so a write that commits, or a newer one that lands,
between the HEAD and the resolution is never overwritten: a failed write never
replaces a newer one, and neither bytes nor quota leak.

``min_age`` must exceed the longest time an upload may take: an intent
resolved while its upload is still running is dropped, and that PUT then
fails with 503 (its bytes are cleaned up; nothing leaks).  The pending-reaper
worker (``s3orch.workers.pending_reaper``) decides when a pass runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import BackendError, BackendNotFound
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.notify.events import OBJECT_CREATED_PUT
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.audit import audit
from s3orch.observe.metrics import PENDING_DEPTH, PENDING_RESOLVED
from s3orch.store.interface import (
    INTENT_ALREADY_RESOLVED,
    INTENT_AMBIGUOUS,
    INTENT_DROP,
    INTENT_KEEP,
    INTENT_PROMOTE,
    INTENT_PROMOTED,
    INTENT_SUPERSEDED,
    IntentResolution,
    MetadataStore,
    PendingIntent,
    StoreUnavailable,
)

#: Metric status of each resolution (a superseded write is counted as dropped).
_METRIC_STATUS = {INTENT_SUPERSEDED: "dropped"}

#: Backend HEADs one pass runs at once.
HEAD_CONCURRENCY = 8

#: The log component of resolutions (what operators filter on).
COMPONENT = "pending_reaper"


class IntentResolver:
    """Promotes or drops stale pending intents (see the module); one per process.

    Intents are claimed for this instance (``owner``) like cleanup rows, so two
    instances never resolve the same one even without a worker lock; a claim
    older than ``claim_grace`` belongs to an instance presumed dead.  Up to
    ``concurrency`` backend HEADs run at once.
    """

    log = Logger(namespace="s3orch.core.intents")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        cleanups: Cleanups,
        clock: IReactorTime,
        concurrency: int = HEAD_CONCURRENCY,
        events: EventSink = NULL_SINK,
    ) -> None:
        self.events = events
        self.store = store
        self.fleet = fleet
        self.cleanups = cleanups
        self.clock = clock
        self._limit = DeferredSemaphore(max(1, concurrency))

    async def resolve_stale(self, *, min_age: float, batch: int, owner: str, claim_grace: float) -> list[str]:
        """Claim up to ``batch`` intents at least ``min_age`` seconds old and resolve
        them; then refresh ``s3o_pending_intents_depth``.  The resolutions' statuses."""
        intents = await self.store.stale_intents(self.clock.seconds(), min_age, batch, owner, claim_grace)
        statuses = await self.resolve_all(intents)
        PENDING_DEPTH.set(await self.store.count_intents())
        return statuses

    async def resolve_all(self, intents: Sequence[PendingIntent]) -> list[str]:
        """Resolve claimed intents (bounded concurrency); their statuses, in order.

        One intent's failure does not stop the others; a database failure is raised
        afterwards (the unresolved claims are taken again after the grace).
        """

        unavailable: list[StoreUnavailable] = []

        async def guarded(intent: PendingIntent) -> str:
            try:
                return await self._limit.run(lambda: Deferred.fromCoroutine(self.resolve(intent)))
            except StoreUnavailable as exc:
                unavailable.append(exc)
            except Exception:
                self.log.failure(
                    "resolving pending intent {write_id} failed",
                    component=COMPONENT,
                    write_id=intent.write_id,
                )
            return "error"

        statuses = await gatherResults([Deferred.fromCoroutine(guarded(i)) for i in intents])
        if unavailable:
            raise unavailable[0]
        return list(statuses)

    async def resolve(self, intent: PendingIntent) -> str:
        """HEAD one intent's backend object and resolve it; the resolution's status."""
        outcome, why = await self._decide(intent)
        # A promoted write is an object created, as its own commit would have said.
        created = self.events.events(
            OBJECT_CREATED_PUT, intent.key, {"bucket": intent.bucket, "key": intent.key, "size": intent.size},
            key=intent.key,
        ) if outcome == INTENT_PROMOTE else ()
        resolution = await self.store.resolve_intent(
            intent.write_id, outcome, self.clock.seconds(), events=created
        )
        status = resolution.status
        PENDING_RESOLVED.labels(_METRIC_STATUS.get(status, status)).inc()
        self._report(intent, resolution, why)
        if resolution.cleanup:
            reason = "overwrite_displaced" if status == INTENT_PROMOTED else "pending_dropped"
            await self.cleanups.run(resolution.cleanup, reason)
        return status

    async def _decide(self, intent: PendingIntent) -> tuple[str, str]:
        """The outcome to ask for, and why when it is not a promotion."""
        if intent.superseded or not intent.promotable:
            return INTENT_DROP, ""  # it can only be dropped (the store says why)
        backend = self.fleet.client(intent.backend)
        if backend is None:
            self.log.warn(
                "pending intent {write_id} is on backend {backend}, which is no longer"
                " configured; dropping it",
                component=COMPONENT,
                write_id=intent.write_id,
                backend=intent.backend,
            )
            return INTENT_DROP, f"backend {intent.backend} is no longer configured"
        try:
            headers = await backend.head_object(intent.storage_key)
        except BackendNotFound:
            return INTENT_DROP, "its bytes are not on the backend"
        except BackendError as exc:
            self.log.warn(
                "HEAD of pending write {backend}/{storage_key} failed ({error});"
                " keeping the intent for a later try",
                component=COMPONENT,
                backend=intent.backend,
                storage_key=intent.storage_key,
                error=str(exc),
            )
            return INTENT_KEEP, ""
        size = _content_length(headers)
        if size is None:
            self.log.warn(
                "HEAD of pending write {backend}/{storage_key} gave no usable Content-Length;"
                " keeping the intent for a later try",
                component=COMPONENT,
                backend=intent.backend,
                storage_key=intent.storage_key,
            )
            return INTENT_KEEP, ""
        if size != intent.size:
            # The key is this write's own: bytes of another size are not what it stored.
            self.log.error(
                "pending write {backend}/{storage_key} holds {found} bytes, not {expected};"
                " dropping it",
                component=COMPONENT,
                backend=intent.backend,
                storage_key=intent.storage_key,
                found=size,
                expected=intent.size,
            )
            return INTENT_DROP, f"the backend holds {size} bytes, not {intent.size}"
        return INTENT_PROMOTE, ""

    def _report(self, intent: PendingIntent, resolution: IntentResolution, why: str) -> None:
        status = resolution.status
        if status in (INTENT_AMBIGUOUS, INTENT_ALREADY_RESOLVED):
            return
        fields: dict[str, Any] = {
            "write_id": intent.write_id,
            "bucket": intent.bucket,
            "key": intent.key,
            "backend": intent.backend,
            "size": intent.size,
        }
        if status == INTENT_PROMOTED:
            audit("pending_reaper.promoted", **fields)
            self.log.info(
                "promoted pending write {write_id} of {bucket}/{key}", component=COMPONENT, **fields
            )
            return
        reason = resolution.reason or why
        audit(f"pending_reaper.{status}", reason=reason, **fields)
        self.log.info(
            "dropped pending write {write_id} of {bucket}/{key}: {reason}",
            component=COMPONENT,
            reason=reason,
            status=status,
            **fields,
        )


def _content_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        size = int(value.strip())
    except ValueError:
        return None
    return size if size >= 0 else None
