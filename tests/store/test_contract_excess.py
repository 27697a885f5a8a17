"""The excess-copies part of the MetadataStore contract (s3orch.store.txn.excess), on every engine."""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import ExcessCopies, Location, MetadataStore, UnderReplicated
from s3orch.store.txn.excess import choose_excess
from tests.store.test_contract import NOW, counters, put, quota

BACKENDS = {"b1": 0, "b2": 0, "b3": 0}
HEALTHY = {"b1": 2.5, "b2": 2.9, "b3": 2.1}


async def _copy(store: MetadataStore, extent: UnderReplicated, key: str, backend: str) -> None:
    outcome = await store.reserve_replica(extent, 9, (), (backend,), "pack", key, NOW, 3600.0)
    assert outcome.reason == "ok" and outcome.reservation is not None
    assert (await store.record_replica(extent, outcome.reservation, 9, (), NOW)).reason == "ok"


async def _three_copies(store: MetadataStore, key: str = "k") -> ExcessCopies:
    """``key`` with copies on b1 (its write), b2 and b3 (replicas), 10 bytes each."""
    await put(store, key, 10)
    [extent] = [e for e in await store.under_replicated(9, 10) if e.key == key]
    await _copy(store, extent, f"bkt/{key}/r2", "b2")
    await _copy(store, extent, f"bkt/{key}/r3", "b3")
    [excess] = [e for e in await store.over_replicated(2, 10) if e.key == key]
    return excess


@pytest_twisted.ensureDeferred
async def test_over_replicated_pages_in_key_order_and_counts(store: MetadataStore) -> None:
    await store.sync_quota_limits(BACKENDS, NOW)
    for key in ("c", "a", "b"):
        await _three_copies(store, key)
    await put(store, "single", 10)
    page = await store.over_replicated(2, 2)
    assert [(e.key, e.size, len(e.copies)) for e in page] == [("a", 10, 3), ("b", 10, 3)]
    rest = await store.over_replicated(2, 2, after=(page[-1].bucket, page[-1].key, page[-1].part_number))
    assert [e.key for e in rest] == ["c"]
    assert await store.over_replicated(3, 10) == []
    assert await store.count_over_replicated(2) == 3
    assert await store.count_over_replicated(1) == 3  # "single" has one copy: not in excess
    assert await store.count_over_replicated(3) == 0


@pytest_twisted.ensureDeferred
async def test_remove_excess_drops_the_lowest_scored_and_settles_quota_as_orphan(store: MetadataStore) -> None:
    await store.sync_quota_limits(BACKENDS, NOW)
    extent = await _three_copies(store)
    items = await store.remove_excess(extent, 2, {**HEALTHY, "b2": 1.0}, NOW, 60.0)
    assert [(i.backend, i.storage_key, i.size, i.reason) for i in items] == [
        ("b2", "bkt/k/r2", 10, "over_replication")
    ]
    record = await store.get_object("bkt", "k")
    assert record is not None and sorted(loc.backend for loc in record.locations) == ["b1", "b3"]
    assert counters(await quota(store, "b2")) == (0, 10, 0, 0)  # used -> orphan until deleted
    assert await store.due_cleanups(NOW, 10) == []  # the caller deletes first; the queue after a grace
    assert [i.storage_key for i in await store.due_cleanups(NOW + 61, 10)] == ["bkt/k/r2"]
    await store.cleanup_done([items[0].id], NOW)
    assert counters(await quota(store, "b2")) == (0, 0, 0, 0)
    assert await store.count_over_replicated(2) == 0
    # Again: nothing left to remove (a re-run after an unknown commit outcome is harmless).
    assert await store.remove_excess(extent, 2, HEALTHY, NOW, 60.0) == []


@pytest_twisted.ensureDeferred
async def test_remove_excess_is_a_compare_and_swap_on_the_object(store: MetadataStore) -> None:
    await store.sync_quota_limits(BACKENDS, NOW)
    extent = await _three_copies(store)
    await put(store, "k", 7, candidates=("b2",))  # overwritten: the copies found are gone
    assert await store.remove_excess(extent, 2, HEALTHY, NOW, 60.0) == []
    record = await store.get_object("bkt", "k")
    assert record is not None and [loc.backend for loc in record.locations] == ["b2"]


@pytest_twisted.ensureDeferred
async def test_remove_excess_never_goes_below_the_factor_after_a_concurrent_removal(
    store: MetadataStore,
) -> None:
    await store.sync_quota_limits(BACKENDS, NOW)
    extent = await _three_copies(store)
    first = await store.remove_excess(extent, 2, {**HEALTHY, "b3": 0.0}, NOW, 60.0)
    # A second cleaner working from the same (now stale) scan, with other scores.
    second = await store.remove_excess(extent, 2, {**HEALTHY, "b1": 0.0}, NOW, 60.0)
    assert [i.backend for i in first] == ["b3"] and second == []
    record = await store.get_object("bkt", "k")
    assert record is not None and sorted(loc.backend for loc in record.locations) == ["b1", "b2"]


def test_choose_excess_keeps_the_last_healthy_copy_and_the_factor() -> None:
    copies = [Location("b1", "k1", 1), Location("b2", "k2", 1), Location("b3", "k3", 1)]
    assert [c.backend for c in choose_excess(copies, 2, {"b1": 2.1, "b2": 2.9, "b3": 2.5})] == ["b1"]
    assert [c.backend for c in choose_excess(copies, 1, {"b1": 1.0, "b2": 1.0, "b3": 2.0})] == ["b1", "b2"]
    assert choose_excess(copies, 3, {}) == []
    # Every copy unhealthy but one: the healthy one survives even at factor 1.
    kept = set(copies) - set(choose_excess(copies, 1, {"b1": 0.0, "b2": 2.2, "b3": 1.0}))
    assert [c.backend for c in kept] == ["b2"]
