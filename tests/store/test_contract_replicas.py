"""The replica part of the MetadataStore contract (s3orch.store.txn.replicas), on every engine."""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import Location, MetadataStore, ReplicaReservation, UnderReplicated
from tests.store.test_contract import NOW, counters, intent, put, quota, record_for

BACKENDS = {"b1": 0, "b2": 0, "b3": 0}


async def _setup(store: MetadataStore, limits: dict[str, int] | None = None) -> None:
    await store.sync_quota_limits(limits or BACKENDS, NOW)


async def _reserve(
    store: MetadataStore, extent: UnderReplicated, key: str, candidates: tuple[str, ...] = ("b1", "b2", "b3"),
    factor: int = 2, uncounted: tuple[str, ...] = (),
) -> ReplicaReservation:
    outcome = await store.reserve_replica(extent, factor, uncounted, candidates, "pack", key, NOW, 3600.0)
    assert outcome.reason == "ok" and outcome.reservation is not None
    return outcome.reservation


@pytest_twisted.ensureDeferred
async def test_under_replicated_pages_in_key_order_and_skips_satisfied(store: MetadataStore) -> None:
    await _setup(store)
    for key in ("c", "a", "b"):
        await put(store, key, 10)
    page = await store.under_replicated(2, 2)
    assert [(e.key, e.part_number, e.size) for e in page] == [("a", 0, 10), ("b", 0, 10)]
    assert page[0].copies[0].backend == "b1" and page[0].etag.startswith("etag-")
    rest = await store.under_replicated(2, 2, after=(page[-1].bucket, page[-1].key, page[-1].part_number))
    assert [e.key for e in rest] == ["c"]
    assert await store.under_replicated(1, 10) == []
    assert await store.count_under_replicated(2) == 3
    assert await store.count_under_replicated(1) == 0
    assert await store.count_under_replicated(1, ("b1",)) == 3  # b1's copies do not count


@pytest_twisted.ensureDeferred
async def test_reserve_then_record_moves_orphan_to_used_and_adds_the_copy(store: MetadataStore) -> None:
    await _setup(store)
    await put(store, "k", 10)
    [extent] = await store.under_replicated(2, 10)
    reservation = await _reserve(store, extent, "bkt/x/r1")
    assert reservation.backend == "b2"  # pack, but never a holder
    assert counters(await quota(store, "b2")) == (0, 10, 0, 0)  # reserved as orphaned bytes
    outcome = await store.record_replica(extent, reservation, 2, (), NOW)
    assert outcome.reason == "ok" and outcome.cleanup is None
    assert counters(await quota(store, "b2")) == (10, 0, 0, 1)
    record = await store.get_object("bkt", "k")
    assert record is not None
    assert {loc.backend for loc in record.locations} == {"b1", "b2"}
    assert Location("b2", "bkt/x/r1", 10) in record.locations
    assert await store.under_replicated(2, 10) == []
    depth, _ = await store.cleanup_queue_page(10)
    assert depth == 0


@pytest_twisted.ensureDeferred
async def test_an_overwrite_between_reserve_and_record_refuses_the_replica(store: MetadataStore) -> None:
    await _setup(store)
    await put(store, "k", 10)
    [extent] = await store.under_replicated(2, 10)
    reservation = await _reserve(store, extent, "bkt/x/r1")
    await put(store, "k", 7, candidates=("b2",))  # the new write lands on the target backend
    outcome = await store.record_replica(extent, reservation, 2, (), NOW)
    assert outcome.reason == "stale"
    assert outcome.cleanup is not None and outcome.cleanup.storage_key == "bkt/x/r1"  # its own key only
    record = await store.get_object("bkt", "k")
    assert record is not None and [loc.backend for loc in record.locations] == ["b2"]
    assert record.size == 7
    due = await store.due_cleanups(NOW, 10)
    assert ("b2", "bkt/x/r1") in {(item.backend, item.storage_key) for item in due}


@pytest_twisted.ensureDeferred
async def test_reserve_reports_satisfied_stale_and_no_target(store: MetadataStore) -> None:
    await _setup(store, {"b1": 0, "b2": 5})
    await put(store, "k", 10)
    [extent] = await store.under_replicated(2, 10)
    outcome = await store.reserve_replica(extent, 2, (), ("b1", "b2"), "pack", "bkt/x/r", NOW, 60.0)
    assert outcome.reason == "no_target"  # b1 holds it, b2 has no room
    assert (await store.reserve_replica(extent, 1, (), ("b2",), "pack", "bkt/x/r", NOW, 60.0)).reason == "satisfied"
    await store.delete_object("bkt", "k", NOW)
    assert (await store.reserve_replica(extent, 2, (), ("b2",), "pack", "bkt/x/r", NOW, 60.0)).reason == "stale"


@pytest_twisted.ensureDeferred
async def test_uncounted_backends_need_a_replacement_and_two_racing_copies_make_one(store: MetadataStore) -> None:
    await _setup(store)
    await put(store, "k", 10)
    [extent] = await store.under_replicated(2, 10)
    first = await _reserve(store, extent, "bkt/x/r1", candidates=("b2",))
    assert (await store.record_replica(extent, first, 2, (), NOW)).reason == "ok"
    assert await store.under_replicated(2, 10) == []
    # b2's breaker has been open too long: its copy does not count.
    [again] = await store.under_replicated(2, 10, uncounted=("b2",))
    assert {c.backend for c in again.copies} == {"b1", "b2"}
    a = await _reserve(store, again, "bkt/x/r2", candidates=("b3",), uncounted=("b2",))
    b = await _reserve(store, again, "bkt/x/r3", candidates=("b3",), uncounted=("b2",))
    assert (await store.record_replica(again, a, 2, ("b2",), NOW)).reason == "ok"
    late = await store.record_replica(again, b, 2, ("b2",), NOW)
    assert late.reason in {"satisfied", "stale"} and late.cleanup is not None
    assert late.cleanup.storage_key == "bkt/x/r3"
    record = await store.get_object("bkt", "k")
    assert record is not None and sorted(loc.backend for loc in record.locations) == ["b1", "b2", "b3"]
    # Quota exact: b3 holds one used copy and one orphan waiting for deletion.
    assert counters(await quota(store, "b3")) == (10, 10, 0, 1)


