"""The reconciler's pass: each backend's listing against the database, as one sorted merge.

Per backend, two ascending streams are walked in lockstep, a page at a time on each side
(the backend's ListObjectsV2 pages and the database's copies on that backend in storage-key
byte order, :meth:`~s3orch.store.interface.MetadataStore.stored_copies`), so memory is one
page per side whatever the number of objects.  Each key falls in one of three cases:

* on both sides: ``matched``;
* only on the backend: a key of s3orch's own layout (``{bucket prefix}/{sha256}/...``, see
  :mod:`s3orch.core.placement`, for a configured bucket) that nothing references is an
  orphan, queued for cleanup due after ``reconcile.grace_period``.  It is never imported:
  its name is a digest, so the client key it once had cannot be known, and adopting it would
  resurrect a deleted object (the original's #1325 and #1161).  A key with a pending cleanup
  or a dead letter is counted ``suppressed_pending_cleanup``; one a write, replica or
  multipart upload in flight holds is ``in_flight``.  Any other key is ``foreign`` (another
  tool's, another product's, a bucket s3orch does not serve, or the original's
  ``{bucket}/{key}`` layout, which ``sync`` adopts): left alone, counted;
* only in the database: the copy's backend object is gone.  Confirmed by a HEAD (404), it
  is forgotten (its bytes leave ``bytes_used``) unless younger than the grace period or the
  key has a write in flight; the last copy of an extent deletes the object
  (``s3o_reconcile_objects_lost_total``, the ``reconcile.object_lost`` event).

Every decision is made again in its own transaction on the rows as they are then, so writes
may go on during a pass.  A listing out of byte order stops the backend's pass (an unsorted
merge would take live copies for lost ones).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import BackendNotFound, ObjectBackend
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.placement import bucket_prefix
from s3orch.core.replication import PassProgress, QuietProgress
from s3orch.notify import events as ev
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.audit import audit
from s3orch.observe.placement_metrics import (
    RECONCILE_DURATION,
    RECONCILE_KEYS,
    RECONCILE_OBJECTS_LOST,
    RECONCILE_RUNS,
)
from s3orch.store.interface import MetadataStore
from s3orch.store.records import StoredCopy
from s3orch.store.txn.reconcile import RECONCILE_LOST_REASON

#: Keys per page on each side (the original's 1000).
PAGE_SIZE = 1000

_T = TypeVar("_T")

#: What follows the bucket prefix in every backend key s3orch writes: the key's SHA-256.
_DIGEST = re.compile(r"[0-9a-f]{64}/[0-9a-f]")


#: The tally a backend-only key of our layout counts in, by what the store found (see the module).
_DECISIONS = {
    "queued": "orphaned",
    "pending_cleanup": "suppressed_pending_cleanup",
    "in_flight": "in_flight",
    "referenced": "kept",  # committed since the page was read: the next pass matches it
}


class OutOfOrder(Exception):
    """A side of the merge did not ascend strictly: its pass stops before deciding anything wrong."""


def own_key(storage_key: str, prefixes: frozenset[str]) -> bool:
    """Whether ``storage_key`` has s3orch's layout for one of the bucket ``prefixes``."""
    head, sep, rest = storage_key.partition("/")
    return bool(sep) and head in prefixes and _DIGEST.match(rest) is not None


async def ascending(
    pages: AsyncIterator[Sequence[_T]], key: Callable[[_T], str], side: str
) -> AsyncIterator[_T]:
    """The items of ``pages`` one by one, checking that their keys ascend strictly."""
    last: str | None = None
    async for page in pages:
        for item in page:
            current = key(item)
            if last is not None and current <= last:
                raise OutOfOrder(f"{side} listing is not in byte order: {current!r} after {last!r}")
            last = current
            yield item


async def backend_pages(client: ObjectBackend, page_size: int) -> AsyncIterator[list[tuple[str, int]]]:
    """A backend's whole listing, page by page (ListObjectsV2 continuation tokens)."""
    token: str | None = None
    while True:
        page, token = await client.list_keys("", token, page_size)
        yield page
        if token is None:
            return


