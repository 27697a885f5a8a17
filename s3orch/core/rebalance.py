"""The rebalancer's pass: move copies between backends by the pack or spread plan.

A pass reads each backend's fill (used + orphaned + reserved bytes of its ``quota_bytes``),
skips when the utilisation spread (max - min) is below ``threshold``
(``s3o_rebalance_skipped_total{reason="threshold"}``), otherwise plans up to ``batch_size``
moves (:mod:`s3orch.core.rebalance_plan`; the smallest copies of each backend, at most
:data:`CANDIDATES_PER_BATCH` times the batch, bounded memory whatever the fleet) and runs
them ``concurrency`` at once.  One move:

1. room on the target is reserved for one more copy, in the replicator's reservation
   transaction (the new copy's own key queued for cleanup after a long hold: a crash from
   here on leaks neither bytes nor quota);
2. the bytes are copied by the replicator's own routine (:meth:`Replicator.copy_one`:
   healthy source first, a spool on disk checked against the MD5, then the PUT);
3. one transaction swaps the location (:meth:`MetadataStore.move_copy`): the target's copy is
   recorded and the source's dropped, only while the object is the same write, the source
   copy is still there and the target holds none -- so an extent never has fewer copies;
4. the source's bytes are deleted through the cleanup queue's path (a failed delete stays
   queued); a refused swap deletes exactly the new copy, by its own per-write key.

The target of a move is never a draining backend, one with an open breaker, one without room
for the copy (``max_object_size`` too), nor one already holding a copy of the extent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.config.model import RebalanceConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.rebalance_plan import PLANS, Fill, Move, spread_of
from s3orch.core.replication import REPLICA_HOLD, PassProgress, QuietProgress, Replicator, replica_storage_key
from s3orch.notify import events as ev
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.audit import audit
from s3orch.observe.placement_metrics import (
    REBALANCE_BYTES,
    REBALANCE_DURATION,
    REBALANCE_MOVED,
    REBALANCE_PENDING,
    REBALANCE_RUNS,
    REBALANCE_SKIPPED,
)
from s3orch.store.interface import MetadataStore, UnderReplicated
from s3orch.store.txn.cleanup import IMMEDIATE_DELETE_GRACE
from s3orch.store.txn.rebalance import ORPHAN_REASON, SOURCE_REASON

#: Copies read per backend for a plan, as a multiple of ``batch_size`` (some cannot move:
#: too big for any room, or every other backend holds a copy already).
CANDIDATES_PER_BATCH = 4


@dataclass
class RebalanceResult:
    """What one pass did (the admin answer and the ``rebalance.completed`` event)."""

    run_id: str
    strategy: str
    planned: int = 0
    moved: int = 0
    bytes_moved: int = 0
    #: Moves refused at reservation or swap (the object changed, the room went): left alone.
    stale: int = 0
    failed: int = 0
    #: Why the pass moved nothing without trying (``threshold``, ``empty_plan``), or None.
    skipped: str | None = None
    spread: float = 0.0
    handled: int = 0
    moves: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``empty``, ``success``, ``partial`` or ``failed`` (``s3o_rebalance_runs_total``)."""
        if not self.planned:
            return "empty"
        if not self.failed:
            return "success"
        return "partial" if self.moved else "failed"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id, "strategy": self.strategy, "planned": self.planned,
            "moved": self.moved, "bytes_moved": self.bytes_moved, "stale": self.stale,
            "failed": self.failed, "spread": round(self.spread, 6),
        }
        if self.skipped:
            out["skipped"] = self.skipped
        return out