@pytest_twisted.ensureDeferred
async def test_a_replica_whose_row_the_cleanup_queue_took_is_not_recorded(store: MetadataStore) -> None:
    await _setup(store)
    await put(store, "k", 10)
    [extent] = await store.under_replicated(2, 10)
    reservation = await _reserve(store, extent, "bkt/x/r1")
    claimed = await store.claim_cleanups(NOW + 7200, 10, "other", 300.0)  # past its hold
    assert [c.id for c in claimed] == [reservation.cleanup_id]
    outcome = await store.record_replica(extent, reservation, 2, (), NOW)
    assert outcome.reason == "expired" and outcome.cleanup is None
    record = await store.get_object("bkt", "k")
    assert record is not None and [loc.backend for loc in record.locations] == ["b1"]


@pytest_twisted.ensureDeferred
async def test_a_missing_copy_is_forgotten_only_while_another_remains(store: MetadataStore) -> None:
    await _setup(store)
    await put(store, "k", 10)
    [extent] = await store.under_replicated(2, 10)
    only = extent.copies[0]
    assert not await store.drop_missing_copy(extent, only.backend, only.storage_key, NOW)  # the last copy
    reservation = await _reserve(store, extent, "bkt/x/r1")
    assert (await store.record_replica(extent, reservation, 2, (), NOW)).reason == "ok"
    assert await store.drop_missing_copy(extent, only.backend, only.storage_key, NOW)
    record = await store.get_object("bkt", "k")
    assert record is not None and [loc.backend for loc in record.locations] == ["b2"]
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)
    assert not await store.drop_missing_copy(extent, only.backend, only.storage_key, NOW)  # gone already


@pytest_twisted.ensureDeferred
async def test_an_abandoned_replica_becomes_due_after_the_grace_never_later_than_its_hold(store: MetadataStore) -> None:
    await _setup(store)
    await put(store, "k", 10)
    [extent] = await store.under_replicated(2, 10)
    reservation = await _reserve(store, extent, "bkt/x/r1")
    assert await store.due_cleanups(NOW + 59, 10) == []
    await store.abandon_replica(reservation.cleanup_id, NOW + 60)
    due = await store.due_cleanups(NOW + 60, 10)
    assert [(d.backend, d.storage_key, d.reason) for d in due] == [("b2", "bkt/x/r1", "replication_orphan")]
    assert counters(await quota(store, "b2")) == (0, 10, 0, 0)  # still counted until deleted


@pytest_twisted.ensureDeferred
async def test_fan_out_companions_are_committed_with_the_write_and_a_late_one_by_compare_and_swap(
    store: MetadataStore,
) -> None:
    await _setup(store)
    await put(store, "k", 4)  # the old version, displaced by the fan-out write below
    new = intent("k", 10)
    primary = await store.reserve(new, ("b1", "b2", "b3"), "pack", NOW)
    assert primary is not None and primary.backend == "b1"
    early = await store.reserve_copy(("b2", "b3"), "pack", new.storage_key + ".r1", 10, NOW, 3600.0)
    late = await store.reserve_copy(("b3",), "pack", new.storage_key + ".r2", 10, NOW, 3600.0)
    assert early is not None and late is not None and (early.backend, late.backend) == ("b2", "b3")
    assert counters(await quota(store, "b2")) == (0, 10, 0, 0)  # held as orphaned bytes
    assert await store.reserve_copy((), "pack", "bkt/none", 10, NOW, 3600.0) is None
    displaced = await store.commit_object(primary, record_for(primary, "k", 10), NOW, companions=[early])
    assert [(item.backend, item.size) for item in displaced] == [("b1", 4)]
    record = await store.get_object("bkt", "k")
    assert record is not None
    assert sorted(loc.backend for loc in record.locations) == ["b1", "b2"]  # both, atomically
    assert counters(await quota(store, "b2")) == (10, 0, 0, 1)
    extent = UnderReplicated("bkt", "k", new.write_id, 0, 10, "", ())
    assert (await store.record_replica(extent, late, 3, (), NOW)).reason == "ok"
    assert counters(await quota(store, "b3")) == (10, 0, 0, 1)
    record = await store.get_object("bkt", "k")
    assert record is not None and len(record.locations) == 3


@pytest_twisted.ensureDeferred
async def test_a_fan_out_companion_of_a_write_that_never_committed_is_refused_and_deleted(
    store: MetadataStore,
) -> None:
    await _setup(store)
    new = intent("k", 10)
    held = await store.reserve_copy(("b2",), "pack", new.storage_key + ".r1", 10, NOW, 3600.0)
    assert held is not None
    extent = UnderReplicated("bkt", "k", new.write_id, 0, 10, "", ())
    outcome = await store.record_replica(extent, held, 2, (), NOW)
    assert outcome.reason == "stale"
    assert outcome.cleanup is not None and outcome.cleanup.storage_key == new.storage_key + ".r1"
    assert await store.get_object("bkt", "k") is None
