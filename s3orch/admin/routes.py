"""The admin API's route table: one entry per route, the single source of the API's shape.

:mod:`s3orch.admin.app` serves from it, :mod:`s3orch.admin.openapi` writes
``docs/openapi.yaml`` from it, and ``s3orch-admin`` names its commands after it.  A later
feature adds its routes here (and a handler method), nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PREFIX", "ROUTES", "Param", "Route", "find"]

#: Where the admin API lives on the main listener.
PREFIX = "/admin/api/"


@dataclass(frozen=True)
class Param:
    """One input of a route: a query parameter or a field of the JSON body."""

    name: str
    where: str  # "query" or "body"
    type: str  # "string", "integer", "boolean", "array"
    description: str
    required: bool = False


@dataclass(frozen=True)
class Route:
    """``method`` ``PREFIX + path``, answered by the handler method ``handler``."""

    method: str
    path: str
    handler: str
    summary: str
    response: str
    params: tuple[Param, ...] = ()
    #: Streams NDJSON progress when asked with ``Accept: application/x-ndjson``.
    streams: bool = False


_LIMIT = Param("limit", "query", "integer", "How many items to return (default 50, at most 1000).")
_BACKEND = Param("backend", "query", "string", "Only the rows of this backend.")
_DRAIN = Param("backend", "query", "string", "The backend's name.", required=True)
_IDS = Param("ids", "body", "array", "Only these DLQ row ids (integers).")

ROUTES: tuple[Route, ...] = (
    Route(
        "GET", "status", "status",
        "Database health, readiness, every backend's quota counters and circuit breaker.",
        "`{db_healthy, ready, version, usage_period, backends: [{name, bytes_limit, bytes_used, orphan_bytes,"
        " reserved_bytes, available_bytes, object_count, circuit_breaker, api_requests, egress_bytes,"
        " ingress_bytes, api_request_limit, egress_byte_limit, ingress_byte_limit}]}` (circuit_breaker:"
        " null when breakers are off, else {state, consecutive_failures, ...}; usage: this month's)",
    ),
    Route(
        "GET", "object-locations", "object_locations",
        "Where the copies of one object are stored.",
        "`{key, size, etag, locations: [{backend, storage_key, size, part_number}]}`; 400 without"
        " `key`, 404 when the object does not exist.",
        (Param("key", "query", "string", "`bucket/key` of the object.", required=True),),
    ),
    Route(
        "GET", "cleanup-queue", "cleanup_queue",
        "Depth of the cleanup queue and its next rows by retry time.",
        "`{depth, items: [{id, backend, storage_key, reason, size, attempts, next_retry, last_error,"
        " created_at, claimed_by}]}`",
        (_LIMIT,),
    ),
    Route(
        "GET", "cleanup-dlq", "cleanup_dlq",
        "Backend deletes that failed 10 times (their bytes still count as orphaned).",
        "`{count, bytes, items: [{id, original_id, backend, storage_key, reason, size, attempts,"
        " last_error, first_enqueued_at, moved_at}]}`",
        (_BACKEND, _LIMIT),
    ),
    Route(
        "POST", "cleanup-dlq/requeue", "cleanup_dlq_requeue",
        "Move DLQ rows back to the cleanup queue, due now with no attempts (all, a backend's, or `ids`).",
        "`{status: \"requeued\", requeued}`",
        (_BACKEND, _IDS),
        streams=True,
    ),
    Route(
        "POST", "cleanup-dlq/write-off", "cleanup_dlq_write_off",
        "Forget DLQ rows and release their orphaned bytes from the quota (the objects were deleted"
        " by hand, or the leak is accepted). Needs `ids`, `backend` or `{\"all\": true}`.",
        "`{status: \"written_off\", rows, bytes}`; 400 when nothing selects the rows.",
        (_BACKEND, _IDS, Param("all", "body", "boolean", "Write off every DLQ row.")),
        streams=True,
    ),
    Route(
        "POST", "usage-flush", "usage_flush",
        "Flush this instance's usage counters to the database and refresh the quota, usage,"
        " object-count and pending-intent gauges now.",
        "`{status: \"flushed\"}`; 503 when the flush failed.",
        streams=True,
    ),
    Route(
        "GET", "usage", "usage",
        "Monthly usage per backend (API requests, egress and ingress bytes) against its limits.",
        "`{period, backends: [{name, period, api_requests, egress_bytes, ingress_bytes,"
        " api_request_limit, egress_byte_limit, ingress_byte_limit}]}` (this period: the database's"
        " baseline plus this instance's unflushed counts; another period: the database's rows);"
        " 400 for a period not `YYYY-MM`.",
        (
            Param("backend", "query", "string", "Only this backend."),
            Param("period", "query", "string", "`YYYY-MM` (UTC); default the current month."),
        ),
    ),
    Route(
        "POST", "replicate", "replicate",
        "Run a replication pass now: copy every extent with fewer than `replication.factor` copies"
        " (under the replicator's worker lock).",
        "`{status: \"ok\", copies_created, run_id, scanned, failed, no_target, stale, bytes_copied}`;"
        " `{status: \"skipped\", reason}` when the factor is 1, this process runs no replicator,"
        " or another pass holds the lock.",
        streams=True,
    ),
    Route(
        "GET", "over-replication", "get_over_replication",
        "What the over-replication cleaner would remove now: extents with more copies than"
        " `replication.factor` and, per extent, the lowest-scored copies (draining 0, open circuit 1,"
        " healthy 2 + free fraction).",
        "`{factor, pending, removals: [{bucket, key, part_number, size, copies, remove: [{backend,"
        " storage_key, score}]}]}` (at most `limit` extents listed; `pending` counts them all);"
        " `{status: \"skipped\", reason, pending: 0}` when the factor is 1 or this process runs no cleaner.",
        (Param("limit", "query", "integer", "Most extents listed (default 100, at most 1000)."),),
    ),
    Route(
        "POST", "over-replication", "over_replication",
        "Remove excess copies now (under the cleaner's worker lock): never below the factor,"
        " never the last healthy copy; removed copies are queued for cleanup and deleted.",
        "`{status: \"ok\", copies_removed, run_id, scanned, bytes_freed, unchanged, removed}`;"
        " `{status: \"skipped\", reason}` when the factor is 1, this process runs no cleaner,"
        " or another pass holds the lock.",
        (Param("batch_size", "query", "integer", "Extents per page (default `replication.batch_size`)."),),
        streams=True,
    ),
    Route(
        "POST", "lifecycle", "lifecycle",
        "Run the lifecycle expiration rules now (without the worker lock: deletes are conditional,"
        " so a scheduled pass running at the same time is harmless).",
        "`{status: \"ok\", run_id, outcome, deleted, failed, skipped}` (outcome: success, partial,"
        " failed or empty; skipped: expired keys overwritten before their delete); `{status:"
        " \"skipped\", reason}` when no rules are configured or this process runs no lifecycle"
        " worker; 503 when the database is unavailable.",
        streams=True,
    ),
    Route(
        "POST", "drain", "start_drain",
        "Start draining a backend: writes avoid it at once, its open multipart uploads are aborted,"
        " and the drain worker moves every copy it holds to the least utilised eligible backend"
        " (or drops it when a copy exists elsewhere).  The drain is persisted: a restart resumes it.",
        "`{status: \"drain started\", backend}`; 400 `drain operation failed` for a backend already"
        " draining, or an unknown one.",
        (_DRAIN,),
    ),
    Route(
        "GET", "drain", "drain_status",
        "A backend's drain and what it still holds.",
        "`{backend, active, state, objects_remaining, bytes_remaining, objects_moved, bytes_moved,"
        " started_at[, error]}` (state: active, failed or completed); `{backend, active: false,"
        " state: \"none\"}` when it is not draining.",
        (_DRAIN,),
    ),
    Route(
        "DELETE", "drain", "cancel_drain",
        "Cancel a backend's drain: it takes writes again; copies already moved stay moved.",
        "`{status: \"drain cancelled\", backend}`; 404 when it is not draining.",
        (_DRAIN,),
    ),
    Route(
        "DELETE", "backend", "remove_backend",
        "Remove a backend from the metadata (its objects stay on it), or with `purge` delete its"
        " objects too: first a preview with a confirmation token valid 60 s for that backend only,"
        " then the same call with `confirm`.  Objects left without any copy are deleted from the"
        " metadata.  Refused while the backend is draining.",
        "`{status: \"backend removed\", backend, copies_forgotten, objects_lost[, purged,"
        " purge_failures]}`; with `purge` and no `confirm`: `{status: \"preview\", backend,"
        " object_count, total_bytes, confirm_token, expires_in}`; 403 for a bad or expired token;"
        " 409 while draining.",
        (
            Param("name", "query", "string", "The backend's name.", required=True),
            Param("purge", "query", "boolean", "Delete the backend's objects as well."),
            Param("confirm", "query", "string", "The token a purge preview returned."),
        ),
    ),
    Route(
        "GET", "log-level", "get_log_level",
        "The running process's log level.",
        "`{level}` (debug, info, warn or error)",
    ),
    Route(
        "PUT", "log-level", "put_log_level",
        "Change the running process's log level (until restart or reload).",
        "`{level, previous}`; 400 for bad JSON or an unknown level.",
        (Param("level", "body", "string", "debug, info, warn or error.", required=True),),
    ),
    Route(
        "GET", "workers", "workers",
        "Each background worker: last tick, its result, the next run and who holds its lock.",
        "`{workers: [{name, component, running, interval_seconds, last_tick_at, last_finished_at,"
        " last_result, last_error, consecutive_failures, next_run_at, lock_id, lock_holder}]}`;"
        " 503 when this process runs no workers.",
    ),
    Route(
        "GET", "reload-status", "reload_status",
        "The outcome of the last configuration reload.",
        "`{status: \"never\"}` before any reload, else `{status, at, error, changed, restart_required}`.",
    ),
    Route(
        "GET", "logs", "logs",
        "Recent log lines of this process, newest last, from an in-memory ring.",
        "`{lines: [{time, level, component, msg, ...}], capacity}`; 400 for an unknown level.",
        (
            Param("level", "query", "string", "Only lines at this level or above."),
            Param("component", "query", "string", "Only lines of this component."),
            Param("limit", "query", "integer", "How many lines (default 100)."),
        ),
    ),
)


def find(path: str) -> list[Route]:
    """The routes at ``path`` (one per method)."""
    return [route for route in ROUTES if route.path == path]
