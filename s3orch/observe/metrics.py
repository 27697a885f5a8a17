"""Prometheus metrics, all named ``s3o_*`` as s3-orchestrator's (the Go product s3orch re-creates).

They live in our own :data:`REGISTRY` (not prometheus-client's global one) so
that tests can read values and several apps in one process do not collide.
"""

from __future__ import annotations

import platform
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram

import twisted
from s3orch import __version__
from s3orch.observe.multiproc import Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_SIZE_BUCKETS = (1024, 16384, 65536, 262144, 1048576, 8388608, 67108864, 268435456, 1073741824, 5368709120)

#: The original's ``{version, go_version}`` becomes ``{version, python, twisted}``.
BUILD_INFO = Gauge("s3o_build_info", "Build metadata", ["version", "python", "twisted"], registry=REGISTRY)
BUILD_INFO.labels(__version__, platform.python_version(), twisted.__version__).set(1)

#: The HTTP methods that label request metrics; any other method counts as "OTHER".
#: Methods are client-controlled (and answered before authentication), so a label
#: taken from the raw method would let anyone create unbounded series.
METHOD_LABELS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The metric label of an HTTP method: itself if in METHOD_LABELS, else "OTHER"."""
    return method if method in METHOD_LABELS else "OTHER"


REQUESTS = Counter(
    "s3o_requests_total", "HTTP requests", ["method", "status_code"], registry=REGISTRY
)
REQUEST_DURATION = Histogram(
    "s3o_request_duration_seconds",
    "Request latency",
    ["method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
REQUEST_SIZE = Histogram(
    "s3o_request_size_bytes", "Upload sizes", ["method"], buckets=_SIZE_BUCKETS, registry=REGISTRY
)
RESPONSE_SIZE = Histogram(
    "s3o_response_size_bytes",
    "Download sizes",
    ["method"],
    buckets=_SIZE_BUCKETS,
    registry=REGISTRY,
)
INFLIGHT = Gauge("s3o_inflight_requests", "Currently processing", ["method"], registry=REGISTRY)

BACKEND_REQUESTS = Counter(
    "s3o_backend_requests_total",
    "Backend S3 API calls",
    ["operation", "backend", "status"],
    registry=REGISTRY,
)
BACKEND_DURATION = Histogram(
    "s3o_backend_duration_seconds",
    "Backend latency",
    ["operation", "backend"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
#: Our addition: bytes sent to / received from each backend (proves e.g. that
#: multipart completion moves no object data).
BACKEND_BYTES = Counter(
    "s3o_backend_bytes_total",
    "Object bytes transferred to (direction=out) and from (direction=in) backends",
    ["backend", "direction"],
    registry=REGISTRY,
)
#: Our addition: GET body bytes relayed to clients with splice(2), never copied through
#: Python (s3orch.http.splice); the rest of the relayed bytes took the ordinary path.
SPLICED_BYTES = Counter(
    "s3o_spliced_bytes_total",
    "GET body bytes relayed from a backend socket to a client socket with splice(2)",
    registry=REGISTRY,
)
MANAGER_REQUESTS = Counter(
    "s3o_manager_requests_total",
    "Manager-level operations",
    ["operation", "backend", "status"],
    registry=REGISTRY,
)
MANAGER_DURATION = Histogram(
    "s3o_manager_duration_seconds",
    "Manager latency",
    ["operation", "backend"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)



@lru_cache(maxsize=4096)
def _manager_children(operation: str, backend: str, status: str) -> tuple[Counter, Histogram]:
    return MANAGER_REQUESTS.labels(operation, backend, status), MANAGER_DURATION.labels(operation, backend)


def count_manager(operation: str, backend: str, status: str, seconds: float) -> None:
    """One manager-level operation, through pre-bound children: the request path builds no
    label tuples under the client library's lock."""
    requests, duration = _manager_children(operation, backend, status)
    requests.inc()
    duration.observe(seconds)


