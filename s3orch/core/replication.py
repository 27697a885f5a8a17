"""The replicator's pass: bring every extent of every current object up to ``replication.factor``.

A pass pages through the extents with too few counted copies (keyset paging by
``batch_size``, so it ends even while writes go on) and handles up to
``concurrency`` of them at once.  One extent:

1. the target: the routing strategy over the backends that may take its size
   (``max_object_size``), hold no copy of it and whose breaker is not open, chosen
   in the store's reservation transaction, which also reserves the room (the new
   copy's own storage key is queued for cleanup after a long hold, so a crash never
   leaks bytes or quota);
2. the bytes: read from a source copy (healthy backends first; a read failure moves
   on to the next copy) into a spool on disk (bounded memory, checked against the
   extent's MD5 when it has one), then PUT to the target (a write failure stops this
   extent: its reservation is deleted at once);
3. the record: one transaction adds the location only if the object is still the
   same write and still needs the copy; otherwise exactly the new key is deleted
   (per-write key: nothing newer can be behind it).

Health-aware: a copy on a backend whose breaker has been open at least
``unhealthy_threshold`` (when that is above 0) does not count, so a replacement
is made on a healthy backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.breaker import CLOSED
from s3orch.backend.interface import BackendError, BackendNotFound
from s3orch.config.model import ReplicationConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.extents import check_read_back
from s3orch.core.fleet import BackendFleet
from s3orch.core.reads import CopyReader
from s3orch.core.spool import Spooler
from s3orch.notify import events as ev
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.audit import audit
from s3orch.observe.placement_metrics import (
    REPLICATION_BYTES,
    REPLICATION_COPIES,
    REPLICATION_FAILURES,
    REPLICATION_HEALTH_COPIES,
    REPLICATION_PENDING,
    REPLICATION_RUNS,
    REPLICATION_STALE_ROWS,
)
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.store.interface import (
    CleanupItem,
    Location,
    MetadataStore,
    ReplicaReservation,
    UnderReplicated,
)

#: How long a replica in flight keeps its room before the cleanup queue may delete it
#: (a copy slower than this is refused at record time, never recorded half-deleted).
REPLICA_HOLD = 6 * 3600.0

#: How long a copy whose PUT got no answer waits before the cleanup queue deletes it (the
#: queue's own grace for displaced copies: a PUT still landing has surely ended by then).
ABANDON_GRACE = 60.0


def replica_storage_key(source_key: str, part_number: int) -> str:
    """The backend key of one new copy: the source's key plus a fresh attempt id, so two
    copies of one extent (or two attempts) never share a key, and deleting a refused
    copy can reach nothing but its own bytes."""
    return f"{source_key}.r{part_number:05d}-{uuid.uuid4().hex}"


class PassProgress(Protocol):
    """Where a pass reports (the admin API's NDJSON progress has this shape)."""

    def start(self, total: int | None = None, **fields: Any) -> None: ...

    def step_start(self, step: str, **fields: Any) -> None: ...

    def step_end(self, step: str, **fields: Any) -> None: ...


class QuietProgress:
    """The :class:`PassProgress` of a pass nobody watches (a scheduled one)."""

    def start(self, total: int | None = None, **fields: Any) -> None:
        return None

    def step_start(self, step: str, **fields: Any) -> None:
        return None

    def step_end(self, step: str, **fields: Any) -> None:
        return None


@dataclass
class PassResult:
    """What one pass did (the admin answer and the ``replication.completed`` event)."""

    run_id: str
    scanned: int = 0
    copies_created: int = 0
    failed: int = 0
    no_target: int = 0
    stale: int = 0
    bytes_copied: int = 0
    #: Extents found short when the pass started (counted only when progress is watched).
    total: int | None = None
    #: Extents handled so far (the progress ``done``).
    handled: int = 0

    @property
    def status(self) -> str:
        """``empty``, ``success``, ``partial`` or ``failed`` (``s3o_replication_runs_total``)."""
        if not self.scanned:
            return "empty"
        if not self.failed and not self.no_target:
            return "success"
        return "partial" if self.copies_created else "failed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scanned": self.scanned,
            "copies_created": self.copies_created,
            "failed": self.failed,
            "no_target": self.no_target,
            "stale": self.stale,
            "bytes_copied": self.bytes_copied,
        }


