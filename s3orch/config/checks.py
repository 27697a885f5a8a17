"""Normalisation and every validation rule of a decoded config (cross-key checks included).

Each rule reports to a :class:`Report` (errors and warnings with the line the key was written on)
instead of raising, so an operator sees every problem in one pass.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from s3orch.config.features import ack_problem
from s3orch.config.model import (
    BackendConfig,
    Config,
    ConfigIssue,
    CredentialConfig,
    ServerConfig,
    process_count,
)
from s3orch.config.units import KiB, MiB, format_duration, parse_duration


class Report:
    """Collects validation errors and warnings, attaching the line a path was written on."""

    def __init__(self, lines: Mapping[str, int]) -> None:
        self.lines = lines
        self.errors: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def _line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = (
                re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", path)
                if re.search(r"[.\[]", path)
                else ""
            )
        return None

    def error(self, path: str, message: str) -> None:
        self.errors.append(ConfigIssue(path, message, self._line(path)))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(ConfigIssue(path, message, self._line(path)))


_S3_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HOST_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_LOG_LEVELS = ("debug", "info", "warn", "error")
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_STRATEGIES = ("pack", "spread")


def _is_s3_bucket_name(name: str) -> bool:
    """AWS's general-purpose bucket naming rules (the subset clients enforce)."""
    if not _S3_BUCKET_RE.fullmatch(name) or ".." in name:
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return True
    return False


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return False
    return not host.startswith("[") or host.endswith("]")


def _base64_length(value: str) -> int | None:
    """Length of the base64 value, or None when it is not base64."""
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return None


def normalise(config: Config, report: Report) -> Config:
    """Canonical spellings that later code can compare directly."""
    server = config.server
    suffix = server.virtual_host_suffix.strip().lower().lstrip(".")
    tls = server.tls
    if tls is not None and not (tls.cert_file or tls.key_file or tls.client_ca_file):
        tls = None  # an empty tls block means plain HTTP, as in s3-orchestrator's files
    server = dataclasses.replace(
        server, log_level=server.log_level.lower(), virtual_host_suffix=suffix, tls=tls
    )
    ui = config.ui
    if len(ui.path) > 1:
        ui = dataclasses.replace(ui, path=ui.path.rstrip("/") or "/")
    proxies: list[str] = []
    for index, cidr in enumerate(config.rate_limit.trusted_proxies):
        try:
            proxies.append(str(ipaddress.ip_network(cidr.strip(), strict=False)))
        except ValueError:
            report.error(
                f"rate_limit.trusted_proxies[{index}]",
                f"invalid CIDR {cidr!r} (e.g. 10.0.0.0/8)",
            )
            proxies.append(cidr)
    rate_limit = dataclasses.replace(config.rate_limit, trusted_proxies=tuple(proxies))
    return dataclasses.replace(config, server=server, ui=ui, rate_limit=rate_limit)


def _check_server(server: ServerConfig, report: Report) -> None:
    if not _is_host_port(server.listen_addr):
        report.error("server.listen_addr", "must be host:port (e.g. 0.0.0.0:9000)")
    if server.load_shed_threshold >= 1:
        report.error(
            "server.load_shed_threshold", "must be below 1 (0 disables shedding)"
        )
    if server.read_header_timeout > server.read_timeout:
        report.error(
            "server.read_header_timeout",
            f"must be <= read_timeout ({format_duration(server.read_timeout)})",
        )
    if server.backend_timeout > server.write_timeout:
        report.error(
            "server.backend_timeout",
            f"must be <= write_timeout ({format_duration(server.write_timeout)})",
        )
    if (server.max_concurrent_reads > 0) != (server.max_concurrent_writes > 0):
        report.error(
            "server.max_concurrent_reads" if server.max_concurrent_reads else "server.max_concurrent_writes",
            "split read/write pools need both max_concurrent_reads and max_concurrent_writes > 0 "
            "(s3-orchestrator silently runs without admission control when only one is set); "
            "set both, or neither and use max_concurrent_requests",
        )
    if server.log_level not in _LOG_LEVELS:
        report.error("server.log_level", "must be one of debug, info, warn, error")
    if server.log_format not in ("json", "text"):
        report.error("server.log_format", "must be 'json' or 'text'")
    if server.backend_http_client not in ("lean", "twisted"):
        report.error("server.backend_http_client", "must be 'lean' or 'twisted'")
    suffix = server.virtual_host_suffix
    if suffix and not all(
        _HOST_LABEL_RE.fullmatch(label) for label in suffix.split(".")
    ):
        report.error(
            "server.virtual_host_suffix", "must be a DNS name such as s3.example.com"
        )
    tls = server.tls
    if tls is not None:
        for key in ("cert_file", "key_file"):
            if not getattr(tls, key):
                report.error(
                    f"server.tls.{key}",
                    "is required (TLS needs cert_file and key_file)",
                )
        if tls.min_version not in ("1.2", "1.3"):
            report.error("server.tls.min_version", "must be '1.2' or '1.3'")


