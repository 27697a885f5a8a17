"""The reconcile/import part of the metadata store's contract (:mod:`s3orch.store.txn.reconcile`).

Its own Protocol, which :class:`~s3orch.store.interface.MetadataStore` extends, so the
contract stays readable by domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from s3orch.store.records import CleanupItem, ImportCandidate, LostCopy, StoredCopy


class ReconcileStore(Protocol):
    """A backend's copies in storage-key order, orphans, lost copies, and adopting objects."""

    async def stored_copies(self, backend: str, after: str | None, limit: int) -> list[StoredCopy]:
        """Up to ``limit`` copies on ``backend`` with a storage key after ``after``, in byte order."""

    async def queue_orphans(
        self, backend: str, found: Sequence[tuple[str, int]], now: float, due: float
    ) -> tuple[dict[str, str], list[CleanupItem]]:
        """Queue for cleanup (due at ``due``) the ``(storage key, size)`` objects nothing
        references; (key -> ``queued``, ``referenced``, ``pending_cleanup`` or ``in_flight``,
        the queued rows)."""

    async def forget_lost_copy(self, backend: str, copy: StoredCopy, now: float, grace: float) -> LostCopy:
        """Forget a copy whose backend object is gone (the object with it when it was the
        last copy of an extent), unless it changed, is younger than ``grace`` or a write of
        the key is in flight."""

    async def import_objects(
        self,
        backend: str,
        candidates: Sequence[ImportCandidate],
        write_ids: Sequence[str],
        now: float,
        dry_run: bool = False,
    ) -> list[str]:
        """Adopt backend objects in place; per candidate ``imported`` (``dry_run``: would be),
        ``exists``, ``in_flight`` or ``referenced``."""
