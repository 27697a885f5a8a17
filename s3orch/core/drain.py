"""Draining a backend: stop writes to it at once, then move every copy it holds elsewhere.

The drain's state is the store's (``drain_state``), so a restart resumes it; the
fleet keeps the set of draining backends in memory (:attr:`BackendFleet.draining`,
refreshed by every pass and by every admin call of this process) so that placement
never queries the database per request.

One extent with a copy on the draining backend:

* first the replicator's copy machinery (:meth:`Replicator.replicate`, the draining
  backend's copies not counted) makes sure it has ``max(1, replication.factor)``
  copies elsewhere, on the least utilised eligible backends (``spread``), each recorded
  only if the object is still the same write;
* then :meth:`MetadataStore.drop_drained_copy` removes the source copy, only while the
  object is unchanged and another copy remains, and its bytes are deleted through the
  cleanup queue's path (a failed delete stays queued).

When the backend holds nothing, the drain is ``completed`` (``backend.drain.completed``);
a pass that leaves copies it could not move marks it ``failed`` (``backend.drain.failed``)
and the next pass tries again.  Writes keep avoiding the backend until the drain is
cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.replication import PassResult, Replicator
from s3orch.notify import events as ev
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.audit import audit, current_id
from s3orch.observe.placement_metrics import (
    DRAIN_ACTIVE,
    DRAIN_BYTES_MOVED,
    DRAIN_OBJECTS_MOVED,
    DRAIN_RACE_ABORTED,
)
from s3orch.store.interface import DrainState, MetadataStore, UnderReplicated

#: Extents per page (the original's batch of 100 objects).
BATCH = 100


class UnknownBackend(ValueError):
    """The backend named is not in the configuration."""


@dataclass
class DrainPass:
    """What one pass over one draining backend did."""

    backend: str
    moved: int = 0
    bytes_moved: int = 0
    failed: int = 0
    #: Extents overwritten or deleted while being moved: nothing left to move (not a failure).
    raced: int = 0


class Drainer:
    """Starts, cancels, reports and runs drains (one per process; the worker and the admin API)."""

    log = Logger(namespace="s3orch.core.drain")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        cleanups: Cleanups,
        copier: Replicator,
        clock: IReactorTime,
        factor: int = 1,
        events: EventSink = NULL_SINK,
        aborter: Any = None,
        batch_size: int = BATCH,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.cleanups = cleanups
        self.copier = copier
        self.clock = clock
        self.factor = max(1, factor)
        self.events = events
        #: ``MultipartService`` (its ``abort(bucket, key, upload_id)``), to abort uploads with
        #: parts on a backend when its drain starts; None: uploads are left alone.
        self.aborter = aborter
        self.batch_size = batch_size

    # -- state ------------------------------------------------------------------------------

    async def refresh(self) -> list[DrainState]:
        """The persisted drains; the fleet's cache of draining backends follows them."""
        states = await self.store.drains()
        gone = self.fleet.draining - {state.backend for state in states}
        self.fleet.draining = frozenset(state.backend for state in states)
        for state in states:
            DRAIN_ACTIVE.labels(state.backend).set(0 if state.state == "completed" else 1)
        for backend in gone:
            DRAIN_ACTIVE.labels(backend).set(0)
        return states

    def _check(self, backend: str) -> None:
        if backend not in self.fleet.names:
            raise UnknownBackend(backend)

    async def start(self, backend: str) -> bool:
        """Start draining ``backend``: writes avoid it from now on, its open multipart uploads
        are aborted; False when it is already draining."""
        self._check(backend)
        if not await self.store.start_drain(backend, self.clock.seconds()):
            return False
        self.fleet.draining = self.fleet.draining | {backend}
        DRAIN_ACTIVE.labels(backend).set(1)
        audit("drain.started", backend=backend)
        if self.aborter is not None:
            for bucket, key, upload_id in await self.store.backend_uploads(backend):
                try:
                    await self.aborter.abort(bucket, key, upload_id)
                except Exception as exc:  # already completed or aborted meanwhile
                    self.log.info(
                        "drain: upload {upload_id} not aborted: {error}", component="drain",
                        upload_id=upload_id, error=str(exc), backend=backend,
                    )
        return True

    async def cancel(self, backend: str) -> bool:
        """Forget the drain of ``backend`` (it takes writes again; moved copies stay moved)."""
        self._check(backend)
        cancelled = await self.store.cancel_drain(backend)
        self.fleet.draining = self.fleet.draining - {backend}
        DRAIN_ACTIVE.labels(backend).set(0)
        if cancelled:
            audit("drain.cancelled", backend=backend)
        return cancelled

    async def status(self, backend: str) -> dict[str, Any] | None:
        """The drain of ``backend`` with what it still holds; None when it is not draining."""
        self._check(backend)
        found = [state for state in await self.refresh() if state.backend == backend]
        if not found:
            return None
        state = found[0]
        objects, size = await self.store.backend_holdings(backend)
        answer: dict[str, Any] = {
            "backend": backend,
            "active": state.state != "completed",
            "state": state.state,
            "objects_remaining": objects,
            "bytes_remaining": size,
            "objects_moved": state.objects_moved,
            "bytes_moved": state.bytes_moved,
            "started_at": state.started_at,
        }
        if state.error:
            answer["error"] = state.error
        return answer

    async def remove(self, backend: str, *, purged: int | None = None, purge_failures: int = 0) -> tuple[int, int]:
        """Forget ``backend``'s metadata (``MetadataStore.remove_backend``), with its
        ``backend.removed`` event in the same transaction and a ``backend.removed`` audit
        event; (copies forgotten, objects lost), or (-1, 0) while it is draining (no event).

        ``purged``: how many of its objects a purge deleted first (None: no purge).  The
        backend need not be configured any more (removing one dropped from the config is
        the usual case)."""
        data: dict[str, Any] = {"backend": backend, "purge": purged is not None}
        if purged is not None:
            data.update(purged=purged, purge_failures=purge_failures)
        outbox = self.events.events(ev.BACKEND_REMOVED, backend, data)
        copies, lost = await self.store.remove_backend(backend, self.clock.seconds(), outbox)
        if copies < 0:
            return copies, lost
        self.fleet.draining = self.fleet.draining - {backend}
        DRAIN_ACTIVE.labels(backend).set(0)
        audit("backend.removed", copies_forgotten=copies, objects_lost=lost, **data)
        return copies, lost

    # -- a pass -----------------------------------------------------------------------------

    async def run_pass(self) -> list[DrainPass]:
        """Move what every drain still has (a worker tick); a completed one too, should a write
        that raced its start have landed there since."""
        return [await self.drain(state) for state in await self.refresh()]

    async def drain(self, state: DrainState) -> DrainPass:
        """One pass over ``state.backend``: every extent on it, page by page."""
        backend = state.backend
        result = DrainPass(backend)
        after: tuple[str, str, int] | None = None
        while True:
            if after is not None and backend not in {s.backend for s in await self.refresh()}:
                return result  # cancelled meanwhile (here or by another instance)
            page = await self.store.backend_extents(backend, self.batch_size, after)
            if not page:
                break
            last = page[-1]
            after = (last.bucket, last.key, last.part_number)
            moved, moved_bytes = result.moved, result.bytes_moved
            for extent in page:
                if backend not in self.fleet.draining:
                    return result  # cancelled meanwhile (by this process)
                await self._one(backend, extent, result)
            await self.store.drain_moved(backend, result.moved - moved, result.bytes_moved - moved_bytes)
            if len(page) < self.batch_size:
                break
        remaining, size = await self.store.backend_holdings(backend)
        now = self.clock.seconds()
        data = {"backend": backend, "objects_remaining": remaining, "bytes_remaining": size}
        if remaining == 0:
            if state.state != "completed" and await self.store.finish_drain(backend, "completed", None, now):
                DRAIN_ACTIVE.labels(backend).set(0)
                audit("drain.completed", backend=backend)
                await self.events.emit(ev.DRAIN_COMPLETED, backend, data)
        elif result.failed:
            error = f"{remaining} copies could not be moved"
            if await self.store.finish_drain(backend, "failed", error, now) and state.state == "active":
                await self.events.emit(ev.DRAIN_FAILED, backend, {**data, "error": error})
        return result

    async def _one(self, backend: str, extent: UnderReplicated, result: DrainPass) -> None:
        name = f"{extent.bucket}/{extent.key}"
        scratch = PassResult(run_id=current_id() or f"drain-{backend}")
        try:
            elsewhere = [c for c in extent.copies if c.backend != backend]
            if len(elsewhere) < self.factor:
                await self.copier.replicate(extent, self.factor, (backend,), scratch)
            item = await self.store.drop_drained_copy(extent, backend, self.clock.seconds())
        except Exception:
            result.failed += 1
            self.log.failure("drain: moving {key} off {backend} failed", component="drain",
                             key=name, backend=backend)
            return
        if item is None:
            if scratch.stale or not (scratch.failed or scratch.no_target):
                # The object changed under the move (overwritten or deleted: its new write
                # avoids this backend; or the over-replication cleaner removed this copy
                # first), so there is nothing left here to move.
                result.raced += 1
                DRAIN_RACE_ABORTED.labels(backend).inc()
                audit("drain.race_aborted", backend=backend, bucket=extent.bucket, key=extent.key,
                      part_number=extent.part_number)
            else:
                result.failed += 1  # no copy could be made elsewhere
            return
        await self.cleanups.run([item], "drain")
        result.moved += 1
        result.bytes_moved += item.size
        DRAIN_OBJECTS_MOVED.labels(backend).inc()
        DRAIN_BYTES_MOVED.labels(backend).inc(item.size)
        audit("drain.move", backend=backend, bucket=extent.bucket, key=extent.key,
              part_number=extent.part_number, size=item.size)
