"""Refresh the quota, object-count, pending-intent and cleanup-depth gauges from the metadata store."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.config.model import UsageFlushConfig
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
from s3orch.store.interface import MetadataStore
from s3orch.workers.base import PeriodicWorker


class QuotaMetricsWorker(PeriodicWorker):
    """Gauges come from the DB (no backend calls), every ``usage_flush.interval``.

    Every instance refreshes its own ``/metrics``, so this worker takes no worker lock.
    """

    def __init__(self, store: MetadataStore, clock: IReactorTime, config: UsageFlushConfig) -> None:
        super().__init__(
            "usage-flush", config.interval, clock, run_now=True, component="usage_flush", audited=False
        )
        self.store = store

    async def tick(self) -> None:
        quotas = await self.store.get_quotas()
        for name, row in quotas.items():
            QUOTA_USED.labels(name).set(row.bytes_used)
            QUOTA_LIMIT.labels(name).set(row.bytes_limit)
            QUOTA_ORPHAN.labels(name).set(row.orphan_bytes)
            available = row.available
            QUOTA_AVAILABLE.labels(name).set(available if available is not None else -1)
            OBJECTS_COUNT.labels(name).set(row.object_count)
        # Here as well as in the pending reaper: that runs on one instance at a time.
        PENDING_DEPTH.set(await self.store.count_intents())
        queued, dead = await self.store.count_cleanups()
        CLEANUP_DEPTH.set(queued)
        CLEANUP_DLQ_DEPTH.set(dead)
