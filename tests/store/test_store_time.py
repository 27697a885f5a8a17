"""Time is the caller's: no store transaction reads the wall clock.

Every store method that stamps a row takes ``now``, so a test (or the harness's
fake clock) drives every timestamp the database holds.  Proved two ways: a
sequence touching every stamped table, run with ``now`` ten days after the
epoch, leaves no time in the database outside that day (a wall-clock read would
stamp today), on every engine; and the transaction modules do not import a
clock at all.
"""

from __future__ import annotations

import ast
import uuid
from pathlib import Path
from typing import Any

import pytest_twisted

import s3orch.store.txn
from s3orch.store.interface import (
    INTENT_DROP,
    INTENT_KEEP,
    Intent,
    MultipartUpload,
    ObjectRecord,
    UploadedPart,
)
from s3orch.store.sqlstore import SQLStore
from s3orch.store.txn.cleanup import CLEANUP_BACKOFF_MAX, CLEANUP_MAX_ATTEMPTS
from tests.store.conftest import StoreFactory

#: Ten days after the epoch: far from any wall clock this suite runs under.
PAST = 864_000.0
#: The furthest ahead of ``now`` a stamp may be (a cleanup's next retry after backoff).
HORIZON = CLEANUP_BACKOFF_MAX + 3600.0
BUCKET = "bkt"


def _intent(key: str, size: int) -> Intent:
    write_id = uuid.uuid4().hex
    return Intent(write_id, BUCKET, key, size, f"{BUCKET}/{key}/{write_id}", etag="e" * 32)


def _record(write_id: str, key: str, size: int) -> ObjectRecord:
    return ObjectRecord(BUCKET, key, write_id, size, "e" * 32, last_modified=PAST)


async def _put(store: SQLStore, key: str, size: int, now: float) -> None:
    res = await store.reserve(_intent(key, size), ["b1"], "pack", now)
    assert res is not None
    await store.commit_object(res, _record(res.write_id, key, size), now)


async def _exercise(store: SQLStore) -> None:
    """Every kind of stamped write the store makes, all at (or just after) ``PAST``."""
    t = PAST
    await store.sync_quota_limits({"b1": 10**6, "b2": 10**6}, t)
    await _put(store, "k1", 10, t)
    await _put(store, "k1", 11, t + 1)  # the first copy is displaced into the cleanup queue
    released = await store.reserve(_intent("k2", 5), ["b2"], "pack", t + 2)
    assert released is not None
    await store.release(released.write_id, t + 3)
    # Two writes of one key in flight; one commits, the other is superseded, then reaped.
    loser = await store.reserve(_intent("k3", 7), ["b1"], "pack", t + 4)
    await _put(store, "k3", 8, t + 5)
    kept = await store.reserve(_intent("k4", 9), ["b1"], "pack", t + 6)
    assert loser is not None and kept is not None
    claimed = await store.stale_intents(t + 10, 0.0, 10, "me", 300.0)
    assert {i.write_id for i in claimed} == {loser.write_id, kept.write_id}
    await store.resolve_intent(loser.write_id, INTENT_DROP, t + 11)
    await store.resolve_intent(kept.write_id, INTENT_KEEP, t + 12)
    await store.delete_object(BUCKET, "k1", t + 13)
    # The cleanup queue: claim, fail one until it reaches the dead-letter table, finish another.
    due = await store.claim_cleanups(t + 1000, 10, "me", 300.0)
    assert len(due) >= 3
    for attempt in range(CLEANUP_MAX_ATTEMPTS):
        await store.cleanup_failed(due[0].id, "backend said no", t + 14 + attempt)
    await store.cleanup_done([due[1].id], t + 30)
    # Multipart: one upload completed, one left open with a part and a part in flight, one
    # aborted, one part attempt released.
    for name in ("done", "open", "gone"):
        upload = MultipartUpload(f"{name}-{uuid.uuid4().hex}", BUCKET, name, initiated=t + 31)
        upload = await store.create_multipart_upload(upload, 0, t + 31)
        res = await store.reserve_part(
            BUCKET, name, upload.upload_id, 1, 4, f"a1-{name}", f"{name}/p1", ["b1"], "pack", t + 32
        )
        assert res is not None
        part = UploadedPart(1, "d" * 32, 4, t + 33, res.backend, res.storage_key)
        assert (await store.commit_part(f"a1-{name}", part, t + 33)).committed
        spare = await store.reserve_part(
            BUCKET, name, upload.upload_id, 2, 4, f"a2-{name}", f"{name}/p2", ["b1"], "pack", t + 34
        )
        assert spare is not None
        if name == "done":
            await store.release_part(f"a2-{name}", t + 35)
            record = ObjectRecord(BUCKET, name, upload.upload_id, 4, "f" * 32 + "-1", last_modified=t + 36)
            await store.complete_upload(BUCKET, name, upload.upload_id, [(1, "d" * 32)], record, t + 36)
        elif name == "gone":
            await store.begin_abort(BUCKET, name, upload.upload_id, t + 37)
            await store.finish_abort(upload.upload_id, t + 38)


def _time_columns(conn: Any, kind: str) -> list[tuple[str, str]]:
    """Every (table, column) holding a time: the schemas keep times, and only times, as
    REAL (SQLite) / DOUBLE PRECISION (PostgreSQL) epoch seconds."""
    cur = conn.cursor()
    if kind == "sqlite":
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        tables = [r[0] for r in cur.fetchall()]
        found = []
        for table in tables:
            cur.execute(f'PRAGMA table_info("{table}")')
            found += [(table, r[1]) for r in cur.fetchall() if str(r[2]).upper() == "REAL"]
        return found
    cur.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND data_type = 'double precision'"
    )
    return [(r[0], r[1]) for r in cur.fetchall()]


@pytest_twisted.ensureDeferred
async def test_every_stamped_time_is_the_callers_now(store: SQLStore, store_factory: StoreFactory) -> None:
    await _exercise(store)
    conn = store_factory.connect()
    try:
        columns = _time_columns(conn, store_factory.kind)
        stamped: dict[tuple[str, str], list[float]] = {}
        cur = conn.cursor()
        for table, column in columns:
            cur.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL')
            values = [float(r[0]) for r in cur.fetchall()]
            if values:
                stamped[(table, column)] = values
        conn.commit()
    finally:
        conn.close()
    outside = {
        where: [v for v in values if not PAST <= v <= PAST + HORIZON]
        for where, values in stamped.items()
    }
    assert {where: bad for where, bad in outside.items() if bad} == {}
    # Not vacuous: every table the sequence writes had its times checked.
    assert {
        ("backend_quotas", "updated_at"),
        ("objects", "last_modified"),
        ("objects", "created_at"),
        ("object_locations", "created_at"),
        ("pending_objects", "created_at"),
        ("pending_objects", "claimed_at"),
        ("cleanup_queue", "next_retry"),
        ("cleanup_queue", "created_at"),
        ("cleanup_queue", "claimed_at"),
        ("cleanup_dlq", "first_enqueued_at"),
        ("cleanup_dlq", "moved_at"),
        ("multipart_uploads", "created_at"),
        ("multipart_uploads", "updated_at"),
        ("multipart_parts", "created_at"),
        ("multipart_part_attempts", "created_at"),
    } <= set(stamped)


def test_no_transaction_module_imports_a_clock() -> None:
    """The transactions get time only as an argument (``time``, ``datetime`` are absent)."""
    package = Path(s3orch.store.txn.__file__).parent
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("time", "datetime")]
    assert offenders == []
    assert len(list(package.glob("*.py"))) >= 7  # the check saw the transaction modules
