"""Metrics of data placement: the replicator, write fan-out, reads across copies, the
over-replication cleaner, the rebalancer, reconcile and import (``s3o_*``, on the one
:data:`~s3orch.observe.metrics.REGISTRY`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from s3orch.observe.metrics import REGISTRY
from s3orch.observe.multiproc import Gauge

# --- replication (s3orch.core.replication) ----------------------------------------------------

REPLICATION_COPIES = Counter(
    "s3o_replication_copies_created_total", "Replica copies created and recorded", ["backend"], registry=REGISTRY
)
REPLICATION_BYTES = Counter(
    "s3o_replication_bytes_total", "Bytes written to backends as new replicas", ["backend"], registry=REGISTRY
)
REPLICATION_FAILURES = Counter(
    "s3o_replication_failures_total",
    "Extents a replication pass could not bring to the factor (read, write, stale, no_target, error)",
    ["reason"],
    registry=REGISTRY,
)
REPLICATION_HEALTH_COPIES = Counter(
    "s3o_replication_health_copies_total",
    "Replacement copies made because a copy sat on a backend unhealthy past unhealthy_threshold",
    registry=REGISTRY,
)
REPLICATION_PENDING = Gauge(
    "s3o_replication_pending", "Under-replicated extents left after the last pass", registry=REGISTRY
)
REPLICATION_RUNS = Counter(
    "s3o_replication_runs_total",
    "Replication passes by outcome (success, partial, failed, empty, error)",
    ["status"],
    registry=REGISTRY,
)
REPLICATION_STALE_ROWS = Counter(
    "s3o_replication_stale_copies_removed_total",
    "Copy records removed because their backend answered 404 when the replicator read them",
    ["backend"],
    registry=REGISTRY,
)

DRAIN_ACTIVE = Gauge(
    "s3o_drain_active", "1 while the backend is being drained (not completed), else 0", ["backend"],
    registry=REGISTRY,
)
DRAIN_OBJECTS_MOVED = Counter(
    "s3o_drain_objects_moved_total", "Copies moved off draining backends", ["backend"], registry=REGISTRY
)
DRAIN_BYTES_MOVED = Counter(
    "s3o_drain_bytes_moved_total", "Bytes moved off draining backends", ["backend"], registry=REGISTRY
)
DRAIN_RACE_ABORTED = Counter(
    "s3o_drain_race_aborted_total",
    "Drain moves given up because the object changed meanwhile (overwritten, deleted, or its copy there already removed)",
    ["backend"], registry=REGISTRY,
)
# --- over-replication (s3orch.core.over_replication) ------------------------------------------

OVER_REPLICATION_REMOVED = Counter(
    "s3o_over_replication_removed_total",
    "Excess copies removed by the over-replication cleaner",
    ["backend"],
    registry=REGISTRY,
)
OVER_REPLICATION_BYTES = Counter(
    "s3o_over_replication_bytes_freed_total",
    "Bytes of excess copies removed (queued for deletion) by the over-replication cleaner",
    ["backend"],
    registry=REGISTRY,
)
OVER_REPLICATION_ERRORS = Counter(
    "s3o_over_replication_errors_total", "Over-replicated extents a pass failed to clean", registry=REGISTRY
)
OVER_REPLICATION_PENDING = Gauge(
    "s3o_over_replication_pending", "Over-replicated extents left after the last pass", registry=REGISTRY
)
OVER_REPLICATION_RUNS = Counter(
    "s3o_over_replication_runs_total",
    "Over-replication passes by outcome (success, partial, failed, empty, error)",
    ["status"],
    registry=REGISTRY,
)
OVER_REPLICATION_DURATION = Histogram(
    "s3o_over_replication_duration_seconds",
    "Over-replication pass time",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
    registry=REGISTRY,
)
# --- reconcile and import (s3orch.core.reconcile, s3orch.core.sync) ------------------------------

RECONCILE_RUNS = Counter(
    "s3o_reconcile_runs_total",
    "Reconcile passes by outcome (success, partial, empty, error)",
    ["status"],
    registry=REGISTRY,
)
RECONCILE_KEYS = Counter(
    "s3o_reconcile_keys_total",
    "Keys a reconcile pass compared, by decision (matched, orphaned, removed, lost, foreign,"
    " suppressed_pending_cleanup, in_flight, kept, error)",
    ["backend", "decision"],
    registry=REGISTRY,
)
RECONCILE_OBJECTS_LOST = Counter(
    "s3o_reconcile_objects_lost_total",
    "Objects deleted by reconcile because the last copy of an extent was gone from its backend",
    ["backend"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "s3o_reconcile_duration_seconds",
    "Reconcile pass time",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
    registry=REGISTRY,
)
IMPORT_OBJECTS = Counter(
    "s3o_import_objects_total", "Backend objects adopted in place by sync/import", ["backend"], registry=REGISTRY
)
IMPORT_BYTES = Counter(
    "s3o_import_bytes_total", "Bytes of backend objects adopted in place by sync/import", ["backend"],
    registry=REGISTRY,
)
IMPORT_CLASSIFIED = Counter(
    "s3o_import_classified_total",
    "Imported objects by what their bytes are (this build stores plaintext only: plaintext)",
    ["decision"],
    registry=REGISTRY,
)

# --- hedged reads (s3orch.core.reads) ---------------------------------------------------------

HEDGED_READS = Counter(
    "s3o_hedged_reads_total",
    "GETs that also asked the next copy after read_path.hedge_after, by whether that copy served (won) or not (lost)",
    ["result"],
    registry=REGISTRY,
)

# --- rebalancer (s3orch.core.rebalance) -------------------------------------------------------

REBALANCE_MOVED = Counter(
    "s3o_rebalance_objects_moved_total",
    "Copies the rebalancer tried to move, by outcome (success, failed, stale, read_failed, ...)",
    ["strategy", "status"],
    registry=REGISTRY,
)
REBALANCE_BYTES = Counter(
    "s3o_rebalance_bytes_moved_total", "Bytes moved by the rebalancer", ["strategy"], registry=REGISTRY
)
REBALANCE_RUNS = Counter(
    "s3o_rebalance_runs_total",
    "Rebalancer passes by outcome (success, partial, failed, empty, error)",
    ["strategy", "status"],
    registry=REGISTRY,
)
REBALANCE_DURATION = Histogram(
    "s3o_rebalance_duration_seconds",
    "Rebalancer pass time",
    ["strategy"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
    registry=REGISTRY,
)
REBALANCE_SKIPPED = Counter(
    "s3o_rebalance_skipped_total",
    "Rebalancer passes that moved nothing without trying (threshold, empty_plan)",
    ["reason"],
    registry=REGISTRY,
)
REBALANCE_PENDING = Gauge(
    "s3o_rebalance_pending", "Moves planned by the last rebalancer pass and not done", registry=REGISTRY
)

# --- write fan-out (s3orch.core.fanout) ------------------------------------------------------
FANOUT_COPIES = Counter(
    "s3o_fanout_copies_total",
    "Companion copies of fan-out writes by outcome (acked: recorded with the write; recorded: after"
    " the answer; failed: left to the replicator; discarded: not recorded, its copy deleted)",
    ["outcome"],
    registry=REGISTRY,
)
FANOUT_INFLIGHT = Gauge(
    "s3o_fanout_inflight", "Companion copies of fan-out writes still running", registry=REGISTRY
)
FANOUT_SHORT_WRITES = Counter(
    "s3o_fanout_short_writes_total",
    "Fan-out writes refused because fewer copies than replication.ack could be stored",
    registry=REGISTRY,
)
