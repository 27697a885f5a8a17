"""The stored-form passes' part of the MetadataStore contract (s3orch.store.txn.crypto), on every
engine: paging objects by compression state and size, and the compare-and-swap of an object's
stored bytes with its quota delta and the old copies queued."""

from __future__ import annotations

from dataclasses import replace

import pytest_twisted

from s3orch.store.interface import Location, MetadataStore
from tests.store.test_contract import BUCKET, NOW, counters, put, quota
from tests.store.test_contract_replicas import _setup


@pytest_twisted.ensureDeferred
async def test_objects_page_by_compression_state_and_client_size(store: MetadataStore) -> None:
    await _setup(store)
    await put(store, "a", 10)
    await put(store, "b", 5000)
    await put(store, "c", 5000, compression_chunk_size=16384)
    await put(store, "d", 6000)
    assert await store.objects_by_compression(False, 4096, None, 10) == [(BUCKET, "b"), (BUCKET, "d")]
    assert await store.objects_by_compression(False, 0, None, 1) == [(BUCKET, "a")]
    assert await store.objects_by_compression(False, 0, (BUCKET, "a"), 10) == [(BUCKET, "b"), (BUCKET, "d")]
    assert await store.objects_by_compression(True, 0, None, 10) == [(BUCKET, "c")]
    assert await store.objects_by_compression(True, 0, (BUCKET, "c"), 10) == []


@pytest_twisted.ensureDeferred
async def test_a_swap_to_compressed_bytes_moves_quota_by_the_delta_and_queues_the_old_copy(
    store: MetadataStore,
) -> None:
    await _setup(store)
    await put(store, "b", 5000)
    record = await store.get_object(BUCKET, "b")
    assert record is not None
    used = (await quota(store, "b1")).bytes_used
    packed = replace(record, compression_chunk_size=1024, locations=(Location("b1", "bkt/b/packed", 1200),))
    items = await store.swap_stored_bytes(packed, record.write_id, NOW)
    assert items is not None and [(i.backend, i.size) for i in items] == [("b1", 5000)]
    assert counters(await quota(store, "b1"))[:2] == (used - 5000 + 1200, 5000)
    found = await store.get_object(BUCKET, "b")
    assert found is not None and found.compressed and found.size == 5000
    assert found.locations == (Location("b1", "bkt/b/packed", 1200),)
    assert await store.objects_by_compression(True, 0, None, 10) == [(BUCKET, "b")]
    assert await store.swap_stored_bytes(packed, "another-write", NOW) is None  # not the current write
