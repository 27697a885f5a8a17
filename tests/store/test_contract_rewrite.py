"""The stored-form passes' part of the MetadataStore contract (s3orch.store.txn.crypto), on every
engine: paging objects by compression state and size, and the compare-and-swap of an object's
stored bytes with its quota delta and the old copies queued, for single- and multi-extent objects."""

from __future__ import annotations

from dataclasses import replace

import pytest_twisted

from s3orch.store.interface import Location, MetadataStore
from tests.store.test_contract import BUCKET, NOW, counters, put, quota
from tests.store.test_contract_multipart import B, add_part, opened, record
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


@pytest_twisted.ensureDeferred
async def test_a_swap_of_a_multi_extent_object_replaces_every_extent_in_one_transaction(
    store: MetadataStore,
) -> None:
    """Every extent's copies and chunk size change together, the object row's columns with them;
    bytes_used moves by the net delta per backend; offsets, client sizes and ETags stay."""
    await store.sync_quota_limits({"b1": 100_000, "b2": 100_000}, NOW)
    upload = await opened(store, "mp")
    await add_part(store, upload, 1, 3000, "a" * 32, ("b1",))
    await add_part(store, upload, 2, 2000, "b" * 32, ("b2",))
    await store.complete_upload(B, "mp", upload.upload_id, [(1, "a" * 32), (2, "b" * 32)],
                                record(upload, (3000, 2000)), NOW)
    current = await store.get_object(B, "mp")
    assert current is not None and len(current.parts) == 2
    first, second = current.parts
    new_first = replace(first, locations=(Location("b1", "bkt/h/mp/00001-new", 400),), compression_chunk_size=1024)
    new_second = replace(second, locations=(Location("b2", "bkt/h/mp/00002-new", 2100),))
    swapped = replace(current, parts=(new_first, new_second), compression_chunk_size=1024)
    assert await store.swap_stored_bytes(swapped, "another-write", NOW) is None  # not the current write
    assert await store.swap_stored_bytes(replace(swapped, parts=(new_first,)), current.write_id, NOW) is None
    items = await store.swap_stored_bytes(swapped, current.write_id, NOW)
    assert items is not None and sorted((i.backend, i.size) for i in items) == [("b1", 3000), ("b2", 2000)]
    assert counters(await quota(store, "b1"))[:2] == (400, 3000)
    assert counters(await quota(store, "b2"))[:2] == (2100, 2000)
    found = await store.get_object(B, "mp")
    assert found is not None and found.compressed and found.size == 5000 and found.etag == current.etag
    assert found.parts == (new_first, new_second)
    assert [(p.offset, p.size, p.etag) for p in found.parts] == [(0, 3000, "a" * 32), (3000, 2000, "b" * 32)]
    page = await store.list_objects(B, "mp", "", "", 10)
    assert [(e.key, e.size) for e in page.entries] == [("mp", 5000)]
    assert await store.objects_by_compression(True, 0, None, 10) == [(B, "mp")]
    # Back to uncompressed: the object row's and the extents' chunk sizes go.
    plain = replace(found, compression_chunk_size=None, parts=(
        replace(new_first, locations=(Location("b1", "bkt/h/mp/00001-raw", 3000),), compression_chunk_size=None),
        replace(new_second, locations=(Location("b2", "bkt/h/mp/00002-raw", 2000),)),
    ))
    assert await store.swap_stored_bytes(plain, current.write_id, NOW) is not None
    back = await store.get_object(B, "mp")
    assert back is not None and not back.compressed and back.size == 5000 and back.parts == plain.parts
    assert counters(await quota(store, "b1"))[:2] == (3000, 3400)