class Replicator:
    """Makes missing copies (one instance per process; the worker and the admin call it)."""

    log = Logger(namespace="s3orch.core.replication")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        cleanups: Cleanups,
        spooler: Spooler,
        routing_strategy: str,
        clock: IReactorTime,
        config: ReplicationConfig,
        events: EventSink = NULL_SINK,
        reader: CopyReader | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.cleanups = cleanups
        self.spooler = spooler
        self.routing_strategy = routing_strategy
        self.clock = clock
        self.config = config
        self.events = events
        #: The read order GETs use (breakers, then recent read failures), shared with them.
        self.reader = reader or CopyReader(fleet, clock)

    # -- health -----------------------------------------------------------------------------

    def uncounted(self) -> list[str]:
        """Backends whose breaker has been open at least ``unhealthy_threshold``: their copies
        do not count toward the factor (none when the threshold is 0 or breakers are off)."""
        threshold = self.config.unhealthy_threshold
        if threshold <= 0:
            return []
        now = self.clock.seconds()
        return sorted(
            name
            for name, state in self.fleet.breaker_states().items()
            if state.get("state") != CLOSED
            and state.get("opened_at") is not None
            and now - float(state["opened_at"]) >= threshold
        )

    def sources(self, copies: Sequence[Location]) -> list[Location]:
        """The copies to read from, healthy ones first (:meth:`CopyReader.order`)."""
        return self.reader.order(copies)

    def targets(self, size: int, holders: Sequence[str]) -> list[str]:
        """Backends that may take a new copy: room for ``size`` by ``max_object_size``, no copy
        there yet, breaker not open (never offered anyway, unlike a client write)."""
        breakers = self.fleet.breakers
        return [
            name
            for name in self.fleet.write_candidates(size, exclude=holders)
            if breakers is None or breakers.available(name)
        ]

    # -- a pass -----------------------------------------------------------------------------

    async def run_pass(self, progress: PassProgress | None = None, *, run_id: str | None = None) -> PassResult:
        """Page through every under-replicated extent once and copy what is missing.

        ``run_id`` is the pass's audit correlation id (the worker's ``replication.start`` and
        ``replication.complete`` frame it); each copy is audited as ``replication.copy`` and
        the pass's counts as ``replication.copied``."""
        report = progress or QuietProgress()
        result = PassResult(run_id=run_id or f"replication-{uuid.uuid4().hex[:16]}")
        factor = self.config.factor
        if factor <= 1:
            return result
        uncounted = self.uncounted()
        # Someone watches (the admin API): tell them how much there is (one more scan).
        total = None if progress is None else await self.store.count_under_replicated(factor, uncounted)
        result.total = total
        report.start(total=total, run_id=result.run_id, factor=factor)
        limit = DeferredSemaphore(max(1, self.config.concurrency))
        after: tuple[str, str, int] | None = None
        try:
            while True:
                page = await self.store.under_replicated(factor, self.config.batch_size, after, uncounted)
                if not page:
                    break
                last = page[-1]
                after = (last.bucket, last.key, last.part_number)
                result.scanned += len(page)

                def one(extent: UnderReplicated) -> Deferred[None]:
                    return Deferred.fromCoroutine(self._one(extent, factor, uncounted, result, report))

                await DeferredList(
                    [limit.run(one, extent) for extent in page], consumeErrors=True
                )
                if len(page) < self.config.batch_size:
                    break
        except Exception:
            REPLICATION_RUNS.labels("error").inc()
            raise
        REPLICATION_PENDING.set(result.failed + result.no_target)
        REPLICATION_RUNS.labels(result.status).inc()
        audit("replication.copied", factor=factor, uncounted=uncounted, **result.as_dict())
        if result.scanned:
            await self.events.emit(ev.REPLICATION_COMPLETED, "replication", result.as_dict())
        return result

    async def _one(
        self,
        extent: UnderReplicated,
        factor: int,
        uncounted: Sequence[str],
        result: PassResult,
        report: PassProgress,
    ) -> None:
        name = f"{extent.bucket}/{extent.key}" + (f"#{extent.part_number}" if extent.part_number else "")
        report.step_start("extent", key=name, size=extent.size)
        try:
            outcome = await self.replicate(extent, factor, uncounted, result)
        except Exception as exc:
            outcome = "failed"
            result.failed += 1
            REPLICATION_FAILURES.labels("error").inc()
            self.log.failure("replicating {key} failed", component="replication", key=name)
            result.handled += 1
            report.step_end("extent", key=name, outcome=outcome, error=str(exc),
                            done=result.handled, total=result.total)
            return
        result.handled += 1
        report.step_end("extent", key=name, outcome=outcome, created=result.copies_created,
                        done=result.handled, total=result.total)

    async def replicate(
        self, extent: UnderReplicated, factor: int, uncounted: Sequence[str], result: PassResult
    ) -> str:
        """Copy one extent until it has ``factor`` counted copies; how it ended."""
        skipped = set(uncounted)
        counted = sum(1 for c in extent.copies if c.backend not in skipped)
        payload: Payload | None = None
        made = 0
        holders = [c.backend for c in extent.copies]
        try:
            while counted + made < factor:
                skey = replica_storage_key(extent.copies[0].storage_key, extent.part_number)
                outcome = await self.store.reserve_replica(
                    extent, factor, uncounted, self.targets(extent.size, holders),
                    self.routing_strategy, skey, self.clock.seconds(), REPLICA_HOLD,
                )
                if outcome.reason == "no_target":
                    return await self._exhausted(extent, result)
                if outcome.reason != "ok" or outcome.reservation is None:
                    result.stale += 1
                    return outcome.reason
                reservation = outcome.reservation
                if payload is None:
                    try:
                        payload = await self._read(extent)
                    except BaseException:
                        await self._drop(reservation)
                        raise
                    if payload is None:
                        await self._drop(reservation)
                        result.failed += 1
                        REPLICATION_FAILURES.labels("read").inc()
                        return "read_failed"
                if not await self._write(extent, reservation, payload):
                    result.failed += 1
                    REPLICATION_FAILURES.labels("write").inc()
                    return "write_failed"
                recorded = await self.store.record_replica(
                    extent, reservation, factor, uncounted, self.clock.seconds()
                )
                if recorded.reason != "ok":
                    await self.cleanups.run(
                        [recorded.cleanup] if recorded.cleanup is not None else [], "replication_orphan"
                    )
                    result.stale += 1
                    REPLICATION_FAILURES.labels("stale").inc()
                    self.log.info(
                        "replica of {bucket}/{key} not recorded ({reason}); its copy is deleted",
                        component="replication", bucket=extent.bucket, key=extent.key,
                        reason=recorded.reason, backend=reservation.backend,
                    )
                    return recorded.reason
                if len(extent.copies) + made >= factor:
                    REPLICATION_HEALTH_COPIES.inc()  # needed only because some copies do not count
                made += 1
                holders.append(reservation.backend)
                result.copies_created += 1
                result.bytes_copied += extent.size
                REPLICATION_COPIES.labels(reservation.backend).inc()
                REPLICATION_BYTES.labels(reservation.backend).inc(extent.size)
                audit(
                    "replication.copy", run_id=result.run_id, bucket=extent.bucket, key=extent.key,
                    part_number=extent.part_number, target=reservation.backend, size=extent.size,
                )
        finally:
            if payload is not None:
                payload.close()
        return "copied" if made else "satisfied"

    async def copy_one(self, extent: UnderReplicated, reservation: ReplicaReservation) -> str:
        """Copy ``extent``'s bytes to the room ``reservation`` holds, by the replicator's own
        read (healthy copies first, MD5-checked spool) and write (its failure handling): the
        rebalancer's moves take this path.  ``ok``, ``read_failed`` (the room is freed at once)
        or ``write_failed``."""
        try:
            payload = await self._read(extent)
        except BaseException:
            await self._drop(reservation)
            raise
        if payload is None:
            await self._drop(reservation)
            return "read_failed"
        try:
            return "ok" if await self._write(extent, reservation, payload) else "write_failed"
        finally:
            payload.close()

    async def _exhausted(self, extent: UnderReplicated, result: PassResult) -> str:
        result.no_target += 1
        REPLICATION_FAILURES.labels("no_target").inc()
        self.log.warn(
            "no backend can take another copy of {bucket}/{key}; skipped",
            component="replication", bucket=extent.bucket, key=extent.key,
            part_number=extent.part_number, size=extent.size,
        )
        await self.events.emit(
            ev.REPLICATION_TARGET_EXHAUSTED, f"{extent.bucket}/{extent.key}",
            {"bucket": extent.bucket, "key": extent.key, "part_number": extent.part_number,
             "size": extent.size, "copies": [c.backend for c in extent.copies],
             "factor": self.config.factor},
        )
        return "no_target"

    async def _read(self, extent: UnderReplicated) -> Payload | None:
        """The extent's bytes in a spool, from the first source that delivers them whole and
        matching its MD5; None when no source could."""
        if extent.size == 0:
            return await self.spooler.empty()
        for source in self.sources(extent.copies):
            client = self.fleet.client(source.backend)
            if client is None:
                continue
            try:
                stream = await client.get_object(source.storage_key)
                payload = await self.spooler.spool(stream, extent.size)
            except BackendNotFound:
                # Its record is stale (the bytes were removed behind our back): forget it,
                # unless it is the extent's last copy.
                dropped = await self.store.drop_missing_copy(
                    extent, source.backend, source.storage_key, self.clock.seconds()
                )
                if dropped:
                    REPLICATION_STALE_ROWS.labels(source.backend).inc()
                self.log.error(
                    "replication source missing on its backend; its record {what}",
                    what="is removed" if dropped else "stays (the only copy)", component="replication",
                    backend=source.backend, storage_key=source.storage_key,
                )
                continue
            except BackendError as exc:
                self.reader.failed(source.backend)
                self.log.warn(
                    "replication read failed; trying the next copy", component="replication",
                    backend=source.backend, error=str(exc),
                )
                continue
            try:
                check_read_back(payload, extent.etag)
            except BackendError as exc:
                payload.close()
                self.log.error(
                    "replication source does not match its MD5; trying the next copy",
                    component="replication", backend=source.backend, error=str(exc),
                )
                continue
            return payload
        return None

    async def _write(self, extent: UnderReplicated, reservation: ReplicaReservation, payload: Payload) -> bool:
        try:
            await self.fleet[reservation.backend].put_object(reservation.storage_key, payload)
        except (BackendError, errors.S3Error) as exc:
            self.log.warn(
                "replication write failed; this object waits for the next pass", component="replication",
                backend=reservation.backend, bucket=extent.bucket, key=extent.key, error=str(exc),
            )
            if isinstance(exc, BackendError) and exc.status is None:
                await self._abandon(reservation)  # no answer: the bytes may still land
            else:
                await self._drop(reservation)  # the backend answered: it stored nothing
            return False
        except BaseException:
            await self._abandon(reservation)
            raise
        return True

    async def _abandon(self, reservation: ReplicaReservation) -> None:
        await abandon_replica(self.store, self.clock, reservation)

    async def _drop(self, reservation: ReplicaReservation) -> None:
        await drop_replica(self.cleanups, reservation)


async def abandon_replica(store: MetadataStore, clock: IReactorTime, reservation: ReplicaReservation) -> None:
    """A copy whose PUT got no answer: the cleanup queue deletes it after its grace (as an
    abandoned client write), never at once, which could race the PUT still landing."""
    await store.abandon_replica(reservation.cleanup_id, clock.seconds() + ABANDON_GRACE)


async def drop_replica(cleanups: Cleanups, reservation: ReplicaReservation) -> None:
    """Delete a copy that will not be recorded (and free its room) now; a failure leaves
    its cleanup row to the queue."""
    item = CleanupItem(
        reservation.cleanup_id, reservation.backend, reservation.storage_key, reservation.size,
        "replication_orphan", 0,
    )
    await cleanups.run([item], "replication_orphan")
