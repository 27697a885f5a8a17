"""The location journal (``s3orch.core.journal``): stamps, batches, tombstones, the sweep, on a
task.Clock with its file written on the calling thread."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from s3orch.core.journal import (
    FLUSH_DELAY,
    Entry,
    JournalFile,
    LocationJournal,
    default_journal_path,
    newer,
    record_from_json,
    record_to_json,
)
from s3orch.store.records import Extent, Location, ObjectRecord


def record(key: str, stamp: float, write_id: str = "w1", bucket: str = "photos") -> ObjectRecord:
    return ObjectRecord(
        bucket=bucket, key=key, write_id=write_id, size=3, etag="abc", last_modified=stamp,
        user_metadata={"who": "me"}, locations=(Location("b1", f"photos/x/{write_id}", 3),),
    )


def result(d: Deferred[object] | object) -> object:
    got: list[object] = []
    assert isinstance(d, Deferred)
    d.addBoth(got.append)
    assert got, "the journal's work ran on the calling thread: the Deferred has fired"
    return got[0]


def lookup(journal: LocationJournal, key: str, bucket: str = "photos") -> Entry | None:
    found = result(ensureDeferred(journal.lookup(bucket, key)))
    assert found is None or isinstance(found, Entry)
    return found


def test_a_record_with_parts_round_trips_through_json() -> None:
    multi = ObjectRecord(
        bucket="b", key="k", write_id="u", size=10, etag="e-2", last_modified=5.0, parts_count=2,
        part_sizes=(4, 6), headers={"cache-control": "no"},
        parts=(Extent(1, 0, 4, (Location("b1", "s1", 4), Location("b2", "s1", 4)), "e1"),
               Extent(2, 4, 6, (Location("b2", "s2", 6),), "e2", "crc")),
    )
    assert record_from_json(record_to_json(multi)) == multi
    assert record_from_json(record_to_json(record("k", 1.0))) == record("k", 1.0)


def test_an_older_stamp_never_replaces_a_newer_and_a_tombstone_wins_a_tie() -> None:
    assert newer(Entry(2, None), Entry(1, record("k", 1)))
    assert not newer(Entry(1, record("k", 1)), Entry(2, None))
    assert newer(Entry(2, None), Entry(2, record("k", 2)))
    assert not newer(Entry(2, record("k", 2)), Entry(2, None))
    assert newer(Entry(2, record("k", 2, "w2")), Entry(2, record("k", 2)))


def test_notes_answer_at_once_and_reach_the_file_in_one_batch(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "j.db"
    journal = LocationJournal(str(path), clock)
    journal.note(record("a", 10))
    journal.note(record("b", 10))
    journal.note_deleted("photos", "b", 11)
    got = lookup(journal, "a")
    assert got is not None and got.record == record("a", 10)  # from memory, before any write
    assert JournalFile(str(path)).count() == 0  # nothing written yet: the batch waits FLUSH_DELAY
    clock.advance(FLUSH_DELAY)
    again = LocationJournal(str(path), Clock())  # a restart reads the file
    got = lookup(again, "a")
    assert got is not None and got.record == record("a", 10)
    deleted = lookup(again, "b")
    assert deleted is not None and deleted.record is None and deleted.stamp == 11
    assert lookup(again, "never") is None


def test_a_stale_read_cannot_undo_a_delete_or_an_overwrite_in_the_file(tmp_path: Path) -> None:
    clock = Clock()
    journal = LocationJournal(str(tmp_path / "j.db"), clock)
    journal.note(record("k", 10))
    journal.note(record("o", 20, "new"))
    clock.advance(FLUSH_DELAY)
    journal.note_deleted("photos", "k", 12)
    clock.advance(FLUSH_DELAY)
    # A refresh that read the database before the delete and the overwrite committed:
    journal.note(record("k", 10))
    journal.note(record("o", 15, "old"))
    clock.advance(FLUSH_DELAY)
    fresh = LocationJournal(str(tmp_path / "j.db"), Clock())
    gone = lookup(fresh, "k")
    assert gone is not None and gone.record is None
    kept = lookup(fresh, "o")
    assert kept is not None and kept.record is not None and kept.record.write_id == "new"


def test_the_sweep_tombstones_old_rows_the_database_no_longer_has_and_names_what_it_lacks(tmp_path: Path) -> None:
    clock = Clock()
    journal = LocationJournal(str(tmp_path / "j.db"), clock)
    for key in "abce":
        journal.note(record(key, 10))
    clock.advance(10)
    journal.note(record("d", 10))  # learned at 10, after the page below was read (from 5 on)
    clock.advance(FLUSH_DELAY)
    # The database's page covered ("", "") .. ("photos", "d"): a as journaled, c overwritten
    # (another write id), c2 new to the journal; b is gone; d is missing too but this instance
    # learned of it after the page was read, so it may be a commit the page predates: kept.
    page = {("photos", "a"): "w1", ("photos", "c"): "w9", ("photos", "c2"): "w1"}
    swept = result(ensureDeferred(journal.sweep(("", ""), ("photos", "d"), page, 5)))
    assert swept == (1, [("photos", "c"), ("photos", "c2")])
    clock.advance(FLUSH_DELAY)
    states = {key: lookup(journal, key) for key in "abcde"}
    assert {k: (e is not None and e.record is not None) for k, e in states.items()} == {
        "a": True, "b": False, "c": True, "d": True, "e": True,  # e is past the page: untouched
    }


def test_the_default_path_is_next_to_a_sqlite_database_else_in_the_spool_dir() -> None:
    assert default_journal_path("/var/lib/s3o/meta.db", "sqlite", "/spool", "/tmp") == "/var/lib/s3o/meta.db.locations"
    one = default_journal_path("x", "postgres", "/spool", "/tmp", "db1:5432/meta")
    assert one.startswith("/spool/s3orch-locations-") and one.endswith(".db")
    other = default_journal_path("x", "postgres", "", "/tmp", "db2:5432/meta")
    assert other.startswith("/tmp/s3orch-locations-") and other[5:] != one[7:]


def test_a_lookup_answers_the_newer_of_memory_and_file(tmp_path: Path) -> None:
    clock = Clock()
    journal = LocationJournal(str(tmp_path / "j.db"), clock)
    journal.note(record("k", 20, "new"))
    clock.advance(FLUSH_DELAY)
    journal.note(record("k", 10, "old"))  # a late read of an older version, not yet written
    got = lookup(journal, "k")
    assert got is not None and got.record is not None and got.record.write_id == "new"
    journal.note_deleted("photos", "k", 30)
    gone = lookup(journal, "k")
    assert gone is not None and gone.record is None


def test_a_file_of_another_layout_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE entries (bucket TEXT, object_key TEXT, stamp REAL, record TEXT)")
    old.execute("INSERT INTO entries VALUES ('photos', 'k', 1, NULL)")
    old.commit()
    old.close()
    clock = Clock()
    journal = LocationJournal(str(path), clock)
    assert lookup(journal, "k") is None
    journal.note(record("k", 2))
    clock.advance(FLUSH_DELAY)
    got = lookup(LocationJournal(str(path), Clock()), "k")
    assert got is not None and got.record == record("k", 2)


def test_a_record_is_stored_as_asdict_would_give_it_and_reads_back_equal() -> None:
    """The journal's text is the record's fields in order (what ``dataclasses.asdict`` gives,
    built without its deep copies), so files written by earlier builds read back the same."""
    rich = ObjectRecord(
        bucket="b", key="k", write_id="w", size=10, etag="e-2", last_modified=2.0,
        headers={"cache-control": "no-cache"}, user_metadata={"a": "b"}, checksum_algorithm="CRC32",
        checksum_value="AAAAAA==-2", parts_count=2, part_sizes=(5, 5), content_hash="ab",
        parts=(
            Extent(1, 0, 5, (Location("x", "y", 5), Location("z", "q", 6)), "e1", "c1"),
            Extent(2, 5, 5, (), None, None, 7),
        ),
        encrypted=True, wrapped_dek="ZGVr", key_id="key-1", crypto_id="ff", compression_chunk_size=7,
    )
    for stored in (record("k", 1.0), rich):
        text = record_to_json(stored)
        assert text == json.dumps(asdict(stored), separators=(",", ":"))
        assert record_from_json(text) == stored
