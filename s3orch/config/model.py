"""The typed, frozen configuration model.

Attribute names are exactly the YAML key names of the original product's config.yaml, so a reader
can go from a key in a file to the attribute without a mapping table. Every key loads; the keys of
features this build does not have yet are refused at start-up when a file asks for them
(``s3orch.config.support``), so no section here promises behaviour by itself. Durations are float seconds,
sizes int bytes. Secrets are left out of every ``repr``/``str`` so a logged config never leaks them.

Field metadata drives the loader (``s3orch.config.load``): ``kind`` ("duration"/"size"/"str_map"),
``min``/``positive`` bounds (``min_value=``/``positive=`` in ``knob``), ``empty_default`` (an explicit "" means the default, as Go's zero-value
idiom does for these keys), ``aliases`` (our extra spellings of a key), ``yaml`` (False: not a key).
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass, field
from typing import Any, TypeVar

from s3orch.config.units import GiB, KiB, MiB

__all__ = [
    "BackendCircuitBreakerConfig",
    "BackendConfig",
    "BucketConfig",
    "CacheConfig",
    "CircuitBreakerConfig",
    "CleanupQueueConfig",
    "CompressionConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "CredentialConfig",
    "DatabaseConfig",
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
    "RebalanceConfig",
    "ReconcileConfig",
    "RedisConfig",
    "ReplicationConfig",
    "ServerConfig",
    "TLSConfig",
    "TelemetryConfig",
    "TracingConfig",
    "UIConfig",
    "UsageFlushConfig",
    "VaultConfig",
    "WritePathConfig",
]

T = TypeVar("T")


def knob(
    default: T,
    *,
    kind: str | None = None,
    min_value: float | None = None,
    positive: bool = False,
    empty_default: bool = False,
    secret: bool = False,
    aliases: tuple[str, ...] = (),
) -> T:
    """Declare a config key with its default and the loader's rules for it."""
    metadata: dict[str, Any] = {
        "kind": kind,
        "min": min_value,
        "positive": positive,
        "empty_default": empty_default,
        "aliases": aliases,
    }
    result: T = field(default=default, repr=not secret, metadata=metadata)
    return result


