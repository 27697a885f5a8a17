"""The MetadataStore contract for multipart uploads whose parts are placed one by one
(every engine).

Quota is the heart of it: each part (and each part upload in flight) holds its bytes
as ``reserved_bytes`` on the backend placement chose for it; replacing a part,
completing and aborting must leave ``reserved_bytes``/``bytes_used``/``orphan_bytes``
exact on every backend, whatever order calls arrive in, and every backend object must
end up referenced or queued for cleanup (I4, I5).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import pytest_twisted

from s3orch.s3.conditions import KEY_MISSING, WriteConditions
from s3orch.store.interface import (
    ORIGIN_COPY,
    Extent,
    Location,
    MetadataStore,
    MultipartUpload,
    ObjectRecord,
    PartMismatch,
    PartReservation,
    PreconditionConflict,
    UploadedPart,
    UploadLimitReached,
    UploadNotFound,
)
from tests.store.test_contract import NOW, counters, put, quota

B = "bkt"
_ids = iter(range(1, 1_000_000))


def template(
    key: str, bucket: str = B, upload_id: str | None = None, when: float = NOW, origin: str = "client"
) -> MultipartUpload:
    upload_id = upload_id or f"{next(_ids):032x}"
    return MultipartUpload(
        upload_id=upload_id,
        bucket=bucket,
        key=key,
        initiated=when,
        content_type="text/plain",
        headers={"cache-control": "no-cache"},
        user_metadata={"owner": "alice"},
        checksum_algorithm="CRC32",
        checksum_type="FULL_OBJECT",
        origin=origin,
    )


async def opened(
    store: MetadataStore, key: str = "big", bucket: str = B, max_uploads: int = 0, **kw: object
) -> MultipartUpload:
    """An ``open`` upload of ``bucket``/``key`` (also used by the PostgreSQL-only tests)."""
    upload = await store.create_multipart_upload(template(key, bucket, **kw), max_uploads, NOW)  # type: ignore[arg-type]
    assert upload.state == "open"
    found = await store.get_multipart_upload(bucket, key, upload.upload_id)
    assert found == upload
    return upload


def attempt_key(upload: MultipartUpload, attempt: str) -> str:
    return f"{upload.bucket}/h/{upload.upload_id}/{attempt}"


async def reserve(
    store: MetadataStore,
    upload: MultipartUpload,
    number: int,
    size: int,
    attempt: str,
    candidates: tuple[str, ...] = ("b1",),
    strategy: str = "pack",
) -> PartReservation | None:
    return await store.reserve_part(
        upload.bucket, upload.key, upload.upload_id, number, size, attempt,
        attempt_key(upload, attempt), candidates, strategy, NOW,
    )


def part(number: int, size: int, res: PartReservation | None = None, etag: str | None = None) -> UploadedPart:
    return UploadedPart(
        number,
        etag or f"{number:02d}" * 16,
        size,
        NOW,
        res.backend if res else "b1",
        res.storage_key if res else f"nowhere-{number}",
        "CRC32",
        f"crc-{number}",
    )


async def add_part(
    store: MetadataStore,
    upload: MultipartUpload,
    number: int,
    size: int,
    etag: str | None = None,
    candidates: tuple[str, ...] = ("b1",),
) -> PartReservation:
    attempt = f"att-{upload.upload_id}-{number}-{size}-{etag}-{next(_ids)}"
    res = await reserve(store, upload, number, size, attempt, candidates)
    assert res is not None
    outcome = await store.commit_part(attempt, part(number, size, res, etag), NOW)
    assert outcome.committed
    return res


def record(upload: MultipartUpload, sizes: tuple[int, ...], etag: str = "abc-2") -> ObjectRecord:
    return ObjectRecord(
        upload.bucket, upload.key, upload.upload_id, sum(sizes), etag, NOW,
        content_type="text/plain", checksum_algorithm="CRC32", checksum_value="AAAAAA==",
        parts_count=len(sizes), part_sizes=sizes,
    )


@pytest_twisted.ensureDeferred
async def test_create_records_an_open_upload_and_reserves_nothing(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 100}, NOW)
    upload = await store.create_multipart_upload(template("k"), 0, NOW)
    assert (upload.state, upload.backend, upload.storage_key, upload.native) == ("open", None, None, False)
    assert (upload.content_type, upload.headers, upload.user_metadata) == (
        "text/plain", {"cache-control": "no-cache"}, {"owner": "alice"})
    assert (upload.checksum_algorithm, upload.checksum_type, upload.origin) == ("CRC32", "FULL_OBJECT", "client")
    assert await store.create_multipart_upload(template("k", upload_id=upload.upload_id), 0, NOW) == upload
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_upload_limit_counts_unfinished_client_uploads_of_the_bucket(store: MetadataStore) -> None:
    first = await opened(store, "a")
    await opened(store, "b")
    await opened(store, "copy", origin=ORIGIN_COPY)  # the gateway's own: not counted
    with pytest.raises(UploadLimitReached):
        await store.create_multipart_upload(template("c"), 2, NOW)
    assert await store.create_multipart_upload(template("c", bucket="other"), 2, NOW)
    assert await store.create_multipart_upload(template("d", origin=ORIGIN_COPY), 2, NOW)
    await store.begin_abort(B, "a", first.upload_id, NOW)
    await store.finish_abort(first.upload_id, NOW)
    assert await store.create_multipart_upload(template("c"), 2, NOW)


@pytest_twisted.ensureDeferred
async def test_an_upload_is_found_only_under_its_bucket_and_key(store: MetadataStore) -> None:
    upload = await opened(store, "k")
    assert await store.get_multipart_upload(B, "k", upload.upload_id) is not None
    assert await store.get_multipart_upload("other", "k", upload.upload_id) is None
    assert await store.get_multipart_upload(B, "k2", upload.upload_id) is None
    foreign = ObjectRecord(B, "k2", upload.upload_id, 1, "e", NOW)
    for call in (
        store.reserve_part("other", "k", upload.upload_id, 1, 10, "a1", "x", ["b1"], "pack", NOW),
        store.complete_upload(B, "k2", upload.upload_id, [], foreign, NOW),
        store.begin_abort("other", "k", upload.upload_id, NOW),
    ):
        with pytest.raises(UploadNotFound):
            await call
    with pytest.raises(UploadNotFound):
        await store.complete_upload(
            B, "k", "f" * 32, [], ObjectRecord(B, "k", "f" * 32, 0, "e", NOW), NOW
        )


@pytest_twisted.ensureDeferred
async def test_parts_are_placed_by_the_strategy_each_on_its_own_backend(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000, "b2": 1000, "b3": 4000}, NOW)
    await put(store, "filler", 900, ("b1",))
    upload = await opened(store, "k")
    # pack: the first backend (config order) with room for THIS part
    small = await add_part(store, upload, 1, 100, candidates=("b1", "b2", "b3"))
    big = await add_part(store, upload, 2, 300, candidates=("b1", "b2", "b3"))
    assert (small.backend, big.backend) == ("b1", "b2")
    assert await reserve(store, upload, 3, 5000, "huge", ("b1", "b2", "b3")) is None  # no backend has room
    # spread: the least utilised
    spread = await reserve(store, upload, 4, 10, "s", ("b1", "b2", "b3"), "spread")
    assert spread is not None and spread.backend == "b3"
    assert await reserve(store, upload, 4, 10, "s", ("b1",), "spread") == spread  # a retried call
    assert counters(await quota(store, "b1")) == (900, 0, 100, 1)
    assert counters(await quota(store, "b2")) == (0, 0, 300, 0)
    assert counters(await quota(store, "b3")) == (0, 0, 10, 0)
    parts, more = await store.list_parts(upload.upload_id)
    assert [(p.part_number, p.backend, p.storage_key, p.size, p.checksum_value) for p in parts] == [
        (1, "b1", small.storage_key, 100, "crc-1"), (2, "b2", big.storage_key, 300, "crc-2")]
    assert not more
    (queued,) = await store.release_part("s", NOW)  # its bytes may have landed: queued
    assert (queued.backend, queued.storage_key, queued.size) == ("b3", spread.storage_key, 10)
    assert await store.release_part("s", NOW) == []  # twice is harmless
    assert counters(await quota(store, "b3")) == (0, 10, 0, 0)  # reserved -> orphaned
    await store.cleanup_done([queued.id], NOW)
    assert counters(await quota(store, "b3")) == (0, 0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_the_part_upload_that_finishes_last_wins_and_the_other_is_queued(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000, "b2": 1000}, NOW)
    upload = await opened(store, "k")
    first = await reserve(store, upload, 1, 300, "first", ("b1",))
    second = await reserve(store, upload, 1, 200, "second", ("b2",))
    assert first is not None and second is not None
    assert counters(await quota(store, "b1")) == (0, 0, 300, 0)
    assert counters(await quota(store, "b2")) == (0, 0, 200, 0)
    # the second upload finishes first ...
    assert (await store.commit_part("second", part(1, 200, second, "b" * 32), NOW)).committed
    # ... the first finishes last: it wins, the second's bytes are queued
    outcome = await store.commit_part("first", part(1, 300, first, "a" * 32), NOW)
    assert outcome.committed
    assert [(i.backend, i.storage_key, i.size, i.reason) for i in outcome.cleanup] == [
        ("b2", second.storage_key, 200, "part_replaced")]
    parts, _ = await store.list_parts(upload.upload_id)
    assert [(p.etag, p.backend, p.storage_key) for p in parts] == [("a" * 32, "b1", first.storage_key)]
    assert counters(await quota(store, "b1")) == (0, 0, 300, 0)
    assert counters(await quota(store, "b2")) == (0, 200, 0, 0)  # orphaned until deleted
    await store.cleanup_done([outcome.cleanup[0].id], NOW)
    assert counters(await quota(store, "b2")) == (0, 0, 0, 0)
    # a committed attempt committed again (a lost answer) changes nothing
    again = await store.commit_part("first", part(1, 300, first, "a" * 32), NOW)
    assert again.committed and again.cleanup == []
    assert counters(await quota(store, "b1")) == (0, 0, 300, 0)


@pytest_twisted.ensureDeferred
async def test_list_parts_pages_by_part_number(store: MetadataStore) -> None:
    upload = await opened(store, "k")
    for number in (5, 1, 3):
        await add_part(store, upload, number, number)
    parts, more = await store.list_parts(upload.upload_id, 0, 2)
    assert [p.part_number for p in parts] == [1, 3] and more
    parts, more = await store.list_parts(upload.upload_id, 3, 2)
    assert [p.part_number for p in parts] == [5] and not more


@pytest_twisted.ensureDeferred
async def test_complete_makes_the_listed_parts_the_extents_where_they_live(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10_000, "b2": 10_000}, NOW)
    old, _ = await put(store, "k", 70)
    upload = await opened(store, "k")
    one = await add_part(store, upload, 1, 100, "a" * 32, ("b1",))
    two = await add_part(store, upload, 2, 1, "b" * 32, ("b2",))
    unused = await add_part(store, upload, 3, 50, "c" * 32, ("b2",))  # uploaded, not listed
    late = await reserve(store, upload, 4, 9, "late", ("b1",))  # still in flight
    assert late is not None
    with pytest.raises(PartMismatch):
        await store.complete_upload(B, "k", upload.upload_id, [(1, "f" * 32)], record(upload, (100,)), NOW)
    with pytest.raises(PartMismatch):
        await store.complete_upload(B, "k", upload.upload_id, [(9, "a" * 32)], record(upload, (100,)), NOW)
    assert counters(await quota(store, "b1")) == (70, 0, 109, 1)  # refused: nothing changed
    outcome = await store.complete_upload(
        B, "k", upload.upload_id, [(1, "A" * 32), (2, '"' + "b" * 32 + '"')], record(upload, (100, 1)), NOW + 1
    )
    assert not outcome.already_completed
    assert [(i.storage_key, i.size, i.reason) for i in outcome.displaced] == [(old.storage_key, 70, "overwrite_displaced")]
    assert [(i.backend, i.storage_key, i.size, i.reason) for i in outcome.discarded] == [
        ("b2", unused.storage_key, 50, "part_discarded")]
    current = await store.get_object(B, "k")
    assert current is not None and current.write_id == upload.upload_id and current.etag == "abc-2"
    assert current.part_sizes == (100, 1) and current.parts_count == 2 and current.locations == ()
    assert current.parts == (
        Extent(1, 0, 100, (Location("b1", one.storage_key, 100),), "a" * 32, "crc-1"),
        Extent(2, 100, 1, (Location("b2", two.storage_key, 1),), "b" * 32, "crc-2"),
    )
    assert current.extents == current.parts
    # used where each part lives, one backend object each; the unlisted part and the one in
    # flight are orphaned (queued), the displaced version too
    assert counters(await quota(store, "b1")) == (100, 70 + 9, 0, 1)
    assert counters(await quota(store, "b2")) == (1, 50, 0, 1)
    assert await store.object_counts() == {"b1": 1, "b2": 1}
    # the part in flight is first tried after a grace (its bytes may still land)
    due = {i.storage_key for i in await store.due_cleanups(NOW + 100, 10)}
    assert due == {old.storage_key, unused.storage_key}
    assert late.storage_key in {i.storage_key for i in await store.due_cleanups(NOW + 4000, 10)}
    done = await store.get_multipart_upload(B, "k", upload.upload_id)
    assert done is not None and done.state == "completed" and done.etag == "abc-2"
    assert (await store.list_parts(upload.upload_id))[0] == []
    # repeats change nothing
    again = await store.complete_upload(B, "k", upload.upload_id, [(1, "a" * 32)], record(upload, (100,)), NOW)
    assert again.already_completed and again.displaced == []
    assert counters(await quota(store, "b1")) == (100, 79, 0, 1)
    assert (await store.list_multipart_uploads(B, "", "", "", "", 10)).uploads == ()


@pytest_twisted.ensureDeferred
async def test_complete_checks_write_conditions_in_its_transaction(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    upload = await opened(store, "k")
    await add_part(store, upload, 1, 10, "a" * 32)
    with pytest.raises(PreconditionConflict) as missing:
        await store.complete_upload(
            B, "k", upload.upload_id, [(1, "a" * 32)], record(upload, (10,)), NOW, WriteConditions(("*",), None)
        )
    assert missing.value.violation == KEY_MISSING
    await put(store, "k", 5)
    current = await store.get_object(B, "k")
    assert current is not None
    with pytest.raises(PreconditionConflict) as exists:
        await store.complete_upload(
            B, "k", upload.upload_id, [(1, "a" * 32)], record(upload, (10,)), NOW, WriteConditions(None, ("*",))
        )
    assert exists.value.violation == "If-None-Match"
    assert counters(await quota(store, "b1")) == (5, 0, 10, 1)  # nothing changed
    outcome = await store.complete_upload(
        B, "k", upload.upload_id, [(1, "a" * 32)], record(upload, (10,)), NOW, WriteConditions((current.etag,), None)
    )
    assert len(outcome.displaced) == 1
    assert counters(await quota(store, "b1")) == (10, 5, 0, 1)


@pytest_twisted.ensureDeferred
async def test_a_part_landing_after_complete_or_abort_is_queued_for_cleanup(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000}, NOW)
    upload = await opened(store, "k")
    await add_part(store, upload, 1, 10, "a" * 32)
    late = await reserve(store, upload, 2, 20, "late")
    assert late is not None
    await store.complete_upload(B, "k", upload.upload_id, [(1, "a" * 32)], record(upload, (10,)), NOW)
    with pytest.raises(UploadNotFound):  # completed: no new parts
        await reserve(store, upload, 3, 5, "later")
    outcome = await store.commit_part("late", part(2, 20, late), NOW + 5)
    assert not outcome.committed
    assert [(i.storage_key, i.size) for i in outcome.cleanup] == [(late.storage_key, 20)]
    # it landed: due now, queued once
    assert [i.storage_key for i in await store.due_cleanups(NOW + 5, 10)] == [late.storage_key]
    assert counters(await quota(store, "b1")) == (10, 20, 0, 1)
    await store.cleanup_done([i.id for i in outcome.cleanup], NOW)
    assert counters(await quota(store, "b1")) == (10, 0, 0, 1)
    other = await opened(store, "o")
    late2 = await reserve(store, other, 1, 30, "late2")
    assert late2 is not None
    await store.begin_abort(B, "o", other.upload_id, NOW)
    assert not (await store.commit_part("late2", part(1, 30, late2), NOW)).committed  # aborting
    assert await store.finish_abort(other.upload_id, NOW) == []
    assert counters(await quota(store, "b1")) == (10, 30, 0, 1)  # the late part: queued once


@pytest_twisted.ensureDeferred
async def test_abort_queues_every_part_releases_everything_and_only_once(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000, "b2": 1000}, NOW)
    upload = await opened(store, "k")
    one = await add_part(store, upload, 1, 40, candidates=("b1",))
    two = await add_part(store, upload, 2, 60, candidates=("b2",))
    inflight = await reserve(store, upload, 3, 7, "inflight", ("b2",))
    assert inflight is not None
    before = await store.begin_abort(B, "k", upload.upload_id, NOW)
    assert before.state == "open"
    assert (await store.begin_abort(B, "k", upload.upload_id, NOW)).state == "aborting"  # retry
    with pytest.raises(UploadNotFound):
        await reserve(store, upload, 4, 1, "refused")
    items = await store.finish_abort(upload.upload_id, NOW)
    assert sorted((i.backend, i.storage_key, i.size, i.reason) for i in items) == sorted(
        [("b1", one.storage_key, 40, "abort_part_cleanup"), ("b2", two.storage_key, 60, "abort_part_cleanup")])
    assert await store.finish_abort(upload.upload_id, NOW) == []
    assert counters(await quota(store, "b1")) == (0, 40, 0, 0)
    assert counters(await quota(store, "b2")) == (0, 67, 0, 0)
    await store.cleanup_done([i.id for i in items], NOW)
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)
    assert counters(await quota(store, "b2")) == (0, 7, 0, 0)  # the part in flight, after its grace
    with pytest.raises(UploadNotFound):
        await store.begin_abort(B, "k", upload.upload_id, NOW)
    found = await store.get_multipart_upload(B, "k", upload.upload_id)
    assert found is not None and found.state == "aborted"


@pytest_twisted.ensureDeferred
async def test_deleting_or_overwriting_a_multi_extent_object_orphans_every_extent(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000, "b2": 1000}, NOW)
    for key in ("gone", "over"):
        upload = await opened(store, key)
        await add_part(store, upload, 1, 30, "a" * 32, ("b1",))
        await add_part(store, upload, 2, 20, "b" * 32, ("b2",))
        await store.complete_upload(B, key, upload.upload_id, [(1, "a" * 32), (2, "b" * 32)], record(upload, (30, 20)), NOW)
    assert counters(await quota(store, "b1")) == (60, 0, 0, 2)
    items = await store.delete_object(B, "gone", NOW)
    assert sorted((i.backend, i.size, i.reason) for i in items) == [("b1", 30, "delete"), ("b2", 20, "delete")]
    _, displaced = await put(store, "over", 5, ("b1",))
    assert sorted((i.backend, i.size) for i in displaced) == [("b1", 30), ("b2", 20)]
    got = await store.get_object(B, "over")
    assert got is not None and got.parts == () and len(got.locations) == 1
    assert got.extents == (Extent(0, 0, 5, got.locations),)
    assert counters(await quota(store, "b1")) == (5, 60, 0, 1)
    assert counters(await quota(store, "b2")) == (0, 40, 0, 0)


@pytest_twisted.ensureDeferred
async def test_list_uploads_orders_by_key_and_id_with_markers_and_groups(store: MetadataStore) -> None:
    ids = {}
    for key, upload_id in (("b/1", "04"), ("a/1", "01"), ("b/1", "02"), ("c", "05"), ("a/2", "03")):
        ids[(key, upload_id)] = (await opened(store, key, upload_id=upload_id.rjust(32, "0"))).upload_id
    await opened(store, "z", origin=ORIGIN_COPY)  # the gateway's own: never listed
    order = [("a/1", "01"), ("a/2", "03"), ("b/1", "02"), ("b/1", "04"), ("c", "05")]

    async def page(**kw: object) -> tuple[list[tuple[str, str]], list[str], bool, str | None, str | None]:
        args = {"prefix": "", "delimiter": "", "key_marker": "", "upload_id_marker": "", "max_uploads": 1000}
        args.update(kw)
        got = await store.list_multipart_uploads(B, **args)  # type: ignore[arg-type]
        return (
            [(u.key, u.upload_id[-2:]) for u in got.uploads],
            list(got.common_prefixes),
            got.is_truncated,
            got.next_key_marker,
            got.next_upload_id_marker,
        )

    assert (await page())[0] == order
    assert (await page(prefix="b/"))[0] == order[2:4]
    assert (await page(delimiter="/"))[:2] == ([("c", "05")], ["a/", "b/"])
    assert (await page(key_marker="b/1"))[0] == [("c", "05")]
    assert (await page(key_marker="b/1", upload_id_marker="02".rjust(32, "0")))[0] == order[3:]
    assert (await page(key_marker="a/", delimiter="/"))[:2] == ([("c", "05")], ["b/"])
    first = await page(max_uploads=3)
    assert first[0] == order[:3] and first[2] and first[3:] == ("b/1", "02".rjust(32, "0"))
    grouped = await page(max_uploads=1, delimiter="/")
    assert grouped[1] == ["a/"] and grouped[2] and grouped[3:] == ("a/", None)
    assert (await page(max_uploads=0))[:3] == ([], [], True)
    assert (await store.list_multipart_uploads("other", "", "", "", "", 10)).uploads == ()


@pytest_twisted.ensureDeferred
async def test_stale_uploads_active_counts_and_tombstone_purge(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000, "b2": 1000}, NOW)
    old = await opened(store, "old", when=NOW - 100)
    fresh = await opened(store, "fresh", when=NOW)
    copy = await opened(store, "copy", when=NOW - 100, origin=ORIGIN_COPY)
    stale = await store.stale_multipart_uploads(NOW - 50, NOW - 50, 10)
    assert {u.upload_id for u in stale} == {old.upload_id, copy.upload_id}
    assert await store.active_multipart_counts() == {}  # no parts anywhere yet
    await add_part(store, old, 1, 5, candidates=("b1",))
    await add_part(store, old, 2, 5, candidates=("b2",))
    await add_part(store, fresh, 1, 5, candidates=("b1",))
    assert await reserve(store, copy, 1, 5, "copy-1", ("b2",))
    assert await store.active_multipart_counts() == {"b1": 2, "b2": 2}
    await store.begin_abort(B, "old", old.upload_id, NOW, stale=True)
    await store.finish_abort(old.upload_id, NOW)
    assert await store.active_multipart_counts() == {"b1": 1, "b2": 1}
    assert await store.purge_multipart_uploads(NOW - 1) == 0
    assert await store.purge_multipart_uploads(NOW + 1) == 1
    assert await store.get_multipart_upload(B, "old", old.upload_id) is None


@pytest_twisted.ensureDeferred
async def test_compressed_parts_keep_their_chunk_size_and_client_size_through_complete(store: MetadataStore) -> None:
    """A compressed part reserves and stores its compressed bytes; its row keeps the chunk size
    and the client's size, and the completed object's extents keep both (sizes and offsets the
    client's, each copy's the stored one); the object's size is the client's."""
    await store.sync_quota_limits({"b1": 10_000}, NOW)
    upload = await opened(store, "z")
    attempt = f"att-z-{next(_ids)}"
    packed = await reserve(store, upload, 1, 40, attempt)
    assert packed is not None
    compressed = replace(part(1, 40, packed, "a" * 32), compression_chunk_size=16384, logical_size=900)
    assert (await store.commit_part(attempt, compressed, NOW)).committed
    raw = await add_part(store, upload, 2, 30, "b" * 32)
    listed, _ = await store.list_parts(upload.upload_id)
    assert [(p.size, p.compression_chunk_size, p.logical_size) for p in listed] == [(40, 16384, 900), (30, None, None)]
    assert counters(await quota(store, "b1")) == (0, 0, 70, 0)  # the stored bytes are reserved
    done = replace(record(upload, (900, 30)), compression_chunk_size=16384)
    await store.complete_upload(B, "z", upload.upload_id, [(1, "a" * 32), (2, "b" * 32)], done, NOW + 1)
    current = await store.get_object(B, "z")
    assert current is not None and current.size == 930 and current.compressed
    assert current.parts == (
        Extent(1, 0, 900, (Location("b1", packed.storage_key, 40),), "a" * 32, "crc-1", 16384),
        Extent(2, 900, 30, (Location("b1", raw.storage_key, 30),), "b" * 32, "crc-2", None),
    )
    assert counters(await quota(store, "b1")) == (70, 0, 0, 2)  # quotas count what is stored
    page = await store.list_objects(B, "z", "", "", 10)
    assert [(e.key, e.size) for e in page.entries] == [("z", 930)]
