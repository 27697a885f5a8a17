"""The metadata store's contract for the stored-form passes (:mod:`s3orch.crypto.passes`,
:mod:`s3orch.codec.passes`, both through :mod:`s3orch.core.rewrite`)."""

from __future__ import annotations

from typing import Protocol

from s3orch.store.records import CleanupItem, ObjectRecord


class CryptoStore(Protocol):
    async def objects_by_encryption(
        self, encrypted: bool, key_id: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        """A page of (bucket, key) by encryption state (and key id), in key order after ``after``."""
        ...

    async def objects_by_compression(
        self, compressed: bool, min_size: int, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        """A page of (bucket, key) in key order after ``after``: the compressed objects, or the
        uncompressed ones of at least ``min_size`` client bytes."""
        ...

    async def swap_stored_bytes(
        self, record: ObjectRecord, expected_write_id: str, now: float
    ) -> list[CleanupItem] | None:
        """Make ``record``'s copies, encryption and compression the object's while it is ``expected_write_id``
        (old copies to the cleanup queue, quota by the delta per backend, one transaction); None: it
        changed.  A multi-extent ``record`` carries every extent's new copies and chunk size in
        ``parts`` (the row's part numbers; offsets, client sizes and ETags unchanged)."""
        ...

    async def rewrap_key(
        self, bucket: str, key: str, write_id: str, old_key_id: str, wrapped_dek: str, key_id: str
    ) -> bool:
        """Store a re-wrapped data key while the object is ``write_id`` under ``old_key_id``."""
        ...