QUOTA_USED = Gauge("s3o_quota_bytes_used", "Current bytes used", ["backend"], registry=REGISTRY)
QUOTA_LIMIT = Gauge("s3o_quota_bytes_limit", "Quota limit", ["backend"], registry=REGISTRY)
QUOTA_ORPHAN = Gauge(
    "s3o_quota_orphan_bytes", "Bytes reserved by pending cleanup items", ["backend"], registry=REGISTRY
)
QUOTA_AVAILABLE = Gauge(
    "s3o_quota_bytes_available",
    "Remaining space (limit - used - orphan - reserved)",
    ["backend"],
    registry=REGISTRY,
)
OBJECTS_COUNT = Gauge("s3o_objects_count", "Stored object count", ["backend"], registry=REGISTRY)
ACTIVE_MULTIPART = Gauge(
    "s3o_active_multipart_uploads", "In-progress uploads", ["backend"], registry=REGISTRY
)

#: Our addition: requests answered 503 because the metadata database was unavailable
#: (down, restarting, locked); a database circuit breaker will count its own rejections
#: in s3o_degraded_write_rejections_total.
DATABASE_UNAVAILABLE = Counter(
    "s3o_database_errors_total",
    "Requests answered 503 because the metadata database was unavailable",
    ["operation"],
    registry=REGISTRY,
)
WRITE_FAILOVER = Counter(
    "s3o_write_failover_total", "PUTs retried on another backend", ["backend"], registry=REGISTRY
)
STREAM_THROUGH_WRITES = Counter(
    "s3o_stream_through_writes_total",
    "PutObject bodies streamed to a backend without a spool, by result"
    " (success, client_error: digest mismatch or client gone, backend_error)",
    ["result"],
    registry=REGISTRY,
)
EARLY_REJECTIONS = Counter(
    "s3o_early_rejections_total",
    "Requests refused before their body was read",
    ["reason"],
    registry=REGISTRY,
)
CLEANUP_ENQUEUED = Counter(
    "s3o_cleanup_queue_enqueued_total",
    "Items added to the cleanup retry queue",
    ["reason"],
    registry=REGISTRY,
)
#: PUT-before-COMMIT intents: written by the core's reserve step, resolved by its commit
#: (status "committed") or by the pending-intent resolution the reaper schedules (the other
#: statuses; see s3orch.core.intents).
PENDING_ENQUEUED = Counter(
    "s3o_pending_intents_enqueued_total",
    "Pending intents written before a backend PUT",
    registry=REGISTRY,
)
PENDING_RESOLVED = Counter(
    "s3o_pending_intents_resolved_total",
    "Pending intents resolved, by outcome",
    ["status"],
    registry=REGISTRY,
)
PENDING_DEPTH = Gauge(
    "s3o_pending_intents_depth", "Pending intents in the database", registry=REGISTRY
)
CLEANUP_PROCESSED = Counter(
    "s3o_cleanup_queue_processed_total",
    "Items processed from the cleanup queue",
    ["status"],
    registry=REGISTRY,
)
#: Queue and dead-letter depths, refreshed with the quota gauges (usage_flush.interval).
CLEANUP_DEPTH = Gauge(
    "s3o_cleanup_queue_depth", "Current pending items in the cleanup queue", registry=REGISTRY
)
CLEANUP_DLQ_DEPTH = Gauge(
    "s3o_cleanup_dlq_depth", "Unrecoverable orphans waiting in the cleanup dead-letter table", registry=REGISTRY
)
CLEANUP_DLQ_ENQUEUED = Counter(
    "s3o_cleanup_dlq_enqueued_total",
    "Cleanup rows moved to the dead-letter table after exhausting their retries",
    ["backend"],
    registry=REGISTRY,
)
CLEANUP_STALE_CLAIMS = Counter(
    "s3o_cleanup_queue_stale_claims_recovered_total",
    "Cleanup rows whose claim by an instance presumed dead was taken over",
    ["backend"],
    registry=REGISTRY,
)
AUDIT_EVENTS = Counter(
    "s3o_audit_events_total", "Audit log entries emitted", ["event"], registry=REGISTRY
)
AUTH_STREAMING = Counter(
    "s3o_auth_streaming_requests_total",
    "aws-chunked uploads by variant",
    ["variant"],
    registry=REGISTRY,
)
AUTH_STREAMING_REJECTIONS = Counter(
    "s3o_auth_streaming_rejections_total",
    "aws-chunked uploads rejected",
    ["reason"],
    registry=REGISTRY,
)
ADMISSION_REJECTIONS = Counter(
    "s3o_admission_rejections_total",
    "Requests rejected by server-level admission control",
    registry=REGISTRY,
)
LOAD_SHED = Counter(
    "s3o_load_shed_total",
    "Requests shed before the admission pool was full",
    registry=REGISTRY,
)
#: Our addition: requests refused because their access key already held
#: ``server.max_concurrent_per_credential`` admission slots.
CREDENTIAL_REJECTIONS = Counter(
    "s3o_credential_admission_rejections_total",
    "Requests rejected because their access key held its share of the admission pool",
    registry=REGISTRY,
)
#: Our addition: connections aborted because a response made no progress for
#: ``server.write_timeout`` (the client stopped reading).
WRITE_TIMEOUTS = Counter(
    "s3o_write_timeouts_total",
    "Connections aborted because the client accepted no response bytes for write_timeout",
    registry=REGISTRY,
)
#: Our addition: admission slots held now, per pool (global, read, write).
ADMISSION_IN_USE = Gauge(
    "s3o_admission_slots_in_use",
    "Admission slots held by requests in flight",
    ["pool"],
    registry=REGISTRY,
)
#: Requests refused by the rate limiter (s3-orchestrator's name; the labels are ours: ``api`` is
#: s3 or admin, ``key`` says whether the client IP's or the access key's bucket was empty).
RATE_LIMIT_REJECTIONS = Counter(
    "s3o_rate_limit_rejections_total",
    "Requests rejected by per-IP rate limiting",
    ["api", "key"],
    registry=REGISTRY,
)
#: Our addition: token buckets the rate limiter holds now (``kind`` ip or credential).
RATE_LIMIT_BUCKETS = Gauge(
    "s3o_rate_limit_buckets",
    "Token buckets held by the rate limiter",
    ["kind"],
    registry=REGISTRY,
)
#: Our addition: how admission waits (``server.admission_wait``) ended: admitted, timeout, gone.
ADMISSION_WAITS = Counter(
    "s3o_admission_waits_total",
    "Requests that waited for an admission slot, by outcome",
    ["outcome"],
    registry=REGISTRY,
)

