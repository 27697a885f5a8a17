"""One ``/metrics`` for a ``server.processes`` group: prometheus-client's multiprocess mode.

Chosen over the parent scraping its children because any child may answer a scrape (they share
one port) and the parent then needs no HTTP of its own: each process writes its samples to
memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` (set by the supervisor before the child
starts, so prometheus-client picks its file-backed values at import), and the answering child
merges every process's files.

What the merge means, per kind:

- counters and histograms are summed over every process that ever ran in the group (a
  restarted child's counts are kept, so rates do not drop);
- gauges follow :data:`GAUGE_MODES`: per-process load (in-flight requests, admission slots,
  rate-limit buckets) is summed over the live processes; values read from the shared database
  (quotas, queue depths, usage) are the most recent any live process wrote; states where the
  worst one matters (circuit breakers, Redis fallback, worker failures) and timestamps take the
  live maximum.  A gauge missing from the table has one series per live process (``pid`` label).

``set_function`` gauges cannot be read from another process, so in this mode their function is
sampled into the file by :func:`sample_functions` (each child runs it every second and the
answering child once more before the scrape).  With one process nothing here changes anything:
the registry is exposed as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Gauge as _Gauge
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = ["GAUGE_MODES", "MULTIPROC_ENV", "Gauge", "enabled", "exposition", "forget_process", "sample_functions"]

#: prometheus-client's variable naming the shared directory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_SUM = "livesum"
_RECENT = "livemostrecent"
_MAX = "livemax"

#: How each gauge merges across processes (see the module docstring).
GAUGE_MODES: dict[str, str] = {
    "s3o_build_info": _MAX,
    "s3o_inflight_requests": _SUM,
    "s3o_admission_slots_in_use": _SUM,
    "s3o_rate_limit_buckets": _SUM,
    "s3o_quota_bytes_used": _RECENT,
    "s3o_quota_bytes_limit": _RECENT,
    "s3o_quota_orphan_bytes": _RECENT,
    "s3o_quota_bytes_available": _RECENT,
    "s3o_objects_count": _RECENT,
    "s3o_active_multipart_uploads": _RECENT,
    "s3o_pending_intents_depth": _RECENT,
    "s3o_cleanup_queue_depth": _RECENT,
    "s3o_cleanup_dlq_depth": _RECENT,
    "s3o_notification_queue_depth": _RECENT,
    "s3o_replication_pending": _RECENT,
    "s3o_over_replication_pending": _RECENT,
    "s3o_integrity_never_verified_copies": _RECENT,
    "s3o_integrity_oldest_unverified_seconds": _RECENT,
    "s3o_rebalance_pending": _RECENT,
    "s3o_drain_active": _RECENT,
    "s3o_usage_api_requests": _RECENT,
    "s3o_usage_egress_bytes": _RECENT,
    "s3o_usage_ingress_bytes": _RECENT,
    "s3o_location_journal_entries": _RECENT,  # one journal file beside the database, shared
    "s3o_worker_last_success_timestamp_seconds": _MAX,
    "s3o_worker_consecutive_failures": _MAX,
    "s3o_circuit_breaker_state": _MAX,
    "s3o_redis_fallback_active": _MAX,
    "s3o_fanout_inflight": _SUM,  # this process's copies still running
    "s3o_cache_entries": _SUM,  # each process has its own cache
    "s3o_cache_size_bytes": _SUM,
    "s3o_encryption_plaintext_copies": _RECENT,  # counted from the database
}

#: ``set_function`` gauges of this process, sampled by :func:`sample_functions`.
_FUNCTIONS: list[tuple[Any, Callable[[], float]]] = []


def enabled() -> bool:
    """Whether this process is one of a group (prometheus-client then uses its files)."""
    return bool(os.environ.get(MULTIPROC_ENV))


class Gauge(_Gauge):
    """prometheus-client's Gauge with this project's per-metric multiprocess mode."""

    def __init__(self, name: str, documentation: str, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("multiprocess_mode", GAUGE_MODES.get(name, "liveall"))
        super().__init__(name, documentation, *args, **kwargs)

    def set_function(self, f: Callable[[], float]) -> None:
        if not enabled():
            super().set_function(f)
            return
        _FUNCTIONS.append((self, f))
        self.set(float(f()))


def sample_functions() -> None:
    """Write every ``set_function`` gauge's current value to this process's file."""
    for gauge, function in _FUNCTIONS:
        gauge.set(float(function()))


def exposition(registry: CollectorRegistry) -> bytes:
    """The text a scrape of ``/metrics`` answers: the group's merge, or ``registry`` alone."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest(registry)
    sample_functions()
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]  # unannotated upstream
    return generate_latest(merged)


def forget_process(directory: str, pid: int) -> None:
    """A child exited: drop its live gauges (its counters stay in the sums)."""
    if directory:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]  # unannotated upstream
