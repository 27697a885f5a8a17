"""Synchronous write fan-out: ``write_path.parallel_copies.enabled`` and ``replication.ack``.

With fan-out on and ``replication.factor`` F above 1, a PUT (or a CopyObject of a
single-extent object) sends the one spooled body to F distinct backends at once, and
answers once ``ack`` of those copies are stored and recorded:

* the **primary** copy is the ordinary write: a pending intent reserves its room, and
  :func:`~s3orch.core.failover.with_failover` moves it to the next backend on a failure;
* each of the F-1 **companions** is held like a replica in flight (a cleanup row due
  after a long hold, its bytes counted as orphaned: a crash leaks neither bytes nor
  quota) on a backend no other copy of this write uses, with the same failover;
* the **commit** waits for the primary and ``ack`` - 1 companions, then makes the new
  version current with every companion stored by then, in one transaction
  (``MetadataStore.commit_object(companions=...)``): the key never shows the new version
  with fewer copies than the ack level, and an overwrite displaces the old copies only
  in that transaction;
* companions still running when the answer goes out finish in the background: each is
  recorded with the replicator's compare-and-swap (``MetadataStore.record_replica``:
  only while the object is still this write and short of the factor), else exactly its
  own per-write key is deleted.  A failed companion is left to the replicator (logged,
  ``s3o_fanout_copies_total{outcome="failed"}``).  :meth:`FanOut.drain` (the service's
  stop) waits for them, at most :data:`DRAIN_TIMEOUT`, then cancels the rest (their holds
  are deleted by the cleanup queue).

When fewer than ``ack`` copies can be stored the request fails (507 when no backend
had room, 503 when backends failed) and every copy is deleted, its room released.

CompleteMultipartUpload stays metadata-only (its parts are the object's extents): there
is no body to fan out, so ``ack`` does not apply to it; :meth:`FanOut.replicate_soon`
starts the replicator's copy of the new extents at once instead of at its next pass.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, BinaryIO, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import BackendError
from s3orch.config.features import ReplicationConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.failover import with_failover
from s3orch.core.fleet import BackendFleet
from s3orch.core.replication import (
    REPLICA_HOLD,
    PassResult,
    Replicator,
    abandon_replica,
    drop_replica,
    replica_storage_key,
)
from s3orch.observe.audit import audit
from s3orch.observe.placement_metrics import FANOUT_COPIES, FANOUT_INFLIGHT, FANOUT_SHORT_WRITES
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.store.interface import (
    Intent,
    Location,
    MetadataStore,
    ObjectRecord,
    ReplicaReservation,
    Reservation,
    UnderReplicated,
)

#: How long a stopping gateway waits for companion copies still running before it
#: cancels them (the replicator makes what they would have).
DRAIN_TIMEOUT = 60.0

#: A body up to this size is copied into memory for its copies (the request's own spool keeps
#: it in memory up to ``server.spool_memory_limit`` anyway); a larger one is shared on disk.
SMALL_BODY = 1024 * 1024

Send = Callable[[str, str, Payload], Awaitable[object]]
Commit = Callable[[Reservation, ObjectRecord, Sequence[ReplicaReservation]], Awaitable[ObjectRecord]]


def copy_or_put(fleet: BackendFleet, holders: Mapping[str, Location]) -> Send:
    """The ``send`` of a CopyObject: a backend holding the source copies it server-side,
    the others get the source's bytes, read once into a spool."""

    async def send(name: str, key: str, body: Payload) -> None:
        if name in holders:
            await fleet[name].copy_object(holders[name].storage_key, key)
        else:
            await fleet[name].put_object(key, body)

    return send


