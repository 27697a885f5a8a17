"""The admin API's route table: one entry per route, the single source of the API's shape.

:mod:`s3orch.admin.app` serves from it, :mod:`s3orch.admin.openapi` writes
``docs/openapi.yaml`` from it, and ``s3orch-admin`` names its commands after it.  A later
feature adds its routes here (and a handler method), nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PREFIX", "ROUTES", "Param", "Route", "find", "match"]

#: Where the admin API lives on the main listener.
PREFIX = "/admin/api/"


@dataclass(frozen=True)
class Param:
    """One input of a route: a query parameter, a field of the JSON body, or a ``{name}``
    segment of the path."""

    name: str
    where: str  # "query", "body" or "path"
    type: str  # "string", "integer", "boolean", "array"
    description: str
    required: bool = False


@dataclass(frozen=True)
class Route:
    """``method`` ``PREFIX + path``, answered by the handler method ``handler``.

    A ``{name}`` segment of ``path`` matches any one segment, handed to the handler in
    ``AdminCall.path`` (the original's ``backends/{name}/drain`` form of a route that
    also answers with ``?backend=``)."""

    method: str
    path: str
    handler: str
    summary: str
    response: str
    params: tuple[Param, ...] = ()
    #: Streams NDJSON progress when asked with ``Accept: application/x-ndjson``.
    streams: bool = False
    #: The OpenAPI ``operationId`` when the handler serves two routes (default: ``handler``).
    operation_id: str = ""
    #: The ``s3orch-admin`` command that calls this route (default: the path, ``/`` as ``-``).
    command: str = ""

    @property
    def operation(self) -> str:
        return self.operation_id or self.handler

    @property
    def cli_command(self) -> str:
        return self.command or self.path.replace("/", "-")

    @property
    def templated(self) -> bool:
        return "{" in self.path


_LIMIT = Param("limit", "query", "integer", "How many items to return (default 50, at most 1000).")
_BACKEND = Param("backend", "query", "string", "Only the rows of this backend.")
_DRAIN = Param("backend", "query", "string", "The backend's name.", required=True)
_IDS = Param("ids", "body", "array", "Only these DLQ row ids (integers).")
_NAME = Param("name", "path", "string", "The backend's name.", required=True)
_PURGE = Param("purge", "query", "boolean", "Delete the backend's objects as well.")
_CONFIRM = Param("confirm", "query", "string", "The token a purge preview returned.")
_DRAIN_STARTED = (
    "`{status: \"drain started\", backend}`; 400 `drain operation failed` for a backend already"
    " draining, or an unknown one."
)
_DRAIN_STATUS = (
    "`{backend, active, state, objects_remaining, bytes_remaining, objects_moved, bytes_moved,"
    " started_at[, error]}` (state: active, failed or completed); `{backend, active: false,"
    " state: \"none\"}` when it is not draining."
)
_DRAIN_CANCELLED = "`{status: \"drain cancelled\", backend}`; 404 when it is not draining."
_REMOVED = (
    "`{status: \"backend removed\", backend, copies_forgotten, objects_lost[, purged,"
    " purge_failures]}`; with `purge` and no `confirm`: `{status: \"preview\", backend,"
    " object_count, total_bytes, confirm_token, expires_in}`; 403 for a bad or expired token;"
    " 409 while draining.  Writes the `backend.removed` webhook and audit events."
)

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
        "GET", "rebalance", "get_rebalance",
        "What a rebalance pass would move now: each backend's utilisation and the planned moves"
        " (pack: toward the first backends in config order; spread: from above the mean to below it)."
        " With the rebalancer off, spread with the default settings.",
        "`{strategy, threshold, batch_size, spread, backends: [{backend, limit, occupied, utilisation}],"
        " moves: [{bucket, key, part_number, size, from, to}], skipped?}` (`skipped`: `threshold` or"
        " `empty_plan`).",
        (Param("strategy", "query", "string", "`pack` or `spread` (default: the configured one)."),),
    ),
    Route(
        "POST", "rebalance", "rebalance",
        "Run a rebalance pass now (under the rebalancer's worker lock): each move copies, swaps the"
        " location only if the object is unchanged, then deletes the source. With the rebalancer off,"
        " spread with the default settings.",
        "`{status: \"ok\", ok: true, moved, run_id, strategy, planned, bytes_moved, stale, failed, spread,"
        " moves}`; `{status: \"skipped\", reason}` under the threshold, with nothing to move, or when"
        " another pass holds the lock.",
        (Param("strategy", "query", "string", "`pack` or `spread` (default: the configured one)."),),
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
        "POST", "scrub", "scrub",
        "Run an integrity scrub pass now (under the scrubber's worker lock): read the least recently"
        " verified copies and hash them; a copy that does not match is dropped (while another copy"
        " remains) for the replicator to rebuild.",
        "`{status: \"complete\", checked, mismatches, errors, deferred, dropped}`; 409 when"
        " `integrity.enabled` is false; `{status: \"skipped\", reason}` when another pass holds the lock.",
        (Param("batch_size", "query", "integer", "Copies to check (default `integrity.scrubber_batch_size`)."),),
        streams=True,
    ),
    Route(
        "POST", "object-scrub", "object_scrub",
        "Verify every copy of one object now.",
        "`{key, checked, mismatches, copies: [{backend, storage_key, part_number, verdict, dropped?}]}` with"
        " each verdict `verified`, `mismatch`, `unreadable`, `not_hashed` or `deferred`; 404 when the"
        " key has no copies, 409 when `integrity.enabled` is false.",
        (Param("key", "query", "string", "`bucket/key` of the object.", required=True),),
    ),
    Route(
        "POST", "backfill-checksums", "backfill_checksums",
        "Store the SHA-256 of objects written without one (each read from a copy that matches its MD5).",
        "`{status: \"complete\", hashed, failed, changed}`; 409 when `integrity.enabled` is false.",
        (
            Param("max", "query", "integer", "Stop after this many objects (default: all)."),
            Param("delay_ms", "query", "integer", "Pause after each object, in milliseconds (default 0)."),
        ),
        streams=True,
    ),
    Route(
        "POST", "encrypt-existing", "encrypt_existing",
        "Encrypt every object still stored in plaintext (batches of 100; each rewritten under a new"
        " storage key and swapped in one transaction with its quota delta, only while no client"
        " write replaced it; the old copies are queued for cleanup).",
        "`{status: \"complete\", encrypted, failed, total}`; 400 `encryption not enabled`.",
        (),
        streams=True,
    ),
    Route(
        "POST", "decrypt-existing", "decrypt_existing",
        "Decrypt every encrypted object back to plaintext (the mirror image of encrypt-existing).",
        "`{status: \"complete\", decrypted, failed, total}`; 400 `encryption not enabled`.",
        (),
        streams=True,
    ),
    Route(
        "POST", "rotate-encryption-key", "rotate_encryption_key",
        "Re-wrap the data keys wrapped under `old_key_id` with the primary key (no data is rewritten).",
        "`{status: \"complete\", rotated, failed, total}`; 400 when `old_key_id` is missing or"
        " encryption is not enabled.",
        (Param("old_key_id", "body", "string", "The key id to move away from (`config-1`, `file-0`...).",
               required=True),),
        streams=True,
    ),
    Route(
        "POST", "compress-existing", "compress_existing",
        "Compress every object stored uncompressed of at least `compression.min_size` bytes, with"
        " `compression.*` as a PUT would (an encrypted one stays encrypted), in batches of 100, each"
        " rewritten and swapped like encrypt-existing; an object whose compressed form is worse"
        " than `min_ratio` is left as it is and counted skipped. A multipart object is compressed part"
        " by part (a part that does not pay stays as sent; none paying: skipped).",
        "`{status: \"complete\", compressed, skipped, failed, total}`; 400 `compression not enabled`.",
        (),
        streams=True,
    ),
    Route(
        "POST", "decompress-existing", "decompress_existing",
        "Rewrite every compressed object as the client wrote it, keeping its encryption (runs with"
        " compression off too).",
        "`{status: \"complete\", decompressed, skipped, failed, total}`.",
        (),
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
        _DRAIN_STARTED,
        (_DRAIN,),
    ),
    Route(
        "GET", "drain", "drain_status",
        "A backend's drain and what it still holds.",
        _DRAIN_STATUS,
        (_DRAIN,),
    ),
    Route(
        "DELETE", "drain", "cancel_drain",
        "Cancel a backend's drain: it takes writes again; copies already moved stay moved.",
        _DRAIN_CANCELLED,
        (_DRAIN,),
    ),
    Route(
        "DELETE", "backend", "remove_backend",
        "Remove a backend from the metadata (its objects stay on it), or with `purge` delete its"
        " objects too: first a preview with a confirmation token valid 60 s for that backend only,"
        " then the same call with `confirm`.  Objects left without any copy are deleted from the"
        " metadata.  Refused while the backend is draining.",
        _REMOVED,
        (Param("name", "query", "string", "The backend's name.", required=True), _PURGE, _CONFIRM),
    ),
    # The original's paths for the same four operations (s3-orchestrator's clients and scripts).
    Route(
        "POST", "backends/{name}/drain", "start_drain",
        "Start draining a backend (the original's path; same as `POST drain?backend=`).",
        _DRAIN_STARTED, (_NAME,), operation_id="start_drain_by_path", command="drain",
    ),
    Route(
        "GET", "backends/{name}/drain", "drain_status",
        "A backend's drain and what it still holds (the original's path; same as `GET drain?backend=`).",
        _DRAIN_STATUS, (_NAME,), operation_id="drain_status_by_path", command="drain",
    ),
    Route(
        "DELETE", "backends/{name}/drain", "cancel_drain",
        "Cancel a backend's drain (the original's path; same as `DELETE drain?backend=`).",
        _DRAIN_CANCELLED, (_NAME,), operation_id="cancel_drain_by_path", command="drain",
    ),
    Route(
        "DELETE", "backends/{name}", "remove_backend",
        "Remove a backend from the metadata, or purge it (the original's path; same as"
        " `DELETE backend?name=`).",
        _REMOVED, (_NAME, _PURGE, _CONFIRM), operation_id="remove_backend_by_path", command="remove-backend",
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
    Route(
        "POST", "reconcile", "reconcile",
        "Reconcile backends with the database now (under the reconcile worker's lock): a sorted"
        " merge of each backend's listing and its copies in the database.  Copies whose object is"
        " gone are forgotten (the object too when it was the last copy); unreferenced keys of"
        " s3orch's layout are queued for cleanup; other keys are left alone.",
        "`{status: \"ok\", imported, removed, lost, orphaned, foreign, matched,"
        " suppressed_pending_cleanup, in_flight, kept, errors, backends_scanned, scanned, outcome,"
        " run_id, backends: [...], lost_objects: [...]}`; `{status: \"skipped\", reason}` when another"
        " pass holds the lock; 400 for an unknown backend.",
        (Param("backend", "query", "string", "Only this backend (default: every backend)."),),
        streams=True,
    ),
    Route(
        "GET", "cache", "cache_stats",
        "This instance's object data cache: entries, bytes and limits (`cache.*`).",
        "`{enabled, entries, size_bytes, max_size, max_object_size, ttl, filling}`; `{enabled: false}`"
        " when the cache is off.",
    ),
    Route(
        "POST", "cache/flush", "cache_flush",
        "Drop every entry of this instance's object data cache (other instances keep theirs).",
        "`{status: \"flushed\", entries}`; 503 when the cache is disabled.",
    ),
    Route(
        "DELETE", "cache/keys/{key}", "cache_delete_key",
        "Drop one object from this instance's object data cache.",
        "`{status: \"ok\", key, removed}` (removed: whether it was cached); 503 when the cache is disabled.",
        (Param("key", "path", "string", "`bucket/key` (the rest of the path; `/` may be sent as is).", required=True),),
        command="cache-delete",
    ),
    Route(
        "DELETE", "cache/prefix", "cache_delete_prefix",
        "Drop every object whose `bucket/key` starts with `prefix` from this instance's object data cache.",
        "`{status: \"ok\", prefix, removed}`; 400 for an empty prefix; 503 when the cache is disabled.",
        (Param("prefix", "query", "string", "A `bucket/key` prefix (at least the bucket's first letter).",
               required=True),),
        command="cache-delete-prefix",
    ),
    Route(
        "POST", "sync", "sync",
        "Import a backend's pre-existing objects into a virtual bucket in place (no data copied):"
        " `{bucket}/{key}` keys (the original product's layout) lose their bucket head, keys of"
        " other configured buckets and of s3orch's own layout are left alone; an existing object"
        " is never overwritten, so a second run imports nothing.",
        "`{status: \"ok\", run_id, backend, bucket, prefix, dry_run, scanned, imported, skipped,"
        " own, other_bucket, bytes, keys: [{key, storage_key, size}]}` (keys: at most 1000; with"
        " `dry_run` what would be imported); `{status: \"skipped\", reason}` when a reconcile pass"
        " holds the lock; 400 for an unknown backend or bucket.",
        (
            Param("backend", "query", "string", "The backend to import from.", required=True),
            Param("bucket", "query", "string", "The virtual bucket the objects join.", required=True),
            Param("prefix", "query", "string", "Only backend keys under this prefix."),
            Param("dry_run", "query", "boolean", "Only say what would be imported."),
        ),
        streams=True,
    ),
)


def find(path: str) -> list[Route]:
    """The routes at ``path`` (one per method)."""
    return [route for route in ROUTES if route.path == path]


#: A template's last segment of this name takes the rest of the path (a ``bucket/key``: the
#: web server decodes ``%2F`` before the path is split).
REST_PARAM = "{key}"


def match(template: str, path: str) -> dict[str, str] | None:
    """The ``{name}`` segments of ``path`` if it fits ``template`` (segment by segment, each
    ``{name}`` one non-empty segment; a last :data:`REST_PARAM` the rest of the path), else None."""
    want, got = template.split("/"), path.split("/")
    if want[-1] == REST_PARAM and len(got) > len(want):
        got = [*got[: len(want) - 1], "/".join(got[len(want) - 1 :])]  # an object's bucket/key
    if len(want) != len(got):
        return None
    found: dict[str, str] = {}
    for pattern, segment in zip(want, got, strict=True):
        if pattern.startswith("{") and pattern.endswith("}"):
            if not segment:
                return None
            found[pattern[1:-1]] = segment
        elif pattern != segment:
            return None
    return found
