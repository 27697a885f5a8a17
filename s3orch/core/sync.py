"""Sync/import: adopting a pre-existing backend bucket's objects into a virtual bucket, in place.

``s3orch-admin sync --backend B --bucket V [--prefix P] [--dry-run]`` lists backend ``B``'s
bucket under ``P`` page by page and records each object as an object of ``V`` whose one copy
is the backend object itself: no byte is copied, the row points at the backend key as it
is (the read path reads whatever storage key a copy names).  The client key is:

* the backend key without its ``V/`` head when it has one: the layout of s3-orchestrator,
  the product s3orch re-creates (``{bucket}/{key}``), so its users move without copying;
* nothing when the key's head is another configured bucket's name (that bucket's objects
  in the same layout: ``other_bucket``, left alone) or the key has s3orch's own layout
  (``own``: already s3orch's, by a write id that cannot be adopted);
* else the backend key as it is.

A key that already has an object is never overwritten, nor one with a write in flight, nor a
backend object s3orch already references (so a second run imports nothing).  Quota: each
adopted object counts in the backend's ``bytes_used`` and ``object_count``.  A dry run
decides the same in a read-only transaction and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import ListedObject
from s3orch.core.fleet import BackendFleet
from s3orch.core.placement import bucket_prefix
from s3orch.core.reconcile import PAGE_SIZE, own_key
from s3orch.core.replication import PassProgress, QuietProgress
from s3orch.observe.audit import audit
from s3orch.observe.placement_metrics import IMPORT_BYTES, IMPORT_CLASSIFIED, IMPORT_OBJECTS
from s3orch.store.interface import MetadataStore
from s3orch.store.records import ImportCandidate

#: The most keys an answer lists (its counters count them all).
SAMPLE_LIMIT = 1000


def client_key(storage_key: str, bucket: str, others: frozenset[str], prefixes: frozenset[str]) -> str | None:
    """The key ``storage_key`` becomes in ``bucket``, or None when it is not ``bucket``'s to
    adopt (see the module)."""
    if own_key(storage_key, prefixes):
        return None
    head, sep, rest = storage_key.partition("/")
    if sep and head == bucket:
        return rest or None
    if sep and head in others:
        return None
    return storage_key


@dataclass
class SyncResult:
    """What one sync did (the admin answer)."""

    run_id: str
    backend: str
    bucket: str
    prefix: str
    dry_run: bool
    scanned: int = 0
    imported: int = 0
    #: Keys that already have an object, a write in flight, or a backend object s3orch owns.
    skipped: int = 0
    own: int = 0
    other_bucket: int = 0
    bytes: int = 0
    #: The keys imported (a dry run: that would be), at most :data:`SAMPLE_LIMIT`.
    keys: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Importer:
    """Adopts backend objects into virtual buckets (one per process; the admin API calls it)."""

    log = Logger(namespace="s3orch.core.sync")

    def __init__(
        self,
        *,
        store: MetadataStore,
        fleet: BackendFleet,
        clock: IReactorTime,
        buckets: Iterable[str],
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.clock = clock
        self.buckets = frozenset(buckets)
        self.prefixes = frozenset(bucket_prefix(name) for name in self.buckets)
        self.page_size = max(1, page_size)

    async def sync(
        self,
        backend: str,
        bucket: str,
        prefix: str = "",
        *,
        dry_run: bool = False,
        progress: PassProgress | None = None,
    ) -> SyncResult:
        """Import ``backend``'s objects under ``prefix`` into ``bucket`` (see the module)."""
        client = self.fleet.client(backend)
        if client is None:
            raise ValueError(f"unknown backend {backend!r}")
        if bucket not in self.buckets:
            raise ValueError(f"unknown bucket {bucket!r}")
        report = progress or QuietProgress()
        result = SyncResult(f"sync-{uuid.uuid4().hex[:16]}", backend, bucket, prefix, dry_run)
        others = self.buckets - {bucket}
        report.start(total=None, run_id=result.run_id, backend=backend, bucket=bucket, prefix=prefix, dry_run=dry_run)
        token: str | None = None
        while True:
            page, token = await client.list_objects(prefix, token, self.page_size)
            await self._page(page, result, others)
            report.step_end("page", done=result.scanned, imported=result.imported, skipped=result.skipped)
            self.log.info(
                "sync {backend} -> {bucket}: {scanned} scanned, {imported} imported, {skipped} skipped",
                component="sync", backend=backend, bucket=bucket, scanned=result.scanned,
                imported=result.imported, skipped=result.skipped,
            )
            if token is None:
                break
        audit("sync.completed", **{k: v for k, v in result.as_dict().items() if k != "keys"})
        return result

    async def _page(self, page: list[ListedObject], result: SyncResult, others: frozenset[str]) -> None:
        now = self.clock.seconds()
        candidates: list[ImportCandidate] = []
        for item in page:
            result.scanned += 1
            key = client_key(item.key, result.bucket, others, self.prefixes)
            if key is None:
                if own_key(item.key, self.prefixes):
                    result.own += 1
                else:
                    result.other_bucket += 1
                continue
            candidates.append(
                ImportCandidate(result.bucket, key, item.key, item.size, item.etag, item.last_modified or now)
            )
        if not candidates:
            return
        write_ids = [uuid.uuid4().hex for _ in candidates]
        outcomes = await self.store.import_objects(
            result.backend, candidates, write_ids, now, dry_run=result.dry_run
        )
        for candidate, outcome in zip(candidates, outcomes, strict=True):
            if outcome != "imported":
                result.skipped += 1
                continue
            result.imported += 1
            result.bytes += candidate.size
            if len(result.keys) < SAMPLE_LIMIT:
                result.keys.append({"key": candidate.key, "storage_key": candidate.storage_key, "size": candidate.size})
            if not result.dry_run:
                IMPORT_OBJECTS.labels(result.backend).inc()
                IMPORT_BYTES.labels(result.backend).inc(candidate.size)
                IMPORT_CLASSIFIED.labels("plaintext").inc()
