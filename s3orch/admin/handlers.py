"""What each admin route does, one method per entry of :data:`s3orch.admin.routes.ROUTES`.

A handler gets an :class:`AdminCall` (query, JSON body, request id, progress) and returns
the JSON answer as a dict, or raises :class:`AdminError` for a 4xx/5xx the operator should
read.  Serving (auth, JSON, streaming, errors) is :mod:`s3orch.admin.app`'s.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch import __version__
from s3orch.admin.cache import CacheRoutes
from s3orch.admin.calls import AdminCall, AdminError, _ids, _int, _qualified_key
from s3orch.admin.compression import CompressionRoutes
from s3orch.admin.crypto import EncryptionRoutes
from s3orch.admin.passes import WorkerPasses
from s3orch.core.cache import ObjectCache
from s3orch.observe.logging import get_log_level, set_log_level
from s3orch.observe.ring import LogRing
from s3orch.service import GatewayService
from s3orch.store.interface import MetadataStore, StoreError, StoreUnavailable
from s3orch.usage.tracker import UsageTracker

_log = Logger(namespace="s3orch.admin.handlers")

#: Rows a DLQ pass moves per transaction (one progress step each).
DLQ_BATCH = 100

#: A usage period: ``YYYY-MM``.
_PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")

#: Seconds a purge confirmation token stays valid.
PURGE_TOKEN_TTL = 60.0


class AdminHandlers(WorkerPasses, CacheRoutes, EncryptionRoutes, CompressionRoutes):
    """The admin routes over one gateway's parts (``service`` is called: the root of the tree
    is built after this)."""

    def __init__(
        self,
        *,
        store: MetadataStore,
        service: Callable[[], GatewayService],
        backends: Sequence[str],
        clock: IReactorTime,
        ring: LogRing,
        breaker_states: Callable[[], Mapping[str, Mapping[str, Any]]] = dict,
        usage: UsageTracker | None = None,
        cache: ObjectCache | None = None,
    ) -> None:
        self.store = store
        self.cache = cache  # ``cache.*``: this process's object data cache (None: off)
        #: Monthly usage and limits (status, ``usage``); None: not tracked in this process.
        self.tracker = usage
        #: Backend name -> its circuit breaker's state (empty when breakers are off).
        self.breaker_states = breaker_states
        self.service = service
        self.backends = list(backends)
        self.clock = clock
        self.ring = ring
        #: Signs purge confirmation tokens (per process: a token is redeemed where it was shown).
        self._purge_key = secrets.token_bytes(32)

    # -- reading -----------------------------------------------------------------------------

    async def status(self, call: AdminCall) -> dict[str, Any]:
        healthy = True
        quotas: dict[str, Any] = {}
        try:
            await self.store.ping()
            quotas = await self.store.get_quotas()
        except (StoreError, StoreUnavailable):
            healthy = False
        backends = []
        breakers = self.breaker_states()
        for name in self.backends + sorted(set(quotas) - set(self.backends)):
            row = quotas.get(name)
            backends.append({
                "name": name,
                "configured": name in self.backends,
                "bytes_limit": row.bytes_limit if row else None,
                "bytes_used": row.bytes_used if row else None,
                "orphan_bytes": row.orphan_bytes if row else None,
                "reserved_bytes": row.reserved_bytes if row else None,
                "available_bytes": row.available if row else None,
                "object_count": row.object_count if row else None,
                "circuit_breaker": dict(breakers[name]) if name in breakers else None,
                **(self.tracker.snapshot(name) if self.tracker is not None else {}),
            })
        return {
            "db_healthy": healthy,
            "ready": self.service().ready,
            "version": __version__,
            "usage_period": self.tracker.period() if self.tracker is not None else None,
            "backends": backends,
        }

    async def usage(self, call: AdminCall) -> dict[str, Any]:
        tracker = self.tracker
        if tracker is None:
            raise AdminError(503, "this process tracks no usage")
        current = tracker.period()
        period = call.query.get("period") or current
        if not _PERIOD.fullmatch(period):
            raise AdminError(400, "period must be YYYY-MM")
        backend = call.query.get("backend") or None
        names = [backend] if backend else list(self.backends)
        rows: dict[str, Any] = {}
        if period != current:
            try:
                rows = await self.store.get_usage(period, backend)
            except (StoreError, StoreUnavailable) as exc:
                raise AdminError(503, f"database unavailable: {exc}") from None
            names += sorted(set(rows) - set(names))
        answer = []
        for name in names:
            entry = tracker.snapshot(name)
            row = rows.get(name)
            if period != current:
                entry.update(
                    api_requests=row.api_requests if row else 0,
                    egress_bytes=row.egress_bytes if row else 0,
                    ingress_bytes=row.ingress_bytes if row else 0,
                )
            answer.append({"name": name, "period": period, **entry})
        return {"period": period, "backends": answer}

    async def object_locations(self, call: AdminCall) -> dict[str, Any]:
        bucket, key = _qualified_key(call)
        qualified = f"{bucket}/{key}"
        record = await self.store.get_object(bucket, key)
        if record is None:
            raise AdminError(404, f"no object {qualified}")
        return {
            "key": qualified,
            "size": record.size,
            "etag": record.etag,
            "locations": [
                {"backend": loc.backend, "storage_key": loc.storage_key, "size": loc.size,
                 "part_number": extent.part_number}
                for extent in record.extents
                for loc in extent.locations
            ],
        }

    async def cleanup_queue(self, call: AdminCall) -> dict[str, Any]:
        depth, rows = await self.store.cleanup_queue_page(_int(call, "limit", 50))
        return {
            "depth": depth,
            "items": [
                {"id": r.id, "backend": r.backend, "storage_key": r.storage_key, "reason": r.reason,
                 "size": r.size, "attempts": r.attempts, "next_retry": r.next_retry,
                 "last_error": r.last_error, "created_at": r.created_at, "claimed_by": r.claimed_by}
                for r in rows
            ],
        }

    async def cleanup_dlq(self, call: AdminCall) -> dict[str, Any]:
        count, size, rows = await self.store.cleanup_dlq_page(
            call.query.get("backend") or None, _int(call, "limit", 50)
        )
        return {
            "count": count,
            "bytes": size,
            "items": [
                {"id": r.id, "original_id": r.original_id, "backend": r.backend,
                 "storage_key": r.storage_key, "reason": r.reason, "size": r.size,
                 "attempts": r.attempts, "last_error": r.last_error,
                 "first_enqueued_at": r.first_enqueued_at, "moved_at": r.moved_at}
                for r in rows
            ],
        }

    async def get_log_level(self, call: AdminCall) -> dict[str, Any]:
        return {"level": get_log_level()}

    async def workers(self, call: AdminCall) -> dict[str, Any]:
        workers = self.service().workers
        if not workers:
            raise AdminError(503, "this process runs no background workers")
        out = []
        for worker in workers:
            status = getattr(worker, "status", None)
            out.append(status() if callable(status) else {"name": worker.name, "running": bool(worker.running)})
        return {"workers": out}

    async def reload_status(self, call: AdminCall) -> dict[str, Any]:
        return dict(self.service().last_reload)

    async def logs(self, call: AdminCall) -> dict[str, Any]:
        try:
            lines = self.ring.recent(
                level=call.query.get("level") or None,
                component=call.query.get("component") or None,
                limit=_int(call, "limit", 100, self.ring.capacity),
            )
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        return {"lines": lines, "capacity": self.ring.capacity}

    # -- changing ----------------------------------------------------------------------------

    async def put_log_level(self, call: AdminCall) -> dict[str, Any]:
        level = call.body.get("level")
        if not isinstance(level, str):
            raise AdminError(400, "body must be {\"level\": \"debug|info|warn|error\"}")
        previous = get_log_level()
        try:
            set_log_level(level)
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        return {"level": get_log_level(), "previous": previous}

    async def usage_flush(self, call: AdminCall) -> dict[str, Any]:
        try:
            worker: Any = self.service().getServiceNamed("usage-flush")
        except KeyError:
            return {"status": "skipped", "reason": "this process runs no usage flush"}
        call.progress.start(total=1)
        call.progress.step_start("usage_flush")
        ok = await worker.run_once()
        call.progress.step_end("usage_flush", ok=ok, done=1, total=1)
        if not ok:
            raise AdminError(503, "usage flush failed (see the log)")
        return {"status": "flushed"}

    async def cleanup_dlq_requeue(self, call: AdminCall) -> dict[str, Any]:
        ids = _ids(call)
        backend = call.query.get("backend") or None
        total = len(set(ids)) if ids is not None else (await self.store.cleanup_dlq_page(backend, 0))[0]
        call.progress.start(total=total)
        moved = 0
        batch = 0
        while True:
            call.progress.step_start("batch", index=batch)
            done = await self.store.requeue_dlq(ids, backend, DLQ_BATCH, self.clock.seconds())
            moved += len(done)
            call.progress.step_end("batch", index=batch, moved=len(done), done=moved, total=total)
            batch += 1
            if len(done) < DLQ_BATCH:
                break
        return {"status": "requeued", "requeued": moved}

    async def cleanup_dlq_write_off(self, call: AdminCall) -> dict[str, Any]:
        ids = _ids(call)
        backend = call.query.get("backend") or None
        if ids is None and backend is None and call.body.get("all") is not True:
            raise AdminError(400, "say which rows: ids, backend, or {\"all\": true}")
        total = len(set(ids)) if ids is not None else (await self.store.cleanup_dlq_page(backend, 0))[0]
        call.progress.start(total=total)
        rows = size = batch = 0
        while True:
            call.progress.step_start("batch", index=batch)
            count, freed = await self.store.write_off_dlq(ids, backend, DLQ_BATCH, self.clock.seconds())
            rows += count
            size += freed
            call.progress.step_end("batch", index=batch, rows=count, bytes=freed, done=rows, total=total)
            batch += 1
            if count < DLQ_BATCH:
                break
        return {"status": "written_off", "rows": rows, "bytes": size}

    # -- drain and remove-backend ---------------------------------------------------------------

    def _drainer(self) -> Any:
        try:
            worker: Any = self.service().getServiceNamed("drain")
        except KeyError:
            raise AdminError(503, "this process runs no drain worker") from None
        return worker.drainer

    def _backend(self, call: AdminCall, name: str = "backend") -> str:
        """The backend named by the path (``backends/{name}/drain``) or the query (``?backend=``)."""
        backend = call.path.get("name") or call.query.get(name, "")
        if not backend:
            raise AdminError(400, f"{name} is required")
        if backend not in self.backends:
            raise AdminError(400, f"unknown backend {backend!r}")
        return backend

    async def start_drain(self, call: AdminCall) -> dict[str, Any]:
        backend = self._backend(call)
        started = await self._drainer().start(backend)
        if not started:
            raise AdminError(400, f"drain operation failed: backend {backend!r} is already draining")
        return {"status": "drain started", "backend": backend}

    async def drain_status(self, call: AdminCall) -> dict[str, Any]:
        backend = self._backend(call)
        status = await self._drainer().status(backend)
        if status is None:
            return {"backend": backend, "active": False, "state": "none"}
        return status  # type: ignore[no-any-return]

    async def cancel_drain(self, call: AdminCall) -> dict[str, Any]:
        backend = self._backend(call)
        if not await self._drainer().cancel(backend):
            raise AdminError(404, f"backend {backend!r} is not draining")
        return {"status": "drain cancelled", "backend": backend}

    def _purge_token(self, backend: str, expires: int) -> str:
        mac = hmac.new(self._purge_key, f"{backend}\n{expires}".encode(), hashlib.sha256).hexdigest()
        return f"{expires}.{mac}"

    def _token_valid(self, backend: str, token: str) -> bool:
        expires_text, _, _mac = token.partition(".")
        try:
            expires = int(expires_text)
        except ValueError:
            return False
        good = hmac.compare_digest(self._purge_token(backend, expires).encode(), token.encode())
        return good and self.clock.seconds() <= expires

    async def remove_backend(self, call: AdminCall) -> dict[str, Any]:
        """Metadata only; with ``purge``, a preview and a token, then (with the token) the
        backend's objects are deleted too."""
        backend = call.path.get("name") or call.query.get("name", "")
        if not backend:
            raise AdminError(400, "name is required")
        drains = {state.backend: state for state in await self.store.drains()}
        if backend in drains and drains[backend].state != "completed":
            raise AdminError(409, f"backend {backend!r} is draining: cancel the drain first")
        purge = call.query.get("purge", "").lower() in ("1", "true", "yes")
        deleted_objects = 0
        failed = 0
        if purge:
            token = call.query.get("confirm", "")
            if not token:
                objects, size = await self.store.backend_holdings(backend)
                expires = int(self.clock.seconds() + PURGE_TOKEN_TTL)
                return {
                    "status": "preview", "backend": backend, "object_count": objects, "total_bytes": size,
                    "confirm_token": self._purge_token(backend, expires), "expires_in": int(PURGE_TOKEN_TTL),
                }
            if not self._token_valid(backend, token):
                raise AdminError(403, "invalid or expired confirmation token")
            deleted_objects, failed = await self._purge(backend)
        copies, objects_lost = await self._drainer().remove(
            backend, purged=deleted_objects if purge else None, purge_failures=failed
        )
        if copies < 0:
            raise AdminError(409, f"backend {backend!r} is draining: cancel the drain first")
        answer: dict[str, Any] = {
            "status": "backend removed", "backend": backend, "copies_forgotten": copies,
            "objects_lost": objects_lost,
        }
        if purge:
            answer.update(purged=deleted_objects, purge_failures=failed)
        return answer

    async def _purge(self, backend: str) -> tuple[int, int]:
        """Delete every copy the database knows on ``backend``; (deleted, failed)."""
        client = self._drainer().fleet.client(backend)
        if client is None:
            raise AdminError(400, f"backend {backend!r} is not configured: its objects cannot be reached")
        deleted = failed = 0
        after: tuple[str, str, int] | None = None
        while True:
            page = await self.store.backend_extents(backend, DLQ_BATCH, after)
            if not page:
                break
            after = (page[-1].bucket, page[-1].key, page[-1].part_number)
            for extent in page:
                for copy in extent.copies:
                    if copy.backend != backend:
                        continue
                    try:
                        await client.delete_object(copy.storage_key)
                        deleted += 1
                    except Exception as exc:
                        failed += 1
                        _log.warn("purge: deleting {storage_key} failed: {error}", component="admin",
                                  backend=backend, storage_key=copy.storage_key, error=str(exc))
            if len(page) < DLQ_BATCH:
                break
        return deleted, failed
