"""The over-replication cleaner's pass: bring extents with too many copies back to the factor.

After a backend recovers, the replacement copies the replicator made while it was down
leave extents with more copies than ``replication.factor``.  A pass pages through them
(keyset paging by ``batch_size``) and, for each, removes the lowest-scored copies:

* a copy on a draining backend scores 0 (it is removed first: the drain would move it anyway);
* a copy on a backend whose breaker is not closed scores 1;
* a copy on a healthy backend scores ``2 + (1 - utilisation)``, so the fullest goes first.

The choice is made again in the store's transaction on the copies as they are then, under
the key's and the copies' locks the replicator takes too (:mod:`s3orch.store.txn.excess`):
never below the factor, never the last healthy copy, nothing of a newer write.  A removed
copy's bytes become orphaned and its key is queued for cleanup, then deleted at once (a
failed delete is left to the cleanup queue, which frees the bytes when it succeeds).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.breaker import CLOSED
from s3orch.config.model import ReplicationConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.replication import PassProgress, QuietProgress
from s3orch.observe.audit import audit
from s3orch.observe.placement_metrics import (
    OVER_REPLICATION_BYTES,
    OVER_REPLICATION_DURATION,
    OVER_REPLICATION_ERRORS,
    OVER_REPLICATION_PENDING,
    OVER_REPLICATION_REMOVED,
    OVER_REPLICATION_RUNS,
)
from s3orch.store.interface import ExcessCopies, MetadataStore
from s3orch.store.txn.cleanup import IMMEDIATE_DELETE_GRACE
from s3orch.store.txn.excess import EXCESS_REASON, choose_excess

#: The most extents a preview lists (its ``pending`` counts them all), and the most removals
#: a pass's answer lists (its ``copies_removed`` counts them all).
PREVIEW_LIMIT = 1000


@dataclass
class CleanResult:
    """What one pass did (the admin answer)."""

    run_id: str
    scanned: int = 0
    copies_removed: int = 0
    bytes_freed: int = 0
    #: Extents that kept their copies (overwritten meanwhile, or nothing removable).
    unchanged: int = 0
    #: Extents whose removal raised (the database failed): left for the next pass.
    failed: int = 0
    #: Extents handled so far (the progress ``done``).
    handled: int = 0
    removed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``empty``, ``success``, ``partial`` or ``failed`` (``s3o_over_replication_runs_total``;
        ``error`` when the pass itself raised)."""
        if not self.scanned:
            return "empty"
        if not self.failed:
            return "success"
        return "partial" if self.copies_removed else "failed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scanned": self.scanned,
            "copies_removed": self.copies_removed,
            "bytes_freed": self.bytes_freed,
            "unchanged": self.unchanged,
            "failed": self.failed,
        }


def _name(extent: ExcessCopies) -> str:
    return f"{extent.bucket}/{extent.key}" + (f"#{extent.part_number}" if extent.part_number else "")


