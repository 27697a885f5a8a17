"""The fault rig's auditor finds each kind of damage it is there to find (and passes a sound store).

The store is an in-memory SQLite database with the real migrations; the backends
are listings given by the test, so every finding is provoked on purpose.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec

ROOT = Path(__file__).resolve().parents[2]
B1 = BackendSpec("b1", "http://unused", "bkt1")
B2 = BackendSpec("b2", "http://unused", "bkt2")


class Rig:
    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        for path in sorted((ROOT / "sql" / "sqlite").glob("*.sql")):
            self.conn.executescript(path.read_text())
        self.listings: dict[str, dict[str, int]] = {"b1": {}, "b2": {}}
        for name in ("b1", "b2"):
            self.conn.execute("INSERT INTO backend_quotas (backend_name, updated_at) VALUES (?, 0)", (name,))

    def auditor(self) -> Auditor:
        class Keep:  # the auditor closes its connection; keep the in-memory database
            def __init__(self, conn: sqlite3.Connection) -> None:
                self.conn = conn

            def cursor(self) -> sqlite3.Cursor:
                return self.conn.cursor()

            def close(self) -> None:
                pass

        return Auditor(lambda: Keep(self.conn), [B1, B2], lister=lambda spec: self.listings[spec.name])

    def quota(self, backend: str, used: int = 0, orphan: int = 0, reserved: int = 0, count: int = 0) -> None:
        self.conn.execute(
            "UPDATE backend_quotas SET bytes_used = ?, orphan_bytes = ?, reserved_bytes = ?, object_count = ?"
            " WHERE backend_name = ?",
            (used, orphan, reserved, count, backend),
        )

    def object(self, key: str, backend: str, skey: str, size: int) -> None:
        self.conn.execute(
            "INSERT INTO objects (bucket, object_key, write_id, size_bytes, etag, last_modified, created_at)"
            " VALUES ('bkt', ?, ?, ?, 'e', 0, 0)",
            (key, skey, size),
        )
        self.conn.execute(
            "INSERT INTO object_locations (bucket, object_key, backend_name, storage_key, write_id,"
            " size_bytes, created_at) VALUES ('bkt', ?, ?, ?, ?, ?, 0)",
            (key, backend, skey, skey, size),
        )
        self.listings[backend][skey] = size

    def queue(self, backend: str, skey: str, size: int, table: str = "cleanup_queue", reason: str = "x") -> None:
        extra = ("original_id, first_enqueued_at, moved_at, attempts", "1, 0, 0, 10") if table == "cleanup_dlq" else (
            "next_retry, created_at", "0, 0")
        self.conn.execute(
            f"INSERT INTO {table} (backend_name, storage_key, reason, size_bytes, {extra[0]})"
            f" VALUES (?, ?, ?, ?, {extra[1]})",
            (backend, skey, reason, size),
        )


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.object("a", "b1", "k-a", 10)
    rig.object("b", "b2", "k-b", 20)
    rig.queue("b1", "k-old", 5)
    rig.listings["b1"]["k-old"] = 5
    rig.queue("b2", "k-dead", 7, table="cleanup_dlq", reason="delete_failed")
    rig.listings["b2"]["k-dead"] = 7
    rig.quota("b1", used=10, orphan=5, count=1)
    rig.quota("b2", used=20, orphan=7, count=1)
    return rig


def test_a_sound_store_is_clean_and_every_object_is_accounted_for(rig: Rig) -> None:
    report = rig.auditor().audit()
    report.assert_clean()
    assert (report.backend_objects, report.referenced, report.queued, report.dead_lettered) == (4, 2, 1, 1)


def test_an_unaccounted_backend_object_is_a_leak(rig: Rig) -> None:
    rig.listings["b2"]["stray"] = 3
    assert rig.auditor().audit().problems == [
        "leaked: b2:stray (3 B) is neither referenced, queued nor dead-lettered"
    ]


def test_a_referenced_object_missing_or_of_another_size_is_found(rig: Rig) -> None:
    del rig.listings["b1"]["k-a"]
    rig.listings["b2"]["k-b"] = 19
    problems = rig.auditor().audit().problems
    assert problems == [
        "referenced but missing on its backend: b1:k-a",
        "referenced with 20 B but the backend holds 19 B: b2:k-b",
    ]


def test_live_bytes_queued_for_deletion_are_found(rig: Rig) -> None:
    rig.queue("b1", "k-a", 10)
    rig.quota("b1", used=10, orphan=15, count=1)
    assert rig.auditor().audit().problems == [
        "referenced AND queued for deletion (live bytes at risk): b1:k-a"
    ]


def test_left_intents_and_uploads_and_a_reasonless_dead_letter_are_found(rig: Rig) -> None:
    rig.conn.execute(
        "INSERT INTO pending_objects (write_id, bucket, object_key, backend_name, storage_key, size_bytes,"
        " created_at) VALUES ('w1', 'bkt', 'c', 'b1', 'k-c', 4, 0)"
    )
    rig.listings["b1"]["k-c"] = 4
    rig.conn.execute(
        "INSERT INTO multipart_uploads (upload_id, bucket, object_key, state, created_at, updated_at)"
        " VALUES ('u1', 'bkt', 'd', 'open', 0, 0)"
    )
    rig.queue("b2", "k-why", 1, table="cleanup_dlq", reason="")
    rig.listings["b2"]["k-why"] = 1
    rig.quota("b1", used=10, orphan=5, reserved=4, count=1)
    rig.quota("b2", used=20, orphan=8, count=1)
    problems = rig.auditor().audit().problems
    assert problems == [
        "pending intent left: w1 bkt/c on b1:k-c (4 B)",
        "upload left open: u1 of bkt/d",
        "dead-lettered without a reason: b2:k-why",
        "leaked: b1:k-c (4 B) is neither referenced, queued nor dead-lettered",
    ]


def test_a_quota_counter_off_by_one_byte_is_found(rig: Rig) -> None:
    rig.quota("b2", used=21, orphan=7, count=1)
    assert rig.auditor().audit().problems == [
        "quota of b2 (used, orphan, reserved, count) is (21, 7, 0, 1), the tables say (20, 7, 0, 1)"
    ]


def test_a_backend_over_its_limit_is_found(rig: Rig) -> None:
    rig.conn.execute("UPDATE backend_quotas SET bytes_limit = 29 WHERE backend_name = 'b1'")
    assert rig.auditor().audit().problems == []  # 10 used + 5 orphaned: within 29
    rig.conn.execute("UPDATE backend_quotas SET bytes_limit = 14 WHERE backend_name = 'b1'")
    assert rig.auditor().audit().problems == ["quota of b1 exceeded: 15 B held or reserved, limit 14 B"]


def test_reads_must_give_an_allowed_value() -> None:
    store = {"good": b"v2", "old": b"v1", "gone": None}
    sha = {v: hashlib.sha256(v).hexdigest() for v in (b"v1", b"v2")}

    def read(key: str) -> bytes | None:
        if key == "broken":
            raise OSError("connection reset")
        return store[key]

    problems = Auditor.check_reads(
        read,
        {"good": {sha[b"v2"]}, "old": {sha[b"v2"]}, "gone": {None}, "broken": {sha[b"v1"]}},
    )
    assert problems == [
        "broken: the read failed (OSError: connection reset)",
        f"old: reads back sha256 {sha[b'v1'][:16]}…, not one of the allowed values (1)",
    ]
