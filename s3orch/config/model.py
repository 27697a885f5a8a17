"""The typed, frozen configuration model: the whole file (``Config``) and its core sections.

The sections of optional features and background workers live in ``s3orch.config.features`` and
are re-exported here.

Attribute names are exactly the YAML key names of s3-orchestrator's config.yaml (the Go product
whose config files s3orch loads unchanged), so a reader
can go from a key in a file to the attribute without a mapping table. Every key loads; the keys of
features this build does not have yet are refused at start-up when a file asks for them
(``s3orch.config.support``), so no section here promises behaviour by itself. Durations are float seconds,
sizes int bytes. Secrets are left out of every ``repr``/``str`` so a logged config never leaks them.

Keys are declared with ``knob``/``hidden`` (``s3orch.config.fields``), whose field metadata drives
the loader (``s3orch.config.load``): ``kind`` ("duration"/"size"/"str_map"),
``min``/``positive`` bounds (``min_value=``/``positive=`` in ``knob``), ``empty_default`` (an explicit "" means the default, as Go's zero-value
idiom does for these keys), ``aliases`` (our extra spellings of a key), ``yaml`` (False: not a key).
"""

from __future__ import annotations

import functools
import hmac
import os
from dataclasses import dataclass, field

from s3orch.config.features import (
    BackendCircuitBreakerConfig,
    CacheConfig,
    CircuitBreakerConfig,
    CleanupQueueConfig,
    CompressionConfig,
    EncryptionConfig,
    IntegrityConfig,
    LifecycleConfig,
    LifecycleRule,
    MetricsConfig,
    NotificationEndpoint,
    NotificationsConfig,
    ParallelCopiesConfig,
    PendingPatternConfig,
    RateLimitConfig,
    ReadPathConfig,
    RebalanceConfig,
    ReconcileConfig,
    RedisConfig,
    ReplicationConfig,
    TelemetryConfig,
    TracingConfig,
    UIConfig,
    UsageFlushConfig,
    VaultConfig,
    WritePathConfig,
)
from s3orch.config.fields import ConfigError, ConfigIssue, hidden, knob
from s3orch.config.units import GiB, MiB

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
    "ReadPathConfig",
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

# --- server -----------------------------------------------------------------------------------


def process_count(value: str) -> int:
    """``server.processes`` as a number: ``auto`` is the CPUs this process may run on.

    Raises ValueError for anything else than ``auto`` or an integer (the checks say so).
    """
    text = value.strip().lower()
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(text, 10)


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

    ``admission_wait``: how long a request may wait for a slot of a full pool (0: refused at
    once); only one of ``max_concurrent_reads``/``max_concurrent_writes`` set is refused.

    ``max_concurrent_requests`` becomes 1000 when it and both split pools are 0: s3-orchestrator
    does the same (its code never runs without admission control, although its docs say 0 disables
    it), so a drop-in file keeps its meaning.
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
    #: PutObject/UploadPart bodies of at least this Content-Length stream to the backend (0: always spool).
    stream_through_min_size: int = knob(8 * MiB, kind="size", min_value=0)
    virtual_host_suffix: str = ""
    delete_concurrency: int = knob(16, positive=True)
    allow_sigv2: bool = True
    #: Regions a SigV4 credential scope may name (empty: any region, as s3-orchestrator accepts).
    regions: tuple[str, ...] = ()
    #: Admission slots one access key may hold at once in each pool (0: a quarter of that pool).
    max_concurrent_per_credential: int = knob(0, min_value=0)
    #: Reactor processes serving the one port: an integer >= 1, or ``auto`` (one per CPU).
    processes: str = knob("1", empty_default=True)
    #: The HTTP client backends are called with: ``lean`` (s3orch.backend.http11) or ``twisted`` (Agent).
    backend_http_client: str = knob("lean", empty_default=True)

    @property
    def process_count(self) -> int:
        """``processes`` as a number (``auto``: the CPUs this process may run on); 1 if unusable."""
        return process_count(self.processes)

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

    ``database`` also answers to ``name`` (our alias; s3-orchestrator's files have no ``name`` key).
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
    ``egress_byte_limit``, ``ingress_byte_limit``) count per ``YYYY-MM`` UTC (``s3orch.usage``).
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
    #: s3orch's addition: lower is read first among healthy copies (egress fees); equal = no preference.
    read_cost: float = knob(0.0, min_value=0)

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
    read_path: ReadPathConfig = field(default_factory=ReadPathConfig)
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