def _check_buckets(config: Config, report: Report) -> None:
    if not config.buckets:
        report.error("buckets", "at least one bucket is required")
    names: dict[str, int] = {}
    access_keys: dict[str, str] = {}
    tokens: dict[str, str] = {}
    for index, bucket in enumerate(config.buckets):
        path = f"buckets[{index}]"
        if not bucket.name:
            report.error(f"{path}.name", "is required")
        elif "/" in bucket.name:
            report.error(f"{path}.name", "must not contain '/'")
        elif bucket.name in names:
            report.error(
                f"{path}.name",
                f"duplicate bucket name (also buckets[{names[bucket.name]}])",
            )
        else:
            names[bucket.name] = index
            if not _is_s3_bucket_name(bucket.name):
                report.warn(
                    f"{path}.name",
                    f"{bucket.name!r} is not a valid S3 bucket name (3-63 lower-case letters, digits, "
                    "dots and hyphens, starting and ending with a letter or digit); "
                    "some S3 clients refuse such names",
                )
        if not bucket.credentials:
            report.error(f"{path}.credentials", "at least one credential is required")
        for cred_index, credential in enumerate(bucket.credentials):
            _check_credential(credential, f"{path}.credentials[{cred_index}]", report)
            cred_path = f"{path}.credentials[{cred_index}]"
            key = credential.access_key_id
            if key and key in access_keys:
                report.error(
                    f"{cred_path}.access_key_id",
                    f"duplicate access key (also {access_keys[key]})",
                )
            elif key:
                access_keys[key] = cred_path
            if credential.token and credential.token in tokens:
                report.error(
                    f"{cred_path}.token",
                    f"duplicate token (also {tokens[credential.token]})",
                )
            elif credential.token:
                tokens[credential.token] = cred_path


def _check_credential(credential: CredentialConfig, path: str, report: Report) -> None:
    key, secret = credential.access_key_id, credential.secret_access_key
    if key and not secret:
        report.error(f"{path}.secret_access_key", "is required with access_key_id")
    elif secret and not key:
        report.error(f"{path}.access_key_id", "is required with secret_access_key")
    elif not key and not credential.token:
        report.error(path, "needs access_key_id and secret_access_key, or token")


def _check_database(config: Config, report: Report) -> None:
    db = config.database
    if db.driver not in ("sqlite", "postgres"):
        report.error("database.driver", "must be 'sqlite' or 'postgres'")
        return
    if db.driver == "sqlite":
        if db.dsn:
            report.error("database.dsn", "is only used with driver postgres")
        if db.host:
            report.warn("database.host", "is ignored with driver sqlite")
        return
    if not db.dsn:
        for key in ("host", "database", "user"):
            if not getattr(db, key):
                report.error(f"database.{key}", "is required for postgres (or set dsn)")
    if db.port > 65535:
        report.error("database.port", "must be <= 65535")
    if db.ssl_mode not in _SSL_MODES:
        report.error("database.ssl_mode", f"must be one of {', '.join(_SSL_MODES)}")
    if db.min_conns > db.max_conns:
        report.error("database.min_conns", f"must be <= max_conns ({db.max_conns})")


def _check_backend(backend: BackendConfig, path: str, report: Report) -> None:
    if not backend.endpoint:
        report.error(f"{path}.endpoint", "is required")
    elif not _is_http_url(backend.endpoint):
        report.error(f"{path}.endpoint", "must be an http:// or https:// URL")
    if not backend.bucket:
        report.error(f"{path}.bucket", "is required")
    has_keys = bool(backend.access_key_id or backend.secret_access_key)
    if backend.credential_source == "static":
        for key in ("access_key_id", "secret_access_key"):
            if not getattr(backend, key):
                report.error(
                    f"{path}.{key}", "is required (credential_source is static)"
                )
    elif backend.credential_source == "default_chain":
        if has_keys:
            report.error(
                f"{path}.credential_source",
                "default_chain takes credentials from the environment: "
                "omit access_key_id and secret_access_key",
            )
    else:
        report.error(f"{path}.credential_source", "must be 'static' or 'default_chain'")