def hidden(default: str = "") -> str:
    """A string key whose value must never appear in logs or reprs."""
    return knob(default, secret=True)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: the key path (``backends[1].quota_bytes``) and what is wrong."""

    path: str
    message: str
    line: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(ValueError):
    """Every problem found in a config file at once, so an operator fixes them in one pass."""

    def __init__(self, errors: list[ConfigIssue]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(issue) for issue in self.errors))


# --- server -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSConfig:
    """Serve HTTPS (with ``client_ca_file``: mTLS); the files are read at start-up, and the
    certificate and key again on each SIGHUP reload (``s3orch.reload``)."""

    cert_file: str = ""
    key_file: str = ""
    min_version: str = knob("1.2", empty_default=True)
    client_ca_file: str = ""


@dataclass(frozen=True)
class ServerConfig:
    """Listener, request caps, admission control and timeouts of the S3 front end.

    Not applied yet, and refused when set (``s3orch.config.support``): ``admission_wait`` above 0.

    ``max_concurrent_requests`` becomes 1000 when it and both split pools are 0: the original cannot
    run without admission control, whatever its docs say (BEHAVIOURS 1.40).
    """

    listen_addr: str = knob("0.0.0.0:9000", empty_default=True)
    max_object_size: int = knob(5 * GiB, kind="size", positive=True)
    max_concurrent_requests: int = knob(0, min_value=0)
    max_concurrent_reads: int = knob(0, min_value=0)
    max_concurrent_writes: int = knob(0, min_value=0)
    load_shed_threshold: float = knob(0.0, min_value=0)
    admission_wait: float = knob(0.0, kind="duration", min_value=0)
    backend_timeout: float = knob(30.0, kind="duration", positive=True)
    read_header_timeout: float = knob(10.0, kind="duration", positive=True)
    read_timeout: float = knob(300.0, kind="duration", positive=True)
    write_timeout: float = knob(300.0, kind="duration", positive=True)
    idle_timeout: float = knob(120.0, kind="duration", positive=True)
    shutdown_delay: float = knob(0.0, kind="duration", min_value=0)
    tls: TLSConfig | None = None
    log_level: str = knob("info", empty_default=True)
    # s3orch additions
    log_format: str = knob("json", empty_default=True)
    spool_dir: str = ""
    spool_memory_limit: int = knob(1 * MiB, kind="size", min_value=0)
    virtual_host_suffix: str = ""
    delete_concurrency: int = knob(16, positive=True)
    allow_sigv2: bool = True
    #: Regions a SigV4 credential scope may name (empty: any region, as the original).
    regions: tuple[str, ...] = ()
    #: Admission slots one access key may hold at once in each pool (0: a quarter of that pool).
    max_concurrent_per_credential: int = knob(0, min_value=0)

    def __post_init__(self) -> None:
        if (
            self.max_concurrent_requests == 0
            and self.max_concurrent_reads == 0
            and self.max_concurrent_writes == 0
        ):
            object.__setattr__(self, "max_concurrent_requests", 1000)


# --- buckets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialConfig:
    """One way into a bucket: a SigV4 key pair, or a legacy ``X-Proxy-Token``."""

    access_key_id: str = ""
    secret_access_key: str = hidden()
    token: str = hidden()


@dataclass(frozen=True)
class BucketConfig:
    """A virtual bucket: its name, who may use it, and its multipart cap (0 = unlimited)."""

    name: str = ""
    credentials: tuple[CredentialConfig, ...] = ()
    max_multipart_uploads: int = knob(0, min_value=0)


# --- database ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseConfig:
    """The metadata store. ``driver`` is inferred when empty: postgres if ``host`` (or ``dsn``) is set.

    ``database`` also answers to ``name`` (our alias; the original has no ``name`` key).
    ``dsn`` and ``statement_timeout`` are s3orch additions.
    """

    driver: str = ""
    path: str = knob("s3-orchestrator.db", empty_default=True)
    host: str = ""
    port: int = knob(5432, positive=True)
    database: str = knob("", aliases=("name",))
    user: str = ""
    password: str = hidden()
    ssl_mode: str = knob("require", empty_default=True)
    max_conns: int = knob(50, positive=True)
    min_conns: int = knob(10, min_value=0)
    max_conn_lifetime: float = knob(300.0, kind="duration", positive=True)
    # s3orch additions
    dsn: str = hidden()
    statement_timeout: float = knob(0.0, kind="duration", min_value=0)

    def __post_init__(self) -> None:
        if self.driver == "":
            inferred = "postgres" if (self.host or self.dsn) else "sqlite"
            object.__setattr__(self, "driver", inferred)


# --- backends ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendConfig:
    """One S3 bucket somewhere that stores objects for us, with its byte quota and monthly limits.

    Every limit uses 0 for "unlimited". ``unsigned_payload`` None means "auto": on for https endpoints,
    off for http (see ``effective_unsigned_payload``). The monthly usage limits (``api_request_limit``,
    ``egress_byte_limit``, ``ingress_byte_limit``) are not yet supported by this build: refused above 0.
    ``credential_source: default_chain`` takes the keys from the environment
    (``s3orch.backend.credentials``).
    """

    name: str = ""
    endpoint: str = ""
    region: str = knob("us-east-1", empty_default=True)
    bucket: str = ""
    credential_source: str = knob("static", empty_default=True)
    access_key_id: str = ""
    secret_access_key: str = hidden()
    force_path_style: bool = False
    unsigned_payload: bool | None = None
    disable_checksum: bool = False
    strip_sdk_headers: bool = False
    quota_bytes: int = knob(0, kind="size", min_value=0)
    max_object_size: int = knob(0, kind="size", min_value=0)
    api_request_limit: int = knob(0, min_value=0)
    egress_byte_limit: int = knob(0, kind="size", min_value=0)
    ingress_byte_limit: int = knob(0, kind="size", min_value=0)

    @property
    def effective_unsigned_payload(self) -> bool:
        """Whether uploads skip payload hashing: TLS already protects the bytes in transit."""
        if self.unsigned_payload is not None:
            return self.unsigned_payload
        return self.endpoint.lower().startswith("https://")

    @property
    def unlimited(self) -> bool:
        """True when the backend has no byte quota."""
        return self.quota_bytes == 0


# --- telemetry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoint; ``listen`` serves it on its own address instead of the S3 port."""

    enabled: bool = False
    path: str = knob("/metrics", empty_default=True)
    listen: str = ""


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry export over OTLP gRPC. Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

    enabled: bool = False
    endpoint: str = ""
    insecure: bool = False
    sample_rate: float = knob(1.0, min_value=0)


