"""The MetadataStore contract: every engine passes these tests unchanged."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from s3orch.s3.conditions import KEY_MISSING, WriteConditions
from s3orch.store.interface import (
    CleanupItem,
    Intent,
    IntentNotFound,
    Location,
    MetadataStore,
    ObjectRecord,
    PreconditionConflict,
    QuotaRow,
    Reservation,
)

NOW = 1_700_000_000.0
BUCKET = "bkt"
NONE_MATCH_STAR = WriteConditions(None, ("*",))


def intent(key: str, size: int, bucket: str = BUCKET) -> Intent:
    write_id = uuid.uuid4().hex
    return Intent(write_id, bucket, key, size, f"{bucket}/{key}/{write_id}")


def record_for(res: Reservation, key: str, size: int, bucket: str = BUCKET, **extra: object) -> ObjectRecord:
    fields: dict[str, object] = {"etag": f"etag-{res.write_id[:8]}", "last_modified": NOW}
    fields.update(extra)
    return ObjectRecord(bucket=bucket, key=key, write_id=res.write_id, size=size, **fields)  # type: ignore[arg-type]


async def put(
    store: MetadataStore,
    key: str,
    size: int,
    candidates: tuple[str, ...] = ("b1",),
    bucket: str = BUCKET,
    strategy: str = "pack",
    now: float = NOW,
    **extra: object,
) -> tuple[Reservation, list[CleanupItem]]:
    res = await store.reserve(intent(key, size, bucket), candidates, strategy, now)
    assert res is not None
    displaced = await store.commit_object(res, record_for(res, key, size, bucket, **extra), now)
    return res, displaced


async def quota(store: MetadataStore, backend: str) -> QuotaRow:
    return (await store.get_quotas())[backend]


def counters(row: QuotaRow) -> tuple[int, int, int, int]:
    """(used, orphan, reserved, objects)."""
    return (row.bytes_used, row.orphan_bytes, row.reserved_bytes, row.object_count)


# --- lifecycle -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ping_answers(store: MetadataStore) -> None:
    await store.ping()


@pytest_twisted.ensureDeferred
async def test_reopening_keeps_data_and_reapplies_nothing(store: MetadataStore, store_factory: Any) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    await put(store, "k", 10)
    again = store_factory.make()
    await again.start()
    try:
        got = await again.get_object(BUCKET, "k")
        assert got is not None and got.size == 10
        assert counters(await quota(again, "b1")) == (10, 0, 0, 1)
    finally:
        await again.close()


# --- quotas and placement -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sync_quota_limits_creates_and_updates_rows(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 100, "b2": 0}, NOW)
    quotas = await store.get_quotas()
    assert quotas["b1"] == QuotaRow("b1", 100, 0, 0, 0, 0)
    assert quotas["b2"].bytes_limit == 0 and quotas["b2"].available is None
    await put(store, "k", 30)
    await store.sync_quota_limits({"b1": 500}, NOW)
    row = await quota(store, "b1")
    assert (row.bytes_limit, row.bytes_used, row.available) == (500, 30, 470)
    assert "b2" in await store.get_quotas()  # rows of unlisted backends stay


@pytest_twisted.ensureDeferred
async def test_pack_takes_first_candidate_with_room(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 100, "b2": 100}, NOW)
    res = await store.reserve(intent("k", 60), ["b1", "b2"], "pack", NOW)
    assert res is not None and res.backend == "b1"
    res = await store.reserve(intent("k2", 40), ["b1", "b2"], "pack", NOW)
    assert res is not None and res.backend == "b1"  # exactly fills b1
    res = await store.reserve(intent("k3", 1), ["b2", "b1"], "pack", NOW)
    assert res is not None and res.backend == "b2"  # candidate order, not name order


@pytest_twisted.ensureDeferred
async def test_put_over_quota_overflows_to_next_backend(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 100, "b2": 100}, NOW)
    first, _ = await put(store, "a", 80, ("b1", "b2"))
    second, _ = await put(store, "b", 30, ("b1", "b2"))
    assert (first.backend, second.backend) == ("b1", "b2")
    assert counters(await quota(store, "b1")) == (80, 0, 0, 1)
    assert counters(await quota(store, "b2")) == (30, 0, 0, 1)


@pytest_twisted.ensureDeferred
async def test_reserve_returns_none_when_nothing_fits(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 100, "b2": 50}, NOW)
    it = intent("k", 101)
    assert await store.reserve(it, ["b1", "b2"], "pack", NOW) is None
    assert await store.reserve(it, ["b1", "b2"], "spread", NOW) is None
    assert await store.reserve(it, [], "pack", NOW) is None
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_orphan_bytes_block_a_write(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 100}, NOW)
    await put(store, "k", 60)
    await store.delete_object(BUCKET, "k", NOW)  # 60 orphaned until cleaned up
    assert await store.reserve(intent("k2", 50), ["b1"], "pack", NOW) is None
    assert await store.reserve(intent("k2", 40), ["b1"], "pack", NOW) is not None


@pytest_twisted.ensureDeferred
async def test_spread_picks_least_utilised(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000, "b2": 100, "b3": 1000}, NOW)
    await put(store, "x", 500, ("b1",))  # b1 50 %
    await put(store, "y", 20, ("b2",))  # b2 20 %
    await put(store, "z", 300, ("b3",))  # b3 30 %
    res = await store.reserve(intent("k", 10), ["b1", "b2", "b3"], "spread", NOW)
    assert res is not None and res.backend == "b2"
    # b2 cannot take 90 more (20 used + 10 reserved): the least utilised that fits wins
    res = await store.reserve(intent("k2", 90), ["b1", "b2", "b3"], "spread", NOW)
    assert res is not None and res.backend == "b3"


@pytest_twisted.ensureDeferred
async def test_spread_ties_go_to_candidate_order_and_unlimited_counts_as_empty(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 100, "b2": 200, "u": 0}, NOW)
    await put(store, "x", 10, ("b1",))
    await put(store, "y", 20, ("b2",))  # both 10 %
    res = await store.reserve(intent("k", 1), ["b2", "b1"], "spread", NOW)
    assert res is not None and res.backend == "b2"
    await put(store, "big", 10**12, ("u",))
    res = await store.reserve(intent("k2", 1), ["b1", "u"], "spread", NOW)
    assert res is not None and res.backend == "u"


@pytest_twisted.ensureDeferred
async def test_unlimited_backend_always_fits(store: MetadataStore) -> None:
    await store.sync_quota_limits({"u": 0}, NOW)
    for i in range(3):
        res = await store.reserve(intent(f"k{i}", 10**15), ["u"], "pack", NOW)
        assert res is not None and res.backend == "u"
    assert (await quota(store, "u")).reserved_bytes == 3 * 10**15


@pytest_twisted.ensureDeferred
async def test_candidate_without_quota_row_is_unlimited(store: MetadataStore) -> None:
    res = await store.reserve(intent("k", 123), ["unknown"], "pack", NOW)
    assert res is not None and res.backend == "unknown"
    row = await quota(store, "unknown")
    assert (row.bytes_limit, row.reserved_bytes) == (0, 123)


@pytest_twisted.ensureDeferred
async def test_concurrent_reserves_never_exceed_the_limit(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    attempts = [
        Deferred.fromCoroutine(store.reserve(intent(f"k{i}", 300), ["b1"], "pack", NOW))
        for i in range(20)
    ]
    results = await gatherResults(attempts)
    granted = [r for r in results if r is not None]
    assert len(granted) == 3
    row = await quota(store, "b1")
    assert row.reserved_bytes == 900 and row.available == 100


@pytest_twisted.ensureDeferred
async def test_reserving_the_same_write_twice_reserves_once(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    it = intent("k", 100)
    first = await store.reserve(it, ["b1"], "pack", NOW)
    again = await store.reserve(it, ["b1"], "pack", NOW)
    assert first == again
    assert (await quota(store, "b1")).reserved_bytes == 100


@pytest_twisted.ensureDeferred
async def test_release_gives_the_bytes_back(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    res = await store.reserve(intent("k", 400), ["b1"], "pack", NOW)
    assert res is not None
    await store.release(res.write_id, NOW)
    await store.release(res.write_id, NOW)  # idempotent
    await store.release("no-such-write", NOW)
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)


# --- commit -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_commit_moves_reserved_to_used_and_records_everything(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    res = await store.reserve(intent("dir/k", 100), ["b1"], "pack", NOW)
    assert res is not None
    assert (await quota(store, "b1")).reserved_bytes == 100
    rec = ObjectRecord(
        bucket=BUCKET,
        key="dir/k",
        write_id=res.write_id,
        size=90,  # plaintext; 100 stored
        etag="0123abcd-2",
        last_modified=NOW - 5,
        content_type="text/plain",
        headers={"cache-control": "no-cache", "content-encoding": "gzip"},
        user_metadata={"colour": "blé", "n": "1"},
        checksum_algorithm="CRC32",
        checksum_value="AAAAAA==",
        parts_count=2,
        part_sizes=(50, 40),
        content_hash="ab" * 32,
    )
    assert await store.commit_object(res, rec, NOW) == []
    assert counters(await quota(store, "b1")) == (100, 0, 0, 1)
    got = await store.get_object(BUCKET, "dir/k")
    assert got is not None
    assert got.locations == (Location("b1", res.storage_key, 100),)
    assert got == ObjectRecord(**{**rec.__dict__, "locations": got.locations})
    assert await store.get_object(BUCKET, "dir/other") is None
    assert await store.get_object("other-bucket", "dir/k") is None
    assert await store.object_counts() == {"b1": 1}


@pytest_twisted.ensureDeferred
async def test_commit_retry_is_a_no_op(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    res = await store.reserve(intent("k", 100), ["b1"], "pack", NOW)
    assert res is not None
    rec = record_for(res, "k", 100)
    await store.commit_object(res, rec, NOW)
    assert await store.commit_object(res, rec, NOW, NONE_MATCH_STAR) == []
    assert counters(await quota(store, "b1")) == (100, 0, 0, 1)


@pytest_twisted.ensureDeferred
async def test_overwrite_displaces_old_copy_into_cleanup_queue(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000, "b2": 1000}, NOW)
    old, _ = await put(store, "k", 100, ("b1",))
    new, displaced = await put(store, "k", 100, ("b2",), now=NOW + 1)
    assert displaced == [CleanupItem(displaced[0].id, "b1", old.storage_key, 100, "overwrite_displaced", 0)]
    assert counters(await quota(store, "b1")) == (0, 100, 0, 0)
    assert counters(await quota(store, "b2")) == (100, 0, 0, 1)
    got = await store.get_object(BUCKET, "k")
    assert got is not None and got.write_id == new.write_id
    assert [loc.backend for loc in got.locations] == ["b2"]
    # the caller deletes at once; the queue's own first try waits
    assert await store.due_cleanups(NOW + 1, 10) == []
    assert await store.due_cleanups(NOW + 61, 10) == displaced
    await store.cleanup_done([displaced[0].id], NOW)
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)
    assert await store.due_cleanups(NOW + 10**6, 10) == []


@pytest_twisted.ensureDeferred
async def test_overwrite_on_same_backend_with_different_size_is_exact(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    old, _ = await put(store, "k", 100)
    new, displaced = await put(store, "k", 40)
    assert [(d.backend, d.storage_key, d.size) for d in displaced] == [("b1", old.storage_key, 100)]
    assert counters(await quota(store, "b1")) == (40, 100, 0, 1)
    _, displaced = await put(store, "k", 300)
    assert [(d.storage_key, d.size) for d in displaced] == [(new.storage_key, 40)]
    assert counters(await quota(store, "b1")) == (300, 140, 0, 1)
    assert (await quota(store, "b1")).available == 1000 - 440


@pytest_twisted.ensureDeferred
async def test_if_none_match_conflict_changes_nothing(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    first, _ = await put(store, "k", 100)
    res = await store.reserve(intent("k", 50), ["b1"], "pack", NOW)
    assert res is not None
    with pytest.raises(PreconditionConflict):
        await store.commit_object(res, record_for(res, "k", 50), NOW, NONE_MATCH_STAR)
    got = await store.get_object(BUCKET, "k")
    assert got is not None and got.write_id == first.write_id
    assert counters(await quota(store, "b1")) == (100, 0, 50, 1)  # the intent stays
    await store.release(res.write_id, NOW)
    assert counters(await quota(store, "b1")) == (100, 0, 0, 1)
    # on an absent key it succeeds
    res = await store.reserve(intent("new", 5), ["b1"], "pack", NOW)
    assert res is not None
    await store.commit_object(res, record_for(res, "new", 5), NOW, NONE_MATCH_STAR)


@pytest_twisted.ensureDeferred
async def test_if_match_commits_only_over_the_matching_etag(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    res = await store.reserve(intent("k", 10), ["b1"], "pack", NOW)
    assert res is not None
    with pytest.raises(PreconditionConflict) as missing:  # nothing to match
        await store.commit_object(res, record_for(res, "k", 10), NOW, WriteConditions(("*",), None))
    assert missing.value.violation == KEY_MISSING
    assert await store.get_object(BUCKET, "k") is None
    await store.release(res.write_id, NOW)
    await put(store, "k", 10)
    current = await store.get_object(BUCKET, "k")
    assert current is not None
    res = await store.reserve(intent("k", 20), ["b1"], "pack", NOW)
    assert res is not None
    with pytest.raises(PreconditionConflict) as mismatch:
        await store.commit_object(res, record_for(res, "k", 20), NOW, WriteConditions(("not-it",), None))
    assert mismatch.value.violation == "If-Match"
    assert counters(await quota(store, "b1")) == (10, 0, 20, 1)
    await store.commit_object(res, record_for(res, "k", 20), NOW, WriteConditions((current.etag,), None))
    assert counters(await quota(store, "b1")) == (20, 10, 0, 1)
    res = await store.reserve(intent("k", 30), ["b1"], "pack", NOW)
    assert res is not None
    await store.commit_object(res, record_for(res, "k", 30), NOW, WriteConditions(("*",), None))
    got = await store.get_object(BUCKET, "k")
    assert got is not None and got.write_id == res.write_id


@pytest_twisted.ensureDeferred
async def test_if_none_match_etag_commits_unless_the_current_etag_is_listed(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    res = await store.reserve(intent("k", 10), ["b1"], "pack", NOW)
    assert res is not None
    await store.commit_object(res, record_for(res, "k", 10), NOW, WriteConditions(None, ("x",)))  # absent: fine
    current = await store.get_object(BUCKET, "k")
    assert current is not None
    res = await store.reserve(intent("k", 20), ["b1"], "pack", NOW)
    assert res is not None
    with pytest.raises(PreconditionConflict) as caught:
        await store.commit_object(res, record_for(res, "k", 20), NOW, WriteConditions(None, ("a", current.etag)))
    assert caught.value.violation == "If-None-Match"
    await store.commit_object(res, record_for(res, "k", 20), NOW, WriteConditions(None, ("a", "b")))
    got = await store.get_object(BUCKET, "k")
    assert got is not None and got.write_id == res.write_id


@pytest_twisted.ensureDeferred
async def test_commit_without_intent_fails_and_queues_the_upload(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    res = await store.reserve(intent("k", 70), ["b1"], "pack", NOW)
    assert res is not None
    await store.release(res.write_id, NOW)  # e.g. the pending reaper gave up on it
    with pytest.raises(IntentNotFound) as caught:
        await store.commit_object(res, record_for(res, "k", 70), NOW)
    assert await store.get_object(BUCKET, "k") is None
    item = caught.value.cleanup
    assert item is not None
    assert (item.backend, item.storage_key, item.size, item.reason) == ("b1", res.storage_key, 70, "intent_missing")
    assert counters(await quota(store, "b1")) == (0, 70, 0, 0)
    await store.cleanup_done([item.id], NOW)
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_stale_commit_retry_never_brings_an_old_write_back(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    old, _ = await put(store, "k", 10)
    new, _ = await put(store, "k", 20)
    with pytest.raises(IntentNotFound):
        await store.commit_object(old, record_for(old, "k", 10), NOW)
    got = await store.get_object(BUCKET, "k")
    assert got is not None and got.write_id == new.write_id
    # the old copy is queued once (displaced), not twice
    assert counters(await quota(store, "b1")) == (20, 10, 0, 1)


# --- delete and cleanup -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_orphans_every_copy(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    res, _ = await put(store, "k", 100)
    items = await store.delete_object(BUCKET, "k", NOW)
    assert [(i.backend, i.storage_key, i.size, i.reason) for i in items] == [("b1", res.storage_key, 100, "delete")]
    assert await store.get_object(BUCKET, "k") is None
    assert counters(await quota(store, "b1")) == (0, 100, 0, 0)
    assert await store.delete_object(BUCKET, "k", NOW) == []
    assert await store.delete_object(BUCKET, "never", NOW) == []
    assert await store.object_counts() == {"b1": 0}
    listing = await store.list_objects(BUCKET, "", "", "", 10)
    assert listing.entries == ()


@pytest_twisted.ensureDeferred
async def test_cleanup_done_is_idempotent(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    await put(store, "a", 10)
    await put(store, "b", 20)
    items = await store.delete_object(BUCKET, "a", NOW) + await store.delete_object(BUCKET, "b", NOW)
    await store.cleanup_done([items[0].id], NOW)
    await store.cleanup_done([items[0].id], NOW)
    await store.cleanup_done([], NOW)
    assert counters(await quota(store, "b1")) == (0, 20, 0, 0)


@pytest_twisted.ensureDeferred
async def test_cleanup_failures_back_off_exponentially(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    await put(store, "k", 10)
    (item,) = await store.delete_object(BUCKET, "k", NOW)
    now = NOW + 60
    assert await store.due_cleanups(now, 10) == [item]
    for attempt, delay in enumerate([60, 120, 240, 480], start=1):
        await store.cleanup_failed(item.id, "503 Slow Down", now)
        assert await store.due_cleanups(now + delay - 1, 10) == []
        (due,) = await store.due_cleanups(now + delay, 10)
        assert due.attempts == attempt
        now += delay


@pytest_twisted.ensureDeferred
async def test_ninth_failure_waits_60_times_2_to_the_8th(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    await put(store, "k", 10)
    (item,) = await store.delete_object(BUCKET, "k", NOW)
    for _ in range(9):
        await store.cleanup_failed(item.id, "boom", NOW)
    assert await store.due_cleanups(NOW + 60 * 2**8 - 1, 10) == []
    (due,) = await store.due_cleanups(NOW + 60 * 2**8, 10)
    assert due.attempts == 9


@pytest_twisted.ensureDeferred
async def test_tenth_cleanup_failure_moves_the_row_to_the_dlq(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    await put(store, "k", 10)
    await put(store, "other", 5)
    (item,) = await store.delete_object(BUCKET, "k", NOW)
    for _ in range(10):
        await store.cleanup_failed(item.id, "403 AccessDenied", NOW)
    assert await store.due_cleanups(NOW + 10**9, 10) == []
    # the bytes still exist somewhere, so they stay counted
    assert counters(await quota(store, "b1")) == (5, 10, 0, 1)
    await store.cleanup_failed(item.id, "again", NOW)  # gone from the queue: no-op
    await store.cleanup_done([item.id], NOW)
    assert counters(await quota(store, "b1")) == (5, 10, 0, 1)


@pytest_twisted.ensureDeferred
async def test_due_cleanups_respects_limit_and_order(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10**6}, NOW)
    ids = []
    for i in range(5):
        await put(store, f"k{i}", 1)
        (item,) = await store.delete_object(BUCKET, f"k{i}", NOW + i)
        ids.append(item.id)
    due = await store.due_cleanups(NOW + 1000, 3)
    assert [d.id for d in due] == ids[:3]


@pytest_twisted.ensureDeferred
async def test_object_counts_follow_commits_and_deletes(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000, "b2": 1000}, NOW)
    await put(store, "a", 1, ("b1",))
    await put(store, "b", 1, ("b1",))
    await put(store, "c", 1, ("b2",))
    await put(store, "a", 1, ("b2",))  # moves a from b1 to b2
    await store.delete_object(BUCKET, "b", NOW)
    assert await store.object_counts() == {"b1": 0, "b2": 2}