# --- background workers (s3orch.workers.base counts every tick of every worker) ---------------

WORKER_TICKS = Counter(
    "s3o_worker_ticks_total", "Worker ticks by outcome", ["service", "result"], registry=REGISTRY
)
WORKER_LAST_SUCCESS = Gauge(
    "s3o_worker_last_success_timestamp_seconds",
    "Unix time of the last successful tick",
    ["service"],
    registry=REGISTRY,
)
WORKER_FAILURES = Gauge(
    "s3o_worker_consecutive_failures",
    "Consecutive failed ticks since the last success",
    ["service"],
    registry=REGISTRY,
)

# --- webhook notifications (s3orch.workers.notifier, s3orch.notify) ---------------------------

#: ``endpoint`` is the webhook URL without its query string (which may carry a token).
NOTIFICATION_SENT = Counter(
    "s3o_notification_sent_total",
    "Webhook deliveries acknowledged with a 2xx",
    ["endpoint", "event_type"],
    registry=REGISTRY,
)
NOTIFICATION_FAILED = Counter(
    "s3o_notification_failed_total",
    "Webhook delivery attempts that failed (retried later or dropped)",
    ["endpoint", "event_type"],
    registry=REGISTRY,
)
NOTIFICATION_DROPPED = Counter(
    "s3o_notification_dropped_total",
    "Webhook deliveries given up after max_retries attempts",
    ["endpoint", "event_type"],
    registry=REGISTRY,
)
NOTIFICATION_QUEUE_DEPTH = Gauge(
    "s3o_notification_queue_depth",
    "Webhook deliveries waiting in the outbox",
    registry=REGISTRY,
)
NOTIFICATION_DURATION = Histogram(
    "s3o_notification_duration_seconds",
    "Webhook delivery attempt latency",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
NOTIFICATION_STORE_ERRORS = Counter(
    "s3o_notification_store_errors_total",
    "Events that could not be written to the outbox",
    registry=REGISTRY,
)

# --- circuit breakers (s3orch.backend.breaker; name is the backend, "database" the database's) ---

BREAKER_STATE = Gauge(
    "s3o_circuit_breaker_state",
    "Circuit breaker state (0 closed, 1 open, 2 half-open)",
    ["name"],
    registry=REGISTRY,
)
BREAKER_TRANSITIONS = Counter(
    "s3o_circuit_breaker_transitions_total",
    "Circuit breaker state transitions",
    ["name", "from", "to"],
    registry=REGISTRY,
)
#: Our addition: calls failed at once because the breaker was open (or its probe in flight).
BREAKER_REJECTIONS = Counter(
    "s3o_circuit_breaker_rejections_total",
    "Calls refused without contacting the backend because its circuit breaker was open",
    ["name"],
    registry=REGISTRY,
)
#: ``operation``: where the answer came from, ``cache`` (the location cache) or ``journal``
#: (s3orch.core.journal); the original counts GET and HEAD here, which both look the key up.
DEGRADED_READS = Counter(
    "s3o_degraded_reads_total",
    "Object lookups answered without the database while it was unavailable",
    ["operation"],
    registry=REGISTRY,
)
DEGRADED_CACHE_HITS = Counter(
    "s3o_degraded_cache_hits_total",
    "Degraded lookups answered from the location cache",
    registry=REGISTRY,
)
#: Our addition: live keys in this instance's location journal, after its last refresh.
JOURNAL_ENTRIES = Gauge(
    "s3o_location_journal_entries",
    "Objects this instance could serve from its location journal during a database outage",
    registry=REGISTRY,
)
DEGRADED_WRITE_REJECTIONS = Counter(
    "s3o_degraded_write_rejections_total",
    "Writes refused because the database circuit breaker was open",
    ["operation"],
    registry=REGISTRY,
)

# --- lifecycle expiration (s3orch.workers.lifecycle) ------------------------------------------

LIFECYCLE_DELETED = Counter(
    "s3o_lifecycle_deleted_total", "Objects deleted by lifecycle expiration", registry=REGISTRY
)
LIFECYCLE_FAILED = Counter(
    "s3o_lifecycle_failed_total", "Objects that failed lifecycle deletion", registry=REGISTRY
)
#: Our addition: expired keys overwritten (or deleted) between the scan and the delete, left alone.
LIFECYCLE_SKIPPED = Counter(
    "s3o_lifecycle_skipped_total",
    "Expired objects not deleted because a newer write replaced them before the delete",
    registry=REGISTRY,
)
LIFECYCLE_RUNS = Counter(
    "s3o_lifecycle_runs_total",
    "Lifecycle passes by outcome (success, partial, failed, empty, error)",
    ["status"],
    registry=REGISTRY,
)
# -- integrity (s3orch.core.integrity, s3orch.workers.scrubber) ---------------------------------
INTEGRITY_CHECKS = Counter(
    "s3o_integrity_checks_total",
    "Copies (scrub) and full GETs (read) whose bytes were hashed against the metadata",
    ["operation"],
    registry=REGISTRY,
)
INTEGRITY_ERRORS = Counter(
    "s3o_integrity_errors_total",
    "Hashes that did not match the metadata (read: a GET aborted; scrub: a stored copy)",
    ["operation"],
    registry=REGISTRY,
)
INTEGRITY_NEVER_VERIFIED = Gauge(
    "s3o_integrity_never_verified_copies", "Stored copies the scrubber has never verified", registry=REGISTRY
)
INTEGRITY_OLDEST_UNVERIFIED = Gauge(
    "s3o_integrity_oldest_unverified_seconds",
    "Age of the oldest verification among the copies verified at least once",
    registry=REGISTRY,
)

# --- monthly usage limits (s3orch.usage) -------------------------------------------------------
USAGE_API_REQUESTS = Gauge(
    "s3o_usage_api_requests", "Current month API request count", ["backend"], registry=REGISTRY
)
USAGE_EGRESS_BYTES = Gauge("s3o_usage_egress_bytes", "Current month egress bytes", ["backend"], registry=REGISTRY)
USAGE_INGRESS_BYTES = Gauge(
    "s3o_usage_ingress_bytes", "Current month ingress bytes", ["backend"], registry=REGISTRY
)
USAGE_LIMIT_REJECTIONS = Counter(
    "s3o_usage_limit_rejections_total",
    "Operations rejected by usage limits",
    ["operation", "limit_type"],
    registry=REGISTRY,
)


# --- Redis shared usage counters (s3orch.redis.counters) ---------------------------------------

REDIS_OPERATIONS = Counter(
    "s3o_redis_operations_total",
    "Redis command outcomes (pipeline_add, pipeline_load, getset, ping; success or error)",
    ["operation", "status"],
    registry=REGISTRY,
)
REDIS_FALLBACK_ACTIVE = Gauge(
    "s3o_redis_fallback_active", "1 when Redis is unavailable and using local counters", registry=REGISTRY
)