class Rebalancer:
    """Plans and runs moves (one instance per process; the worker and the admin call it)."""

    log = Logger(namespace="s3orch.core.rebalance")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        cleanups: Cleanups,
        copier: Replicator,
        clock: IReactorTime,
        config: RebalanceConfig,
        events: EventSink = NULL_SINK,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.cleanups = cleanups
        #: The replicator whose reservation, read and write a move reuses.
        self.copier = copier
        self.clock = clock
        self.config = config
        self.events = events

    # -- planning ---------------------------------------------------------------------------

    async def fills(self) -> list[Fill]:
        """The backends that take part, in configuration order: a quota limit, not draining."""
        quotas = await self.store.get_quotas()
        out: list[Fill] = []
        for name in self.fleet.names:
            row = quotas.get(name)
            if row is None or row.bytes_limit <= 0 or name in self.fleet.draining:
                continue
            out.append(Fill(name, row.bytes_limit, row.bytes_used + row.orphan_bytes + row.reserved_bytes))
        return out

    def _readable(self, name: str) -> bool:
        breakers = self.fleet.breakers
        return breakers is None or breakers.available(name)

    async def plan(self, config: RebalanceConfig | None = None) -> tuple[list[Move], list[Fill], float, str | None]:
        """(moves, fills before the moves, spread, why skipped or None) by ``config``'s strategy."""
        config = config or self.config
        fills = await self.fills()
        spread = spread_of(fills)
        if len(fills) < 2 or spread < config.threshold:
            return [], fills, spread, "threshold"
        snapshot = [Fill(f.name, f.limit, f.occupied) for f in fills]
        per_backend = config.batch_size * CANDIDATES_PER_BATCH
        candidates: dict[str, list[UnderReplicated]] = {}
        for fill in fills:
            if self._readable(fill.name):  # a source behind an open breaker keeps its copies
                candidates[fill.name] = await self.store.rebalance_candidates(fill.name, per_backend)
        moves = PLANS[config.strategy](fills, candidates, self.copier.targets, config.batch_size)
        return moves, snapshot, spread, None if moves else "empty_plan"

    async def preview(self, config: RebalanceConfig | None = None) -> dict[str, Any]:
        """What a pass would do now: the backends' utilisation and the planned moves."""
        config = config or self.config
        moves, fills, spread, skipped = await self.plan(config)
        answer: dict[str, Any] = {
            "strategy": config.strategy, "threshold": config.threshold, "batch_size": config.batch_size,
            "spread": round(spread, 6),
            "backends": [
                {"backend": f.name, "limit": f.limit, "occupied": f.occupied, "utilisation": round(f.ratio, 6)}
                for f in fills
            ],
            "moves": [move.as_dict() for move in moves],
        }
        if skipped:
            answer["skipped"] = skipped
        return answer

    # -- a pass -----------------------------------------------------------------------------

    async def run_pass(
        self,
        progress: PassProgress | None = None,
        *,
        run_id: str | None = None,
        config: RebalanceConfig | None = None,
    ) -> RebalanceResult:
        """Plan and run one batch of moves; each move audited as ``rebalance.move`` with ``run_id``."""
        config = config or self.config
        report = progress or QuietProgress()
        result = RebalanceResult(run_id=run_id or f"rebalance-{uuid.uuid4().hex[:16]}", strategy=config.strategy)
        started = self.clock.seconds()
        try:
            moves, _, result.spread, result.skipped = await self.plan(config)
            result.planned = len(moves)
            REBALANCE_PENDING.set(len(moves))
            report.start(total=len(moves), run_id=result.run_id, strategy=config.strategy,
                         spread=round(result.spread, 6), skipped=result.skipped)
            if result.skipped:
                REBALANCE_SKIPPED.labels(result.skipped).inc()
                audit("rebalance.skipped", run_id=result.run_id, reason=result.skipped,
                      spread=round(result.spread, 6), threshold=config.threshold)
                return result
            limit = DeferredSemaphore(max(1, config.concurrency))

            def one(move: Move) -> Deferred[None]:
                return Deferred.fromCoroutine(self._one(move, config.strategy, result, report))

            await DeferredList([limit.run(one, move) for move in moves], consumeErrors=True)
        except Exception:
            REBALANCE_RUNS.labels(config.strategy, "error").inc()
            raise
        finally:
            REBALANCE_DURATION.labels(config.strategy).observe(max(0.0, self.clock.seconds() - started))
        REBALANCE_PENDING.set(result.planned - result.moved)
        REBALANCE_RUNS.labels(config.strategy, result.status).inc()
        audit("rebalance.moved", **result.as_dict())
        if result.moved:
            await self.events.emit(ev.REBALANCE_COMPLETED, "rebalance", result.as_dict())
        return result

    async def _one(self, move: Move, strategy: str, result: RebalanceResult, report: PassProgress) -> None:
        report.step_start("move", key=move.name, size=move.size, source=move.source.backend, target=move.target)
        try:
            outcome = await self.move(move)
        except Exception as exc:
            outcome = "failed"
            self.log.failure("moving {key} failed", component="rebalance", key=move.name)
            report.step_end("move", key=move.name, outcome=outcome, error=str(exc),
                            done=result.handled + 1, total=result.planned)
            result.failed += 1
            result.handled += 1
            REBALANCE_MOVED.labels(strategy, "failed").inc()
            return
        result.handled += 1
        if outcome == "moved":
            result.moved += 1
            result.bytes_moved += move.size
            REBALANCE_BYTES.labels(strategy).inc(move.size)
            if len(result.moves) < 1000:  # the answer's sample stays bounded
                result.moves.append(move.as_dict())
            audit("rebalance.move", run_id=result.run_id, bucket=move.extent.bucket, key=move.extent.key,
                  part_number=move.extent.part_number, source=move.source.backend, target=move.target,
                  size=move.size)
        elif outcome in ("read_failed", "write_failed"):
            result.failed += 1
        else:
            result.stale += 1
        REBALANCE_MOVED.labels(strategy, {"moved": "success"}.get(outcome, outcome)).inc()
        report.step_end("move", key=move.name, outcome=outcome, done=result.handled, total=result.planned)

    async def move(self, move: Move) -> str:
        """Run one move (see the module); how it ended: ``moved``, ``read_failed``,
        ``write_failed``, or why it was refused (``stale``, ``satisfied``, ``no_target``,
        ``source_gone``, ``target_holds``, ``expired``)."""
        extent = move.extent
        key = replica_storage_key(move.source.storage_key, extent.part_number)
        reserved = await self.store.reserve_replica(
            extent, len(extent.copies) + 1, (), [move.target], "pack", key, self.clock.seconds(), REPLICA_HOLD
        )
        if reserved.reason != "ok" or reserved.reservation is None:
            return reserved.reason
        reservation = reserved.reservation
        copied = await self.copier.copy_one(extent, reservation)
        if copied == "read_failed" and not await self._current(extent):
            return "stale"  # overwritten or deleted meanwhile: its old copies went with it
        if copied != "ok":
            return copied
        swapped = await self.store.move_copy(
            extent, reservation, move.source.backend, move.source.storage_key,
            self.clock.seconds(), IMMEDIATE_DELETE_GRACE,
        )
        if swapped.reason != "ok":
            self.log.info(
                "move of {key} to {target} refused ({reason}); its new copy is deleted",
                component="rebalance", key=move.name, target=move.target, reason=swapped.reason,
            )
            await self.cleanups.run(_items(swapped.cleanup), ORPHAN_REASON)
            return swapped.reason
        await self.cleanups.run(_items(swapped.cleanup), SOURCE_REASON)
        return "moved"

    async def _current(self, extent: UnderReplicated) -> bool:
        """Whether the object is still the write ``extent`` belongs to."""
        found = await self.store.get_object(extent.bucket, extent.key)
        return found is not None and found.write_id == extent.write_id


def _items(item: Any) -> Sequence[Any]:
    return [] if item is None else [item]
