"""The integrity part of the MetadataStore contract (s3orch.store.txn.integrity), on every engine:
what each copy must hash to, least recently verified first, dropping a corrupt copy (never the
last, never of a newer write) with its bytes queued and the quota settled, the SHA-256 backfill."""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import MetadataStore
from tests.store.test_contract import NOW, counters, put, quota
from tests.store.test_contract_replicas import _reserve, _setup


async def _two_copies(store: MetadataStore, key: str, **extra: object) -> None:
    await put(store, key, 10, **extra)
    [extent] = [e for e in await store.under_replicated(2, 100) if e.key == key]
    reservation = await _reserve(store, extent, f"bkt/{key}/replica")
    assert (await store.record_replica(extent, reservation, 2, (), NOW)).reason == "ok"


@pytest_twisted.ensureDeferred
async def test_candidates_come_never_verified_first_then_oldest_with_their_digest(store: MetadataStore) -> None:
    await _setup(store)
    await _two_copies(store, "hashed", content_hash="ab" * 32, etag="0" * 32)
    await put(store, "md5-only", 10, etag="1" * 32)
    await put(store, "native-mp", 10, etag="2" * 32 + "-3")
    copies = await store.scrub_candidates(10, NOW + 100)
    assert len(copies) == 4
    expected = {(c.key, c.backend): c.expected for c in copies}
    assert expected[("hashed", "b1")] == expected[("hashed", "b2")] == ("sha256", "ab" * 32)
    assert expected[("md5-only", "b1")] == ("md5", "1" * 32)
    assert expected[("native-mp", "b1")] is None
    assert await store.integrity_stats() == (4, None)
    hashed_b1 = [c for c in copies if (c.key, c.backend) == ("hashed", "b1")]
    await store.mark_verified(hashed_b1, NOW + 5)
    assert await store.integrity_stats() == (3, NOW + 5)
    later = await store.scrub_candidates(10, NOW + 100)
    assert [(c.key, c.backend) for c in later][-1] == ("hashed", "b1")  # verified: last
    assert later[-1].last_verified == NOW + 5
    assert all(c.last_verified is None for c in later[:-1])
    assert len(await store.scrub_candidates(10, NOW + 5)) == 3  # verified at the cutoff: not due
    assert [c.backend for c in await store.copies_to_scrub("bkt", "hashed")] == ["b1", "b2"]
    assert await store.copies_to_scrub("bkt", "nothing") == []


@pytest_twisted.ensureDeferred
async def test_a_corrupt_copy_is_dropped_only_while_another_remains_and_the_write_is_current(
    store: MetadataStore,
) -> None:
    await _setup(store)
    await _two_copies(store, "k", content_hash="cd" * 32)
    copies = await store.copies_to_scrub("bkt", "k")
    bad = [c for c in copies if c.backend == "b2"][0]
    item = await store.drop_corrupt_copy(bad, NOW)
    assert item is not None and (item.backend, item.storage_key, item.reason) == ("b2", bad.storage_key, "integrity_failed")
    assert counters(await quota(store, "b2")) == (0, 10, 0, 0)  # used -> orphan until the delete
    assert [c.backend for c in await store.copies_to_scrub("bkt", "k")] == ["b1"]
    last = (await store.copies_to_scrub("bkt", "k"))[0]
    assert await store.drop_corrupt_copy(last, NOW) is None  # never the last copy
    await _two_copies(store, "k2")
    stale = [c for c in await store.copies_to_scrub("bkt", "k2") if c.backend == "b1"][0]
    await put(store, "k2", 12)  # overwritten: the old write's copy is not this version's
    assert await store.drop_corrupt_copy(stale, NOW) is None


@pytest_twisted.ensureDeferred
async def test_the_backfill_pages_unhashed_single_extent_objects_and_sets_each_once(store: MetadataStore) -> None:
    await _setup(store)
    for key in ("a", "b", "c"):
        await put(store, key, 10)
    await put(store, "hashed", 10, content_hash="ef" * 32)
    copies, after = await store.unhashed_objects(None, 2)
    assert [c.key for c in copies] == ["a", "b"] and after == ("bkt", "b")
    rest, done = await store.unhashed_objects(after, 2)
    assert [c.key for c in rest] == ["c"] and done is None
    write_id = copies[0].write_id
    assert await store.set_content_hash("bkt", "a", write_id, "01" * 32)
    assert not await store.set_content_hash("bkt", "a", write_id, "02" * 32)  # already set
    assert not await store.set_content_hash("bkt", "b", "another-write", "03" * 32)
    found = await store.get_object("bkt", "a")
    assert found is not None and found.content_hash == "01" * 32
    remaining, _ = await store.unhashed_objects(None, 10)
    assert [c.key for c in remaining] == ["b", "c"]