class OverReplicationCleaner:
    """Removes excess copies (one instance per process; the worker and the admin call it)."""

    log = Logger(namespace="s3orch.core.over_replication")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        cleanups: Cleanups,
        clock: IReactorTime,
        settings: Callable[[], ReplicationConfig],
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.cleanups = cleanups
        self.clock = clock
        #: The replicator's settings, read at each use: one factor for both, so the cleaner
        #: never trims what the replicator, working to another factor, would copy again.
        self.settings = settings

    @property
    def config(self) -> ReplicationConfig:
        """The replication settings now (``factor``, ``batch_size``)."""
        return self.settings()

    async def scores(self) -> dict[str, float]:
        """Each configured backend's copy score (see the module): 0 while it drains (the
        fleet's draining set), 1 with its breaker not closed, else 2 plus its free fraction
        ((used + orphan + reserved) / limit; unlimited: 0)."""
        quotas = await self.store.get_quotas()
        breakers = self.fleet.breaker_states()
        out: dict[str, float] = {}
        for name in self.fleet.names:
            if name in self.fleet.draining:
                out[name] = 0.0
                continue
            if breakers.get(name, {}).get("state", CLOSED) != CLOSED:
                out[name] = 1.0
                continue
            row = quotas.get(name)
            used = 0.0
            if row is not None and row.bytes_limit > 0:
                occupied = row.bytes_used + row.orphan_bytes + row.reserved_bytes
                used = min(max(occupied / row.bytes_limit, 0.0), 1.0)
            out[name] = 2.0 + (1.0 - used)
        return out

    async def preview(self, limit: int = PREVIEW_LIMIT) -> dict[str, Any]:
        """What a pass would remove now: ``{factor, pending, removals: [...]}`` (at most
        ``limit`` extents listed; ``pending`` counts them all)."""
        factor = self.config.factor
        if factor <= 1:
            return {"factor": factor, "pending": 0, "removals": []}
        pending = await self.store.count_over_replicated(factor)
        scores = await self.scores()
        removals: list[dict[str, Any]] = []
        after: tuple[str, str, int] | None = None
        while len(removals) < limit:
            page = await self.store.over_replicated(factor, min(self.config.batch_size, limit - len(removals)), after)
            if not page:
                break
            for extent in page:
                victims = choose_excess(list(extent.copies), factor, scores)
                removals.append({
                    "bucket": extent.bucket, "key": extent.key, "part_number": extent.part_number,
                    "size": extent.size, "copies": [c.backend for c in extent.copies],
                    "remove": [
                        {"backend": v.backend, "storage_key": v.storage_key,
                         "score": round(scores.get(v.backend, 1.0), 4)}
                        for v in victims
                    ],
                })
            last = page[-1]
            after = (last.bucket, last.key, last.part_number)
        return {"factor": factor, "pending": pending, "removals": removals}

    async def run_pass(
        self,
        progress: PassProgress | None = None,
        *,
        run_id: str | None = None,
        batch_size: int | None = None,
    ) -> CleanResult:
        """Page through every over-replicated extent once and remove its excess copies
        (``concurrency`` extents at once, as the replicator); each removal is audited as
        ``over_replication.remove`` with the pass's ``run_id``."""
        report = progress or QuietProgress()
        result = CleanResult(run_id=run_id or f"over_replication-{uuid.uuid4().hex[:16]}")
        factor = self.config.factor
        if factor <= 1:
            return result
        started = self.clock.seconds()
        size = max(1, batch_size or self.config.batch_size)
        limit = DeferredSemaphore(max(1, self.config.concurrency))
        total = None if progress is None else await self.store.count_over_replicated(factor)
        report.start(total=total, run_id=result.run_id, factor=factor)
        after: tuple[str, str, int] | None = None
        try:
            scores = await self.scores()
            while True:
                page = await self.store.over_replicated(factor, size, after)
                if not page:
                    break
                last = page[-1]
                after = (last.bucket, last.key, last.part_number)
                result.scanned += len(page)

                def one(extent: ExcessCopies) -> Deferred[None]:
                    return Deferred.fromCoroutine(self._one(extent, factor, scores, result, report, total))

                await DeferredList([limit.run(one, extent) for extent in page], consumeErrors=True)
                if len(page) < size:
                    break
        except Exception:
            OVER_REPLICATION_RUNS.labels("error").inc()
            raise
        finally:
            OVER_REPLICATION_DURATION.observe(max(0.0, self.clock.seconds() - started))
        OVER_REPLICATION_PENDING.set(result.failed)
        OVER_REPLICATION_RUNS.labels(result.status).inc()
        audit("over_replication.cleaned", factor=factor, **result.as_dict())
        return result

    async def _one(
        self,
        extent: ExcessCopies,
        factor: int,
        scores: Mapping[str, float],
        result: CleanResult,
        report: PassProgress,
        total: int | None,
    ) -> None:
        name = _name(extent)
        report.step_start("extent", key=name, copies=len(extent.copies))
        try:
            items = await self.store.remove_excess(
                extent, factor, scores, self.clock.seconds(), IMMEDIATE_DELETE_GRACE
            )
        except Exception as exc:
            result.failed += 1
            result.handled += 1
            OVER_REPLICATION_ERRORS.inc()
            self.log.failure("removing excess copies of {key} failed", component="over_replication", key=name)
            report.step_end("extent", key=name, error=str(exc), done=result.handled, total=total)
            return
        if not items:
            result.unchanged += 1
        for item in items:
            result.copies_removed += 1
            result.bytes_freed += item.size
            if len(result.removed) < PREVIEW_LIMIT:  # the answer's sample: bounded, whatever the pass
                result.removed.append({"key": name, "backend": item.backend})
            OVER_REPLICATION_REMOVED.labels(item.backend).inc()
            OVER_REPLICATION_BYTES.labels(item.backend).inc(item.size)
            audit(
                "over_replication.remove", run_id=result.run_id, bucket=extent.bucket, key=extent.key,
                part_number=extent.part_number, backend=item.backend, size=item.size,
                score=round(scores.get(item.backend, 1.0), 4),
            )
        result.handled += 1
        report.step_end(
            "extent", key=name, removed=[i.backend for i in items], done=result.handled, total=total
        )
        # The bytes are orphaned and queued: delete them now; a failure stays queued.
        await self.cleanups.run(items, EXCESS_REASON)
