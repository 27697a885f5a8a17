"""The integrity part of the metadata store's contract (:mod:`s3orch.store.txn.integrity`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from s3orch.store.records import CleanupItem, ScrubCopy


class IntegrityStore(Protocol):
    """What the scrubber, ``verify_on_read`` and the checksum backfill read and change."""

    async def scrub_candidates(self, limit: int, before: float) -> list[ScrubCopy]:
        """Up to ``limit`` copies last verified before ``before`` (never verified first)."""

    async def copies_to_scrub(self, bucket: str, key: str) -> list[ScrubCopy]:
        """Every copy of every extent of the key's current version (empty: no such key)."""

    async def mark_verified(self, copies: Sequence[ScrubCopy], now: float) -> None:
        """Record ``now`` as the last verification of each copy still stored as it was."""

    async def drop_corrupt_copy(self, copy: ScrubCopy, now: float) -> CleanupItem | None:
        """Forget a copy whose bytes do not match and queue them for deletion, while the object
        is still ``copy.write_id`` and another copy of the extent remains (the replicator then
        rebuilds it from a good copy); None when it was kept (the last copy, or gone)."""

    async def integrity_stats(self) -> tuple[int, float | None]:
        """(copies never verified, the oldest ``last_verified`` of the others or None)."""

    async def unhashed_objects(
        self, after: tuple[str, str] | None, limit: int
    ) -> tuple[list[ScrubCopy], tuple[str, str] | None]:
        """Every copy of up to ``limit`` single-extent current objects without a stored SHA-256,
        in key order after ``after`` (what the checksum backfill reads), and where the next page
        starts (None: this was the last)."""

    async def set_content_hash(self, bucket: str, key: str, write_id: str, sha256_hex: str) -> bool:
        """Store the SHA-256 of a version that had none; False when the key changed meanwhile."""
