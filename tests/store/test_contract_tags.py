"""The MetadataStore contract, object tags: every engine keeps a key's tag set with its current
version, replaces it in place (the version's identity unchanged), clears it with an empty set,
answers False for a missing key, and never carries a set over to an overwrite or a new key."""

from __future__ import annotations

import pytest_twisted

from s3orch.s3.tagging import stored_tags
from s3orch.store.interface import MetadataStore
from tests.store.test_contract import BUCKET, NOW, put

DAY = 86400.0


@pytest_twisted.ensureDeferred
async def test_tags_are_replaced_in_place_and_cleared(store: MetadataStore) -> None:
    await put(store, "k", 5, headers={"cache-control": "no-cache"})
    before = await store.get_object(BUCKET, "k")
    assert before is not None and stored_tags(before.headers) == ()
    assert await store.set_object_tags(BUCKET, "k", "a=1&b=two%20words") is True
    after = await store.get_object(BUCKET, "k")
    assert after is not None
    assert stored_tags(after.headers) == (("a", "1"), ("b", "two words"))
    assert after.headers["cache-control"] == "no-cache"  # the other stored headers are kept
    assert (after.write_id, after.etag, after.last_modified) == (before.write_id, before.etag, before.last_modified)
    assert await store.set_object_tags(BUCKET, "k", "") is True
    cleared = await store.get_object(BUCKET, "k")
    assert cleared is not None and stored_tags(cleared.headers) == () and "x-amz-tagging" not in cleared.headers


@pytest_twisted.ensureDeferred
async def test_a_missing_key_has_no_tags_to_set_and_an_overwrite_starts_without_them(store: MetadataStore) -> None:
    assert await store.set_object_tags(BUCKET, "absent", "a=1") is False
    assert await store.get_object(BUCKET, "absent") is None
    await put(store, "k", 5)
    assert await store.set_object_tags(BUCKET, "k", "a=1")
    await put(store, "k", 6, now=NOW + DAY)
    found = await store.get_object(BUCKET, "k")
    assert found is not None and found.size == 6 and stored_tags(found.headers) == ()


@pytest_twisted.ensureDeferred
async def test_expired_objects_carry_their_tag_sets(store: MetadataStore) -> None:
    await put(store, "logs/a", 1, now=NOW - 2 * DAY)
    await put(store, "logs/b", 1, now=NOW - 2 * DAY)
    assert await store.set_object_tags(BUCKET, "logs/b", "keep=no")
    page = await store.expired_objects(f"{BUCKET}/logs/", NOW - DAY, None, 10)
    assert [(o.key, o.tags) for o in page] == [("logs/a", ()), ("logs/b", (("keep", "no"),))]
