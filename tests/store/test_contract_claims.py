"""The MetadataStore contract, cleanup claims: every engine passes these unchanged.

Kept apart from test_contract.py only so parallel work on that file does not collide;
the ``store`` fixture runs them against every engine all the same.
"""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import CleanupItem, MetadataStore
from tests.store.test_contract import BUCKET, NOW, put

GRACE = 300.0


async def queued(store: MetadataStore, count: int) -> list[CleanupItem]:
    """``count`` cleanup rows, due at NOW + 60 + i (in that order)."""
    await store.sync_quota_limits({"b1": 10**6}, NOW)
    items = []
    for i in range(count):
        await put(store, f"k{i}", 10 + i)
        (item,) = await store.delete_object(BUCKET, f"k{i}", NOW + i)
        items.append(item)
    return items


@pytest_twisted.ensureDeferred
async def test_claims_hand_out_due_rows_once_until_the_claim_goes_stale(store: MetadataStore) -> None:
    items = await queued(store, 3)
    assert await store.claim_cleanups(NOW + 59, 10, "a", GRACE) == []  # nothing due yet
    first = await store.claim_cleanups(NOW + 61, 2, "a", GRACE)
    assert first == items[:2]  # oldest retry time first, up to the limit
    second = await store.claim_cleanups(NOW + 62, 10, "b", GRACE)
    assert second == items[2:]
    assert await store.claim_cleanups(NOW + 63, 10, "b", GRACE) == []
    # due_cleanups is a read-only view: claimed rows still show there
    assert await store.due_cleanups(NOW + 63, 10) == items
    # a claim older than the grace is taken over (its claimer is presumed dead)
    assert await store.claim_cleanups(NOW + 61 + GRACE, 10, "b", GRACE) == items[:2]
    assert await store.claim_cleanups(NOW + 61 + GRACE, 10, "c", GRACE) == []


@pytest_twisted.ensureDeferred
async def test_a_failed_claim_is_released_for_the_retry_after_backoff(store: MetadataStore) -> None:
    (item,) = await queued(store, 1)
    (claimed,) = await store.claim_cleanups(NOW + 60, 10, "a", GRACE)
    await store.cleanup_failed(claimed.id, "503 Slow Down", NOW + 60)
    assert await store.claim_cleanups(NOW + 119, 10, "b", GRACE) == []
    (again,) = await store.claim_cleanups(NOW + 120, 10, "b", GRACE)
    assert (again.id, again.attempts) == (item.id, 1)


@pytest_twisted.ensureDeferred
async def test_done_rows_are_never_claimed_again(store: MetadataStore) -> None:
    items = await queued(store, 2)
    claimed = await store.claim_cleanups(NOW + 100, 10, "a", GRACE)
    assert claimed == items
    await store.cleanup_done([items[0].id], NOW)
    assert await store.claim_cleanups(NOW + 10**6, 10, "b", GRACE) == items[1:]
    assert await store.claim_cleanups(NOW + 10**6, 0, "c", 0.0) == []


@pytest_twisted.ensureDeferred
async def test_a_takeover_is_marked_and_the_last_failure_says_it_moved_the_row(store: MetadataStore) -> None:
    (item,) = await queued(store, 1)
    assert (await store.cleanup_queue_page(0))[0] == 1
    (first,) = await store.claim_cleanups(NOW + 60, 10, "a", GRACE)
    assert not first.reclaimed
    (taken,) = await store.claim_cleanups(NOW + 60 + GRACE, 10, "b", GRACE)
    assert taken.reclaimed and taken == item  # the mark is not part of the row's identity
    now = NOW + 60 + GRACE
    moved = []
    for _ in range(10):  # CLEANUP_MAX_ATTEMPTS failures: the last one moves it to the DLQ
        moved.append(await store.cleanup_failed(item.id, "503 Slow Down", now))
    assert moved == [False] * 9 + [True]
    assert (await store.cleanup_queue_page(0))[0] == 0 and (await store.cleanup_dlq_page(None, 0))[0] == 1
    assert await store.cleanup_failed(item.id, "gone", now) is False  # the row is no longer queued