@dataclass(frozen=True)
class TelemetryConfig:
    """Metrics and tracing."""

    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)


# --- resilience -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """The database breaker that switches to degraded (read-only broadcast) mode.

    Not yet supported by this build (a database outage answers 503): any value but the defaults
    is refused at start-up (``s3orch.config.support``).
    """

    failure_threshold: int = knob(3, positive=True)
    open_timeout: float = knob(15.0, kind="duration", positive=True)
    cache_ttl: float = knob(60.0, kind="duration", positive=True)
    parallel_broadcast: bool = False
    degraded_broadcast_parallelism: int = knob(0, min_value=0)


@dataclass(frozen=True)
class BackendCircuitBreakerConfig:
    """Per-backend breakers (off by default); 5 failures, as the code does (BEHAVIOURS 1.40). Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

    enabled: bool = False
    failure_threshold: int = knob(5, positive=True)
    open_timeout: float = knob(300.0, kind="duration", positive=True)


# --- background workers -----------------------------------------------------------------------


@dataclass(frozen=True)
class RebalanceConfig:
    """The rebalancer; off by default because moves cost egress. Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

    enabled: bool = False
    strategy: str = knob("pack", empty_default=True)
    interval: float = knob(6 * 3600.0, kind="duration", positive=True)
    batch_size: int = knob(100, positive=True)
    threshold: float = knob(0.1, min_value=0)
    concurrency: int = knob(5, positive=True)


@dataclass(frozen=True)
class ReplicationConfig:
    """Copies per object and the replicator's pace; ``unhealthy_threshold`` 0 turns health-awareness off.

    This build keeps one copy: a ``factor`` above 1 is refused at start-up (``s3orch.config.support``).
    """

    factor: int = knob(1, positive=True)
    worker_interval: float = knob(300.0, kind="duration", positive=True)
    batch_size: int = knob(50, positive=True)
    concurrency: int = knob(5, positive=True)
    unhealthy_threshold: float = knob(600.0, kind="duration", min_value=0)


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
    """Per-client-IP token buckets. ``trusted_proxies`` are normalised CIDR strings. Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

    enabled: bool = False
    requests_per_sec: float = knob(100.0, positive=True)
    burst: int = knob(200, positive=True)
    cleanup_interval: float = knob(60.0, kind="duration", positive=True)
    cleanup_max_age: float = knob(300.0, kind="duration", positive=True)
    trusted_proxies: tuple[str, ...] = ()


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
    """Envelope encryption; exactly one key source when enabled. ``chunk_size`` must never change. Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

    enabled: bool = False
    master_key: str = hidden()
    master_key_file: str = ""
    vault: VaultConfig | None = None
    previous_keys: tuple[str, ...] = knob((), secret=True)
    chunk_size: int = knob(64 * KiB, kind="size", positive=True)


@dataclass(frozen=True)
class CompressionConfig:
    """Chunked zstd before encryption (a later addition of the original, kept for drop-in configs). Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

    enabled: bool = False
    level: str = knob("default", empty_default=True)
    chunk_size: int = knob(1 * MiB, kind="size", positive=True)
    min_size: int = knob(4096, kind="size", min_value=0)
    min_ratio: float = knob(0.95, positive=True)


@dataclass(frozen=True)
class IntegrityConfig:
    """Content hashing and the scrubber (``scrubber_interval`` 0 disables it). Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

    enabled: bool = False
    verify_on_read: bool = False
    verify_on_replicate: bool = True
    scrubber_interval: float = knob(6 * 3600.0, kind="duration", min_value=0)
    scrubber_batch_size: int = knob(100, positive=True)


@dataclass(frozen=True)
class UIConfig:
    """The web dashboard; ``admin_token`` (the admin API token) falls back to ``admin_key``.

    Not yet supported by this build, nor is the admin API: ``enabled``, and an admin token, are
    refused at start-up (``s3orch.config.support``).
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

    This build has no usage counters: ``interval`` paces the quota gauges, and ``adaptive_enabled``
    is refused at start-up (``s3orch.config.support``).
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
    """Expiration rules; none means the worker never runs. Not yet supported by this build: rules are
    refused at start-up (``s3orch.config.support``)."""

    rules: tuple[LifecycleRule, ...] = ()
    batch_size: int = knob(100, positive=True)


