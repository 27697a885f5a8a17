"""The admin routes that run a background worker's pass now (replicate, rebalance, excess copies,
reconcile and sync, scrub and checksum backfill, lifecycle): a mixin of
:class:`~s3orch.admin.handlers.AdminHandlers`, each finding its worker in the service tree."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from twisted.internet.task import deferLater

from s3orch.admin.calls import AdminCall, AdminError, _int, _qualified_key
from s3orch.config.model import RebalanceConfig
from s3orch.service import GatewayService


class WorkerPasses:
    """Run-now routes of the placement and maintenance workers."""

    service: Callable[[], GatewayService]

    async def replicate(self, call: AdminCall) -> dict[str, Any]:
        try:
            worker: Any = self.service().getServiceNamed("replicator")
        except KeyError:
            return {"status": "skipped", "reason": "replication.factor is 1 or this process runs no replicator"}
        result = await worker.run_now_pass(call.progress)
        if result is None:
            return {"status": "skipped", "reason": "another replication pass is running"}
        return {"status": "ok", **result.as_dict()}

    def _rebalance(self, call: AdminCall) -> tuple[Any, Any]:
        """The rebalancer worker and the settings an admin pass uses: the configured ones when
        the rebalancer is on, else (as the original) spread with the defaults; ``?strategy=``
        overrides the strategy."""
        try:
            worker: Any = self.service().getServiceNamed("rebalancer")
        except KeyError:
            raise AdminError(503, "this process runs no rebalancer") from None
        config = worker.rebalancer.config
        if not config.enabled:
            config = RebalanceConfig(strategy="spread")
        strategy = call.query.get("strategy") or config.strategy
        if strategy not in ("pack", "spread"):
            raise AdminError(400, "strategy must be pack or spread")
        return worker, dataclasses.replace(config, strategy=strategy)

    async def get_rebalance(self, call: AdminCall) -> dict[str, Any]:
        worker, config = self._rebalance(call)
        preview: dict[str, Any] = await worker.rebalancer.preview(config)
        return preview

    async def rebalance(self, call: AdminCall) -> dict[str, Any]:
        worker, config = self._rebalance(call)
        result = await worker.run_now_pass(call.progress, config)
        if result is None:
            return {"status": "skipped", "reason": "another rebalance pass is running"}
        if result.skipped:
            return {"status": "skipped", "reason": result.skipped, "ok": True, **result.as_dict()}
        return {"status": "ok", "ok": True, **result.as_dict(), "moves": result.moves}

    async def get_over_replication(self, call: AdminCall) -> dict[str, Any]:
        try:
            worker: Any = self.service().getServiceNamed("over-replication")
        except KeyError:
            return {
                "status": "skipped", "reason": "replication.factor is 1 or this process runs no cleaner",
                "pending": 0, "removals": [],
            }
        preview: dict[str, Any] = await worker.cleaner.preview(_int(call, "limit", 100))
        return preview

    async def over_replication(self, call: AdminCall) -> dict[str, Any]:
        batch_size = _int(call, "batch_size", 0) or None
        try:
            worker: Any = self.service().getServiceNamed("over-replication")
        except KeyError:
            return {"status": "skipped", "reason": "replication.factor is 1 or this process runs no cleaner"}
        result = await worker.run_now_pass(call.progress, batch_size)
        if result is None:
            return {"status": "skipped", "reason": "another over-replication pass is running"}
        return {"status": "ok", **result.as_dict(), "removed": result.removed}

    def _reconciler(self) -> Any:
        try:
            return self.service().getServiceNamed("reconcile")
        except KeyError:
            raise AdminError(503, "this process runs no reconcile worker") from None

    async def reconcile(self, call: AdminCall) -> dict[str, Any]:
        worker = self._reconciler()
        try:
            result = await worker.run_now_pass(call.query.get("backend") or None, call.progress)
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        if result is None:
            return {"status": "skipped", "reason": "another reconcile pass is running"}
        return {"status": "ok", **result.as_dict()}

    async def sync(self, call: AdminCall) -> dict[str, Any]:
        backend, bucket = call.query.get("backend", ""), call.query.get("bucket", "")
        if not backend or not bucket:
            raise AdminError(400, "backend and bucket are required")
        dry_run = call.query.get("dry_run", "").lower() in ("1", "true", "yes")
        worker = self._reconciler()
        try:
            result = await worker.sync(backend, bucket, call.query.get("prefix", ""), dry_run, call.progress)
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        if result is None:
            return {"status": "skipped", "reason": "a reconcile pass is running"}
        return {"status": "ok", **result.as_dict()}

    def _scrubber(self) -> Any:
        """The scrubber worker, or 409 while integrity is off (or 503 in a process without it)."""
        try:
            worker: Any = self.service().getServiceNamed("scrubber")
        except KeyError:
            raise AdminError(503, "this process runs no integrity scrubber") from None
        if not worker.scrubber.config.enabled:
            raise AdminError(409, "integrity checking is disabled (integrity.enabled is false)")
        return worker

    async def scrub(self, call: AdminCall) -> dict[str, Any]:
        worker = self._scrubber()
        result = await worker.run_now_pass(call.progress, _int(call, "batch_size", 0, 100_000) or None)
        if result is None:
            return {"status": "skipped", "reason": "another scrub pass is running"}
        return dict(result.as_dict())

    async def object_scrub(self, call: AdminCall) -> dict[str, Any]:
        worker = self._scrubber()
        bucket, key = _qualified_key(call)
        result = await worker.scrubber.scrub_object(bucket, key)
        if result is None:
            raise AdminError(404, f"no copies of {bucket}/{key}")
        copies = [{k: v for k, v in entry.items() if k not in ("bucket", "key")} for entry in result.verdicts]
        return {"key": f"{bucket}/{key}", "checked": result.checked, "mismatches": result.mismatches,
                "copies": copies}

    async def backfill_checksums(self, call: AdminCall) -> dict[str, Any]:
        worker = self._scrubber()
        limit = _int(call, "max", 0, 10**9) or None
        delay = _int(call, "delay_ms", 0, 60_000) / 1000.0

        async def pause() -> None:
            await deferLater(worker.clock, delay, lambda: None)

        outcome: dict[str, Any] = await worker.scrubber.backfill(
            call.progress, limit, pause if delay > 0 else None
        )
        return outcome

    async def lifecycle(self, call: AdminCall) -> dict[str, Any]:
        try:
            worker: Any = self.service().getServiceNamed("lifecycle")
        except KeyError:
            return {"status": "skipped", "reason": "this process runs no lifecycle worker"}
        if not worker.rules:
            return {"status": "skipped", "reason": "no lifecycle rules are configured"}
        outcome = await worker.run_pass(call.progress, trigger="admin")
        return {
            "status": "ok", "run_id": outcome.run_id, "outcome": outcome.status,
            "deleted": outcome.deleted, "failed": outcome.failed, "skipped": outcome.skipped,
        }
