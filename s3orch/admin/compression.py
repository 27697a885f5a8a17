"""The compression passes' admin routes (``compress-existing``, ``decompress-existing``): a mixin of
:class:`~s3orch.admin.handlers.AdminHandlers`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from s3orch.admin.calls import AdminCall, AdminError
from s3orch.service import GatewayService
from s3orch.store.interface import StoreUnavailable


class CompressionRoutes:
    """Run the bulk compression passes (:mod:`s3orch.codec.passes`) with progress."""

    service: Callable[[], GatewayService]

    def _compression(self) -> Any:
        passes = self.service().compression
        if passes is None:
            raise AdminError(503, "this process runs no compression passes")
        return passes

    async def compress_existing(self, call: AdminCall) -> dict[str, Any]:
        passes = self._compression()
        if not passes.enabled:
            raise AdminError(400, "compression not enabled")
        return await self._rewrite(passes.compress(call.progress))

    async def decompress_existing(self, call: AdminCall) -> dict[str, Any]:
        """Runs with compression off too: it is how compressed objects are brought back."""
        return await self._rewrite(self._compression().decompress(call.progress))

    async def _rewrite(self, running: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await running
        except StoreUnavailable:
            raise AdminError(503, "the metadata database is unavailable; please retry") from None
        return result
