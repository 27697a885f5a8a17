"""The MetadataStore contract, pending intents and their reaper: every engine passes these.

A write whose commit failed leaves its intent (and reservation); ``stale_intents``
claims old intents for one instance and ``resolve_intent`` promotes the write (the
same effect as its commit), drops it, or keeps it for another try.  Kept apart from
test_contract.py so parallel work on that file does not collide.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from s3orch.s3.conditions import WriteConditions
from s3orch.store.interface import (
    INTENT_ALREADY_RESOLVED,
    INTENT_AMBIGUOUS,
    INTENT_DROP,
    INTENT_DROPPED,
    INTENT_KEEP,
    INTENT_PROMOTE,
    INTENT_PROMOTED,
    INTENT_SUPERSEDED,
    CleanupItem,
    Intent,
    IntentNotFound,
    Location,
    MetadataStore,
    ObjectRecord,
    PendingIntent,
    Reservation,
)
from tests.store.test_contract import BUCKET, NOW, counters, put, quota, record_for

MIN_AGE = 300.0
GRACE = 300.0
LATER = NOW + MIN_AGE  # when intents reserved at NOW are stale


def described(key: str, size: int, **fields: object) -> Intent:
    """An intent recording the object row its commit will write (as the core fills it)."""
    write_id = uuid.uuid4().hex
    values: dict[str, object] = {
        "etag": "0123456789abcdef0123456789abcdef",
        "content_type": "text/plain",
        "headers": {"cache-control": "no-cache", "content-encoding": "gzip"},
        "user_metadata": {"colour": "blé", "n": "1"},
        "checksum_algorithm": "CRC32",
        "checksum_value": "AAAAAA==",
        "content_hash": "ab" * 32,
    }
    values.update(fields)
    return Intent(write_id, BUCKET, key, size, f"{BUCKET}/{key}/{write_id}", **values)  # type: ignore[arg-type]


async def reserve(
    store: MetadataStore, it: Intent, backend: str = "b1", now: float = NOW
) -> Reservation:
    res = await store.reserve(it, [backend], "pack", now)
    assert res is not None
    return res


def expected_record(it: Intent, res: Reservation, now: float) -> ObjectRecord:
    """What ``get_object`` answers after the intent is promoted at ``now``."""
    return ObjectRecord(
        bucket=it.bucket,
        key=it.key,
        write_id=it.write_id,
        size=it.size,
        etag=it.etag or "",
        last_modified=now,
        content_type=it.content_type,
        headers=it.headers,
        user_metadata=it.user_metadata,
        checksum_algorithm=it.checksum_algorithm,
        checksum_value=it.checksum_value,
        content_hash=it.content_hash,
        parts_count=it.parts_count,
        part_sizes=it.part_sizes,
        locations=(Location(res.backend, res.storage_key, res.size),),
    )


# --- claiming ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stale_intents_claims_only_old_intents_once_until_the_claim_goes_stale(
    store: MetadataStore,
) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    first = described("a", 10)
    res = await reserve(store, first)
    await reserve(store, described("b", 20), now=NOW + 10)
    assert await store.stale_intents(LATER - 1, MIN_AGE, 10, "i1", GRACE) == []  # in flight
    claimed = await store.stale_intents(LATER, MIN_AGE, 10, "i1", GRACE)
    assert claimed == [
        PendingIntent(first.write_id, BUCKET, "a", "b1", res.storage_key, 10, NOW, False, True)
    ]
    assert await store.stale_intents(LATER + 5, MIN_AGE, 10, "i2", GRACE) == []  # claimed by i1
    (second,) = await store.stale_intents(LATER + 10, MIN_AGE, 10, "i2", GRACE)
    assert second.key == "b"
    # i1 died: its claim is taken over once the grace has passed
    (again,) = await store.stale_intents(LATER + GRACE, MIN_AGE, 10, "i2", GRACE)
    assert again.write_id == first.write_id
    assert await store.count_intents() == 2
    assert await store.stale_intents(LATER + 10**6, MIN_AGE, 0, "i3", GRACE) == []


@pytest_twisted.ensureDeferred
async def test_two_instances_claiming_at_once_never_get_the_same_intent(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10**6}, NOW)
    ids = set()
    for i in range(20):
        ids.add((await reserve(store, described(f"k{i}", 1), now=NOW + i)).write_id)
    claims = await gatherResults(
        [
            Deferred.fromCoroutine(store.stale_intents(NOW + 10**4, MIN_AGE, 8, owner, GRACE))
            for owner in ("i1", "i2", "i3")
        ]
    )
    got = [p.write_id for batch in claims for p in batch]
    assert len(got) == len(set(got)) == 20 and set(got) == ids


@pytest_twisted.ensureDeferred
async def test_keep_gives_the_claim_back_behind_the_intents_never_tried(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    old = await reserve(store, described("old", 10))
    new = await reserve(store, described("new", 10), now=NOW + 1)
    (claimed,) = await store.stale_intents(LATER + 1, MIN_AGE, 1, "i1", GRACE)
    assert claimed.write_id == old.write_id  # oldest first
    resolution = await store.resolve_intent(old.write_id, INTENT_KEEP, LATER + 2)
    assert (resolution.status, resolution.cleanup) == (INTENT_AMBIGUOUS, [])
    (claimed,) = await store.stale_intents(LATER + 3, MIN_AGE, 1, "i1", GRACE)
    assert claimed.write_id == new.write_id  # a backend that keeps failing starves nobody
    await store.resolve_intent(new.write_id, INTENT_KEEP, LATER + 4)
    (claimed,) = await store.stale_intents(LATER + 5, MIN_AGE, 1, "i1", GRACE)
    assert claimed.write_id == old.write_id  # then the least recently tried
    assert counters(await quota(store, "b1")) == (0, 0, 20, 0)  # nothing else changed


# --- promote ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_promote_commits_the_write_as_its_commit_would_have(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000, "b2": 1000}, NOW)
    old, _ = await put(store, "k", 100, ("b1",))
    it = described("k", 40)
    res = await reserve(store, it, "b2", now=NOW + 1)
    # ... the commit fails (database down); later the reaper HEADs the bytes and promotes
    (claimed,) = await store.stale_intents(NOW + 1 + MIN_AGE, MIN_AGE, 10, "i1", GRACE)
    resolution = await store.resolve_intent(claimed.write_id, INTENT_PROMOTE, NOW + 400)
    assert resolution.status == INTENT_PROMOTED
    assert resolution.cleanup == [
        CleanupItem(resolution.cleanup[0].id, "b1", old.storage_key, 100, "overwrite_displaced", 0)
    ]
    assert await store.get_object(BUCKET, "k") == expected_record(it, res, NOW + 400)
    assert counters(await quota(store, "b1")) == (0, 100, 0, 0)
    assert counters(await quota(store, "b2")) == (40, 0, 0, 1)
    assert await store.count_intents() == 0
    # repeats (a retried call, another instance) change nothing
    again = await store.resolve_intent(claimed.write_id, INTENT_PROMOTE, NOW + 401)
    assert (again.status, again.cleanup) == (INTENT_ALREADY_RESOLVED, [])
    assert (await store.resolve_intent(claimed.write_id, INTENT_DROP, NOW + 402)).status == (
        INTENT_ALREADY_RESOLVED
    )
    # the write's own commit, retried late, finds it current: a no-op
    assert await store.commit_object(res, record_for(res, "k", 40), NOW + 403) == []
    assert counters(await quota(store, "b2")) == (40, 0, 0, 1)
    await store.cleanup_done([resolution.cleanup[0].id], NOW)
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_promote_keeps_multipart_shape_of_a_copied_object(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    it = described("copy", 30, etag="feedface" * 4 + "-2", parts_count=2, part_sizes=(20, 10))
    res = await reserve(store, it)
    assert (await store.resolve_intent(it.write_id, INTENT_PROMOTE, LATER)).status == INTENT_PROMOTED
    assert await store.get_object(BUCKET, "copy") == expected_record(it, res, LATER)


@pytest_twisted.ensureDeferred
async def test_an_intent_without_object_metadata_can_only_be_dropped(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    bare = Intent("w" * 32, BUCKET, "k", 10, f"{BUCKET}/k/{'w' * 32}")
    await reserve(store, bare)
    (claimed,) = await store.stale_intents(LATER, MIN_AGE, 10, "i1", GRACE)
    assert not claimed.promotable
    resolution = await store.resolve_intent(bare.write_id, INTENT_PROMOTE, LATER)
    assert resolution.status == INTENT_DROPPED and "metadata" in resolution.reason
    assert await store.get_object(BUCKET, "k") is None
    assert counters(await quota(store, "b1")) == (0, 10, 0, 0)


@pytest_twisted.ensureDeferred
async def test_promote_rechecks_the_writes_conditions(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    existing, _ = await put(store, "k", 10)
    current = await store.get_object(BUCKET, "k")
    assert current is not None
    # If-None-Match over a key that existed before the write began: never committed
    guarded = described("k", 20, conditions=WriteConditions(None, ("*",)))
    await reserve(store, guarded, now=NOW + 1)
    resolution = await store.resolve_intent(guarded.write_id, INTENT_PROMOTE, LATER + 1)
    assert resolution.status == INTENT_DROPPED and "If-None-Match" in resolution.reason
    [item] = resolution.cleanup
    assert (item.storage_key, item.size, item.reason) == (f"{BUCKET}/k/{guarded.write_id}", 20, "pending_dropped")
    # If-Match against another ETag: dropped; against the current one: promoted
    wrong = described("k", 30, conditions=WriteConditions(("not-it",), None))
    await reserve(store, wrong, now=NOW + 2)
    assert (await store.resolve_intent(wrong.write_id, INTENT_PROMOTE, LATER + 2)).status == INTENT_DROPPED
    right = described("k", 40, conditions=WriteConditions((current.etag,), None))
    await reserve(store, right, now=NOW + 3)
    assert (await store.resolve_intent(right.write_id, INTENT_PROMOTE, LATER + 3)).status == INTENT_PROMOTED
    # If-None-Match on an absent key: promoted
    fresh = described("new", 5, conditions=WriteConditions(None, ("*",)))
    await reserve(store, fresh, now=NOW + 4)
    assert (await store.resolve_intent(fresh.write_id, INTENT_PROMOTE, LATER + 4)).status == INTENT_PROMOTED
    got = await store.get_object(BUCKET, "k")
    assert got is not None and got.write_id == right.write_id
    # used: k (40) + new (5); orphaned: the two dropped uploads and the displaced original
    assert counters(await quota(store, "b1")) == (45, 20 + 30 + 10, 0, 2)
    assert existing.write_id != right.write_id
    # If-None-Match with the current ETag: dropped; with another: promoted
    etag_now = described("k", 50, conditions=WriteConditions(None, (described("x", 1).etag or "",)))
    await reserve(store, etag_now, now=NOW + 5)
    assert (await store.resolve_intent(etag_now.write_id, INTENT_PROMOTE, LATER + 5)).status == INTENT_DROPPED
    other = described("k", 60, conditions=WriteConditions(None, ("not-it",)))
    await reserve(store, other, now=NOW + 6)
    assert (await store.resolve_intent(other.write_id, INTENT_PROMOTE, LATER + 6)).status == INTENT_PROMOTED


# --- superseded -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_later_commit_supersedes_a_failed_write(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    failed = described("k", 10)
    res = await reserve(store, failed)
    newer, _ = await put(store, "k", 20, now=NOW + 1)  # reserved after, committed
    (claimed,) = await store.stale_intents(LATER, MIN_AGE, 10, "i1", GRACE)
    assert claimed.superseded
    resolution = await store.resolve_intent(failed.write_id, INTENT_PROMOTE, LATER)
    assert resolution.status == INTENT_SUPERSEDED
    assert [(i.storage_key, i.reason) for i in resolution.cleanup] == [(res.storage_key, "pending_dropped")]
    got = await store.get_object(BUCKET, "k")
    assert got is not None and got.write_id == newer.write_id
    assert counters(await quota(store, "b1")) == (20, 10, 0, 1)


@pytest_twisted.ensureDeferred
async def test_a_superseded_write_still_commits_itself(store: MetadataStore) -> None:
    """Superseding only stops promotion: two PUTs in flight still end last-commit-wins."""
    await store.sync_quota_limits({"b1": 1000}, NOW)
    slow = described("k", 10)
    res = await reserve(store, slow)
    await put(store, "k", 20, now=NOW + 1)
    assert await store.commit_object(res, record_for(res, "k", 10), NOW + 2) != []
    got = await store.get_object(BUCKET, "k")
    assert got is not None and got.write_id == slow.write_id
    assert counters(await quota(store, "b1")) == (10, 20, 0, 1)


@pytest_twisted.ensureDeferred
async def test_a_later_delete_supersedes_a_failed_write_even_of_an_absent_key(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    failed = described("k", 10)
    await reserve(store, failed)
    assert await store.delete_object(BUCKET, "k", NOW + 1) == []  # nothing to delete ...
    resolution = await store.resolve_intent(failed.write_id, INTENT_PROMOTE, LATER)
    assert resolution.status == INTENT_SUPERSEDED  # ... but the write must not come back
    assert await store.get_object(BUCKET, "k") is None
    assert counters(await quota(store, "b1")) == (0, 10, 0, 0)
    # a write begun after the delete is not superseded by it
    after = described("k", 5)
    await reserve(store, after, now=NOW + 2)
    assert (await store.resolve_intent(after.write_id, INTENT_PROMOTE, LATER + 2)).status == INTENT_PROMOTED


@pytest_twisted.ensureDeferred
async def test_of_two_failed_writes_the_newer_wins_in_either_resolution_order(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    for order in ("oldest first", "newest first"):
        key = order.replace(" ", "-")
        older, newer = described(key, 10), described(key, 20)
        await reserve(store, older, now=NOW)
        await reserve(store, newer, now=NOW + 1)
        first, second = (older, newer) if order == "oldest first" else (newer, older)
        await store.resolve_intent(first.write_id, INTENT_PROMOTE, LATER + 1)
        await store.resolve_intent(second.write_id, INTENT_PROMOTE, LATER + 2)
        got = await store.get_object(BUCKET, key)
        assert got is not None and got.write_id == newer.write_id, order
    assert counters(await quota(store, "b1")) == (40, 20, 0, 2)
    assert await store.count_intents() == 0


# --- drop ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_drop_releases_the_reservation_and_queues_the_upload(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    old, _ = await put(store, "k", 100)
    it = described("k", 70)
    res = await reserve(store, it, now=NOW + 1)
    assert counters(await quota(store, "b1")) == (100, 0, 70, 1)
    resolution = await store.resolve_intent(it.write_id, INTENT_DROP, LATER + 1)
    assert resolution.status == INTENT_DROPPED
    [item] = resolution.cleanup
    assert (item.backend, item.storage_key, item.size, item.reason) == ("b1", res.storage_key, 70, "pending_dropped")
    got = await store.get_object(BUCKET, "k")
    assert got is not None and got.write_id == old.write_id  # the previous value stays (I3)
    assert counters(await quota(store, "b1")) == (100, 70, 0, 1)
    assert (await store.resolve_intent(it.write_id, INTENT_DROP, LATER + 2)).status == INTENT_ALREADY_RESOLVED
    # the write's commit, arriving after all, fails and does not count the bytes twice
    with pytest.raises(IntentNotFound) as caught:
        await store.commit_object(res, record_for(res, "k", 70), LATER + 3)
    assert caught.value.cleanup is not None and caught.value.cleanup.id == item.id
    assert counters(await quota(store, "b1")) == (100, 70, 0, 1)
    await store.cleanup_done([item.id], NOW)
    assert counters(await quota(store, "b1")) == (100, 0, 0, 1)  # exact
    assert await store.count_intents() == 0


@pytest_twisted.ensureDeferred
async def test_unknown_outcomes_are_refused(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    it = described("k", 1)
    await reserve(store, it)
    with pytest.raises(ValueError):
        await store.resolve_intent(it.write_id, "commit", LATER)
    assert await store.count_intents() == 1


@pytest_twisted.ensureDeferred
async def test_promote_racing_a_newer_commit_of_the_key_ends_with_the_newer(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10**6}, NOW)
    for i in range(5):
        key = f"k{i}"
        failed = described(key, 10)
        await reserve(store, failed)
        newer = await reserve(store, described(key, 20), now=NOW + 1)
        await gatherResults(
            [
                Deferred.fromCoroutine(store.resolve_intent(failed.write_id, INTENT_PROMOTE, LATER)),
                Deferred.fromCoroutine(store.commit_object(newer, record_for(newer, key, 20), LATER)),
            ]
        )
        got = await store.get_object(BUCKET, key)
        assert got is not None and got.write_id == newer.write_id
    row = await quota(store, "b1")
    assert (row.bytes_used, row.orphan_bytes, row.reserved_bytes, row.object_count) == (100, 50, 0, 5)


@pytest_twisted.ensureDeferred
async def test_resolutions_racing_commits_deletes_and_claims_leave_quota_exact(store: MetadataStore) -> None:
    """Everything that touches a key's intents at once: no deadlock, no lost or doubled bytes."""
    await store.sync_quota_limits({"b1": 10**9, "b2": 10**9}, NOW)
    keys = [f"k{i}" for i in range(24)]
    failed: dict[str, Intent] = {}
    newer: dict[str, Reservation] = {}
    for i, key in enumerate(keys):
        await put(store, key, 1000 + i, ("b1",))
        failed[key] = described(key, 100 + i)
        await reserve(store, failed[key], "b2" if i % 2 else "b1")
        newer[key] = await reserve(store, described(key, 10 + i), "b1" if i % 3 else "b2", now=NOW + 1)
    work: list[Deferred[object]] = []
    for i, key in enumerate(keys):
        work.append(Deferred.fromCoroutine(store.resolve_intent(failed[key].write_id, INTENT_PROMOTE, LATER)))
        res = newer[key]
        work.append(Deferred.fromCoroutine(store.commit_object(res, record_for(res, key, 10 + i), LATER)))
        if i % 4 == 0:
            work.append(Deferred.fromCoroutine(store.delete_object(BUCKET, key, LATER)))
        if i % 6 == 0:
            work.append(Deferred.fromCoroutine(store.stale_intents(LATER, MIN_AGE, 5, f"i{i}", GRACE)))
    await gatherResults(work)
    assert await store.count_intents() == 0
    used = {"b1": 0, "b2": 0}
    count = {"b1": 0, "b2": 0}
    for i, key in enumerate(keys):
        got = await store.get_object(BUCKET, key)
        if got is None:
            assert i % 4 == 0  # only deleted keys are gone
            continue
        assert got.write_id == newer[key].write_id  # a failed write never wins over it
        for loc in got.locations:
            used[loc.backend] += loc.size
            count[loc.backend] += 1
    orphaned = {"b1": 0, "b2": 0}
    for item in await store.due_cleanups(LATER + 10**6, 10**6):
        orphaned[item.backend] += item.size
    for backend in ("b1", "b2"):
        row = await quota(store, backend)
        assert (row.bytes_used, row.orphan_bytes, row.reserved_bytes, row.object_count) == (
            used[backend], orphaned[backend], 0, count[backend]
        )
