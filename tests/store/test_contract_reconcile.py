"""The reconcile/import part of the MetadataStore contract (s3orch.store.txn.reconcile), on every engine."""

from __future__ import annotations

import uuid

import pytest_twisted

from s3orch.store.interface import MetadataStore
from s3orch.store.records import ImportCandidate
from tests.store.test_contract import NOW, counters, intent, put, quota

GRACE = 600.0
LATER = NOW + GRACE + 1


def _ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


@pytest_twisted.ensureDeferred
async def test_stored_copies_page_in_byte_order_of_the_storage_key(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0, "b2": 0}, NOW)
    for key in ("k3", "k1", "k2", "k0"):
        await put(store, key, 5)
    await put(store, "elsewhere", 5, candidates=("b2",))
    # Upper case sorts before lower case by bytes, whatever the database's collation says.
    await store.import_objects(
        "b1", [ImportCandidate("bkt", "upper", "Zz/upper", 3, "e", NOW)], _ids(1), NOW
    )
    first = await store.stored_copies("b1", None, 3)
    rest = await store.stored_copies("b1", first[-1].storage_key, 3)
    keys = [c.storage_key for c in first + rest]
    assert keys == sorted(keys, key=lambda k: k.encode()) and len(keys) == 5 and len(rest) == 2
    assert keys[0] == "Zz/upper"
    assert {c.key for c in first + rest} == {"k0", "k1", "k2", "k3", "upper"}
    assert await store.stored_copies("b1", keys[-1], 3) == []
    assert [c.key for c in await store.stored_copies("b2", None, 10)] == ["elsewhere"]


@pytest_twisted.ensureDeferred
async def test_queue_orphans_queues_only_what_nothing_references(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0}, NOW)
    res, _ = await put(store, "live", 10)
    live_key = (await store.get_object("bkt", "live")).locations[0].storage_key  # type: ignore[union-attr]
    pending = await store.reserve(intent("inflight", 7), ("b1",), "pack", NOW)
    assert pending is not None
    # An overwrite queues the old copy for cleanup: reconcile must never bring it back.
    _, displaced = await put(store, "old", 4)
    _, displaced = await put(store, "old", 6)
    [queued_before] = displaced
    found = [
        (live_key, 10), (pending.storage_key, 7), (queued_before.storage_key, 4), ("bkt/stray/1", 9),
    ]
    decisions, items = await store.queue_orphans("b1", found, NOW, NOW + GRACE)
    assert decisions == {
        live_key: "referenced",
        pending.storage_key: "in_flight",
        queued_before.storage_key: "pending_cleanup",
        "bkt/stray/1": "queued",
    }
    assert [(i.storage_key, i.size, i.reason) for i in items] == [("bkt/stray/1", 9, "reconcile_orphan")]
    used, orphan, reserved, _ = counters(await quota(store, "b1"))
    assert (used, orphan, reserved) == (16, 4 + 9, 7)
    assert [i.storage_key for i in await store.due_cleanups(NOW + GRACE - 1, 10) if i.reason == "reconcile_orphan"] == []
    assert "bkt/stray/1" in [i.storage_key for i in await store.due_cleanups(NOW + GRACE, 10)]
    again, more = await store.queue_orphans("b1", [("bkt/stray/1", 9)], NOW, NOW + GRACE)
    assert again == {"bkt/stray/1": "pending_cleanup"} and more == []  # counted once
    assert res.write_id


