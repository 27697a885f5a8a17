"""The location journal: a local, read-only-when-degraded copy of where every object lives.

Backend keys are opaque and per write (``{bucket}/{sha256(key)}/{write id}``), so while the
database is down no broadcast can guess them.  Each instance therefore keeps, in a small SQLite
file of its own (``circuit_breaker.journal_path``), ``(bucket, key) -> current record`` (size,
etag, content type, metadata, checksums and every extent's copies with their backend and storage
keys).  During an outage GET and HEAD answer from it (:mod:`s3orch.core.degraded_reads`).

It is fed three ways, none on a request's critical path:

* this instance's commits and deletes are noted in memory (:meth:`LocationJournal.note`,
  :meth:`~LocationJournal.note_deleted`) and written in batches, one transaction every
  ``FLUSH_DELAY`` seconds, on a thread of the journal's own;
* :class:`s3orch.workers.journal_refresh.JournalRefresher` reads what changed in the database
  since a watermark (``last_modified``): other instances' writes;
* the same worker sweeps all keys in key order, a page per tick: a journal row the database no
  longer has becomes a tombstone (other instances' deletes).

Every entry carries a stamp (a record's ``last_modified``, a delete's time) and an older stamp
never replaces a newer one, so a refresh that read a record just before this instance deleted it
cannot bring it back: a key known deleted answers 404, never its old bytes.  Tombstones are
dropped after ``TOMBSTONE_TTL``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from s3orch.backend.interface import Clock
from s3orch.store.records import Extent, Location, ObjectRecord

#: Seconds between a noted change and the batch that writes it (and its neighbours).
FLUSH_DELAY = 0.2
#: How long a tombstone is kept (longer than any refresh can lag behind).
TOMBSTONE_TTL = 3600.0

_T = TypeVar("_T")
#: Runs a blocking function off the reactor thread (the journal's own thread in a gateway).
Offload = Callable[[Callable[[], _T]], "Deferred[_T]"]

#: The file's layout (``PRAGMA user_version``).
_VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (bucket TEXT NOT NULL, object_key TEXT NOT NULL,"
    " stamp REAL NOT NULL, learned REAL NOT NULL, write_id TEXT, record TEXT,"
    " PRIMARY KEY (bucket, object_key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

Key = tuple[str, str]
#: Stands for "a record" where only an entry's kind matters.
_PRESENT = ObjectRecord(bucket="", key="", write_id="", size=0, etag="", last_modified=0.0)


@dataclass(frozen=True)
class Entry:
    """What the journal knows of a key: the record, or None for a tombstone, as of ``stamp``;
    ``learned`` is when this instance learned it (its own clock: what the sweep compares)."""

    stamp: float
    record: ObjectRecord | None
    learned: float = 0.0


_RECORD_FIELDS = tuple(f.name for f in fields(ObjectRecord))
_EXTENT_FIELDS = tuple(f.name for f in fields(Extent))


def _location_dict(location: Location) -> dict[str, Any]:
    return {"backend": location.backend, "storage_key": location.storage_key, "size": location.size}


def record_to_json(record: ObjectRecord) -> str:
    """The record as ``dataclasses.asdict`` would give it, built directly: ``asdict`` deep-copies
    every value, and one ran for every PUT this instance commits (a tenth of a 4 KiB PUT's cost)."""
    data = {name: getattr(record, name) for name in _RECORD_FIELDS}
    data["locations"] = [_location_dict(location) for location in record.locations]
    data["parts"] = [
        {**{name: getattr(part, name) for name in _EXTENT_FIELDS},
         "locations": [_location_dict(location) for location in part.locations]}
        for part in record.parts
    ]
    return json.dumps(data, separators=(",", ":"))


def record_from_json(text: str) -> ObjectRecord:
    data: dict[str, Any] = json.loads(text)

    def locations(items: Iterable[dict[str, Any]]) -> tuple[Location, ...]:
        return tuple(Location(**item) for item in items)

    data["locations"] = locations(data["locations"])
    data["parts"] = tuple(
        Extent(**{**part, "locations": locations(part["locations"])}) for part in data["parts"]
    )
    if data["part_sizes"] is not None:
        data["part_sizes"] = tuple(data["part_sizes"])
    return ObjectRecord(**data)


def newer(incoming: Entry, existing: Entry | None) -> bool:
    """Whether ``incoming`` replaces ``existing``: a later stamp wins; at an equal stamp a
    tombstone wins over a record (a delete at the same instant as a read must not be undone)."""
    if existing is None:
        return True
    if incoming.stamp != existing.stamp:
        return incoming.stamp > existing.stamp
    return incoming.record is None or existing.record is not None


def default_journal_path(database_path: str, driver: str, spool_dir: str, state_dir: str, server: str = "") -> str:
    """Next to a SQLite database (``<db>.locations``); else in the spool dir (else ``state_dir``),
    named after the database ``server`` (``host:port/name``), so a journal never mirrors another
    database."""
    if driver == "sqlite":
        return os.path.abspath(database_path) + ".locations"
    tag = hashlib.sha256(server.encode()).hexdigest()[:12]
    return os.path.join(spool_dir or state_dir, f"s3orch-locations-{tag}.db")


class JournalFile:
    """The SQLite file; every method blocks, and runs on the journal's thread only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
                # Another layout (another build): the file is a cache, so start it afresh.
                conn.execute("DROP TABLE IF EXISTS entries")
                conn.execute("DROP TABLE IF EXISTS meta")
                conn.execute(f"PRAGMA user_version = {_VERSION}")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    def get(self, key: Key) -> Entry | None:
        row = self._db().execute(
            "SELECT stamp, record, learned FROM entries WHERE bucket = ? AND object_key = ?", key
        ).fetchone()
        if row is None:
            return None
        return Entry(float(row[0]), None if row[1] is None else record_from_json(row[1]), float(row[2]))

    def _head(self, key: Key) -> Entry | None:
        """The stored entry's stamp and kind, without parsing its record (enough for :func:`newer`)."""
        row = self._db().execute(
            "SELECT stamp, write_id FROM entries WHERE bucket = ? AND object_key = ?", key
        ).fetchone()
        if row is None:
            return None
        return Entry(float(row[0]), None if row[1] is None else _PRESENT)

    def write(self, batch: Sequence[tuple[Key, Entry]]) -> None:
        """Apply a batch in one transaction, keeping the newer of each pair (:func:`newer`)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, entry in batch:
                if newer(entry, self._head(key)):
                    text = write_id = None
                    if entry.record is not None:
                        text, write_id = record_to_json(entry.record), entry.record.write_id
                    db.execute(
                        "INSERT OR REPLACE INTO entries (bucket, object_key, stamp, learned, write_id, record)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (key[0], key[1], entry.stamp, entry.learned, write_id, text),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def range(self, after: Key, upto: Key | None) -> dict[Key, tuple[str | None, float, float]]:
        """Key -> (write id, None for a tombstone; stamp; learned) in (after, upto] (no bound: None)."""
        sql = (
            "SELECT bucket, object_key, write_id, stamp, learned FROM entries"
            " WHERE (bucket, object_key) > (?, ?)"
        )
        params: list[Any] = [after[0], after[1]]
        if upto is not None:
            sql += " AND (bucket, object_key) <= (?, ?)"
            params += [upto[0], upto[1]]
        return {
            (b, k): (w, float(t), float(learned))
            for b, k, w, t, learned in self._db().execute(sql, params).fetchall()
        }

    def purge_tombstones(self, before: float) -> None:
        self._db().execute("DELETE FROM entries WHERE record IS NULL AND learned < ?", (before,))

    def get_meta(self, name: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        self._db().execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def count(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM entries WHERE record IS NOT NULL").fetchone()[0])

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def run_here(work: Callable[[], _T]) -> Deferred[_T]:
    """Offload for tests: run on the calling thread."""
    return succeed(work())


def journal_offload(reactor: object) -> tuple[Offload[Any], Callable[[], None]]:
    """(offload, stop): one thread of the journal's own, so its file is only ever touched by
    that thread and its work never waits behind the reactor's pool (the spool, DNS).  A reactor
    without threads (a test's MemoryReactorClock) works on the calling thread."""
    if not IReactorThreads.providedBy(reactor):
        return run_here, lambda: None
    pool = ThreadPool(minthreads=1, maxthreads=1, name="s3orch-journal")
    started = False

    def offload(work: Callable[[], Any]) -> Deferred[Any]:
        nonlocal started
        if not started:
            pool.start()
            started = True
        return deferToThreadPool(reactor, pool, work)

    def stop() -> None:
        if started:
            pool.stop()

    return offload, stop


class LocationJournal:
    """In-memory overlay of noted changes over the :class:`JournalFile`, written in batches."""

    log = Logger(namespace="s3orch.journal")

    def __init__(self, path: str, clock: Clock, offload: Offload[Any] = run_here) -> None:
        self.file = JournalFile(path)
        self.clock = clock
        self.offload = offload
        self._pending: dict[Key, Entry] = {}
        #: What the batch being written holds (still answers lookups until it is on disk).
        self._writing: dict[Key, Entry] = {}
        self._flush_call: IDelayedCall | None = None
        #: (bucket, key, write id) -> last_modified of the records noted lately: the refresh
        #: does not read their extents again (pruned by the refresh).
        self.seen: dict[tuple[str, str, str], float] = {}
        #: Told of every key whose entry changes (the location cache drops it).
        self.on_change: Callable[[str, str], object] = lambda bucket, key: None
        self._flushing: Deferred[None] | None = None

    # -- feeding --------------------------------------------------------------------------------

    def note(self, record: ObjectRecord) -> None:
        """A current record (this instance's commit, or a refresh's read)."""
        self.seen[(record.bucket, record.key, record.write_id)] = record.last_modified
        self._add((record.bucket, record.key), Entry(record.last_modified, record, self.clock.seconds()))

    def note_deleted(self, bucket: str, key: str, stamp: float) -> None:
        self._add((bucket, key), Entry(stamp, None, self.clock.seconds()))

    def _add(self, key: Key, entry: Entry) -> None:
        if newer(entry, self._pending.get(key)):
            self._pending[key] = entry
            self.on_change(*key)
        if self._flush_call is None and self._flushing is None:
            self._flush_call = self.clock.callLater(FLUSH_DELAY, self._flush_due)

    def _flush_due(self) -> None:
        self._flush_call = None
        Deferred.fromCoroutine(self.flush())

    async def flush(self) -> None:
        """Write what is pending, in one transaction on the journal's thread."""
        if self._flushing is not None or not self._pending:
            return
        batch, self._pending = self._pending, {}
        self._writing = batch
        done: Deferred[None] = Deferred()
        self._flushing = done
        try:
            await self.offload(lambda: self.file.write(list(batch.items())))
        except Exception:
            self.log.failure("location journal write failed", component="journal")
            for key, entry in batch.items():  # try again with the next batch
                if newer(entry, self._pending.get(key)):
                    self._pending[key] = entry
        finally:
            self._writing = {}
            self._flushing = None
            done.callback(None)
        if self._pending and self._flush_call is None:
            self._flush_call = self.clock.callLater(FLUSH_DELAY, self._flush_due)

    # -- reading --------------------------------------------------------------------------------

    async def lookup(self, bucket: str, key: str) -> Entry | None:
        """What the journal knows of a key (None: nothing; an Entry without record: deleted)."""
        stored: Entry | None = await self.offload(lambda: self.file.get((bucket, key)))
        best = stored
        for waiting in (self._writing.get((bucket, key)), self._pending.get((bucket, key))):
            if waiting is not None and newer(waiting, best):
                best = waiting
        return best

    async def sweep(
        self, after: Key, upto: Key | None, present: Mapping[Key, str], before: float
    ) -> tuple[int, list[Key]]:
        """Compare the database's keys in (after, upto] (``present``: key -> write id, read from
        ``before`` on, this instance's clock) with the journal's: a key the database no longer has
        becomes a tombstone, if this instance learned of it before ``before`` (it was committed
        then, so a read that began later and misses it means it was deleted; one learned later
        may be a write the page predates).  The tombstone takes the record's stamp (a tie goes to
        the tombstone), so only a newer write of the key replaces it.  Returns (how many went,
        the keys whose current record the journal lacks: to read and note)."""
        await self.flush()
        if self._flushing is not None:
            await self._flushing
        known = await self.offload(lambda: self.file.range(after, upto))
        gone = [
            (key, stamp) for key, (write_id, stamp, learned) in known.items()
            if write_id is not None and key not in present and learned < before
        ]
        for key, stamp in gone:
            self.note_deleted(key[0], key[1], stamp)
        missing = [key for key, write_id in present.items() if key not in known or known[key][0] != write_id]
        if upto is None:  # a whole cycle done: old tombstones can go
            now = self.clock.seconds()
            await self.offload(lambda: self.file.purge_tombstones(now - TOMBSTONE_TTL))
        return len(gone), missing

    async def get_meta(self, name: str) -> str | None:
        value: str | None = await self.offload(lambda: self.file.get_meta(name))
        return value

    async def set_meta(self, name: str, value: str) -> None:
        await self.offload(lambda: self.file.set_meta(name, value))

    async def close(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        await self.flush()
        if self._flushing is not None:
            await self._flushing
        await self.offload(self.file.close)
