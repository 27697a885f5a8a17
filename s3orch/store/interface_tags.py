"""The tagging part of the metadata store's contract (:mod:`s3orch.store.txn.tags`)."""

from __future__ import annotations

from typing import Protocol


class TagStore(Protocol):
    """Object tag sets, kept with each key's current version."""

    async def set_object_tags(self, bucket: str, key: str, encoded: str) -> bool:
        """Replace the tag set of the key's current version with ``encoded`` (the canonical
        form of :func:`s3orch.s3.tagging.encode_tags`; ``""`` clears it); False when the key
        has no current version.  The version's write id, ETag and Last-Modified are kept."""
