"""Config sections of the gateway's optional features and background workers.

Telemetry, resilience (circuit breakers), the background workers (rebalance, replication, cleanup,
usage flush, lifecycle, reconcile), rate limits, encryption, compression, integrity, the UI, cache,
notifications, Redis and the write path.  The sections the request path always needs (server,
buckets, database, backends) and the whole file (``Config``) are in ``s3orch.config.model``, which
re-exports these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s3orch.config.fields import hidden, knob
from s3orch.config.units import KiB, MiB, parse_duration

__all__ = [
    "ack_problem",
    "BackendCircuitBreakerConfig",
    "CacheConfig",
    "CircuitBreakerConfig",
    "CleanupQueueConfig",
    "CompressionConfig",
    "EncryptionConfig",
    "IntegrityConfig",
    "LifecycleConfig",
    "LifecycleRule",
    "MetricsConfig",
    "NotificationEndpoint",
    "NotificationsConfig",
    "ParallelCopiesConfig",
    "PendingPatternConfig",
    "RateLimitConfig",
    "ReadPathConfig",
    "RebalanceConfig",
    "ReconcileConfig",
    "RedisConfig",
    "ReplicationConfig",
    "TelemetryConfig",
    "TracingConfig",
    "UIConfig",
    "UsageFlushConfig",
    "VaultConfig",
    "WritePathConfig",
]


# --- telemetry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoint; ``listen`` serves it on its own address instead of the S3 port."""

    enabled: bool = False
    path: str = knob("/metrics", empty_default=True)
    listen: str = ""


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry spans exported over OTLP (``s3orch.observe.tracing``).

    ``protocol`` is ours: ``grpc`` (s3-orchestrator's, ``endpoint`` is ``host:port``) or ``http``
    (OTLP/HTTP protobuf; ``endpoint`` is ``host:port`` or a URL, ``/v1/traces`` by default).
    """

    enabled: bool = False
    endpoint: str = ""
    insecure: bool = False
    sample_rate: float = knob(1.0, min_value=0)
    protocol: str = knob("grpc", empty_default=True)


@dataclass(frozen=True)
class TelemetryConfig:
    """Metrics and tracing."""

    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)


# --- resilience -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """The database breaker that switches to degraded (read-only) mode (``s3orch.core.degraded``).

    ``journal_path`` and ``journal_refresh`` are ours: the location journal that lets degraded
    reads find every object, not only cached ones (``s3orch.core.journal``).  An empty path is
    ``<database.path>.locations`` on SQLite, else ``s3orch-locations-<hash of the database>.db`` in
    ``server.spool_dir`` (or the system's temporary directory).
    """

    failure_threshold: int = knob(3, positive=True)
    open_timeout: float = knob(15.0, kind="duration", positive=True)
    cache_ttl: float = knob(60.0, kind="duration", positive=True)
    parallel_broadcast: bool = False
    degraded_broadcast_parallelism: int = knob(0, min_value=0)
    journal_path: str = ""
    journal_refresh: float = knob(2.0, kind="duration", positive=True)


@dataclass(frozen=True)
class BackendCircuitBreakerConfig:
    """Per-backend breakers (off by default; ``s3orch.backend.breaker``); trip after 5 failures
    (s3-orchestrator's code default; one of its guides says 10)."""

    enabled: bool = False
    failure_threshold: int = knob(5, positive=True)
    open_timeout: float = knob(300.0, kind="duration", positive=True)


# --- background workers -----------------------------------------------------------------------


@dataclass(frozen=True)
class RebalanceConfig:
    """The rebalancer (``s3orch.workers.rebalancer``): a pass every ``interval`` moves up to ``batch_size``
    copies (``concurrency`` at once) by the ``pack`` or ``spread`` plan when the utilisation spread is at
    least ``threshold``; off by default because moves cost egress. Reloadable."""

    enabled: bool = False
    strategy: str = knob("pack", empty_default=True)
    interval: float = knob(6 * 3600.0, kind="duration", positive=True)
    batch_size: int = knob(100, positive=True)
    threshold: float = knob(0.1, min_value=0)
    concurrency: int = knob(5, positive=True)


@dataclass(frozen=True)
class ReplicationConfig:
    """Copies per object and the replicator's pace; ``unhealthy_threshold`` 0 turns health-awareness off.

    With a ``factor`` above 1 the replicator (``s3orch.workers.replicator``) copies every extent
    with fewer copies to other backends, at start-up and every ``worker_interval``.
    """

    factor: int = knob(1, positive=True)
    worker_interval: float = knob(300.0, kind="duration", positive=True)
    batch_size: int = knob(50, positive=True)
    concurrency: int = knob(5, positive=True)
    unhealthy_threshold: float = knob(600.0, kind="duration", min_value=0)
    #: s3orch's: how many copies a fan-out write (``write_path.parallel_copies``) waits for:
    #: ``first``, ``all`` (the factor) or a number from 1 to the factor.
    ack: str = "first"

    @property
    def ack_level(self) -> int:
        """``ack`` as a number of copies: ``first`` 1, ``all`` the factor, N itself (checked
        at load: :func:`ack_problem`)."""
        if self.ack == "first":
            return 1
        if self.ack == "all":
            return self.factor
        return max(1, min(int(self.ack.strip()), self.factor))


def ack_problem(ack: str, factor: int) -> str | None:
    """What is wrong with a ``replication.ack`` value for ``factor`` (None: nothing)."""
    if ack in ("first", "all"):
        return None
    try:
        count = int(ack.strip())
    except ValueError:
        return f"must be 'first', 'all' or a number of copies, got {ack!r}"
    if not 1 <= count <= max(factor, 1):
        return f"must be between 1 and replication.factor ({factor}), got {count}"
    return None


@dataclass(frozen=True)
class CleanupQueueConfig:
    """Retry queue for backend deletes that failed, and the stale-multipart timeout.

    ``concurrency``: backend deletes the queue worker runs at once.
    """

    concurrency: int = knob(10, positive=True)
    claim_grace_period: float = knob(300.0, kind="duration", positive=True)
    multipart_stale_timeout: float = knob(24 * 3600.0, kind="duration", positive=True)


@dataclass(frozen=True)
class RateLimitConfig:
    """Per-client-IP token buckets (:mod:`s3orch.http.ratelimit`). ``trusted_proxies`` are
    normalised CIDR strings.  ``per_credential`` (our addition): an authenticated S3 request
    is charged to its access key's bucket (same rate and burst) instead of its IP's."""

    enabled: bool = False
    requests_per_sec: float = knob(100.0, positive=True)
    burst: int = knob(200, positive=True)
    cleanup_interval: float = knob(60.0, kind="duration", positive=True)
    cleanup_max_age: float = knob(300.0, kind="duration", positive=True)
    trusted_proxies: tuple[str, ...] = ()
    per_credential: bool = False


@dataclass(frozen=True)
class VaultConfig:
    """Vault Transit as the master-key holder."""

    address: str = ""
    token: str = hidden()
    token_file: str = ""
    key_name: str = ""
    mount_path: str = knob("transit", empty_default=True)
    ca_cert: str = ""
    renew_interval: float = knob(300.0, kind="duration", positive=True)


@dataclass(frozen=True)
class EncryptionConfig:
    """Envelope encryption (``s3orch.crypto``); exactly one key source when enabled. ``chunk_size`` must never change once data exists."""

    enabled: bool = False
    master_key: str = hidden()
    master_key_file: str = ""
    vault: VaultConfig | None = None
    previous_keys: tuple[str, ...] = knob((), secret=True)
    chunk_size: int = knob(64 * KiB, kind="size", positive=True)


@dataclass(frozen=True)
class CompressionConfig:
    """Chunked zstd before encryption (a later addition to s3-orchestrator): PUTs and multipart parts
    are compressed (``s3orch.codec.objects``, ``s3orch.codec.parts``), reads decompress."""

    enabled: bool = False
    level: str = knob("default", empty_default=True)
    chunk_size: int = knob(1 * MiB, kind="size", positive=True)
    min_size: int = knob(4096, kind="size", min_value=0)
    min_ratio: float = knob(0.95, positive=True)


@dataclass(frozen=True)
class IntegrityConfig:
    """Read verification and the scrubber (:mod:`s3orch.core.integrity`; ``scrubber_interval`` 0
    disables the schedule).  The SHA-256 of every write is stored whatever this says.
    ``verify_on_replicate``: the replicator always checks a source copy against its MD5 before
    copying it (it cannot be switched off; the key is accepted)."""

    enabled: bool = False
    verify_on_read: bool = False
    verify_on_replicate: bool = True
    scrubber_interval: float = knob(6 * 3600.0, kind="duration", min_value=0)
    scrubber_batch_size: int = knob(100, positive=True)


@dataclass(frozen=True)
class UIConfig:
    """The web dashboard; ``admin_token`` (the admin API token) falls back to ``admin_key``.

    ``enabled`` serves the dashboard (:mod:`s3orch.ui`) under ``path``; the admin API is served
    whenever it has a token.
    """

    enabled: bool = False
    path: str = knob("/ui", empty_default=True)
    admin_key: str = ""
    admin_secret: str = hidden()
    session_secret: str = hidden()
    admin_token: str = hidden()
    force_secure_cookies: bool = False

    @property
    def effective_admin_token(self) -> str:
        """The token the admin API accepts."""
        return self.admin_token or self.admin_key


@dataclass(frozen=True)
class UsageFlushConfig:
    """How often usage counters reach the DB, faster near a limit when adaptive.

    Each ``interval`` the unflushed usage deltas are added to the database and the quota and
    usage gauges refreshed (``s3orch.workers.quota_metrics``); with ``adaptive_enabled``, every
    ``fast_interval`` once a backend has used ``adaptive_threshold`` of a monthly limit.
    """

    interval: float = knob(30.0, kind="duration", positive=True)
    adaptive_enabled: bool = False
    adaptive_threshold: float = 0.8
    fast_interval: float = knob(5.0, kind="duration", positive=True)


@dataclass(frozen=True)
class LifecycleRule:
    """Expire objects under ``prefix`` (and carrying all ``tags``) after ``expiration_days``."""

    prefix: str = ""
    expiration_days: int = knob(0, positive=True)
    tags: tuple[tuple[str, str], ...] = knob((), kind="str_map")


@dataclass(frozen=True)
class LifecycleConfig:
    """Expiration rules (:mod:`s3orch.workers.lifecycle`); none means the worker takes no lock and
    runs no query. A rule with ``tags`` expires only keys carrying all of them (S3 object tagging)."""

    rules: tuple[LifecycleRule, ...] = ()
    batch_size: int = knob(100, positive=True)


@dataclass(frozen=True)
class ReconcileConfig:
    """Periodic backend-vs-database reconciliation (:mod:`s3orch.core.reconcile`): off by default,
    not reloadable.  ``grace_period`` (an s3orch addition) is how old a copy must be before a
    pass may forget it, and how long an orphan it queues waits before it is deleted."""

    enabled: bool = False
    interval: float = knob(24 * 3600.0, kind="duration", positive=True)
    grace_period: float = knob(3600.0, kind="duration", min_value=0)


@dataclass(frozen=True)
class CacheConfig:
    """In-memory LRU of whole plaintext objects, per instance (:mod:`s3orch.core.cache`): at most
    ``max_size`` bytes, objects up to ``max_object_size``, each entry at most ``ttl`` old.  Not
    reloadable (a change is named in ``restart_required``)."""

    enabled: bool = False
    max_size: int = knob(256 * MiB, kind="size", positive=True)
    max_object_size: int = knob(10 * MiB, kind="size", positive=True)
    ttl: float = knob(300.0, kind="duration", positive=True)


@dataclass(frozen=True)
class NotificationEndpoint:
    """A webhook receiving CloudEvents whose type matches one of ``events`` (trailing ``*`` allowed)."""

    url: str = ""
    events: tuple[str, ...] = ()
    prefix: str = ""
    secret: str = hidden()
    timeout: float = knob(5.0, kind="duration", positive=True)
    max_retries: int = knob(3, min_value=0)


@dataclass(frozen=True)
class NotificationsConfig:
    """Webhook endpoints (CloudEvents through a transactional outbox, :mod:`s3orch.notify`);
    none means no notifier and no outbox rows."""

    endpoints: tuple[NotificationEndpoint, ...] = ()


@dataclass(frozen=True)
class RedisConfig:
    """Shared usage counters (``s3orch.usage.shared``); an empty ``address`` means Redis is not
    used.  Configured and not answering at start-up: the gateway refuses to start."""

    address: str = ""
    password: str = hidden()
    key_prefix: str = knob("s3orch", empty_default=True)
    failure_threshold: int = knob(3, positive=True)
    open_timeout: float = knob(15.0, kind="duration", positive=True)

    @property
    def enabled(self) -> bool:
        """Whether counters are shared through Redis."""
        return self.address != ""


@dataclass(frozen=True)
class PendingPatternConfig:
    """PUT-before-COMMIT intents and the reaper that resolves the ones a failed commit left.

    ``enabled: false`` (s3-orchestrator's legacy write path) is not yet supported: refused at start-up.
    """

    enabled: bool = True
    reaper_tick: float = knob(60.0, kind="duration", positive=True)
    min_age: float = knob(300.0, kind="duration", min_value=0)
    batch_size: int = knob(50, positive=True)


@dataclass(frozen=True)
class ParallelCopiesConfig:
    """Write all replicas during the PUT (a later addition to s3-orchestrator): with a factor above 1
    a PUT or CopyObject stores ``replication.factor`` copies at once and answers after
    ``replication.ack`` of them (``s3orch.core.fanout``)."""

    enabled: bool = False


@dataclass(frozen=True)
class WritePathConfig:
    """How writes reach backends."""

    pending_pattern: PendingPatternConfig = field(default_factory=PendingPatternConfig)
    parallel_copies: ParallelCopiesConfig = field(default_factory=ParallelCopiesConfig)


@dataclass(frozen=True)
class ReadPathConfig:
    """How reads choose among an object's copies (s3orch's addition; see ``s3orch.core.reads``).

    ``hedge_after``: a Go duration after which a GET whose first copy has not answered with headers
    is also sent to the next copy (the first to answer is served, the other cancelled); ``auto``
    waits the first copy's backend's recent p95 header latency instead; "0s" (the default) is off.
    """

    hedge_after: str = knob("0s", empty_default=True)

    @property
    def hedge_auto(self) -> bool:
        """Whether the hedge waits each backend's recent p95 rather than a fixed delay."""
        return self.hedge_after.strip().lower() == "auto"

    @property
    def hedge_delay(self) -> float:
        """The fixed hedge delay in seconds (0: no fixed delay; validated by the loader)."""
        if self.hedge_auto:
            return 0.0
        try:
            return parse_duration(self.hedge_after)
        except (TypeError, ValueError):
            return 0.0
