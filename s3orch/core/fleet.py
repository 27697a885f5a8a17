"""The backend fleet: every configured backend's client and config, and which may take a write.

One object answers "which backends are there, how do I talk to one, which may
receive ``size`` bytes now": the write paths, the readers, the cleanups and the
pending-intent resolution take it instead of a dict of clients plus a list of
configs.  A backend's health (its circuit breaker, when ``backend_circuit_breaker``
is on) and usage limits, when they come, narrow :meth:`BackendFleet.write_candidates`
here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from s3orch.backend.breaker import Breakers
from s3orch.backend.interface import ObjectBackend
from s3orch.config.model import BackendConfig
from s3orch.core.placement import write_candidates
from s3orch.usage.counters import Delta
from s3orch.usage.tracker import UsageTracker


class BackendFleet:
    """The backends of ``configs`` (in config order), each with its client in ``clients``.

    ``breakers`` (``s3orch.backend.breaker.guard``, which also wrapped ``clients``) keeps an
    open backend out of the write candidates.
    """

    def __init__(
        self,
        configs: Sequence[BackendConfig],
        clients: Mapping[str, ObjectBackend],
        breakers: Breakers | None = None,
        usage: UsageTracker | None = None,
    ) -> None:
        missing = [config.name for config in configs if config.name not in clients]
        if missing:
            raise ValueError(f"no client for backend {', '.join(missing)}")
        self.configs: tuple[BackendConfig, ...] = tuple(configs)
        self._clients = dict(clients)
        self.breakers = breakers
        #: Monthly usage limits (``s3orch.usage``): an over-limit backend takes no write.
        self.usage = usage
        #: Backends being drained (a cache of the store's ``drain_state``, kept by the drain
        #: worker and the admin calls): never a write candidate, so no request queries it.
        self.draining: frozenset[str] = frozenset()

    @property
    def names(self) -> list[str]:
        """The backends' names, in config order."""
        return [config.name for config in self.configs]

    def client(self, name: str) -> ObjectBackend | None:
        """The client of backend ``name``; None when it is no longer configured (a
        location or a queued cleanup may name a backend removed from the config)."""
        return self._clients.get(name)

    def config(self, name: str) -> BackendConfig | None:
        """The config of backend ``name``; None when it is no longer configured."""
        return next((config for config in self.configs if config.name == name), None)

    def __getitem__(self, name: str) -> ObjectBackend:
        """The client of a backend the caller just chose among the configured ones."""
        return self._clients[name]

    def write_candidates(
        self, size: int, *, exclude: Collection[str] = (), prefer: Collection[str] = (), usage: bool = True
    ) -> list[str]:
        """Backends that may receive ``size`` bytes, ``prefer``-red ones first, then in
        config order; without those in ``exclude`` (they failed for this write) and, unless
        ``usage`` is False, those whose monthly limits one more call of ``size`` bytes of
        ingress would pass (never offered, whatever their breaker).

        The choice among them (pack/spread by free room) is the store's, inside the
        reservation transaction, so it is atomic with the quota update.
        """
        configs: Sequence[BackendConfig] = self.configs
        if self.draining:
            exclude = {*exclude, *self.draining}
        if prefer:
            configs = sorted(configs, key=lambda config: config.name not in prefer)
        tracker = self.usage if usage else None
        if tracker is not None:
            open_names = [c.name for c in configs if c.name not in exclude]
            within = set(tracker.filter(open_names, lambda name: Delta(1, 0, size), "write"))
            exclude = {*exclude, *(name for name in open_names if name not in within)}
        if self.breakers is None:
            return write_candidates(configs, size, exclude=exclude)
        healthy = write_candidates(configs, size, exclude=exclude, is_available=self.breakers.available)
        # Every candidate is behind an open breaker: offer them anyway, so that the write fails
        # at once with 503 (the breaker refuses the call), not 507 as if no backend had room.
        return healthy or write_candidates(configs, size, exclude=exclude)

    def usage_exhausted(self, size: int = 0) -> bool:
        """Whether backends could take a write but every one is past a monthly limit (507)."""
        return self.usage is not None and not self.write_candidates(size) and bool(
            self.write_candidates(size, usage=False)
        )

    def takes_writes(self, name: str) -> bool:
        """Whether ``name`` is not being drained (checked again after a reservation: a drain
        started while the reservation was made sends the write elsewhere)."""
        return name not in self.draining

    def breaker_states(self) -> dict[str, dict[str, Any]]:
        """Each backend's circuit breaker (state, consecutive failures, when it opened, when
        its probe is due), for ``/admin/api/status``; empty when breakers are off."""
        return {} if self.breakers is None else self.breakers.states()

    def quota_limits(self) -> dict[str, int]:
        """Each backend's ``quota_bytes`` (0: unlimited), as the store records them."""
        return {config.name: config.quota_bytes for config in self.configs}

    async def close(self) -> None:
        """Release every client's connections (shutdown)."""
        for client in self._clients.values():
            await client.close()