async def database_pages(store: MetadataStore, backend: str, page_size: int) -> AsyncIterator[list[StoredCopy]]:
    """The database's copies on ``backend``, page by page (keyset paging by storage key)."""
    after: str | None = None
    while True:
        page = await store.stored_copies(backend, after, page_size)
        yield page
        if len(page) < page_size:
            return
        after = page[-1].storage_key


async def merge(
    listed: AsyncIterator[tuple[str, int]], stored: AsyncIterator[StoredCopy]
) -> AsyncIterator[tuple[tuple[str, int] | None, StoredCopy | None]]:
    """Walk two ascending streams in lockstep: (listed, stored) pairs, None on the side
    that lacks the key."""
    left = await anext(listed, None)
    right = await anext(stored, None)
    while left is not None or right is not None:
        if right is None or (left is not None and left[0] < right.storage_key):
            yield left, None
            left = await anext(listed, None)
        elif left is None or right.storage_key < left[0]:
            yield None, right
            right = await anext(stored, None)
        else:
            yield left, right
            left = await anext(listed, None)
            right = await anext(stored, None)


@dataclass
class BackendTally:
    """What a pass found and did on one backend."""

    backend: str
    scanned: int = 0
    matched: int = 0
    orphaned: int = 0
    removed: int = 0
    lost: int = 0
    foreign: int = 0
    suppressed_pending_cleanup: int = 0
    in_flight: int = 0
    kept: int = 0
    errors: int = 0
    error: str | None = None

    def count(self, decision: str, amount: int = 1) -> None:
        if amount:
            setattr(self, decision, getattr(self, decision) + amount)
            RECONCILE_KEYS.labels(self.backend, decision if decision != "errors" else "error").inc(amount)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReconcileResult:
    """What one pass did (the admin answer, the ``reconcile.completed`` event)."""

    run_id: str
    backends: list[BackendTally] = field(default_factory=list)
    #: Objects deleted because their last copy of an extent was gone (at most 1000 listed).
    lost_objects: list[dict[str, Any]] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(int(getattr(b, name)) for b in self.backends)

    @property
    def status(self) -> str:
        """``empty`` (nothing scanned), ``success``, or ``partial`` (a backend failed)."""
        if any(b.error for b in self.backends):
            return "partial"
        return "success" if self.total("scanned") else "empty"

    def as_dict(self) -> dict[str, Any]:
        names = ("scanned", "matched", "orphaned", "removed", "lost", "foreign",
                 "suppressed_pending_cleanup", "in_flight", "kept", "errors")
        return {
            "run_id": self.run_id,
            "outcome": self.status,
            "imported": 0,  # the original's field: keys of s3orch's own layout are never imported
            "backends_scanned": sum(1 for b in self.backends if b.error is None),
            **{name: self.total(name) for name in names},
            "backends": [b.as_dict() for b in self.backends],
            "lost_objects": self.lost_objects,
        }


