"""Monthly usage limits: what each backend has used this period, and whether an operation fits.

Effective usage = the database's baseline for this period (as of this instance's last flush)
+ the unflushed deltas (:class:`~s3orch.usage.counters.UsageCounters`) + the proposed
operation, so the request that would cross a limit is the one refused (BEHAVIOURS §1.8).

Limits are read from the fleet's configs on every check (a SIGHUP reload swaps them); the
period is ``YYYY-MM`` in UTC from the injected clock, so a new month starts from zero (its
rows do not exist yet) without any reset.

Several instances without shared counters: each sees the others' traffic only once they have
flushed and it has read the new baseline (its own flush reads it back), so together they can
pass a limit by about ``(instances - 1) x 2 x flush interval x each one's rate`` (README).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from s3orch.config.model import BackendConfig
from s3orch.observe.metrics import (
    USAGE_API_REQUESTS,
    USAGE_EGRESS_BYTES,
    USAGE_INGRESS_BYTES,
    USAGE_LIMIT_REJECTIONS,
)
from s3orch.store.interface_usage import UsageRow, UsageStore
from s3orch.store.locks import WorkerLock, WorkerLocks, run_exclusive
from s3orch.usage.counters import ZERO, Delta, LocalCounters, UsageCounters

__all__ = ["LIMIT_TYPES", "UsageTracker", "period_of"]

#: The limit types, as ``s3o_usage_limit_rejections_total{limit_type}`` names them.
API_REQUESTS = "api_requests"
EGRESS_BYTES = "egress_bytes"
INGRESS_BYTES = "ingress_bytes"
LIMIT_TYPES = (API_REQUESTS, EGRESS_BYTES, INGRESS_BYTES)

class Seconds(Protocol):
    def seconds(self) -> float: ...


def period_of(seconds: float) -> str:
    """The usage period (``YYYY-MM``, UTC) of an epoch time."""
    return time.strftime("%Y-%m", time.gmtime(seconds))


def _month(seconds: float) -> tuple[str, float, float]:
    """The period of ``seconds`` and the epoch times it starts and ends at."""
    year, month = time.gmtime(seconds)[:2]
    following = (year + month // 12, month % 12 + 1)
    start = calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))
    return f"{year:04d}-{month:02d}", float(start), float(calendar.timegm((*following, 1, 0, 0, 0, 0, 0, 0)))


def _limits(config: BackendConfig) -> tuple[int, int, int]:
    return config.api_request_limit, config.egress_byte_limit, config.ingress_byte_limit


def _values(delta: Delta) -> tuple[int, int, int]:
    return delta.api_requests, delta.egress_bytes, delta.ingress_bytes


class UsageTracker:
    """Books backend calls and answers "may this backend take this operation?".

    ``configs()`` returns the backends' current configs (the fleet's, so reloads apply);
    ``clock`` gives the period; ``counters`` hold what is not flushed yet.
    """

    def __init__(
        self,
        configs: Callable[[], Sequence[BackendConfig]],
        clock: Seconds,
        counters: UsageCounters | None = None,
    ) -> None:
        self.configs = configs
        self.clock = clock
        self.counters: UsageCounters = counters if counters is not None else LocalCounters()
        #: The database's rows of ``_baseline_period`` as of the last flush or refresh.
        self._baseline: dict[str, Delta] = {}
        self._baseline_period = ""
        # Caches for the request path: the month the clock is in, the configs by name.
        self._period, self._period_start, self._period_end = "", 0.0, -1.0
        self._seen: Sequence[BackendConfig] | None = None
        self._by_name: dict[str, BackendConfig] = {}
        self._limited = False

    def period(self) -> str:
        now = self.clock.seconds()
        if not self._period_start <= now < self._period_end:
            self._period, self._period_start, self._period_end = _month(now)
        return self._period

    def _configs(self) -> dict[str, BackendConfig]:
        """The current configs by name (rebuilt when a reload replaced them)."""
        configs = self.configs()
        if configs is not self._seen:
            self._seen = configs
            self._by_name = {config.name: config for config in configs}
            self._limited = any(any(_limits(config)) for config in configs)
        return self._by_name

    # -- booking and checking (the request path: synchronous, no I/O) ------------------------

    def record(self, backend: str, delta: Delta) -> None:
        """Book one backend call (failed calls too: the provider counts them)."""
        if delta:
            self.counters.add(backend, self.period(), delta)

    def usage(self, backend: str, period: str | None = None) -> Delta:
        """Effective usage of ``backend`` this period: baseline plus unflushed deltas."""
        period = period or self.period()
        return self.baseline(backend, period) + self.counters.pending(backend, period)

    def limited(self) -> bool:
        """Whether any backend has a limit (without one, checks are skipped)."""
        self._configs()
        return self._limited

    def _config(self, backend: str) -> BackendConfig | None:
        return self._configs().get(backend)

    def exceeded(self, backend: str, proposed: Delta) -> str | None:
        """The first limit type ``proposed`` would push ``backend`` past, or None when it fits."""
        config = self._config(backend)
        if config is None:
            return None
        limits = _limits(config)
        if not any(limits):
            return None
        used = _values(self.usage(backend) + proposed)
        for kind, limit, value in zip(LIMIT_TYPES, limits, used):
            if limit and value > limit:
                return kind
        return None

    def filter(
        self, names: Iterable[str], proposed: Callable[[str], Delta], operation: str | None
    ) -> list[str]:
        """``names`` within their limits for their ``proposed(name)`` operation; when that
        leaves none of them, the refusal of ``operation`` is counted
        (``s3o_usage_limit_rejections_total``)."""
        names = list(names)
        if not self.limited():
            return names
        kept: list[str] = []
        refused: str | None = None
        for name in names:
            kind = self.exceeded(name, proposed(name))
            if kind is None:
                kept.append(name)
            elif refused is None:
                refused = kind
        if operation is not None and not kept and refused is not None:
            USAGE_LIMIT_REJECTIONS.labels(operation, refused).inc()
        return kept

    def ratios(self) -> dict[str, tuple[str, float]]:
        """Each limited backend's highest used fraction of a limit, and which limit it is."""
        out: dict[str, tuple[str, float]] = {}
        for config in self.configs():
            used = _values(self.usage(config.name))
            best: tuple[str, float] | None = None
            for kind, limit, value in zip(LIMIT_TYPES, _limits(config), used):
                if limit and (best is None or value / limit > best[1]):
                    best = (kind, value / limit)
            if best is not None:
                out[config.name] = best
        return out

    def near_limit(self, threshold: float) -> bool:
        """Whether any backend has used ``threshold`` of any of its limits (adaptive flush)."""
        return any(ratio >= threshold for _, ratio in self.ratios().values())

    # -- the database ------------------------------------------------------------------------

    async def flush(self, store: UsageStore, *, refresh: bool = True, locks: WorkerLocks | None = None) -> int:
        """Add the unflushed deltas to the database in one transaction and take its rows as the
        new baseline; the deltas are forgotten only once that committed.  The deltas written.
        ``refresh=False`` (the flush at shutdown) does not touch the database when there is
        nothing to write.  With ``locks`` (shared counters: draining them is a destructive
        read) the flush runs under worker lock 1007; when another instance holds it, this one
        only refreshes its baseline (``refresh``) and writes nothing."""
        if locks is None:
            return await self._flush(store, refresh)
        ran, written = await run_exclusive(locks, WorkerLock.USAGE_FLUSH, lambda: self._flush(store, refresh))
        if not ran and refresh:
            await self.refresh(store)
        return written or 0

    async def _flush(self, store: UsageStore, refresh: bool) -> int:
        period = self.period()
        taken = self.counters.take_for_flush()
        batch = taken if isinstance(taken, Mapping) else await taken
        if not batch and not refresh:
            return 0
        try:
            rows = await store.add_usage({key: _values(delta) for key, delta in batch.items()}, period)
        except BaseException:
            self.counters.rollback(batch)
            raise
        # One reactor turn: the baseline gains what the counters lose, nothing counted twice.
        self._set_baseline(period, rows)
        self.counters.commit(batch)
        self.publish()
        return len(batch)

    async def refresh(self, store: UsageStore) -> None:
        """Read this period's baseline (at start, before any flush)."""
        period = self.period()
        self._set_baseline(period, await store.get_usage(period))
        self.publish()

    def baseline(self, backend: str, period: str) -> Delta:
        """The database's row of ``backend`` in ``period`` as this instance last read it."""
        return self._baseline.get(backend, ZERO) if period == self._baseline_period else ZERO

    def _set_baseline(self, period: str, rows: Mapping[str, UsageRow]) -> None:
        self._baseline_period = period
        self._baseline = {
            name: Delta(row.api_requests, row.egress_bytes, row.ingress_bytes) for name, row in rows.items()
        }

    def publish(self) -> None:
        """The ``s3o_usage_*`` gauges: this period's effective usage per backend."""
        for config in self.configs():
            used = self.usage(config.name)
            USAGE_API_REQUESTS.labels(config.name).set(used.api_requests)
            USAGE_EGRESS_BYTES.labels(config.name).set(used.egress_bytes)
            USAGE_INGRESS_BYTES.labels(config.name).set(used.ingress_bytes)

    def snapshot(self, backend: str) -> dict[str, Any]:
        """``backend``'s usage and limits this period, JSON-ready (admin status)."""
        config = self._config(backend)
        used = self.usage(backend)
        limits = _limits(config) if config is not None else (0, 0, 0)
        return {
            "api_requests": used.api_requests,
            "egress_bytes": used.egress_bytes,
            "ingress_bytes": used.ingress_bytes,
            "api_request_limit": limits[0],
            "egress_byte_limit": limits[1],
            "ingress_byte_limit": limits[2],
        }
