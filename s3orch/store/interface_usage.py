"""The monthly-usage part of the metadata store's contract (:mod:`s3orch.store.txn.usage`).

Its own Protocol, which :class:`~s3orch.store.interface.MetadataStore` extends, so the
contract stays readable by domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol


class UsageRow(NamedTuple):
    """One backend's counters for one ``YYYY-MM`` period."""

    backend: str
    period: str
    api_requests: int
    egress_bytes: int
    ingress_bytes: int


class UsageStore(Protocol):
    """Additive monthly usage counters per backend and period."""

    async def add_usage(
        self, deltas: Mapping[tuple[str, str], tuple[int, int, int]], period: str
    ) -> dict[str, UsageRow]:
        """Add ``(backend, period) -> (api, egress, ingress)`` in one transaction (not re-run
        after an unknown COMMIT outcome: that would count twice); every row of ``period``."""

    async def get_usage(self, period: str | None, backend: str | None = None) -> dict[str, UsageRow]:
        """The rows of ``period`` (all periods when None: the last row per backend wins), by backend."""
