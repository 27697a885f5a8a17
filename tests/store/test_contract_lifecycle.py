"""The MetadataStore contract, lifecycle expiration: every engine finds and deletes expired keys alike.

The prefix is matched against the internal key ``{bucket}/{key}`` (s3-orchestrator's rule),
age is the commit time of the key's current version, pages resume after their last key, and
the conditional delete never removes a version other than the one found (also when it races
an overwrite committed by another instance, on PostgreSQL).
"""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import MetadataStore, OutboxEvent
from tests.store.conftest import StoreFactory
from tests.store.test_contract import BUCKET, NOW, counters, intent, put, quota, record_for
from tests.store.test_postgres import gather, stores

DAY = 86400.0


async def expired(
    store: MetadataStore, prefix: str, before: float = NOW + 1, limit: int = 100
) -> list[tuple[str, str]]:
    """Every expired (bucket, key) under ``prefix``, read page by page."""
    out: list[tuple[str, str]] = []
    after: tuple[str, str] | None = None
    while True:
        page = await store.expired_objects(prefix, before, after, limit)
        out += [(o.bucket, o.key) for o in page]
        if len(page) < limit:
            return out
        after = (page[-1].bucket, page[-1].key)


@pytest_twisted.ensureDeferred
async def test_the_prefix_is_matched_against_bucket_slash_key(store: MetadataStore) -> None:
    for bucket, key in [("bkt", "tmp/a"), ("bkt", "tmp/b/c"), ("bkt", "tmpx"), ("bkt", "keep"),
                        ("other", "tmp/a"), ("tmp", "x"), ("tmpfiles", "y"), ("bk", "tmp/z")]:
        await put(store, key, 1, bucket=bucket)
    assert await expired(store, "bkt/tmp/") == [("bkt", "tmp/a"), ("bkt", "tmp/b/c")]
    assert await expired(store, "bkt/tmp") == [("bkt", "tmp/a"), ("bkt", "tmp/b/c"), ("bkt", "tmpx")]
    # a rule written as s3-orchestrator's README shows ("tmp/") names the bucket "tmp"
    assert await expired(store, "tmp/") == [("tmp", "x")]
    # without a slash: every key of every bucket whose name starts with it
    assert await expired(store, "tmp") == [("tmp", "x"), ("tmpfiles", "y")]
    assert await expired(store, "bk") == [("bk", "tmp/z"), ("bkt", "keep"), ("bkt", "tmp/a"),
                                          ("bkt", "tmp/b/c"), ("bkt", "tmpx")]
    assert await expired(store, "bkt/") == [("bkt", "keep"), ("bkt", "tmp/a"), ("bkt", "tmp/b/c"), ("bkt", "tmpx")]
    assert await expired(store, "nothing/") == []


@pytest_twisted.ensureDeferred
async def test_only_versions_committed_before_the_cutoff_expire_and_carry_their_write(store: MetadataStore) -> None:
    old, _ = await put(store, "logs/old", 5, now=NOW - 8 * DAY)
    await put(store, "logs/new", 7, now=NOW - 6 * DAY)
    await put(store, "logs/renewed", 3, now=NOW - 9 * DAY)
    await put(store, "logs/renewed", 4, now=NOW - DAY)  # an overwrite makes the key young again
    page = await store.expired_objects(f"{BUCKET}/logs/", NOW - 7 * DAY, None, 10)
    assert [(o.key, o.write_id, o.size, o.created_at) for o in page] == [
        ("logs/old", old.write_id, 5, NOW - 8 * DAY)
    ]
    assert [o.key for o in await store.expired_objects(f"{BUCKET}/logs/", NOW, None, 10)] == [
        "logs/new", "logs/old", "logs/renewed",
    ]


@pytest_twisted.ensureDeferred
async def test_pages_are_bounded_and_resume_after_the_last_key_across_buckets(store: MetadataStore) -> None:
    keys = [(b, f"k{i:02d}") for b in ("a1", "a2") for i in range(7)]
    for bucket, key in keys:
        await put(store, key, 1, bucket=bucket)
    first = await store.expired_objects("a", NOW + 1, None, 5)
    assert [(o.bucket, o.key) for o in first] == keys[:5]
    assert await expired(store, "a", limit=5) == keys
    assert await expired(store, "a", limit=7) == keys
    assert await store.expired_objects("a", NOW + 1, None, 0) == []


@pytest_twisted.ensureDeferred
async def test_conditional_delete_removes_only_the_write_it_names(store: MetadataStore) -> None:
    first, _ = await put(store, "tmp/k", 10, now=NOW - 8 * DAY)
    newer, _ = await put(store, "tmp/k", 20, now=NOW - 1)  # overwritten after the scan
    hook = OutboxEvent("http://hook/a", "evt_1", "lifecycle.delete", "tmp/k", "{}")
    assert await store.delete_object_if(BUCKET, "tmp/k", first.write_id, NOW, events=[hook]) is None
    record = await store.get_object(BUCKET, "tmp/k")
    assert record is not None and record.write_id == newer.write_id
    assert await store.due_events(NOW + 10**6, 10) == []  # no event for a delete that did not happen
    assert counters(await quota(store, "b1")) == (20, 10, 0, 1)  # the overwrite's displaced copy
    items = await store.delete_object_if(BUCKET, "tmp/k", newer.write_id, NOW, events=[hook])
    assert items is not None and [(i.storage_key, i.size, i.reason) for i in items] == [
        (newer.storage_key, 20, "delete")
    ]
    assert await store.get_object(BUCKET, "tmp/k") is None
    assert counters(await quota(store, "b1")) == (0, 30, 0, 0)  # both copies await their backend delete
    assert [e.event_type for e in await store.due_events(NOW + 10**6, 10)] == ["lifecycle.delete"]
    assert await store.delete_object_if(BUCKET, "tmp/k", newer.write_id, NOW) is None  # gone: nothing


@pytest_twisted.ensureDeferred
async def test_an_expiry_racing_an_overwrite_on_two_instances_never_deletes_the_overwrite(
    pg_factory: StoreFactory,
) -> None:
    """PostgreSQL, two instances: one expires the old version while the other commits a new one,
    again and again; whichever wins the key lock, the new version is what remains, quota exact."""
    async with stores(pg_factory, 2) as (a, b):
        await a.sync_quota_limits({"b1": 10**6}, NOW)
        for round_ in range(8):
            key = f"tmp/race{round_}"
            old, _ = await put(a, key, 10, now=NOW - 8 * DAY)
            res = await b.reserve(intent(key, 20), ["b1"], "pack", NOW)
            assert res is not None
            expired_items, displaced = await gather(
                a.delete_object_if(BUCKET, key, old.write_id, NOW),
                b.commit_object(res, record_for(res, key, 20), NOW),
            )
            current = await a.get_object(BUCKET, key)
            assert current is not None and current.write_id == res.write_id
            # the old copy is queued exactly once: by the expiry or by the overwrite
            queued = [i.storage_key for i in (expired_items or []) + displaced]
            assert queued == [old.storage_key]
        row = await quota(a, "b1")
        assert counters(row) == (8 * 20, 8 * 10, 0, 8)
