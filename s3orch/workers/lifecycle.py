"""Lifecycle expiration (``lifecycle.rules``): delete objects older than their rule allows.

Every hour, under the worker lock :attr:`~s3orch.store.locks.WorkerLock.LIFECYCLE` (1005, with
a start-up jitter of up to half an hour), each rule's expired keys are read from the store in
pages of ``lifecycle.batch_size`` (:meth:`~s3orch.store.interface.MetadataStore.expired_objects`:
the prefix matched against ``{bucket}/{key}`` as s3-orchestrator matches it, age from the commit
time of the current version) and deleted through the normal delete path
(:meth:`~s3orch.core.objects.ObjectService.delete`: copies to the cleanup queue, quota settled,
the ``lifecycle.delete`` event written with the change).

A key is deleted only while it is still the write the page found: an overwrite that lands
between the read and the delete is a new version, and is left alone (counted as skipped; it
expires on its own schedule).  An empty rule list takes no lock and runs no query.  Rules are
swapped by a reload (:meth:`LifecycleWorker.set_rules`); a pass in flight finishes with the
rules it started with.  ``POST /admin/api/lifecycle`` runs a pass now (:meth:`run_pass`), without
the lock, as s3-orchestrator does: the conditional deletes make two passes at once harmless.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from s3orch.admin.ndjson import Progress, SilentProgress
from s3orch.config.model import LifecycleConfig, LifecycleRule
from s3orch.core.objects import ObjectService
from s3orch.notify.events import LIFECYCLE_COMPLETED, LIFECYCLE_DELETE
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.audit import audit, background_run, current_id
from s3orch.observe.metrics import LIFECYCLE_DELETED, LIFECYCLE_FAILED, LIFECYCLE_RUNS, LIFECYCLE_SKIPPED
from s3orch.store.interface import ExpiredObject, MetadataStore, StoreUnavailable
from s3orch.store.locks import WorkerLock, WorkerLocks
from s3orch.workers.base import PeriodicWorker

#: s3-orchestrator runs lifecycle hourly.
INTERVAL = 3600.0
DAY = 86400.0


@dataclass(frozen=True)
class LifecycleOutcome:
    """What one pass did (the admin answer and the ``lifecycle.completed`` event's data)."""

    run_id: str
    status: str  # success, partial, failed or empty (a pass that raised counts as error)
    deleted: int
    failed: int
    skipped: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "status": self.status, "deleted": self.deleted,
            "failed": self.failed, "skipped": self.skipped,
        }


def has_tags(tags: Sequence[tuple[str, str]], wanted: Sequence[tuple[str, str]]) -> bool:
    """A rule's ``tags`` match a version carrying every one of them (AND, exact values)."""
    return set(wanted) <= set(tags)


def run_status(deleted: int, failed: int) -> str:
    """The ``s3o_lifecycle_runs_total`` status of a pass that ran to its end."""
    if failed:
        return "partial" if deleted else "failed"
    return "success" if deleted else "empty"


