"""Hot reload on SIGHUP (``systemctl reload``): re-read config.yaml, validate, swap what may change live.

A reload first reads and validates the file exactly as a start does (the loader's checks, then the
refusal table of :mod:`s3orch.config.support`): a bad file changes nothing, and each problem is
logged on a line of its own.  Then what can change without a restart is swapped in one reactor
turn, so no request sees half a reload:

* ``buckets`` (credentials and ``max_multipart_uploads``): a new
  :class:`~s3orch.auth.registry.CredentialRegistry` replaces the front door's, and the
  multipart service gets new per-bucket limits.  A request authenticates once, when its headers
  arrive, against the registry of that moment, so a request in flight finishes with the
  credentials it started with;
* ``backends[].quota_bytes`` (and the monthly usage limits, read from the fleet's configs):
  written to the store first (``sync_quota_limits``, as at start); a database that cannot take
  them fails the reload, and nothing changes;
* ``server.log_level`` (:func:`s3orch.observe.logging.set_log_level`);
* ``usage_flush`` (the flush worker's interval and adaptive pace);
* ``lifecycle`` (the expiration worker's rules and batch size, from its next pass);
* the TLS certificate and key, re-read from the files the listener was started with (new
  connections get the new certificate; a certificate expiring within 24 h is warned about);
* ``replication`` (the replicator's factor, interval, batch size, concurrency and
  ``unhealthy_threshold``, for its next pass), as long as replication stays on or stays off:
  turning it on (``factor`` from 1) or off takes effect at restart, as the worker exists or not;
* ``integrity`` (read verification, the scrubber's interval and batch size, switching it on
  or off) for the next request and the next pass;
* ``rebalance`` (switched on or off, strategy, interval, batch size, threshold,
  concurrency: from the rebalancer's next pass);
* ``rate_limit`` (:meth:`s3orch.http.ratelimit.RateLimiter.reconfigure`: new rates for new
  buckets, as s3-orchestrator; ``enabled``, ``per_credential`` and ``trusted_proxies`` at
  once; ``cleanup_interval`` at restart);

Every other changed field needs a restart: each is logged by name and listed in
``restart_required``; the running config keeps its old value, so the next reload names it again.
The outcome is kept in ``GatewayService.last_reload``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger

from s3orch.auth.registry import CredentialRegistry
from s3orch.config import Config, ConfigError, load_config
from s3orch.config.features import RateLimitConfig
from s3orch.config.model import (
    BackendConfig,
    ConfigIssue,
    IntegrityConfig,
    LifecycleConfig,
    RebalanceConfig,
    ReplicationConfig,
    UsageFlushConfig,
)
from s3orch.config.support import refusals
from s3orch.http.tls import (
    EXPIRY_WARNING,
    ReloadableContext,
    TLSSetupError,
    seconds_to_expiry,
    server_context,
)
from s3orch.observe.logging import set_log_level

__all__ = ["ReloadRejected", "ReloadTargets", "Reloader", "check_config", "diff_paths", "merge_reloadable"]

log = Logger(namespace="s3orch.reload")

#: Backend fields a reload applies.
BACKEND_LIVE_FIELDS = ("quota_bytes", "api_request_limit", "egress_byte_limit", "ingress_byte_limit")


class ReloadRejected(Exception):
    """The new file cannot be used: ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def check_config(path: str) -> Config:
    """The config at ``path``, validated as at start (loader, then refusal table), or ReloadRejected."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise ReloadRejected([str(issue) for issue in exc.errors]) from None
    refused: list[ConfigIssue] = refusals(config)
    if refused:
        raise ReloadRejected([str(issue) for issue in refused])
    return config


# --- diff and merge ------------------------------------------------------------------------------


def diff_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths of the fields that differ between two configs (or sections), values never shown.

    Lists of sections of one length are compared entry by entry (``backends[1].endpoint``); a list
    whose length changed is named whole (``backends``).  Fields not in the YAML (``warnings``) are
    skipped.
    """
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new) and type(old) is type(new):
        out: list[str] = []
        for item in dataclasses.fields(old):
            if item.metadata.get("yaml", True) is False:
                continue
            name = f"{path}.{item.name}" if path else item.name
            out += diff_paths(getattr(old, item.name), getattr(new, item.name), name)
        return out
    if (
        isinstance(old, tuple)
        and isinstance(new, tuple)
        and len(old) == len(new)
        and any(dataclasses.is_dataclass(entry) for entry in old)
    ):
        return [p for index, (a, b) in enumerate(zip(old, new)) for p in diff_paths(a, b, f"{path}[{index}]")]
    return [] if old == new else [path or "config"]


