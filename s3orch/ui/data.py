"""What the dashboard shows and does, over the gateway's own parts.

Reading the state (status, usage, drains, workers, logs) and every operation go through the
admin API's handlers (:class:`~s3orch.admin.handlers.AdminHandlers`), objects through the core
(:class:`~s3orch.core.objects.ObjectService`: the same put/open/delete an S3 client gets), so
the dashboard adds presentation, not logic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from s3orch.admin.calls import AdminCall, AdminError
from s3orch.admin.handlers import AdminHandlers
from s3orch.config.model import Config
from s3orch.store.interface import StoreError, StoreUnavailable

#: ``maxKeys`` of the tree: 1 to 200, 200 when not given.
MAX_TREE_KEYS = 200
#: Keys a delete-prefix lists per page (and deletes per batch).
DELETE_BATCH = 1000
MASK = "********"


class BadRequest(ValueError):
    """A request the dashboard refuses with 400 and this message."""


def split_key(path: str, buckets: Sequence[str]) -> tuple[str, str]:
    """``bucket/key`` split; the bucket must be a configured one and the key non-empty."""
    bucket, _, key = path.partition("/")
    if bucket not in buckets:
        raise BadRequest(f"the key must start with a configured bucket ({', '.join(buckets)})")
    if not key:
        raise BadRequest("the key is empty")
    return bucket, key


def masked_config(config: Any) -> Any:
    """The loaded configuration as plain data, every secret field replaced by a mask."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        out: dict[str, Any] = {}
        for item in dataclasses.fields(config):
            value = getattr(config, item.name)
            if not item.repr:  # hidden(): a secret
                out[item.name] = MASK if value else ""
            else:
                out[item.name] = masked_config(value)
        return out
    if isinstance(config, (list, tuple)):
        return [masked_config(v) for v in config]
    if isinstance(config, dict):
        return {str(k): masked_config(v) for k, v in config.items()}
    if isinstance(config, (str, int, float, bool)) or config is None:
        return config
    return str(config)


