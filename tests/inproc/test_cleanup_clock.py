"""Cleanup retries, DLQ graduation after 10 attempts and orphan-byte accounting, on a clock.

The real SQLite store, a memory backend whose deletes fail on demand, and the
cleanup-queue worker ticked by a :class:`twisted.internet.task.Clock` (the
store's adbapi threads run on the real reactor; time is the clock's).  The
auditor checks I4/I5 at every step: a failing copy is always queued or
dead-lettered with its bytes counted as orphaned, never forgotten.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from s3orch.config.model import CleanupQueueConfig, DatabaseConfig
from s3orch.store import open_store
from s3orch.workers.cleanup_queue import CleanupQueueWorker
from tests.inproc.test_pending_reaper import Rig
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec

B1 = BackendSpec("b1", "memory://", "unused")


class ClockRig(Rig):
    def __init__(self, store: object, clock: Clock, db: Path) -> None:
        super().__init__(store, clock)  # type: ignore[arg-type]
        self.db = db
        self.worker = CleanupQueueWorker(self.cleanups, clock, CleanupQueueConfig(), owner="me", locks=None)

    def audit(self) -> tuple[int, int, int]:
        """Audit (clean or fail); (referenced, queued, dead-lettered) backend objects."""
        auditor = Auditor(lambda: sqlite3.connect(str(self.db)), [B1],
                          lister=lambda spec: {k: len(v) for k, v in self.b1.objects.items()})
        report = auditor.audit()
        report.assert_clean()
        return report.referenced, report.queued, report.dead_lettered

    def deletes(self) -> int:
        return sum(1 for op, _ in self.b1.calls if op == "delete_object")

    async def tick_at(self, when: float) -> None:
        self.clock.advance(when - self.clock.seconds())
        assert await self.worker.run_once()


@pytest_twisted.async_yield_fixture
async def rig(tmp_path: Path) -> AsyncIterator[ClockRig]:
    db = tmp_path / "meta.db"
    store = open_store(DatabaseConfig(path=str(db)), reactor)
    await store.start()
    clock = Clock()
    clock.advance(1_700_000_000)
    await store.sync_quota_limits({"b1": 10_000}, clock.seconds())
    yield ClockRig(store, clock, db)
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_delete_failing_ten_times_backs_off_then_graduates_to_the_dlq_keeping_its_bytes(
    rig: ClockRig,
) -> None:
    await rig.put("k", b"12345")
    await rig.put("kept", b"abc")
    rig.b1.fail_next("delete_object", 100)
    start = rig.clock.seconds()
    await rig.objects.delete("bkt", "k")  # the first try fails: attempt 1, next in 1 min
    assert rig.audit() == (1, 1, 0)
    due = start + 60
    for attempt in range(2, 11):
        before = rig.deletes()
        await rig.tick_at(due - 1)  # not yet due: no backend call
        assert rig.deletes() == before
        await rig.tick_at(due)
        assert rig.deletes() == before + 1
        quota = await rig.quota()
        assert (quota.bytes_used, quota.orphan_bytes, quota.object_count) == (3, 5, 1)
        if attempt < 10:
            assert rig.audit() == (1, 1, 0)
            due += min(60 * 2 ** (attempt - 1), 24 * 3600)  # min(1 min x 2^(attempts before), 24 h)
    # The 10th failure: out of the queue, into the DLQ with its reason, bytes still counted.
    assert rig.audit() == (1, 0, 1)
    assert await rig.store.due_cleanups(rig.clock.seconds() + 10**9, 10) == []
    before = rig.deletes()
    await rig.tick_at(rig.clock.seconds() + 48 * 3600)
    assert rig.deletes() == before  # the worker never sees it again
    conn = sqlite3.connect(str(rig.db))
    try:
        (row,) = conn.execute("SELECT attempts, reason, size_bytes FROM cleanup_dlq").fetchall()
    finally:
        conn.close()
    assert row == (10, "delete", 5)


@pytest_twisted.ensureDeferred
async def test_a_retry_that_succeeds_deletes_the_row_and_releases_its_orphan_bytes(rig: ClockRig) -> None:
    await rig.put("k", b"12345")
    rig.b1.fail_next("delete_object", 2)
    await rig.objects.delete("bkt", "k")
    assert (await rig.quota()).orphan_bytes == 5
    start = rig.clock.seconds()
    await rig.tick_at(start + 60)  # attempt 2 fails: next in 2 min
    assert (await rig.quota()).orphan_bytes == 5 and rig.audit() == (0, 1, 0)
    await rig.tick_at(start + 60 + 120)  # attempt 3 succeeds
    quota = await rig.quota()
    assert (quota.bytes_used, quota.orphan_bytes, quota.reserved_bytes) == (0, 0, 0)
    assert rig.b1.objects == {} and rig.audit() == (0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_a_copy_already_gone_from_its_backend_counts_as_deleted(rig: ClockRig) -> None:
    await rig.put("k", b"12345")
    rig.b1.fail_next("delete_object", 1)
    await rig.objects.delete("bkt", "k")
    rig.b1.objects.clear()  # someone removed it meanwhile
    await rig.tick_at(rig.clock.seconds() + 60)
    assert (await rig.quota()).orphan_bytes == 0 and rig.audit() == (0, 0, 0)