@dataclass(frozen=True)
class ReconcileConfig:
    """Periodic backend-vs-DB reconciliation. Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

    enabled: bool = False
    interval: float = knob(24 * 3600.0, kind="duration", positive=True)


@dataclass(frozen=True)
class CacheConfig:
    """In-memory LRU of whole plaintext objects. Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

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
    """Webhook endpoints; none means no notifier. Not yet supported by this build: endpoints are
    refused at start-up (``s3orch.config.support``)."""

    endpoints: tuple[NotificationEndpoint, ...] = ()


@dataclass(frozen=True)
class RedisConfig:
    """Shared usage counters; an empty ``address`` means Redis is not used. Not yet supported by this
    build: an address is refused at start-up (``s3orch.config.support``)."""

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

    ``enabled: false`` (the original's legacy write path) is not yet supported: refused at start-up.
    """

    enabled: bool = True
    reaper_tick: float = knob(60.0, kind="duration", positive=True)
    min_age: float = knob(300.0, kind="duration", min_value=0)
    batch_size: int = knob(50, positive=True)


@dataclass(frozen=True)
class ParallelCopiesConfig:
    """Write all replicas during the PUT (a later addition of the original). Not yet supported by this build: refused at start-up when switched on (``s3orch.config.support``)."""

    enabled: bool = False


@dataclass(frozen=True)
class WritePathConfig:
    """How writes reach backends."""

    pending_pattern: PendingPatternConfig = field(default_factory=PendingPatternConfig)
    parallel_copies: ParallelCopiesConfig = field(default_factory=ParallelCopiesConfig)


# --- the whole file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """A whole, validated config file. ``warnings`` holds accepted-but-suspicious settings."""

    server: ServerConfig = field(default_factory=ServerConfig)
    buckets: tuple[BucketConfig, ...] = ()
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    routing_strategy: str = knob("pack", empty_default=True)
    backends: tuple[BackendConfig, ...] = ()
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    backend_circuit_breaker: BackendCircuitBreakerConfig = field(
        default_factory=BackendCircuitBreakerConfig
    )
    rebalance: RebalanceConfig = field(default_factory=RebalanceConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    cleanup_queue: CleanupQueueConfig = field(default_factory=CleanupQueueConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    integrity: IntegrityConfig = field(default_factory=IntegrityConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    usage_flush: UsageFlushConfig = field(default_factory=UsageFlushConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    write_path: WritePathConfig = field(default_factory=WritePathConfig)
    warnings: tuple[ConfigIssue, ...] = field(
        default=(), compare=False, metadata={"yaml": False}
    )

    @functools.cached_property
    def _by_access_key(self) -> dict[str, tuple[BucketConfig, CredentialConfig]]:
        """Access key id -> (bucket, credential), built on first use (the config never changes)."""
        index: dict[str, tuple[BucketConfig, CredentialConfig]] = {}
        for bucket in self.buckets:
            for credential in bucket.credentials:
                if credential.access_key_id:
                    index.setdefault(credential.access_key_id, (bucket, credential))
        return index

    def bucket(self, name: str) -> BucketConfig | None:
        """The virtual bucket called ``name``, if configured."""
        for bucket in self.buckets:
            if bucket.name == name:
                return bucket
        return None

    def backend(self, name: str) -> BackendConfig | None:
        """The backend called ``name``, if configured."""
        for backend in self.backends:
            if backend.name == name:
                return backend
        return None

    def credential(
        self, access_key: str
    ) -> tuple[BucketConfig, CredentialConfig] | None:
        """The bucket and credential an access key id belongs to (access key ids are not secret)."""
        return self._by_access_key.get(access_key)

    def token(self, token: str) -> tuple[BucketConfig, CredentialConfig] | None:
        """The bucket and credential a legacy ``X-Proxy-Token`` belongs to.

        Compares against every configured token in constant time, so timing reveals nothing.
        """
        if not token:
            return None
        presented = token.encode()
        found: tuple[BucketConfig, CredentialConfig] | None = None
        for bucket in self.buckets:
            for credential in bucket.credentials:
                if credential.token and hmac.compare_digest(
                    credential.token.encode(), presented
                ):
                    found = found or (bucket, credential)
        return found
