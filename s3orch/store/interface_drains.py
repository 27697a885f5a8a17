"""The drain part of the metadata store's contract (:mod:`s3orch.store.txn.drains`).

Its own Protocol, which :class:`~s3orch.store.interface.MetadataStore` extends, so the
contract stays readable by domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from s3orch.store.records import CleanupItem, DrainState, OutboxEvent, UnderReplicated


class DrainStore(Protocol):
    """Persisted drains, the copies a backend holds, and forgetting a backend."""

    async def drains(self) -> list[DrainState]:
        """Every persisted drain (writes avoid their backends)."""

    async def start_drain(self, backend: str, now: float) -> bool:
        """Start draining ``backend``; False when a drain of it is already active."""

    async def cancel_drain(self, backend: str) -> bool:
        """Forget the drain of ``backend``; False when there was none."""

    async def drain_moved(self, backend: str, objects: int, size: int) -> None:
        """Add to the drain's moved counters."""

    async def finish_drain(self, backend: str, state: str, error: str | None, now: float) -> bool:
        """Mark the drain ``completed``/``failed``; False when it is gone or completed."""

    async def backend_holdings(self, backend: str) -> tuple[int, int]:
        """The copies and bytes ``backend`` still holds by the database."""

    async def backend_extents(
        self, backend: str, limit: int, after: tuple[str, str, int] | None = None
    ) -> list[UnderReplicated]:
        """Up to ``limit`` extents with a copy on ``backend``, in key order after ``after``."""

    async def drop_drained_copy(
        self, extent: UnderReplicated, backend: str, now: float
    ) -> CleanupItem | None:
        """Drop the copy on ``backend`` (queued for cleanup) if the write is unchanged and
        another copy remains; the cleanup row, or None."""

    async def backend_uploads(self, backend: str) -> list[tuple[str, str, str]]:
        """(bucket, key, upload id) of open client uploads with bytes on ``backend``."""

    async def remove_backend(
        self, backend: str, now: float, events: Sequence[OutboxEvent] = ()
    ) -> tuple[int, int]:
        """Forget every row of ``backend`` (objects left without a copy are deleted), writing
        ``events`` to the outbox with it; (copies forgotten, objects deleted), or (-1, 0)
        while it is draining (nothing written)."""
