"""The usage flush: add this instance's unflushed usage deltas to the database, refresh the
quota, usage, object-count, pending-intent and cleanup-depth gauges from it, and warn
(``backend.capacity.warning``) when a backend is nearly full or near a monthly usage limit."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import UsageFlushConfig
from s3orch.notify.events import CAPACITY_WARNING
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.metrics import (
    CLEANUP_DEPTH,
    CLEANUP_DLQ_DEPTH,
    OBJECTS_COUNT,
    PENDING_DEPTH,
    QUOTA_AVAILABLE,
    QUOTA_LIMIT,
    QUOTA_ORPHAN,
    QUOTA_USED,
)
from s3orch.store.interface import MetadataStore, QuotaRow
from s3orch.store.locks import WorkerLocks
from s3orch.usage.tracker import UsageTracker
from s3orch.workers.base import PeriodicWorker

#: A limited backend at least this full (used, orphaned and reserved bytes) gets a warning...
CAPACITY_WARNING_RATIO = 0.8
#: ... at most this often (s3-orchestrator's rule: one per hour per backend).
CAPACITY_WARNING_EVERY = 3600.0


class QuotaMetricsWorker(PeriodicWorker):
    """Flush and gauges every ``usage_flush.interval`` (no backend calls); with
    ``adaptive_enabled``, every ``fast_interval`` while any backend has used
    ``adaptive_threshold`` of a monthly limit.

    Every instance flushes its own deltas (additively: no lock needed without shared counters)
    and refreshes its own ``/metrics``, so this worker takes no worker lock (and each instance
    sends its own capacity warnings, at most hourly per backend).  With shared counters
    (Redis), ``flush_locks`` is given: the flush itself (a destructive read of the shared
    counters) runs under lock 1007, and an instance that does not get it refreshes its
    baseline instead; the gauges are still every instance's own.
    """

    def __init__(
        self,
        store: MetadataStore,
        clock: IReactorTime,
        config: UsageFlushConfig,
        events: EventSink = NULL_SINK,
        usage: UsageTracker | None = None,
        flush_locks: WorkerLocks | None = None,
    ) -> None:
        super().__init__(
            "usage-flush", config.interval, clock, run_now=True, component="usage_flush", audited=False
        )
        self.store = store
        self.events = events
        self.usage = usage
        self.config = config
        self.flush_locks = flush_locks
        self._warned: dict[str, float] = {}

    def configure(self, config: UsageFlushConfig) -> None:
        """A reloaded ``usage_flush`` section: the new pace applies from the next tick."""
        self.config = config
        self.set_interval(self._pace())

    def _pace(self) -> float:
        config = self.config
        if config.adaptive_enabled and self.usage is not None and self.usage.near_limit(config.adaptive_threshold):
            return config.fast_interval
        return config.interval

    async def tick(self) -> None:
        if self.usage is not None:
            await self.usage.flush(self.store, locks=self.flush_locks)
            pace = self._pace()
            if pace != self.interval:
                self.set_interval(pace)
        quotas = await self.store.get_quotas()
        for name, row in quotas.items():
            QUOTA_USED.labels(name).set(row.bytes_used)
            QUOTA_LIMIT.labels(name).set(row.bytes_limit)
            QUOTA_ORPHAN.labels(name).set(row.orphan_bytes)
            available = row.available
            QUOTA_AVAILABLE.labels(name).set(available if available is not None else -1)
            OBJECTS_COUNT.labels(name).set(row.object_count)
            await self._check_capacity(name, row)
        # Here as well as in the pending reaper: that runs on one instance at a time.
        PENDING_DEPTH.set(await self.store.count_intents())
        queued, _ = await self.store.cleanup_queue_page(0)
        CLEANUP_DEPTH.set(queued)
        dead, _, _ = await self.store.cleanup_dlq_page(None, 0)
        CLEANUP_DLQ_DEPTH.set(dead)

    async def _check_capacity(self, name: str, row: QuotaRow) -> None:
        if not self.events.enabled:
            return
        ratio = 0.0
        if row.bytes_limit > 0:
            ratio = (row.bytes_used + row.orphan_bytes + row.reserved_bytes) / row.bytes_limit
        limit_type, usage_ratio = (
            self.usage.ratios().get(name, ("", 0.0)) if self.usage is not None else ("", 0.0)
        )
        if usage_ratio > ratio:
            ratio = usage_ratio
        else:
            limit_type = "bytes"
        now = self.clock.seconds()
        last = self._warned.get(name)
        if ratio < CAPACITY_WARNING_RATIO or (last is not None and now - last < CAPACITY_WARNING_EVERY):
            return
        self._warned[name] = now
        data = {
            "backend": name,
            "utilisation": round(ratio, 4),
            "limit_type": limit_type,
            "bytes_used": row.bytes_used,
            "orphan_bytes": row.orphan_bytes,
            "reserved_bytes": row.reserved_bytes,
            "bytes_limit": row.bytes_limit,
        }
        await self.events.emit(CAPACITY_WARNING, name, data)