class UIData:
    def __init__(self, *, handlers: AdminHandlers, objects: Any, config: Config) -> None:
        self.handlers = handlers
        self.objects = objects
        self.config = config
        self.buckets = [bucket.name for bucket in config.buckets]

    async def dashboard(self) -> dict[str, Any]:
        """The overview's snapshot: /admin/api/status plus drains and multipart uploads."""
        status = await self.handlers.status(AdminCall())
        for backend in status["backends"]:
            backend["drain"] = await self._drain(backend["name"]) if backend["configured"] else None
        status["multipart_uploads"] = {b: await self._multipart_count(b) for b in self.buckets}
        status["buckets"] = list(self.buckets)
        try:
            status["workers"] = (await self.handlers.workers(AdminCall())).get("workers", [])
        except AdminError:
            status["workers"] = []
        status["replication_backlog"] = await self._replication_backlog()
        return status

    async def _replication_backlog(self) -> int | None:
        """Extents below ``replication.factor`` (None: no replicator here, or factor 1)."""
        try:
            replicator: Any = self.handlers.service().getServiceNamed("replicator").replicator
        except (KeyError, AttributeError):
            return None
        if replicator.config.factor <= 1:
            return None
        try:
            count: int = await self.handlers.store.count_under_replicated(
                replicator.config.factor, replicator.uncounted()
            )
        except (StoreError, StoreUnavailable):
            return None
        return count

    async def _drain(self, backend: str) -> dict[str, Any] | None:
        try:
            status = await self.handlers.drain_status(AdminCall(query={"backend": backend}))
        except (AdminError, StoreError, StoreUnavailable):
            return None
        return status if status.get("state") != "none" else None

    async def _multipart_count(self, bucket: str) -> int | None:
        try:
            page = await self.handlers.store.list_multipart_uploads(bucket, "", "", "", "", 1000)
        except (StoreError, StoreUnavailable, TypeError):
            return None
        return len(getattr(page, "uploads", ()) or ())

    async def tree(self, prefix: str, start_after: str, max_keys: int) -> dict[str, Any]:
        """One page of the children of ``prefix`` (buckets at the top)."""
        if not 1 <= max_keys <= MAX_TREE_KEYS:
            raise BadRequest(f"maxKeys must be 1 to {MAX_TREE_KEYS}")
        if not prefix:
            names = [b for b in self.buckets if b > start_after]
            page = names[:max_keys]
            return {
                "entries": [{"name": b + "/", "path": b + "/", "isDir": True, "size": None, "count": None}
                            for b in page],
                "hasMore": len(names) > max_keys,
                "nextCursor": page[-1] if len(names) > max_keys else None,
            }
        bucket, _, inner = prefix.partition("/")
        if bucket not in self.buckets:
            raise BadRequest(f"no bucket {bucket!r}")
        listing = await self.objects.list(bucket, inner, "/", start_after, max_keys)
        entries = [
            {"name": p[len(inner):], "path": f"{bucket}/{p}", "isDir": True, "size": None, "count": None}
            for p in listing.common_prefixes
        ] + [
            {"name": e.key[len(inner):], "path": f"{bucket}/{e.key}", "isDir": False, "size": e.size, "count": 1,
             "etag": e.etag, "lastModified": e.last_modified}
            for e in listing.entries
        ]
        entries.sort(key=lambda entry: entry["path"])
        return {"entries": entries, "hasMore": listing.is_truncated, "nextCursor": listing.next_marker}

    async def details(self, path: str) -> dict[str, Any]:
        """An object's size, ETag, type, tags and every copy (with when it was last verified)."""
        from s3orch.s3.tagging import stored_tags

        bucket, key = split_key(path, self.buckets)
        record = await self.handlers.store.get_object(bucket, key)
        if record is None:
            raise AdminError(404, f"no object {path}")
        verified: dict[tuple[str, int], float | None] = {}
        try:
            for copy in await self.handlers.store.copies_to_scrub(bucket, key):
                verified[(copy.backend, copy.part_number)] = copy.last_verified
        except (AttributeError, StoreError, StoreUnavailable):
            pass
        return {
            "key": path, "size": record.size, "etag": record.etag, "contentType": record.content_type,
            "lastModified": record.last_modified, "tags": [list(t) for t in stored_tags(record.headers)],
            "copies": [
                {"backend": loc.backend, "part": extent.part_number, "size": loc.size, "state": "stored",
                 "lastVerified": verified.get((loc.backend, extent.part_number))}
                for extent in record.extents for loc in extent.locations
            ],
        }

    async def count_prefix(self, prefix: str) -> list[str]:
        """Every key under ``bucket/prefix`` (the count shown before a delete-prefix)."""
        bucket, _, inner = prefix.partition("/")
        if bucket not in self.buckets:
            raise BadRequest("the prefix must start with a configured bucket")
        keys: list[str] = []
        after = ""
        while True:
            page = await self.objects.list(bucket, inner, "", after, DELETE_BATCH)
            keys.extend(entry.key for entry in page.entries)
            if not page.is_truncated or not page.entries:
                return keys
            after = page.entries[-1].key

    async def delete_prefix(self, prefix: str, request_id: str) -> dict[str, Any]:
        bucket = prefix.partition("/")[0]
        keys = await self.count_prefix(prefix)
        failed = 0
        for start in range(0, len(keys), DELETE_BATCH):
            outcomes = await self.objects.delete_many(bucket, keys[start:start + DELETE_BATCH], request_id)
            failed += sum(1 for outcome in outcomes if outcome.error is not None)
        deleted = len(keys) - failed
        if failed:
            return {"error": f"{failed} of {len(keys)} deletes failed", "deleted": deleted}
        return {"ok": True, "deleted": deleted}

    def logs(self, level: str, component: str, request_id: str, since: str, limit: int) -> list[dict[str, Any]]:
        """The ring's newest lines, filtered (request id and time filtered here, the rest by the ring)."""
        ring = self.handlers.ring
        lines = ring.recent(level=level or None, component=component or None, limit=ring.capacity)
        picked = [
            line for line in lines
            if (not request_id or line.get("request_id") == request_id)
            and (not since or str(line.get("time", "")) >= since)  # ISO 8601 UTC: sorts as text
        ]
        return picked[-limit:]

