"""Keep this instance's location journal (:mod:`s3orch.core.journal`) in step with the database.

Every ``circuit_breaker.journal_refresh`` seconds, on every instance (no worker lock: each has
its own journal), while the database breaker is closed:

1. *changes*: the objects whose ``last_modified`` is at or after the watermark, pages of
   ``PAGE`` until a short one; only writes not yet journaled have their extents read.  After a
   short page the watermark becomes ``now - OVERLAP``: a commit still in flight, or stamped by
   an instance whose clock lags, is seen by a later tick.  The watermark is kept in the journal
   file, so a restart resumes where it stopped (a new journal starts from 0: a full load);
2. *sweep*: one page of all keys (with their write ids, no extents) in key order from a
   cursor; journal rows in the page's range that the database no longer has, and that this
   instance learned of before the page was read, become tombstones (deletes by other instances), and the records of keys whose write the journal lacks are read
   and noted (a write the watermark missed, e.g. a promoted intent).  A short page ends a cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from s3orch.core.journal import Key, LocationJournal
from s3orch.observe.metrics import JOURNAL_ENTRIES
from s3orch.store.interface import MetadataStore
from s3orch.workers.base import PeriodicWorker

#: Rows per database read.
PAGE = 500
#: Change pages per tick at most (a fresh journal loads this many rows a tick).
MAX_PAGES = 20
#: Seconds a commit may take, or an instance's clock lag, and still be seen by the next tick.
OVERLAP = 30.0
_WATERMARK = "watermark"


class JournalRefresher(PeriodicWorker):
    def __init__(
        self,
        store: MetadataStore,
        journal: LocationJournal,
        clock: IReactorTime,
        interval: float,
        degraded: Callable[[], bool],
    ) -> None:
        super().__init__("journal-refresh", interval, clock, run_now=True, component="journal_refresh")
        self.store = store
        self.journal = journal
        self.degraded = degraded
        self.watermark: float | None = None
        self.sweep_from: Key = ("", "")
        self.cycles = 0
        self._counted = False

    async def tick(self) -> None:
        if self.degraded():  # the breaker answers for the database: nothing to read
            return
        if self.watermark is None:
            stored = await self.journal.get_meta(_WATERMARK)
            self.watermark = float(stored) if stored is not None else 0.0
        await self._changes()
        await self._sweep()
        await self.journal.flush()
        await self.journal.set_meta(_WATERMARK, repr(self.watermark))
        if self.sweep_from == ("", "") or not self._counted:  # once per sweep cycle: a full count
            self._counted = True
            JOURNAL_ENTRIES.set(await self.journal.offload(self.journal.file.count))

    async def _changes(self) -> None:
        assert self.watermark is not None
        started = self.clock.seconds()
        for _ in range(MAX_PAGES):
            seen = self.journal.seen
            records, rows = await self.store.objects_since(self.watermark, PAGE, frozenset(seen))
            for record in records:
                self.journal.note(record)
            for bucket, key, write_id, modified in rows:
                seen[(bucket, key, write_id)] = modified
            if len(rows) < PAGE:
                self.watermark = max(self.watermark, started - OVERLAP)
                break
            # A full page: go on from its last stamp (rows at that stamp are re-read, and skipped).
            self.watermark = max(self.watermark, rows[-1][3])
        floor = self.watermark - OVERLAP
        self.journal.seen = {k: m for k, m in self.journal.seen.items() if m >= floor}

    async def _sweep(self) -> None:
        started = self.clock.seconds()
        rows = await self.store.keys_after(*self.sweep_from, PAGE)
        present = {(b, k): w for b, k, w in rows}
        upto = (rows[-1][0], rows[-1][1]) if len(rows) == PAGE else None
        _, missing = await self.journal.sweep(self.sweep_from, upto, present, started)
        if missing:
            for record in await self.store.objects_of(missing):
                self.journal.note(record)
        if upto is None:
            self.sweep_from = ("", "")
            self.cycles += 1
        else:
            self.sweep_from = upto