class Reconciler:
    """Reconciles backends with the database (one per process: the worker and the admin call it)."""

    log = Logger(namespace="s3orch.core.reconcile")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        cleanups: Cleanups,
        clock: IReactorTime,
        buckets: Iterable[str],
        grace: float,
        events: EventSink = NULL_SINK,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.cleanups = cleanups
        self.clock = clock
        self.prefixes = frozenset(bucket_prefix(name) for name in buckets)
        self.grace = grace
        self.events = events
        self.page_size = max(1, page_size)

    async def run_pass(
        self, backend: str | None = None, progress: PassProgress | None = None, *, run_id: str | None = None
    ) -> ReconcileResult:
        """Reconcile ``backend`` (None: every configured backend, in config order); a backend
        whose listing fails is reported with its error and the others go on."""
        names = self.fleet.names if backend is None else [backend]
        unknown = [name for name in names if self.fleet.client(name) is None]
        if unknown:
            raise ValueError(f"unknown backend {unknown[0]!r}")
        report = progress or QuietProgress()
        result = ReconcileResult(run_id=run_id or f"reconcile-{uuid.uuid4().hex[:16]}")
        started = self.clock.seconds()
        report.start(total=None, run_id=result.run_id, backends=names)
        try:
            for name in names:
                tally = BackendTally(name)
                result.backends.append(tally)
                report.step_start("backend", backend=name)
                try:
                    await self._backend(name, tally, result, report)
                except Exception as exc:  # this backend's pass stops; the others go on
                    tally.error = f"{type(exc).__name__}: {exc}"[:500]
                    self.log.failure("reconcile of backend {backend} failed", component="reconcile", backend=name)
                report.step_end("backend", **tally.as_dict())
        except Exception:
            RECONCILE_RUNS.labels("error").inc()
            raise
        finally:
            RECONCILE_DURATION.observe(max(0.0, self.clock.seconds() - started))
        RECONCILE_RUNS.labels(result.status).inc()
        summary = {k: v for k, v in result.as_dict().items() if k not in ("backends", "lost_objects")}
        audit("reconcile.completed_pass", **summary)
        await self.events.emit(ev.RECONCILE_COMPLETED, backend or "*", summary)
        return result

    async def _backend(self, name: str, tally: BackendTally, result: ReconcileResult, report: PassProgress) -> None:
        client = self.fleet[name]
        listed = ascending(backend_pages(client, self.page_size), lambda item: item[0], f"backend {name}")
        stored = ascending(
            database_pages(self.store, name, self.page_size), lambda c: c.storage_key, f"database copies of {name}"
        )
        orphans: list[tuple[str, int]] = []
        async for on_backend, in_database in merge(listed, stored):
            tally.scanned += 1
            if on_backend is not None and in_database is not None:
                tally.count("matched")
            elif on_backend is not None:
                if own_key(on_backend[0], self.prefixes):
                    orphans.append(on_backend)
                    if len(orphans) >= self.page_size:
                        await self._orphans(name, orphans, tally, result.run_id)
                        orphans = []
                else:
                    tally.count("foreign")
            elif in_database is not None:
                await self._gone(name, client, in_database, tally, result)
            if tally.scanned % self.page_size == 0:
                report.step_end("page", backend=name, done=tally.scanned)
        await self._orphans(name, orphans, tally, result.run_id)

    async def _orphans(self, name: str, found: list[tuple[str, int]], tally: BackendTally, run_id: str) -> None:
        """Queue the unreferenced ones among ``found`` (backend-only keys of our layout)."""
        if not found:
            return
        now = self.clock.seconds()
        decisions, items = await self.store.queue_orphans(name, found, now, now + self.grace)
        for decision in decisions.values():
            tally.count(_DECISIONS[decision])
        for item in items:
            audit("reconcile.orphan", run_id=run_id, backend=name, storage_key=item.storage_key, size=item.size)

    async def _gone(
        self, name: str, client: ObjectBackend, copy: StoredCopy, tally: BackendTally, result: ReconcileResult
    ) -> None:
        """A copy the listing lacks: confirm with a HEAD, then forget it (see the module)."""
        now = self.clock.seconds()
        if copy.created_at > now - self.grace:
            tally.count("kept")
            return
        try:
            await client.head_object(copy.storage_key)
        except BackendNotFound:
            pass
        except Exception as exc:
            tally.count("errors")
            self.log.warn(
                "reconcile could not check {backend}/{storage_key}: {error}",
                component="reconcile", backend=name, storage_key=copy.storage_key, error=str(exc),
            )
            return
        else:  # there after all (listed late, or the listing skipped it): nothing to do
            tally.count("matched")
            return
        outcome = await self.store.forget_lost_copy(name, copy, self.clock.seconds(), self.grace)
        if outcome.outcome == "kept":
            tally.count("kept")
            return
        where = {"bucket": copy.bucket, "key": copy.key, "backend": name, "storage_key": copy.storage_key}
        if outcome.outcome == "removed":
            tally.count("removed")
            audit("reconcile.remove", run_id=result.run_id, size=outcome.size, **where)
            return
        tally.count("lost")
        RECONCILE_OBJECTS_LOST.labels(name).inc()
        if len(result.lost_objects) < PAGE_SIZE:
            result.lost_objects.append(where)
        audit("reconcile.object_lost", run_id=result.run_id, size=outcome.size, **where)
        self.log.warn(
            "object {bucket}/{key} lost: its only copy of an extent ({backend}/{storage_key}) is gone",
            component="reconcile", **where,
        )
        await self.events.emit(ev.RECONCILE_OBJECT_LOST, f"{copy.bucket}/{copy.key}", where, key=copy.key)
        await self.cleanups.run(list(outcome.cleanups), RECONCILE_LOST_REASON)