@pytest_twisted.ensureDeferred
async def test_a_lost_copy_with_another_copy_left_is_forgotten_and_its_quota_released(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0, "b2": 0}, NOW)
    await put(store, "k", 10)
    [extent] = await store.under_replicated(2, 10)
    outcome = await store.reserve_replica(extent, 2, (), ("b2",), "pack", "bkt/k/replica", NOW, 3600.0)
    assert outcome.reservation is not None
    assert (await store.record_replica(extent, outcome.reservation, 2, (), NOW)).reason == "ok"
    [copy] = await store.stored_copies("b2", None, 10)
    assert (await store.forget_lost_copy("b2", copy, NOW + 10, GRACE)).outcome == "kept"  # too young
    lost = await store.forget_lost_copy("b2", copy, LATER, GRACE)
    assert (lost.outcome, lost.size, lost.cleanups) == ("removed", 10, ())
    record = await store.get_object("bkt", "k")
    assert record is not None and [loc.backend for loc in record.locations] == ["b1"]
    assert counters(await quota(store, "b2")) == (0, 0, 0, 0)
    assert (await store.forget_lost_copy("b2", copy, LATER, GRACE)).outcome == "kept"  # gone already


@pytest_twisted.ensureDeferred
async def test_the_last_copy_lost_deletes_the_object_but_not_a_newer_write(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0}, NOW)
    await put(store, "gone", 10)
    await put(store, "rewritten", 3)
    [gone, rewritten] = sorted(await store.stored_copies("b1", None, 10), key=lambda c: c.key)
    await put(store, "rewritten", 4)  # a newer write: the old copy is no longer the object's
    assert (await store.forget_lost_copy("b1", rewritten, LATER, GRACE)).outcome == "kept"
    pending = await store.reserve(intent("gone", 1), ("b1",), "pack", NOW)
    assert pending is not None
    assert (await store.forget_lost_copy("b1", gone, LATER, GRACE)).outcome == "kept"  # a write in flight
    await store.release(pending.write_id, NOW)
    lost = await store.forget_lost_copy("b1", gone, LATER, GRACE)
    assert (lost.outcome, lost.size, lost.cleanups) == ("lost", 10, ())
    assert await store.get_object("bkt", "gone") is None
    assert await store.get_object("bkt", "rewritten") is not None
    used, orphan, _, objects = counters(await quota(store, "b1"))
    assert (used, objects) == (4, 1) and orphan == 3  # the overwritten copy waits for its cleanup


@pytest_twisted.ensureDeferred
async def test_import_adopts_in_place_counts_quota_and_never_overwrites_or_repeats(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0}, NOW)
    await put(store, "mine", 10)
    candidates = [
        ImportCandidate("bkt", "a.txt", "bkt/a.txt", 5, "etag-a", NOW - 100),
        ImportCandidate("bkt", "mine", "bkt/mine", 7, "etag-m", NOW - 100),
        ImportCandidate("bkt", "b.txt", "b.txt", 6, "etag-b", NOW - 50),
    ]
    dry = await store.import_objects("b1", candidates, _ids(3), NOW, dry_run=True)
    assert dry == ["imported", "exists", "imported"]
    assert await store.get_object("bkt", "a.txt") is None and counters(await quota(store, "b1"))[0] == 10
    assert await store.import_objects("b1", candidates, _ids(3), NOW) == ["imported", "exists", "imported"]
    record = await store.get_object("bkt", "a.txt")
    assert record is not None
    assert (record.size, record.etag, record.last_modified) == (5, "etag-a", NOW - 100)
    assert [(loc.backend, loc.storage_key, loc.size) for loc in record.locations] == [("b1", "bkt/a.txt", 5)]
    mine = await store.get_object("bkt", "mine")
    assert mine is not None and mine.size == 10  # s3orch's own object is untouched
    assert counters(await quota(store, "b1")) == (21, 0, 0, 3)
    assert await store.import_objects("b1", candidates, _ids(3), NOW) == ["referenced", "exists", "referenced"]
    assert counters(await quota(store, "b1")) == (21, 0, 0, 3)
    twice = [ImportCandidate("bkt", "c", "x/c", 1, "e", NOW), ImportCandidate("bkt", "c", "y/c", 1, "e", NOW)]
    assert await store.import_objects("b1", twice, _ids(2), NOW) == ["imported", "exists"]