class _Cursor:
    """A read position of its own over a shared file: each copy of a fan-out write reads
    the one spool at its own pace (a seek and a read happen together, in the reactor)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._position = 0

    def seek(self, position: int, whence: int = 0) -> int:
        self._position = position
        return position

    def read(self, size: int = -1) -> bytes:
        self._file.seek(self._position)
        data = self._file.read(size)
        self._position += len(data)
        return data

    def close(self) -> None:
        return None


class _Body:
    """The write's bytes, kept for its copies after the request (which closes its spool)
    has answered: a small body is copied, a large one's file is opened again (``dup``); the
    last of ``users`` to :meth:`release` it closes it."""

    def __init__(self, payload: Payload, users: int) -> None:
        self.payload = payload
        self.users = users
        file = payload.file
        try:
            if payload.length > SMALL_BODY:
                self._file: BinaryIO = os.fdopen(os.dup(file.fileno()), "rb")
                return
        except (AttributeError, io.UnsupportedOperation):
            pass  # a body held in memory (no file behind it): copied, as a small one
        file.seek(0)
        self._file = io.BytesIO(file.read(payload.length))

    def view(self) -> Payload:
        """The bytes for one attempt of one copy."""
        return replace(self.payload, file=cast(BinaryIO, _Cursor(self._file)))

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self._file.close()


class _Round:
    """One fan-out write's shared state: the backends its copies use (never two copies on
    one backend), the companions stored so far, and the write's outcome for them."""

    def __init__(self, companions: int) -> None:
        self.in_use: set[str] = set()
        self.placing = DeferredLock()  # reservations one at a time: distinct backends
        self.stored: list[ReplicaReservation] = []
        self.errors: list[BaseException] = []
        self.running = companions
        self._need: tuple[int, Deferred[None]] | None = None
        self._outcome: frozenset[int] | None = None
        self._decided = False
        self._waiting: list[Deferred[frozenset[int] | None]] = []

    def settled(self, reservation: ReplicaReservation | None, error: BaseException | None = None) -> None:
        """A companion's upload ended (stored, or failed for good)."""
        self.running -= 1
        if reservation is not None:
            self.stored.append(reservation)
        elif error is not None:
            self.errors.append(error)
        self._check()

    def _check(self) -> None:
        if self._need is not None and (len(self.stored) >= self._need[0] or self.running == 0):
            _, d = self._need
            self._need = None
            d.callback(None)

    async def at_least(self, count: int) -> list[ReplicaReservation]:
        """The companions stored once ``count`` are (all stored by then); raises what
        the client hears when fewer than ``count`` can be."""
        if len(self.stored) < count and self.running > 0:
            d: Deferred[None] = Deferred()
            self._need = (count, d)
            await d
        if len(self.stored) < count:
            found = next((e for e in self.errors if isinstance(e, errors.S3Error)), None)
            raise found or errors.ServiceUnavailable("Not enough copies could be stored; please retry.")
        return list(self.stored)

    def decide(self, acked: Sequence[ReplicaReservation] | None) -> None:
        """The write's outcome: committed with ``acked``, or None (failed, or unknown)."""
        if self._decided:
            return
        self._decided = True
        self._outcome = None if acked is None else frozenset(r.cleanup_id for r in acked)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self._outcome)

    def outcome(self) -> Deferred[frozenset[int] | None]:
        if self._decided:
            return _fired(self._outcome)
        d: Deferred[frozenset[int] | None] = Deferred()
        self._waiting.append(d)
        return d


def _fired(value: frozenset[int] | None) -> Deferred[frozenset[int] | None]:
    d: Deferred[frozenset[int] | None] = Deferred()
    d.callback(value)
    return d


