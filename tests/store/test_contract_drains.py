"""The drain part of the MetadataStore contract (s3orch.store.txn.drains), on every engine."""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import MetadataStore, MultipartUpload
from tests.store.test_contract import NOW, counters, put, quota
from tests.store.test_contract_replicas import _reserve


@pytest_twisted.ensureDeferred
async def test_drain_state_is_persisted_started_once_finished_and_cancelled(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0, "b2": 0}, NOW)
    assert await store.drains() == []
    assert await store.start_drain("b1", NOW) is True
    assert await store.start_drain("b1", NOW + 1) is False  # already active
    await store.drain_moved("b1", 2, 30)
    [state] = await store.drains()
    assert (state.backend, state.state, state.started_at) == ("b1", "active", NOW)
    assert (state.objects_moved, state.bytes_moved, state.updated_at) == (2, 30, NOW)
    assert await store.finish_drain("b1", "completed", None, NOW + 5) is True
    assert await store.finish_drain("b1", "failed", "late", NOW + 6) is False  # completed stays
    [state] = await store.drains()
    assert state.state == "completed" and state.updated_at == NOW + 5
    assert await store.start_drain("b1", NOW + 7) is True  # a completed drain may start again
    assert await store.finish_drain("b1", "failed", "stuck", NOW + 8) is True
    assert await store.start_drain("b1", NOW + 9) is False  # a failed one is still draining
    assert (await store.drains())[0].error == "stuck"
    assert (await store.drains())[0].objects_moved == 0
    assert await store.cancel_drain("b1") is True
    assert await store.cancel_drain("b1") is False
    assert await store.drains() == []


@pytest_twisted.ensureDeferred
async def test_backend_extents_page_and_holdings_count(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0, "b2": 0}, NOW)
    for key, size in (("c", 3), ("a", 1), ("b", 2)):
        await put(store, key, size)
    await put(store, "z", 9, candidates=("b2",))
    assert await store.backend_holdings("b1") == (3, 6)
    page = await store.backend_extents("b1", 2)
    assert [(e.key, e.size) for e in page] == [("a", 1), ("b", 2)]
    rest = await store.backend_extents("b1", 2, (page[-1].bucket, page[-1].key, page[-1].part_number))
    assert [e.key for e in rest] == ["c"]
    assert await store.backend_extents("b3", 10) == []


@pytest_twisted.ensureDeferred
async def test_drop_drained_copy_only_when_another_copy_remains_and_same_write(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0, "b2": 0, "b3": 0}, NOW)
    await put(store, "k", 10)
    [extent] = await store.backend_extents("b1", 10)
    assert await store.drop_drained_copy(extent, "b1", NOW) is None  # the only copy
    reservation = await _reserve(store, extent, "bkt/x/r1")
    assert (await store.record_replica(extent, reservation, 2, (), NOW)).reason == "ok"
    [extent] = await store.backend_extents("b1", 10)
    item = await store.drop_drained_copy(extent, "b1", NOW)
    assert item is not None and item.backend == "b1" and item.size == 10 and item.reason == "drain"
    assert counters(await quota(store, "b1")) == (0, 10, 0, 0)  # used -> orphaned until deleted
    record = await store.get_object("bkt", "k")
    assert record is not None and [loc.backend for loc in record.locations] == ["b2"]
    assert await store.backend_holdings("b1") == (0, 0)
    # A stale extent (the object was overwritten) is never touched.
    await put(store, "k2", 4)
    [stale] = await store.backend_extents("b1", 10)
    await put(store, "k2", 5, candidates=("b2",))
    assert await store.drop_drained_copy(stale, "b2", NOW) is None


@pytest_twisted.ensureDeferred
async def test_backend_uploads_lists_open_uploads_with_parts_there(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0, "b2": 0}, NOW)
    assert await store.backend_uploads("b1") == []
    for upload_id in ("u1", "u2"):
        await store.create_multipart_upload(MultipartUpload(upload_id, "bkt", "k", NOW), 0, NOW)
    await store.reserve_part("bkt", "k", "u1", 1, 5, "a1", "bkt/x/u1/1", ("b1",), "pack", NOW)
    await store.reserve_part("bkt", "k", "u2", 1, 5, "a2", "bkt/x/u2/1", ("b2",), "pack", NOW)
    assert await store.backend_uploads("b1") == [("bkt", "k", "u1")]
    assert await store.backend_uploads("b2") == [("bkt", "k", "u2")]


@pytest_twisted.ensureDeferred
async def test_remove_backend_forgets_its_rows_and_objects_left_without_a_copy(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 0, "b2": 0, "b3": 0}, NOW)
    await put(store, "only", 10)  # only on b1
    await put(store, "both", 7)
    [both, _] = await store.backend_extents("b1", 10)
    assert both.key == "both"
    reservation = await _reserve(store, both, "bkt/x/r1")
    assert (await store.record_replica(both, reservation, 2, (), NOW)).reason == "ok"
    await put(store, "other", 3, candidates=("b2",))
    assert await store.start_drain("b1", NOW) is True
    assert await store.remove_backend("b1", NOW) == (-1, 0)  # refused while draining
    assert await store.cancel_drain("b1") is True
    assert await store.remove_backend("b1", NOW) == (2, 1)
    assert await store.get_object("bkt", "only") is None
    record = await store.get_object("bkt", "both")
    assert record is not None and [loc.backend for loc in record.locations] == ["b2"]
    assert "b1" not in await store.get_quotas()
    assert counters(await quota(store, "b2")) == (10, 0, 0, 2)