def _check_backends(config: Config, report: Report) -> None:
    if not config.backends:
        report.error("backends", "at least one backend is required")
        return
    names: dict[str, int] = {}
    for index, backend in enumerate(config.backends):
        path = f"backends[{index}]"
        if not backend.name:
            report.error(f"{path}.name", "is required")
        elif backend.name in names:
            report.error(
                f"{path}.name",
                f"duplicate backend name (also backends[{names[backend.name]}])",
            )
        else:
            names[backend.name] = index
        _check_backend(backend, path, report)
    unlimited = [
        b.name or f"backends[{i}]" for i, b in enumerate(config.backends) if b.unlimited
    ]
    limited = [
        b.name or f"backends[{i}]"
        for i, b in enumerate(config.backends)
        if not b.unlimited
    ]
    if unlimited and limited:
        report.error(
            "backends",
            "cannot mix unlimited backends (quota_bytes 0: "
            f"{', '.join(unlimited)}) with limited ones ({', '.join(limited)})",
        )
    elif len(unlimited) >= 2 and config.replication.factor < 2:
        report.error(
            "replication.factor",
            f"must be >= 2 with {len(unlimited)} unlimited backends "
            "(pack routing would only ever use the first)",
        )
    if config.replication.factor > len(config.backends):
        report.error(
            "replication.factor",
            f"must be <= the number of backends ({len(config.backends)})",
        )
    ack = ack_problem(config.replication.ack, config.replication.factor)
    if ack is not None:
        report.error("replication.ack", ack)


def _check_workers(config: Config, report: Report) -> None:
    if config.routing_strategy not in _STRATEGIES:
        report.error("routing_strategy", "must be 'pack' or 'spread'")
    if config.rebalance.strategy not in _STRATEGIES:
        report.error("rebalance.strategy", "must be 'pack' or 'spread'")
    if config.rebalance.threshold > 1:
        report.error("rebalance.threshold", "must be between 0 and 1")
    if config.rate_limit.burst < 1:
        report.error("rate_limit.burst", "must be >= 1")
    flush = config.usage_flush
    if not 0 < flush.adaptive_threshold < 1:
        report.error(
            "usage_flush.adaptive_threshold", "must be between 0 and 1 (exclusive)"
        )
    if flush.adaptive_enabled and flush.fast_interval >= flush.interval:
        report.error(
            "usage_flush.fast_interval",
            f"must be < interval ({format_duration(flush.interval)})",
        )
    tracing = config.telemetry.tracing
    if tracing.sample_rate > 1:
        report.error("telemetry.tracing.sample_rate", "must be between 0 and 1")
    if tracing.protocol not in ("grpc", "http"):
        report.error("telemetry.tracing.protocol", "must be 'grpc' or 'http'")
    if tracing.enabled and not tracing.endpoint:
        report.error(
            "telemetry.tracing.endpoint", "is required when tracing is enabled"
        )
    metrics = config.telemetry.metrics
    if not metrics.path.startswith("/"):
        report.error("telemetry.metrics.path", "must start with '/'")
    if metrics.listen and not _is_host_port(metrics.listen):
        report.error(
            "telemetry.metrics.listen", "must be host:port (e.g. 127.0.0.1:9091)"
        )
    cache = config.cache
    if cache.enabled and cache.max_object_size > cache.max_size:
        report.error("cache.max_object_size", "must be <= max_size")
    redis = config.redis
    if redis.address and not _is_host_port(redis.address):
        report.error("redis.address", "must be host:port (e.g. redis:6379)")


def _check_encryption(config: Config, report: Report) -> None:
    enc = config.encryption
    if not enc.enabled:
        return
    sources = [
        name
        for name, present in (
            ("master_key", bool(enc.master_key)),
            ("master_key_file", bool(enc.master_key_file)),
            ("vault", enc.vault is not None),
        )
        if present
    ]
    if not sources:
        report.error(
            "encryption", "needs one key source: master_key, master_key_file or vault"
        )
    elif len(sources) > 1:
        report.error(
            "encryption", f"set exactly one key source, not {' and '.join(sources)}"
        )
    keys = [("encryption.master_key", enc.master_key)] if enc.master_key else []
    keys += [
        (f"encryption.previous_keys[{i}]", key)
        for i, key in enumerate(enc.previous_keys)
    ]
    for path, key in keys:
        length = _base64_length(key)
        if length is None:
            report.error(path, "must be base64 (of a 32-byte key)")
        elif length != 32:
            report.error(path, f"must decode to 32 bytes, not {length}")
    if enc.vault is not None:
        vault = enc.vault
        if not vault.address:
            report.error("encryption.vault.address", "is required")
        elif not _is_http_url(vault.address):
            report.error(
                "encryption.vault.address", "must be an http:// or https:// URL"
            )
        if bool(vault.token) == bool(vault.token_file):
            report.error("encryption.vault", "set exactly one of token or token_file")
        if not vault.key_name:
            report.error("encryption.vault.key_name", "is required")
    size = enc.chunk_size
    if not (4 * KiB <= size <= 1 * MiB) or size & (size - 1):
        report.error(
            "encryption.chunk_size", "must be a power of two from 4KiB to 1MiB"
        )


