"""Reads while the database is out (BEHAVIOURS §1.26): the location cache, then the journal.

:class:`DegradedReads` sits in front of the breaker-guarded store.  While the database answers
it only watches: each record read is kept in a small in-memory cache for ``cache_ttl`` (the
original's location cache), each commit and delete of this instance is noted in the
:class:`~s3orch.core.journal.LocationJournal`.  When ``get_object`` fails because the database
is unavailable (the breaker open, or a genuine outage before it opens), the answer comes from
the cache, else from the journal: a record (served from its copies as usual, every copy in
order), a tombstone (404: this instance knows the key was deleted), or nothing known (the 503
stands: never a 404 the journal cannot vouch for).  Everything else passes through.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from s3orch.backend.interface import Clock
from s3orch.core.journal import LocationJournal
from s3orch.observe.metrics import DEGRADED_CACHE_HITS, DEGRADED_READS
from s3orch.s3.conditions import UNCONDITIONAL, WriteConditions
from s3orch.store.interface import MetadataStore, StoreUnavailable
from s3orch.store.records import (
    CleanupItem,
    CompleteOutcome,
    Location,
    ObjectRecord,
    OutboxEvent,
    ReplicaReservation,
    Reservation,
)

#: Keys the location cache holds at most (least recently used go first).
CACHE_ENTRIES = 10_000


class LocationCache:
    """Recently read records, each for ``ttl`` seconds."""

    def __init__(self, ttl: float, clock: Clock, size: int = CACHE_ENTRIES) -> None:
        self.ttl = ttl
        self.clock = clock
        self.size = size
        self._items: OrderedDict[tuple[str, str], tuple[float, ObjectRecord]] = OrderedDict()

    def put(self, record: ObjectRecord) -> None:
        key = (record.bucket, record.key)
        self._items[key] = (self.clock.seconds() + self.ttl, record)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, bucket: str, key: str) -> ObjectRecord | None:
        found = self._items.get((bucket, key))
        if found is None:
            return None
        expires, record = found
        if expires <= self.clock.seconds():
            del self._items[(bucket, key)]
            return None
        return record

    def drop(self, bucket: str, key: str) -> None:
        self._items.pop((bucket, key), None)


class DegradedReads:
    """A MetadataStore proxy (see the module); ``store`` is the breaker-guarded store."""

    log = Logger(namespace="s3orch.journal")

    def __init__(
        self, store: MetadataStore, journal: LocationJournal, cache: LocationCache, clock: Clock
    ) -> None:
        self._store = store
        self.journal = journal
        self.cache = cache
        self.clock = clock
        # A newer entry in the journal (a refresh saw an overwrite or a delete) makes the cached
        # record stale: the cache never answers against the journal.
        journal.on_change = cache.drop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def as_store(self) -> MetadataStore:
        return cast(MetadataStore, self)

    async def get_object(self, bucket: str, key: str) -> ObjectRecord | None:
        try:
            record = await self._store.get_object(bucket, key)
        except StoreUnavailable as exc:
            return await self._degraded(bucket, key, exc)
        if record is not None:
            self.cache.put(record)
        return record

    async def _degraded(self, bucket: str, key: str, exc: StoreUnavailable) -> ObjectRecord | None:
        cached = self.cache.get(bucket, key)
        if cached is not None and cached.encrypted:
            raise exc  # an encrypted object cannot be read while the database is down: 503
        if cached is not None:
            DEGRADED_CACHE_HITS.inc()
            DEGRADED_READS.labels("cache").inc()
            return cached
        try:
            entry = await self.journal.lookup(bucket, key)
        except Exception:  # an unreadable journal must not turn the database's 503 into a 500
            self.log.failure("location journal lookup failed", component="journal")
            raise exc from None
        if entry is None or (entry.record is not None and entry.record.encrypted):
            raise exc
        DEGRADED_READS.labels("journal").inc()
        return entry.record

    async def commit_object(
        self,
        reservation: Reservation,
        record: ObjectRecord,
        now: float,
        conditions: WriteConditions = UNCONDITIONAL,
        *,
        events: Sequence[OutboxEvent] = (),
        companions: Sequence[ReplicaReservation] = (),
    ) -> list[CleanupItem]:
        displaced = await self._store.commit_object(
            reservation, record, now, conditions, events=events, companions=companions
        )
        # What the store made current: the reservation's copy (and fan-out companions) as
        # the one extent (a companion the store skipped fails over on a read).
        located = (
            Location(reservation.backend, reservation.storage_key, reservation.size),
            *(Location(c.backend, c.storage_key, c.size) for c in companions),
        )
        # A PUT's record already says so (no second build of the record then).
        same = record.locations == located and not record.parts
        self.journal.note(record if same else replace(record, locations=located, parts=()))
        return displaced

    async def complete_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        record: ObjectRecord,
        now: float,
        conditions: WriteConditions = UNCONDITIONAL,
        *,
        events: Sequence[OutboxEvent] = (),
    ) -> CompleteOutcome:
        outcome = await self._store.complete_upload(
            bucket, key, upload_id, parts, record, now, conditions, events=events
        )
        # The extents are the store's to say: read the new version back, off the request's path
        # (a failure is left to the journal's refresh).
        reading = Deferred.fromCoroutine(self._store.get_object(bucket, key))
        reading.addCallbacks(self._noted, lambda failure: None)
        return outcome

    def _noted(self, record: ObjectRecord | None) -> None:
        if record is not None:
            self.journal.note(record)

    async def delete_object(
        self, bucket: str, key: str, now: float, *, events: Sequence[OutboxEvent] = ()
    ) -> list[CleanupItem]:
        items = await self._store.delete_object(bucket, key, now, events=events)
        self.journal.note_deleted(bucket, key, now)
        return items