class LifecycleWorker(PeriodicWorker):
    """Hourly expiration of ``lifecycle.rules`` (see the module)."""

    def __init__(
        self,
        objects: ObjectService,
        store: MetadataStore,
        clock: IReactorTime,
        config: LifecycleConfig,
        *,
        events: EventSink = NULL_SINK,
        instance: str = "",
        locks: WorkerLocks | None = None,
        interval: float = INTERVAL,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(
            "lifecycle",
            interval,
            clock,
            run_now=True,
            component="lifecycle",
            lock_id=WorkerLock.LIFECYCLE,
            locks=locks,
            jitter=jitter,
        )
        self.objects = objects
        self.store = store
        self.events = events
        self.instance = instance
        self.rules: tuple[LifecycleRule, ...] = config.rules
        self.batch_size = config.batch_size

    def set_rules(self, config: LifecycleConfig) -> None:
        """New rules (a SIGHUP reload): used from the next pass on."""
        self.rules = config.rules
        self.batch_size = config.batch_size

    async def _locked_tick(self) -> bool:
        if not self.rules:
            return True  # nothing to expire: no lock, no query
        return await super()._locked_tick()

    async def tick(self) -> None:
        """A scheduled pass: the worker base binds its correlation id and writes the
        ``lifecycle.start``/``lifecycle.complete`` audit frame around it."""
        if self.rules:
            await self._pass(SilentProgress(), current_id() or f"lifecycle-{uuid.uuid4().hex[:16]}", "schedule")

    async def run_pass(self, progress: Progress | None = None, *, trigger: str = "admin") -> LifecycleOutcome:
        """A pass now (the admin route): its own correlation id and audit frame, as a
        scheduled pass has; raises StoreUnavailable when the database goes away."""
        with background_run(self.component) as run_id:
            started = self.clock.seconds()
            audit("lifecycle.start", trigger=trigger)
            result = "error"
            try:
                outcome = await self._pass(progress or SilentProgress(), run_id, trigger)
                result = "success"
                return outcome
            finally:
                audit("lifecycle.complete", result=result, duration=round(self.clock.seconds() - started, 6))

    async def _pass(self, progress: Progress, run_id: str, trigger: str) -> LifecycleOutcome:
        """One pass over every rule (``s3o_lifecycle_runs_total`` counts how it ended; a pass
        that raises counts as ``error``, and leaves what it did not delete to the next)."""
        rules, batch = self.rules, self.batch_size
        progress.start(total=None, run_id=run_id, rules=len(rules))
        counts = {"deleted": 0, "failed": 0, "skipped": 0}
        now = self.clock.seconds()
        try:
            for rule in rules:
                await self._expire_rule(rule, now - rule.expiration_days * DAY, batch, run_id, counts, progress)
        except Exception:
            LIFECYCLE_RUNS.labels("error").inc()
            raise
        outcome = LifecycleOutcome(run_id, run_status(counts["deleted"], counts["failed"]), **counts)
        LIFECYCLE_RUNS.labels(outcome.status).inc()
        audit("lifecycle.expired", rules=len(rules), trigger=trigger, outcome=outcome.status, **counts)
        await self.events.emit(
            LIFECYCLE_COMPLETED, self.instance or "lifecycle",
            {**outcome.as_dict(), "rules": len(rules), "trigger": trigger, "instance": self.instance},
        )
        return outcome

    async def _expire_rule(
        self,
        rule: LifecycleRule,
        cutoff: float,
        batch: int,
        run_id: str,
        counts: dict[str, int],
        progress: Progress,
    ) -> None:
        """Page through the rule's expired keys, resuming after the last key of each page (a
        key that failed is retried by the next pass, not again in this one); each page is a
        progress step, ``done`` counting the keys handled so far in the pass."""
        after: tuple[str, str] | None = None
        while True:
            progress.step_start("page", prefix=rule.prefix)
            page = await self.store.expired_objects(rule.prefix, cutoff, after, batch)
            for found in page:
                if has_tags(found.tags, rule.tags):
                    counts[await self._expire(found, rule, run_id)] += 1
            progress.step_end("page", prefix=rule.prefix, keys=len(page), done=sum(counts.values()), **counts)
            if len(page) < batch:
                return
            after = (page[-1].bucket, page[-1].key)

    async def _expire(self, found: ExpiredObject, rule: LifecycleRule, run_id: str) -> str:
        """Delete one expired key if it is still that write: ``deleted``, ``skipped`` or ``failed``."""
        data = {
            "bucket": found.bucket, "key": found.key, "size": found.size, "rule_prefix": rule.prefix,
            "expiration_days": rule.expiration_days, "run_id": run_id,
        }
        events = self.events.events(LIFECYCLE_DELETE, found.key, data, key=found.key)
        try:
            deleted = await self.objects.delete(
                found.bucket, found.key, run_id, write_id=found.write_id, events=events
            )
        except StoreUnavailable:
            raise  # every other key would fail too: end the pass
        except Exception as exc:
            LIFECYCLE_FAILED.inc()
            self.log.failure(
                "lifecycle delete failed", component="lifecycle", run_id=run_id,
                bucket=found.bucket, key=found.key, error=str(exc),
            )
            return "failed"
        if not deleted:
            LIFECYCLE_SKIPPED.inc()
            return "skipped"
        LIFECYCLE_DELETED.inc()
        audit("lifecycle.delete", bucket=found.bucket, key=found.key, size=found.size, rule_prefix=rule.prefix)
        return "deleted"