def _same_backends(old: tuple[BackendConfig, ...], new: tuple[BackendConfig, ...]) -> bool:
    return [b.name for b in old] == [b.name for b in new]


def merge_reloadable(current: Config, new: Config) -> Config:
    """``current`` with what a reload applies taken from ``new`` (the rest stays until a restart)."""
    backends = current.backends
    if _same_backends(current.backends, new.backends):
        backends = tuple(
            dataclasses.replace(old, **{name: getattr(fresh, name) for name in BACKEND_LIVE_FIELDS})
            for old, fresh in zip(current.backends, new.backends)
        )
    changes: dict[str, Any] = {
        "buckets": new.buckets,
        "backends": backends,
        "server": dataclasses.replace(current.server, log_level=new.server.log_level),
        "usage_flush": new.usage_flush,
        "lifecycle": new.lifecycle,
        "integrity": new.integrity,
        "rebalance": new.rebalance,
        "rate_limit": dataclasses.replace(new.rate_limit, cleanup_interval=current.rate_limit.cleanup_interval),
    }
    if (new.replication.factor > 1) == (current.replication.factor > 1):
        changes["replication"] = new.replication  # on or off stays as the start built it
    return dataclasses.replace(current, **changes)


# --- what a reload touches -----------------------------------------------------------------------


class HasRegistry(Protocol):
    registry: CredentialRegistry


class HasBucketLimits(Protocol):
    bucket_limits: dict[str, int]


class HasConfigs(Protocol):
    configs: tuple[BackendConfig, ...]


class HasUsageFlush(Protocol):
    def configure(self, config: UsageFlushConfig) -> None: ...


class HasIntegrity(Protocol):
    def reconfigure(self, config: IntegrityConfig) -> None: ...


class HasReplication(Protocol):
    def reconfigure(self, config: ReplicationConfig) -> None: ...


class HasRebalance(Protocol):
    def reconfigure(self, config: RebalanceConfig) -> None: ...


class HasLifecycleRules(Protocol):
    def set_rules(self, config: LifecycleConfig) -> None: ...


class HasRateLimits(Protocol):
    def reconfigure(self, config: RateLimitConfig) -> None: ...


class QuotaStore(Protocol):
    async def sync_quota_limits(self, limits: dict[str, int], now: float) -> None: ...


@dataclass
class ReloadTargets:
    """The live objects a reload swaps things into (None: not in this process, e.g. worker mode)."""

    store: QuotaStore
    front_door: HasRegistry | None = None
    multipart: HasBucketLimits | None = None
    fleet: HasConfigs | None = None
    usage_flush: HasUsageFlush | None = None
    replicator: HasReplication | None = None
    over_replication: HasReplication | None = None
    rebalancer: HasRebalance | None = None
    tls: ReloadableContext | None = None
    lifecycle: HasLifecycleRules | None = None
    scrubber: HasIntegrity | None = None
    rate_limiter: HasRateLimits | None = None
    set_log_level: Callable[[str], None] = set_log_level


def warn_if_expiring(config: Config, now: float) -> None:
    """Log a warning when the listener's certificate expires within 24 h (at start and on reload)."""
    tls = config.server.tls
    if tls is None:
        return
    try:
        left = seconds_to_expiry(tls, now)
    except TLSSetupError:
        return  # the start or the reload reports the unreadable file itself
    if left < EXPIRY_WARNING:
        expires = datetime.datetime.fromtimestamp(now + left, datetime.UTC)
        log.warn(
            "TLS certificate {cert_file} expires within 24h (at {expires})",
            component="reload",
            cert_file=tls.cert_file,
            expires=expires.isoformat(),
        )