class FanOut:
    """Fan-out writes (one per process; :class:`~s3orch.core.objects.ObjectService` calls
    :meth:`write` when :meth:`levels` says it is on).  ``settings`` is the replication
    config in force (a reload changes ``factor`` and ``ack`` for the next write)."""

    log = Logger(namespace="s3orch.core.fanout")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        cleanups: Cleanups,
        clock: IReactorTime,
        routing_strategy: str,
        settings: Callable[[], ReplicationConfig],
        replicator: Replicator | None = None,
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.cleanups = cleanups
        self.clock = clock
        self.routing_strategy = routing_strategy
        self.settings = settings
        self.replicator = replicator
        self.drain_timeout = drain_timeout
        self._background: set[Deferred[None]] = set()

    def levels(self) -> tuple[int, int] | None:
        """(factor, ack) while fan-out applies (factor above 1), else None."""
        config = self.settings()
        if config.factor <= 1:
            return None
        return config.factor, config.ack_level

    # -- a write ----------------------------------------------------------------------------

    async def write(
        self,
        intent: Intent,
        payload: Payload,
        send: Send,
        record: ObjectRecord,
        *,
        reserve: Callable[[Intent, list[str]], Awaitable[Reservation | None]],
        undo: Callable[[Reservation], Awaitable[None]],
        commit: Commit,
        request_id: str = "",
    ) -> ObjectRecord:
        """Store ``payload`` (``send(backend, storage_key, payload)`` writes it; ``intent``
        describes it) on the factor's backends and commit ``record`` once the ack level is
        stored (the module).  The payload stays the caller's: the copies keep their own."""
        levels = self.levels()
        if levels is None:
            raise ValueError("fan-out is off (replication.factor 1)")
        factor, ack = levels
        state = _Round(factor - 1)
        body = _Body(payload, factor)

        async def reserve_primary(names: list[str]) -> Reservation | None:
            async with state.placing:
                free = [name for name in names if name not in state.in_use]
                reservation = await reserve(intent, free) if free else None
                if reservation is not None:
                    state.in_use.add(reservation.backend)
                return reservation

        primary: Deferred[tuple[Reservation, object]] = Deferred.fromCoroutine(
            with_failover(
                operation="PUT",
                candidates=lambda failed: self.fleet.write_candidates(intent.size, exclude=failed | state.in_use),
                reserve=reserve_primary,
                backend_of=lambda r: r.backend,
                attempt=lambda r: send(r.backend, r.storage_key, body.view()),
                undo=lambda r, exc: self.cleanups.abandon(r.write_id, exc),
                request_id=request_id,
                eligible=self.fleet.takes_writes,
            )
        )
        extent = UnderReplicated(
            intent.bucket, intent.key, intent.write_id, 0, intent.size, intent.etag or "", ()
        )
        for _ in range(factor - 1):
            self._track(self._companion(intent, extent, send, body, state, factor, request_id))
        try:
            reservation, _ = await primary
        except BaseException:
            state.decide(None)
            raise
        finally:
            body.release()
        try:
            stored = await state.at_least(ack - 1)
        except BaseException:
            state.decide(None)
            FANOUT_SHORT_WRITES.inc()
            await undo(reservation)
            raise
        copies = [Location(reservation.backend, reservation.storage_key, reservation.size)]
        copies += [Location(c.backend, c.storage_key, c.size) for c in stored]
        try:
            committed = await commit(
                reservation, replace(record, last_modified=self.clock.seconds(), locations=tuple(copies)), stored
            )
        except BaseException:
            state.decide(None)  # the companions find out for themselves (compare-and-swap)
            raise
        state.decide(stored)
        for companion in stored:
            FANOUT_COPIES.labels("acked").inc()
            audit("replication.copy", origin="fanout", request_id=request_id, bucket=intent.bucket,
                  key=intent.key, target=companion.backend, size=companion.size)
        return committed

    async def _companion(
        self, intent: Intent, extent: UnderReplicated, send: Send, body: _Body, state: _Round, factor: int,
        request_id: str,
    ) -> None:
        """One companion copy, from its reservation to its record or deletion."""
        FANOUT_INFLIGHT.inc()
        try:
            await self._companion_steps(intent, extent, send, body, state, factor, request_id)
        finally:
            FANOUT_INFLIGHT.dec()

    async def _companion_steps(
        self, intent: Intent, extent: UnderReplicated, send: Send, body: _Body, state: _Round, factor: int,
        request_id: str,
    ) -> None:
        storage_key = replica_storage_key(intent.storage_key, 0)

        async def reserve(names: list[str]) -> ReplicaReservation | None:
            async with state.placing:
                free = [name for name in names if name not in state.in_use]
                held = None
                if free:
                    held = await self.store.reserve_copy(
                        free, self.routing_strategy, storage_key, intent.size, self.clock.seconds(), REPLICA_HOLD
                    )
                if held is not None:
                    state.in_use.add(held.backend)
                return held

        async def undo(held: ReplicaReservation, exc: BaseException) -> None:
            if isinstance(exc, BackendError) and exc.status is not None:
                await drop_replica(self.cleanups, held)  # the backend answered: it stored nothing
            else:
                await abandon_replica(self.store, self.clock, held)  # the bytes may still land

        try:
            held, _ = await with_failover(
                operation="PUT (fan-out copy)",
                candidates=lambda failed: self.fleet.write_candidates(intent.size, exclude=failed | state.in_use),
                reserve=reserve,
                backend_of=lambda r: r.backend,
                attempt=lambda r: send(r.backend, r.storage_key, body.view()),
                undo=undo,
                request_id=request_id,
                eligible=self.fleet.takes_writes,
            )
        except BaseException as exc:
            body.release()
            state.settled(None, exc)
            FANOUT_COPIES.labels("failed").inc()
            if not isinstance(exc, CancelledError):
                self.log.warn(
                    "a fan-out copy of {bucket}/{key} failed; the replicator makes it later",
                    component="fanout", bucket=intent.bucket, key=intent.key, error=str(exc),
                    request_id=request_id,
                )
            return
        body.release()
        state.settled(held)
        acked = await state.outcome()
        if acked is not None and held.cleanup_id in acked:
            return  # recorded by the write's commit
        # Recorded only while the object is still this write and short of the factor;
        # otherwise exactly this copy's own key is deleted (nothing newer is behind it).
        outcome = await self.store.record_replica(extent, held, factor, (), self.clock.seconds())
        if outcome.reason == "ok":
            FANOUT_COPIES.labels("recorded").inc()
            audit("replication.copy", origin="fanout", request_id=request_id, bucket=intent.bucket,
                  key=intent.key, target=held.backend, size=held.size)
            return
        FANOUT_COPIES.labels("discarded").inc()
        await self.cleanups.run([outcome.cleanup] if outcome.cleanup is not None else [], "replication_orphan")

    # -- multipart ---------------------------------------------------------------------------

    def replicate_soon(self, bucket: str, key: str, write_id: str) -> None:
        """Start the replicator's copies of a just-completed upload's extents now (in the
        background, drained on stop) instead of at its next pass."""
        levels = self.levels()
        if levels is None or self.replicator is None:
            return
        self._track(self._replicate(bucket, key, write_id, levels[0]))

    async def _replicate(self, bucket: str, key: str, write_id: str, factor: int) -> None:
        assert self.replicator is not None
        record = await self.store.get_object(bucket, key)
        if record is None or record.write_id != write_id:
            return
        result = PassResult(run_id=f"fanout-{uuid.uuid4().hex[:16]}")
        for extent in record.extents:
            if not extent.locations:
                continue
            # Stored bytes move as they are: their size is the copies', and an MD5 of the client's
            # bytes says nothing of ciphertext or compressed frames.
            transformed = record.encrypted or extent.compression_chunk_size is not None
            short = UnderReplicated(
                bucket, key, write_id, extent.part_number, extent.locations[0].size,
                "" if transformed else extent.etag or (record.etag if not record.parts else ""),
                tuple(extent.locations),
            )
            try:
                await self.replicator.replicate(short, factor, self.replicator.uncounted(), result)
            except Exception:
                self.log.failure("copying {bucket}/{key} after its upload failed", component="fanout",
                                 bucket=bucket, key=key)
                return

    # -- the background ----------------------------------------------------------------------

    def _track(self, coroutine: Any) -> None:
        d: Deferred[None] = Deferred.fromCoroutine(coroutine)
        self._background.add(d)
        d.addErrback(lambda f: self.log.failure("fan-out copy failed", f, component="fanout"))
        d.addBoth(lambda _: self._background.discard(d))

    @property
    def running(self) -> int:
        """Copies (and post-upload replications) still running."""
        return len(self._background)

    async def drain(self) -> None:
        """Wait for the background copies (the service's stop), at most ``drain_timeout``
        seconds; then cancel the rest (their holds go to the cleanup queue)."""
        if not self._background:
            return
        deadline: Deferred[None] = Deferred()
        timer = self.clock.callLater(self.drain_timeout, deadline.callback, None)
        everything: Deferred[Any] = DeferredList(list(self._background), consumeErrors=True)
        await DeferredList([everything, cast("Deferred[Any]", deadline)], fireOnOneCallback=True, consumeErrors=True)
        if timer.active():
            timer.cancel()
        left = list(self._background)
        if left:
            self.log.warn("{count} fan-out copies still running at shutdown are cancelled",
                          component="fanout", count=len(left))
            for d in left:
                d.cancel()
            # Their undo (a store write each) runs before the store closes.
            await DeferredList(left, consumeErrors=True)
