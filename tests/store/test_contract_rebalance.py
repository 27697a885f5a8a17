"""The rebalancer's part of the MetadataStore contract (s3orch.store.txn.rebalance), on every engine:
candidates smallest first, and the move's compare-and-swap with exact quota."""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import MetadataStore, ReplicaReservation, UnderReplicated
from tests.store.test_contract import NOW, counters, put, quota
from tests.store.test_contract_replicas import _reserve

BACKENDS = {"b1": 1000, "b2": 1000, "b3": 1000}


async def _one(store: MetadataStore, backend: str = "b1") -> UnderReplicated:
    [extent] = await store.rebalance_candidates(backend, 10)
    return extent


async def _reserve_move(store: MetadataStore, extent: UnderReplicated, target: str) -> ReplicaReservation:
    return await _reserve(store, extent, f"bkt/{extent.key}/m-{target}", (target,), factor=len(extent.copies) + 1)


@pytest_twisted.ensureDeferred
async def test_candidates_are_a_backends_current_extents_smallest_first(store: MetadataStore) -> None:
    await store.sync_quota_limits(BACKENDS, NOW)
    for key, size in (("c", 30), ("a", 20), ("b", 10), ("d", 20)):
        await put(store, key, size)
    await put(store, "other", 5, candidates=("b2",))
    page = await store.rebalance_candidates("b1", 3)
    assert [(e.key, e.size) for e in page] == [("b", 10), ("a", 20), ("d", 20)]
    assert all(e.copies[0].backend == "b1" for e in page)
    assert [e.key for e in await store.rebalance_candidates("b2", 10)] == ["other"]
    assert await store.rebalance_candidates("b3", 10) == []


@pytest_twisted.ensureDeferred
async def test_a_move_records_the_target_drops_the_source_and_keeps_quota_exact(store: MetadataStore) -> None:
    await store.sync_quota_limits(BACKENDS, NOW)
    await put(store, "k", 100)
    extent = await _one(store)
    reservation = await _reserve_move(store, extent, "b2")
    assert counters(await quota(store, "b2")) == (0, 100, 0, 0)  # the copy in flight: orphaned
    source = extent.copies[0]
    outcome = await store.move_copy(extent, reservation, "b1", source.storage_key, NOW + 1, 60.0)
    assert outcome.reason == "ok" and outcome.cleanup is not None
    item = outcome.cleanup
    assert (item.backend, item.storage_key, item.size, item.reason) == ("b1", source.storage_key, 100,
                                                                       "rebalance_source_delete")
    assert counters(await quota(store, "b2")) == (100, 0, 0, 1)
    assert counters(await quota(store, "b1")) == (0, 100, 0, 0)  # the source's bytes, queued
    found = await store.get_object("bkt", "k")
    assert found is not None
    [ext] = found.extents
    assert [(loc.backend, loc.storage_key) for loc in ext.locations] == [("b2", reservation.storage_key)]
    assert await store.rebalance_candidates("b1", 10) == []
    # The source row is due after the grace: the caller deletes it at once.
    assert await store.due_cleanups(NOW + 2, 10) == []
    assert [d.storage_key for d in await store.due_cleanups(NOW + 62, 10)] == [source.storage_key]


@pytest_twisted.ensureDeferred
async def test_a_move_of_an_overwritten_object_gives_back_only_its_new_copy(store: MetadataStore) -> None:
    await store.sync_quota_limits(BACKENDS, NOW)
    await put(store, "k", 100)
    extent = await _one(store)
    reservation = await _reserve_move(store, extent, "b2")
    await put(store, "k", 50)  # overwritten while the bytes were copied
    outcome = await store.move_copy(extent, reservation, "b1", extent.copies[0].storage_key, NOW + 1, 60.0)
    assert outcome.reason == "stale" and outcome.cleanup is not None
    assert (outcome.cleanup.backend, outcome.cleanup.storage_key, outcome.cleanup.reason) == (
        "b2", reservation.storage_key, "rebalance_orphan",
    )
    assert [d.storage_key for d in await store.due_cleanups(NOW + 1, 10)] == [reservation.storage_key]
    found = await store.get_object("bkt", "k")
    assert found is not None and found.size == 50
    assert counters(await quota(store, "b2")) == (0, 100, 0, 0)


@pytest_twisted.ensureDeferred
async def test_a_move_is_refused_when_the_target_got_a_copy_or_the_source_went(store: MetadataStore) -> None:
    await store.sync_quota_limits(BACKENDS, NOW)
    await put(store, "k", 10)
    extent = await _one(store)
    source_key = extent.copies[0].storage_key
    move = await _reserve(store, extent, "bkt/k/move", ("b2",), factor=2)
    replica = await _reserve(store, extent, "bkt/k/replica", ("b2",), factor=2)
    assert (await store.record_replica(extent, replica, 2, (), NOW)).reason == "ok"  # b2 got a copy meanwhile
    held = await store.move_copy(extent, move, "b1", source_key, NOW, 60.0)
    assert held.reason == "target_holds" and held.cleanup is not None
    assert held.cleanup.storage_key == "bkt/k/move"
    # A move whose source copy was dropped meanwhile (a drain, the cleaner) is refused too.
    [extent] = await store.rebalance_candidates("b1", 10)
    to_b3 = await _reserve(store, extent, "bkt/k/b3", ("b3",), factor=3)
    assert await store.drop_drained_copy(extent, "b1", NOW) is not None
    gone = await store.move_copy(extent, to_b3, "b1", source_key, NOW, 60.0)
    assert gone.reason == "source_gone" and gone.cleanup is not None
    assert gone.cleanup.storage_key == "bkt/k/b3"
    found = await store.get_object("bkt", "k")
    assert found is not None
    assert sorted(loc.backend for loc in found.extents[0].locations) == ["b2"]
    # Quota: b2 holds the replica (used) and the refused move's copy (orphaned, queued).
    assert counters(await quota(store, "b2")) == (10, 10, 0, 1)
    assert counters(await quota(store, "b3")) == (0, 10, 0, 0)