def _check_compression(config: Config, report: Report) -> None:
    comp = config.compression
    if comp.level not in ("fastest", "default", "better", "best"):
        report.error(
            "compression.level", "must be one of fastest, default, better, best"
        )
    if not 16 * KiB <= comp.chunk_size <= 64 * MiB:
        report.error("compression.chunk_size", "must be from 16KiB to 64MiB")
    if comp.min_ratio > 1:
        report.error("compression.min_ratio", "must be between 0 and 1")


def _check_ui(config: Config, report: Report) -> None:
    ui = config.ui
    if not ui.path.startswith("/") or ui.path == "/":
        report.error("ui.path", "must start with '/' and name a sub-path, e.g. /ui")
    if ui.enabled:
        for key in ("admin_key", "admin_secret", "session_secret"):
            if not getattr(ui, key):
                report.error(f"ui.{key}", "is required when the UI is enabled")


def _check_lifecycle(config: Config, report: Report) -> None:
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for index, rule in enumerate(config.lifecycle.rules):
        path = f"lifecycle.rules[{index}]"
        if not rule.prefix and not rule.tags:
            report.error(path, "needs a prefix or tags")
        if rule.expiration_days <= 0:
            report.error(f"{path}.expiration_days", "must be > 0")
        if len(rule.tags) > 10:
            report.error(f"{path}.tags", "at most 10 tags")
        for key, value in rule.tags:
            if not key or len(key) > 128:
                report.error(
                    f"{path}.tags.{key}", "tag keys must be 1 to 128 characters"
                )
            if len(value) > 256:
                report.error(
                    f"{path}.tags.{key}", "tag values must be at most 256 characters"
                )
        identity = (rule.prefix, tuple(sorted(rule.tags)))
        if identity in seen:
            report.error(
                f"{path}.prefix",
                f"duplicate rule (same as lifecycle.rules[{seen[identity]}])",
            )
        else:
            seen[identity] = index


def _check_notifications(config: Config, report: Report) -> None:
    for index, endpoint in enumerate(config.notifications.endpoints):
        path = f"notifications.endpoints[{index}]"
        if not endpoint.url:
            report.error(f"{path}.url", "is required")
        elif not _is_http_url(endpoint.url):
            report.error(f"{path}.url", "must be an http:// or https:// URL")
        if not endpoint.events:
            report.error(f"{path}.events", "at least one event pattern is required")
        for event_index, pattern in enumerate(endpoint.events):
            if not pattern:
                report.error(f"{path}.events[{event_index}]", "must not be empty")
            elif "*" in pattern[:-1]:
                report.error(
                    f"{path}.events[{event_index}]", "'*' is only allowed at the end"
                )


def validate(config: Config, report: Report) -> None:
    _check_server(config.server, report)
    _check_processes(config, report)
    _check_buckets(config, report)
    _check_database(config, report)
    _check_backends(config, report)
    _check_workers(config, report)
    _check_encryption(config, report)
    _check_compression(config, report)
    _check_ui(config, report)
    _check_lifecycle(config, report)
    _check_notifications(config, report)
    _check_read_path(config, report)


def _check_processes(config: Config, report: Report) -> None:
    """``server.processes``: an integer >= 1 or ``auto``; several processes need a shared database file."""
    try:
        count = process_count(config.server.processes)
    except ValueError:
        report.error("server.processes", "must be an integer >= 1 or 'auto'")
        return
    if count < 1:
        report.error("server.processes", "must be >= 1 (or 'auto': one per CPU)")
        return
    if count == 1:
        return
    database = config.database
    if database.driver == "sqlite" and (database.path == ":memory:" or database.path.startswith("file::memory:")):
        report.error(
            "server.processes",
            "several processes need one database: an in-memory SQLite database is per process",
        )
    if config.cache.enabled:  # invalidated by this process's writes only: another's would read stale
        report.error(
            "server.processes",
            "cannot be combined with cache.enabled: each process's cache misses the other processes' writes",
        )
    if config.rate_limit.enabled:
        report.warn(
            "server.processes",
            f"rate_limit buckets are per process: a client may get up to {count}x requests_per_sec and burst",
        )


def _check_read_path(config: Config, report: Report) -> None:
    value = config.read_path.hedge_after
    if config.read_path.hedge_auto:
        return
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        report.error("read_path.hedge_after", f"must be a duration or 'auto': {exc}")
        return
    if seconds < 0:
        report.error("read_path.hedge_after", "must not be negative")
