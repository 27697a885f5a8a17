"""The encryption passes' admin routes (``encrypt-existing``, ``decrypt-existing``,
``rotate-encryption-key``): a mixin of :class:`~s3orch.admin.handlers.AdminHandlers`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from s3orch.admin.calls import AdminCall, AdminError
from s3orch.service import GatewayService
from s3orch.store.interface import StoreUnavailable


class EncryptionRoutes:
    """Run the bulk encryption passes (:mod:`s3orch.crypto.passes`) with progress."""

    service: Callable[[], GatewayService]

    def _passes(self) -> Any:
        passes = self.service().encryption
        if passes is None or not passes.envelope.enabled:
            raise AdminError(400, "encryption not enabled")
        return passes

    async def encrypt_existing(self, call: AdminCall) -> dict[str, Any]:
        return await self._run(lambda p: p.convert(True, call.progress))

    async def decrypt_existing(self, call: AdminCall) -> dict[str, Any]:
        return await self._run(lambda p: p.convert(False, call.progress))

    async def rotate_encryption_key(self, call: AdminCall) -> dict[str, Any]:
        old = call.body.get("old_key_id") or call.query.get("old_key_id")
        if not isinstance(old, str) or not old:
            raise AdminError(400, "old_key_id is required")
        return await self._run(lambda p: p.rotate(old, call.progress))

    async def _run(self, start: Callable[[Any], Any]) -> dict[str, Any]:
        passes = self._passes()
        try:
            result: dict[str, Any] = await start(passes)
        except StoreUnavailable:
            raise AdminError(503, "the metadata database is unavailable; please retry") from None
        return result
