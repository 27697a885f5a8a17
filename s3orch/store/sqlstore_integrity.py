"""The integrity and tagging methods of :class:`~s3orch.store.sqlstore.SQLStore` (the contracts
are :mod:`s3orch.store.interface_integrity` and :mod:`s3orch.store.interface_tags`, the
transactions :mod:`s3orch.store.txn.integrity` and :mod:`s3orch.store.txn.tags`): a mixin so
``sqlstore.py`` stays one readable file.
"""

from __future__ import annotations

from collections.abc import Sequence

from s3orch.store.records import CleanupItem, ObjectRecord, ScrubCopy
from s3orch.store.sqlstore_reconcile import TransactionRunner
from s3orch.store.txn import crypto, integrity, tags


class IntegrityTransactions(TransactionRunner):
    """The scrubber's, the checksum backfill's and object tagging's transactions."""

    async def scrub_candidates(self, limit: int, before: float) -> list[ScrubCopy]:
        return await self._read(integrity.txn_scrub_candidates, limit, before)

    async def copies_to_scrub(self, bucket: str, key: str) -> list[ScrubCopy]:
        return await self._read(integrity.txn_copies_to_scrub, bucket, key)

    async def mark_verified(self, copies: Sequence[ScrubCopy], now: float) -> None:
        await self._write(integrity.txn_mark_verified, tuple(copies), now)

    async def drop_corrupt_copy(self, copy: ScrubCopy, now: float) -> CleanupItem | None:
        return await self._write(integrity.txn_drop_corrupt_copy, copy, now)

    async def integrity_stats(self) -> tuple[int, float | None]:
        return await self._read(integrity.txn_integrity_stats)

    async def unhashed_objects(
        self, after: tuple[str, str] | None, limit: int
    ) -> tuple[list[ScrubCopy], tuple[str, str] | None]:
        return await self._read(integrity.txn_unhashed_objects, after, limit)

    async def set_content_hash(self, bucket: str, key: str, write_id: str, sha256_hex: str) -> bool:
        return await self._write(integrity.txn_set_content_hash, bucket, key, write_id, sha256_hex)

    async def set_object_tags(self, bucket: str, key: str, encoded: str) -> bool:
        return await self._write(tags.txn_set_object_tags, bucket, key, encoded)


class CryptoTransactions(TransactionRunner):
    """The stored-form passes' transactions (:mod:`s3orch.store.txn.crypto`)."""

    async def objects_by_encryption(
        self, encrypted: bool, key_id: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        return await self._read(crypto.txn_objects_by_encryption, encrypted, key_id, after, limit)

    async def objects_by_compression(
        self, compressed: bool, min_size: int, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        return await self._read(crypto.txn_objects_by_compression, compressed, min_size, after, limit)

    async def swap_stored_bytes(
        self, record: ObjectRecord, expected_write_id: str, now: float
    ) -> list[CleanupItem] | None:
        return await self._write(crypto.txn_swap_stored_bytes, record, expected_write_id, now)

    async def rewrap_key(
        self, bucket: str, key: str, write_id: str, old_key_id: str, wrapped_dek: str, key_id: str
    ) -> bool:
        return await self._write(crypto.txn_rewrap_key, bucket, key, write_id, old_key_id, wrapped_dek, key_id)