def _now_iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat().replace("+00:00", "Z")


#: Runs a blocking function off the reactor thread (``deferToThread`` in a gateway).
Offload = Callable[[Callable[[], Any]], "Deferred[Any]"]


def _inline(function: Callable[[], Any]) -> Deferred[Any]:
    return succeed(function())


@dataclass
class _Prepared:
    config: Config
    tls: CertificateOptions | None = None


@dataclass
class Reloader:
    """Reloads ``path`` into ``targets``; ``record`` receives each outcome (``service.last_reload``).

    ``current`` is the config in effect: what the listener, workers and front door were built
    from, with every reload applied since.  Reloads never overlap: a SIGHUP during one runs
    another once it is done (several collapse into one).
    """

    current: Config
    targets: ReloadTargets
    clock: IReactorTime
    record: Callable[[dict[str, Any]], None]
    offload: Offload = _inline
    check: Callable[[str], Config] = check_config
    _running: bool = field(default=False, init=False)
    _again: str | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    def close(self) -> None:
        """The process is shutting down: a later SIGHUP is logged and ignored."""
        self._closed = True

    def request(self, path: str) -> None:
        """Start a reload of ``path`` (what the SIGHUP handler calls, on the reactor thread)."""
        if self._closed:
            log.info("SIGHUP ignored: s3orch is shutting down", component="reload")
            return
        if self._running:
            self._again = path
            return
        Deferred.fromCoroutine(self._loop(path))

    async def _loop(self, path: str) -> None:
        self._running = True
        try:
            next_path: str | None = path
            while next_path is not None:
                self._again = None
                await self.reload(next_path)
                next_path = self._again
        finally:
            self._running = False

    async def reload(self, path: str) -> dict[str, Any]:
        """Read, validate and apply ``path``; the outcome as recorded."""
        log.info("SIGHUP received, reloading configuration", component="reload", path=path)
        try:
            prepared = await self.offload(lambda: self._prepare(path))
        except ReloadRejected as exc:
            return self._failed(exc.problems)
        except Exception as exc:  # a bug must not kill the process, nor a later reload
            log.failure("configuration reload failed", component="reload")
            return self._failed([f"unexpected error: {exc}"])
        for warning in prepared.config.warnings:  # as a start prints them; they do not stop it
            log.warn("config warning: {warning}", component="reload", warning=str(warning))
        return await self.apply(prepared.config, prepared.tls)

    def _prepare(self, path: str) -> _Prepared:
        """The blocking part (files): parse, validate, and build the new TLS context."""
        config = self.check(path)
        tls_config = self.current.server.tls
        if self.targets.tls is None or tls_config is None:
            return _Prepared(config)
        try:
            # The files the listener started with (server.tls itself needs a restart).
            return _Prepared(config, server_context(tls_config))
        except TLSSetupError as exc:
            raise ReloadRejected([str(exc)]) from None

    async def apply(self, new: Config, tls: CertificateOptions | None = None) -> dict[str, Any]:
        """Swap what ``new`` changes that may change live; the outcome as recorded."""
        merged = merge_reloadable(self.current, new)
        changed = diff_paths(self.current, merged)
        restart = diff_paths(merged, new)
        limits = {b.name: b.quota_bytes for b in merged.backends}
        if limits != {b.name: b.quota_bytes for b in self.current.backends}:
            try:
                await self.targets.store.sync_quota_limits(limits, self.clock.seconds())
            except Exception as exc:
                return self._failed([f"cannot write the new quota limits to the database: {exc}"])
        self._swap(merged, changed, tls)
        self.current = merged
        for name in restart:
            log.warn(
                "{field} changed; takes effect at restart",
                component="reload",
                field=name,
            )
        if tls is not None:
            warn_if_expiring(merged, self.clock.seconds())
        outcome = self._outcome("ok", None, changed, restart)
        log.info(
            "Configuration reload complete", component="reload", changed=changed, restart_required=restart
        )
        return outcome

    def _swap(self, merged: Config, changed: list[str], tls: CertificateOptions | None) -> None:
        """Everything in one reactor turn: no request sees half of it."""
        targets = self.targets
        if any(name.startswith("buckets") for name in changed):
            if targets.front_door is not None:
                targets.front_door.registry = CredentialRegistry(merged.buckets)
            if targets.multipart is not None:
                targets.multipart.bucket_limits = {b.name: b.max_multipart_uploads for b in merged.buckets}
            log.info("Reloaded bucket credentials", component="reload", buckets=len(merged.buckets))
        if any(name.startswith("backends") for name in changed):
            if targets.fleet is not None:
                targets.fleet.configs = merged.backends
            log.info("Reloaded backend quota limits", component="reload")
        if "server.log_level" in changed:
            # Said at the old level: at a stricter one the line would not be written.
            log.info("Reloaded log level", component="reload", new_level=merged.server.log_level)
            targets.set_log_level(merged.server.log_level)
        if any(name.startswith("usage_flush") for name in changed):
            if targets.usage_flush is not None:
                targets.usage_flush.configure(merged.usage_flush)
            log.info("Reloaded usage-flush config", component="reload", interval=merged.usage_flush.interval)
        if any(name.startswith("replication") for name in changed):
            if targets.replicator is not None:
                targets.replicator.reconfigure(merged.replication)
            if targets.over_replication is not None:
                targets.over_replication.reconfigure(merged.replication)
            log.info("Reloaded replication config", component="reload", factor=merged.replication.factor)
        if any(name.startswith("rebalance") for name in changed):
            if targets.rebalancer is not None:
                targets.rebalancer.reconfigure(merged.rebalance)
            log.info("Reloaded rebalance config", component="reload", enabled=merged.rebalance.enabled)
        if any(name.startswith("lifecycle") for name in changed):
            if targets.lifecycle is not None:
                targets.lifecycle.set_rules(merged.lifecycle)
            log.info("Reloaded lifecycle rules", component="reload", rules=len(merged.lifecycle.rules))
        if any(name.startswith("integrity") for name in changed):
            if targets.scrubber is not None:
                targets.scrubber.reconfigure(merged.integrity)
            log.info("Reloaded integrity config", component="reload", enabled=merged.integrity.enabled)
        if any(name.startswith("rate_limit") for name in changed) and targets.rate_limiter is not None:
            targets.rate_limiter.reconfigure(merged.rate_limit)  # logs "Reloaded rate limits"
        if tls is not None and targets.tls is not None:
            targets.tls.swap(tls)
            log.info("Reloaded TLS certificate", component="reload")

    def _failed(self, problems: list[str]) -> dict[str, Any]:
        log.error(
            "Config reload failed, keeping current config", component="reload", problems=len(problems)
        )
        for problem in problems:
            log.error("config reload: {problem}", component="reload", problem=problem)
        return self._outcome("failed", "; ".join(problems), [], [])

    def _outcome(self, status: str, error: str | None, changed: list[str], restart: list[str]) -> dict[str, Any]:
        outcome: dict[str, Any] = {
            "status": status,
            "at": _now_iso(self.clock.seconds()),
            "error": error,
            "changed": changed,
            "restart_required": restart,
        }
        self.record(outcome)
        return outcome


def reload_on_sighup(reactor: Any, reloader: Reloader, path: str) -> Callable[[], None]:
    """Install the SIGHUP handler (``systemctl reload``); returns a function that removes it.

    The handler runs between bytecodes of whatever the reactor thread was doing, so it only
    schedules the reload on the reactor.
    """
    import signal

    def on_hup(signum: int, frame: object) -> None:
        reactor.callFromThread(reloader.request, path)

    previous = signal.signal(signal.SIGHUP, on_hup)

    def remove() -> None:
        signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)

    return remove

