"""The contract of the operator's cleanup views and the DLQ exits (requeue, write-off)."""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import MetadataStore
from tests.store.test_contract import BUCKET, NOW, counters, put, quota


async def _dead(store: MetadataStore, key: str, size: int, backend: str = "b1") -> int:
    """Put ``key`` on ``backend``, delete it and fail its cleanup into the DLQ; its queue id."""
    await put(store, key, size, candidates=(backend,))
    (item,) = await store.delete_object(BUCKET, key, NOW)
    for _ in range(10):
        await store.cleanup_failed(item.id, f"403 for {key}", NOW)
    return item.id


@pytest_twisted.ensureDeferred
async def test_cleanup_queue_page_counts_all_and_lists_by_retry_time(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10**6}, NOW)
    for key in ("a", "b", "c"):
        await put(store, key, 10)
    items = [(await store.delete_object(BUCKET, key, NOW))[0] for key in ("a", "b", "c")]
    await store.cleanup_failed(items[0].id, "boom", NOW + 100)  # a: retried after b and c
    depth, rows = await store.cleanup_queue_page(2)
    assert depth == 3
    assert [r.id for r in rows] == [items[1].id, items[2].id]
    assert rows[0].backend == "b1" and rows[0].size == 10 and rows[0].reason == "delete"
    assert rows[0].attempts == 0 and rows[0].last_error is None
    _, everything = await store.cleanup_queue_page(50)
    failed = [r for r in everything if r.id == items[0].id][0]
    assert failed.attempts == 1 and failed.last_error == "boom"


@pytest_twisted.ensureDeferred
async def test_dlq_page_filters_by_backend_and_sums_bytes(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10**6, "b2": 10**6}, NOW)
    first = await _dead(store, "a", 10)
    await _dead(store, "b", 20)
    await _dead(store, "c", 5, backend="b2")
    count, size, rows = await store.cleanup_dlq_page(None, 50)
    assert (count, size) == (3, 35)
    assert [r.size for r in rows] == [10, 20, 5]
    assert rows[0].original_id == first and rows[0].attempts == 10 and rows[0].last_error == "403 for a"
    assert rows[0].first_enqueued_at == NOW and rows[0].moved_at == NOW
    count, size, rows = await store.cleanup_dlq_page("b2", 50)
    assert (count, size, [r.storage_key for r in rows]) == (1, 5, [rows[0].storage_key])
    assert rows[0].backend == "b2"
    assert (await store.cleanup_dlq_page(None, 1))[:2] == (3, 35)
    assert len((await store.cleanup_dlq_page(None, 1))[2]) == 1


@pytest_twisted.ensureDeferred
async def test_requeue_moves_rows_back_due_now_keeping_the_bytes_orphaned(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10**6, "b2": 10**6}, NOW)
    await _dead(store, "a", 10)
    await _dead(store, "b", 20)
    await _dead(store, "c", 5, backend="b2")
    later = NOW + 3600
    moved = await store.requeue_dlq(None, "b1", 1, later)
    assert len(moved) == 1
    assert (await store.cleanup_dlq_page(None, 50))[:2] == (2, 25)
    (due,) = await store.due_cleanups(later, 10)
    assert (due.backend, due.size, due.attempts) == ("b1", 10, 0)
    assert counters(await quota(store, "b1")) == (0, 30, 0, 0)  # still orphaned until deleted
    assert len(await store.requeue_dlq(None, None, 100, later)) == 2
    assert (await store.cleanup_dlq_page(None, 50))[0] == 0
    assert len(await store.due_cleanups(later, 10)) == 3
    await store.cleanup_done([item.id for item in await store.due_cleanups(later, 10)], later)
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)
    assert counters(await quota(store, "b2")) == (0, 0, 0, 0)
    assert await store.requeue_dlq(None, None, 100, later) == []


@pytest_twisted.ensureDeferred
async def test_requeue_by_id_takes_only_those(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10**6}, NOW)
    await _dead(store, "a", 10)
    await _dead(store, "b", 20)
    _, _, rows = await store.cleanup_dlq_page(None, 50)
    assert await store.requeue_dlq([rows[1].id, 999999], None, 100, NOW) == [rows[1].id]
    assert [r.id for r in (await store.cleanup_dlq_page(None, 50))[2]] == [rows[0].id]
    assert await store.requeue_dlq([], None, 100, NOW) == []


@pytest_twisted.ensureDeferred
async def test_write_off_releases_the_orphan_bytes(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10**6}, NOW)
    await put(store, "kept", 7)
    await _dead(store, "a", 10)
    await _dead(store, "b", 20)
    assert counters(await quota(store, "b1")) == (7, 30, 0, 1)
    _, _, rows = await store.cleanup_dlq_page(None, 50)
    assert await store.write_off_dlq([rows[0].id], None, 100, NOW) == (1, 10)
    assert counters(await quota(store, "b1")) == (7, 20, 0, 1)
    assert await store.write_off_dlq(None, "other", 100, NOW) == (0, 0)
    assert await store.write_off_dlq(None, "b1", 100, NOW) == (1, 20)
    assert counters(await quota(store, "b1")) == (7, 0, 0, 1)
    assert await store.write_off_dlq(None, None, 100, NOW) == (0, 0)
