"""The MetadataStore contract, the location journal's reads (``s3orch.core.journal``): every
engine passes these.  ``objects_since`` pages by ``last_modified`` and spares the extents of
writes the caller knows; ``keys_after`` walks all keys in key order; ``objects_of`` reads
records by key."""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import MetadataStore
from tests.store.test_contract import BUCKET, NOW, put


@pytest_twisted.ensureDeferred
async def test_objects_since_pages_by_last_modified_and_skips_known_writes(store: MetadataStore) -> None:
    first, _ = await put(store, "a", 10, last_modified=NOW)
    second, _ = await put(store, "b", 20, last_modified=NOW + 5)
    third, _ = await put(store, "c", 30, last_modified=NOW + 10)
    records, rows = await store.objects_since(NOW + 1, 10)
    assert [r.key for r in records] == ["b", "c"]
    assert [(b, k, w) for b, k, w, _ in rows] == [(BUCKET, "b", second.write_id), (BUCKET, "c", third.write_id)]
    assert [m for *_, m in rows] == [NOW + 5, NOW + 10]
    b = records[0]
    assert b.size == 20 and [(loc.backend, loc.storage_key) for loc in b.locations] == [("b1", second.storage_key)]
    records, rows = await store.objects_since(NOW, 2, {(BUCKET, "a", first.write_id)})
    assert [r.key for r in records] == ["b"] and [k for _, k, _, _ in rows] == ["a", "b"]


@pytest_twisted.ensureDeferred
async def test_keys_after_walks_every_key_in_order_and_objects_of_reads_those_that_exist(
    store: MetadataStore,
) -> None:
    made = {key: (await put(store, key, 1, bucket=bucket))[0].write_id
            for bucket, key in (("zz", "x"), (BUCKET, "k2"), (BUCKET, "k1"))}
    assert await store.keys_after("", "", 2) == [(BUCKET, "k1", made["k1"]), (BUCKET, "k2", made["k2"])]
    assert await store.keys_after(BUCKET, "k2", 10) == [("zz", "x", made["x"])]
    assert await store.keys_after("zz", "x", 10) == []
    await store.delete_object(BUCKET, "k1", NOW)
    got = await store.objects_of([(BUCKET, "k1"), ("zz", "x")])
    assert [(r.bucket, r.key, r.write_id) for r in got] == [("zz", "x", made["x"])]
