"""The admin routes of the object data cache (``cache``, ``cache/flush``, ``cache/keys/{key}``,
``cache/prefix``): a mixin of :class:`~s3orch.admin.handlers.AdminHandlers`.  They act on this
instance's cache only: each instance holds its own (BEHAVIOURS §1.23)."""

from __future__ import annotations

from typing import Any

from s3orch.admin.calls import AdminCall, AdminError
from s3orch.core.cache import ObjectCache


class CacheRoutes:
    """Inspect and empty the process's :class:`~s3orch.core.cache.ObjectCache`."""

    cache: ObjectCache | None

    def _enabled_cache(self) -> ObjectCache:
        cache = self.cache
        if cache is None or not cache.enabled:
            raise AdminError(503, "the object cache is disabled (cache.enabled is false)")
        return cache

    async def cache_stats(self, call: AdminCall) -> dict[str, Any]:
        cache = self.cache
        if cache is None or not cache.enabled:
            return {"enabled": False}
        return cache.stats()

    async def cache_flush(self, call: AdminCall) -> dict[str, Any]:
        return {"status": "flushed", "entries": self._enabled_cache().flush()}

    async def cache_delete_key(self, call: AdminCall) -> dict[str, Any]:
        cache = self._enabled_cache()
        qualified = call.path.get("key", "")
        bucket, _, key = qualified.partition("/")
        if not bucket or not key:
            raise AdminError(400, "key must be bucket/key")
        return {"status": "ok", "key": qualified, "removed": cache.invalidate(bucket, key)}

    async def cache_delete_prefix(self, call: AdminCall) -> dict[str, Any]:
        cache = self._enabled_cache()
        prefix = call.query.get("prefix", "")
        if not prefix:
            raise AdminError(400, "prefix must not be empty (use cache/flush to drop everything)")
        return {"status": "ok", "prefix": prefix, "removed": cache.invalidate_prefix(prefix)}
