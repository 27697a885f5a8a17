"""The MetadataStore contract for backend-native multipart uploads (every engine).

Quota is the heart of it: while an upload is open its parts' bytes are
reserved on its backend; replacing a part, completing and aborting must leave
``reserved_bytes``/``bytes_used`` exact, whatever order calls arrive in.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from s3orch.store.interface import (
    MetadataStore,
    MultipartUpload,
    ObjectRecord,
    PartMismatch,
    UploadedPart,
    UploadLimitReached,
    UploadNotFound,
)
from tests.store.test_contract import NOW, counters, put, quota

B = "bkt"
_ids = iter(range(1, 1_000_000))


def template(key: str, bucket: str = B, upload_id: str | None = None, when: float = NOW) -> MultipartUpload:
    upload_id = upload_id or f"{next(_ids):032x}"
    return MultipartUpload(
        upload_id=upload_id,
        bucket=bucket,
        key=key,
        backend="",
        storage_key=f"{bucket}/{key}@{upload_id}",
        initiated=when,
        content_type="text/plain",
        headers={"cache-control": "no-cache"},
        user_metadata={"owner": "alice"},
    )


async def opened(
    store: MetadataStore, key: str = "big", bucket: str = B, candidates: tuple[str, ...] = ("b1",), **kw: object
) -> MultipartUpload:
    """An ``open`` upload of ``bucket``/``key`` (also used by the PostgreSQL-only tests)."""
    upload = await store.create_multipart_upload(template(key, bucket, **kw), candidates, "pack", 0, 0, NOW)  # type: ignore[arg-type]
    assert upload is not None
    assert await store.open_multipart_upload(upload.upload_id, "backend-id", NOW)
    found = await store.get_multipart_upload(bucket, key, upload.upload_id)
    assert found is not None and found.state == "open"
    return found


def part(number: int, size: int, etag: str | None = None) -> UploadedPart:
    return UploadedPart(number, etag or f"{number:02d}" * 16, size, NOW, f"be-{number}")


async def add_part(store: MetadataStore, upload: MultipartUpload, number: int, size: int, etag: str | None = None) -> None:
    attempt = f"att-{upload.upload_id}-{number}-{size}-{etag}"
    assert await store.reserve_part(upload.bucket, upload.key, upload.upload_id, number, size, attempt, NOW)
    assert await store.commit_part(attempt, part(number, size, etag), NOW)


def record(upload: MultipartUpload, size: int, etag: str = "abc-2") -> ObjectRecord:
    return ObjectRecord(upload.bucket, upload.key, upload.upload_id, size, etag, NOW, parts_count=2, part_sizes=(size - 1, 1))


@pytest_twisted.ensureDeferred
async def test_create_picks_a_backend_with_room_for_the_hint(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 100, "b2": 1000})
    await put(store, "full", 100, ("b1",))
    upload = await store.create_multipart_upload(template("k"), ["b1", "b2"], "pack", 0, 0, NOW)
    assert upload is not None and upload.backend == "b2" and upload.state == "creating"
    assert (upload.content_type, upload.headers, upload.user_metadata) == (
        "text/plain", {"cache-control": "no-cache"}, {"owner": "alice"})
    assert await store.create_multipart_upload(template("big"), ["b2"], "pack", 1001, 0, NOW) is None
    again = await store.create_multipart_upload(template("k", upload_id=upload.upload_id), ["b1", "b2"], "pack", 0, 0, NOW)
    assert again == upload  # a retried call
    assert counters(await quota(store, "b2")) == (0, 0, 0, 0)  # Create reserves nothing


@pytest_twisted.ensureDeferred
async def test_upload_limit_counts_unfinished_uploads_of_the_bucket(store: MetadataStore) -> None:
    first = await opened(store, "a")
    await opened(store, "b")
    with pytest.raises(UploadLimitReached):
        await store.create_multipart_upload(template("c"), ["b1"], "pack", 0, 2, NOW)
    assert await store.create_multipart_upload(template("c", bucket="other"), ["b1"], "pack", 0, 2, NOW)
    await store.begin_abort(B, "a", first.upload_id, NOW)
    await store.finish_abort(first.upload_id, NOW)
    assert await store.create_multipart_upload(template("c"), ["b1"], "pack", 0, 2, NOW)


@pytest_twisted.ensureDeferred
async def test_an_upload_is_found_only_under_its_bucket_and_key(store: MetadataStore) -> None:
    upload = await opened(store, "k")
    assert await store.get_multipart_upload(B, "k", upload.upload_id) is not None
    assert await store.get_multipart_upload("other", "k", upload.upload_id) is None
    assert await store.get_multipart_upload(B, "k2", upload.upload_id) is None
    for call in (
        store.reserve_part("other", "k", upload.upload_id, 1, 10, "a1", NOW),
        store.begin_complete(B, "k2", upload.upload_id, [], NOW),
        store.begin_abort("other", "k", upload.upload_id, NOW),
    ):
        with pytest.raises(UploadNotFound):
            await call
    creating = await store.create_multipart_upload(template("c"), ["b1"], "pack", 0, 0, NOW)
    assert creating is not None
    with pytest.raises(UploadNotFound):  # not usable before the backend upload exists
        await store.reserve_part(B, "c", creating.upload_id, 1, 10, "a2", NOW)


@pytest_twisted.ensureDeferred
async def test_part_reservations_replacements_and_releases_are_exact(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 1000})
    upload = await opened(store, "k")
    await add_part(store, upload, 1, 300)
    assert counters(await quota(store, "b1")) == (0, 0, 300, 0)
    # A replacement holds both sizes until it commits, then only the new one.
    assert await store.reserve_part(B, "k", upload.upload_id, 1, 200, "r1", NOW)
    assert counters(await quota(store, "b1")) == (0, 0, 500, 0)
    assert await store.reserve_part(B, "k", upload.upload_id, 1, 200, "r1", NOW)  # retried: once
    assert counters(await quota(store, "b1")) == (0, 0, 500, 0)
    assert await store.commit_part("r1", part(1, 200, "e" * 32), NOW)
    assert counters(await quota(store, "b1")) == (0, 0, 200, 0)
    parts, more = await store.list_parts(upload.upload_id)
    assert [(p.part_number, p.etag, p.size, p.backend_etag) for p in parts] == [(1, "e" * 32, 200, "be-1")] and not more
    # A failed backend call releases its attempt (twice is harmless).
    assert await store.reserve_part(B, "k", upload.upload_id, 2, 700, "r2", NOW)
    assert await store.reserve_part(B, "k", upload.upload_id, 3, 101, "r3", NOW) is None  # no room
    await store.release_part("r2")
    await store.release_part("r2")
    assert counters(await quota(store, "b1")) == (0, 0, 200, 0)


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
async def test_a_part_landing_after_complete_or_abort_is_released(store: MetadataStore) -> None:
    upload = await opened(store, "k")
    await add_part(store, upload, 1, 10, "a" * 32)
    assert await store.reserve_part(B, "k", upload.upload_id, 2, 20, "late", NOW)
    await store.begin_complete(B, "k", upload.upload_id, [(1, "a" * 32)], NOW)
    with pytest.raises(UploadNotFound):  # completing: no new parts
        await store.reserve_part(B, "k", upload.upload_id, 3, 5, "later", NOW)
    await store.finish_complete(upload.upload_id, record(upload, 10), 10, NOW)
    assert not await store.commit_part("late", part(2, 20), NOW)
    assert counters(await quota(store, "b1")) == (10, 0, 0, 1)
    other = await opened(store, "o")
    assert await store.reserve_part(B, "o", other.upload_id, 1, 30, "late2", NOW)
    await store.begin_abort(B, "o", other.upload_id, NOW)
    assert not await store.commit_part("late2", part(1, 30), NOW)
    await store.finish_abort(other.upload_id, NOW)
    assert counters(await quota(store, "b1")) == (10, 0, 0, 1)


@pytest_twisted.ensureDeferred
async def test_complete_settles_parts_into_the_object_and_displaces_the_old_version(store: MetadataStore) -> None:
    await store.sync_quota_limits({"b1": 10_000})
    old, _ = await put(store, "k", 70)
    upload = await opened(store, "k")
    await add_part(store, upload, 1, 100, "a" * 32)
    await add_part(store, upload, 2, 1, "b" * 32)
    await add_part(store, upload, 3, 50, "c" * 32)  # uploaded, not listed: dropped
    with pytest.raises(PartMismatch):
        await store.begin_complete(B, "k", upload.upload_id, [(1, "f" * 32)], NOW)
    with pytest.raises(PartMismatch):
        await store.begin_complete(B, "k", upload.upload_id, [(9, "a" * 32)], NOW)
    state = await store.begin_complete(B, "k", upload.upload_id, [(1, "A" * 32), (2, "b" * 32)], NOW)
    assert state.state == "completing" and state.complete_parts == (1, 2)
    assert (await store.get_object(B, "k")).write_id == old.write_id  # type: ignore[union-attr]
    outcome = await store.finish_complete(upload.upload_id, record(upload, 101), 101, NOW + 1)
    assert not outcome.already_completed
    assert [(i.storage_key, i.size, i.reason) for i in outcome.displaced] == [(old.storage_key, 70, "overwrite_displaced")]
    current = await store.get_object(B, "k")
    assert current is not None and current.write_id == upload.upload_id and current.etag == "abc-2"
    assert current.part_sizes == (100, 1) and current.parts_count == 2
    assert [(loc.backend, loc.storage_key, loc.size) for loc in current.locations] == [("b1", upload.storage_key, 101)]
    assert counters(await quota(store, "b1")) == (101, 70, 0, 1)
    done = await store.get_multipart_upload(B, "k", upload.upload_id)
    assert done is not None and done.state == "completed" and done.etag == "abc-2"
    assert (await store.list_parts(upload.upload_id))[0] == []
    # Repeats change nothing.
    again = await store.begin_complete(B, "k", upload.upload_id, [(1, "a" * 32)], NOW)
    assert again.state == "completed"
    assert (await store.finish_complete(upload.upload_id, record(upload, 101), 101, NOW)).already_completed
    assert counters(await quota(store, "b1")) == (101, 70, 0, 1)
    assert (await store.list_multipart_uploads(B, "", "", "", "", 10)).uploads == ()


@pytest_twisted.ensureDeferred
async def test_a_complete_overtaken_by_abort_queues_the_assembled_object(store: MetadataStore) -> None:
    upload = await opened(store, "k")
    await add_part(store, upload, 1, 40, "a" * 32)
    await store.begin_complete(B, "k", upload.upload_id, [(1, "a" * 32)], NOW)
    await store.begin_abort(B, "k", upload.upload_id, NOW)
    with pytest.raises(UploadNotFound) as info:
        await store.finish_complete(upload.upload_id, record(upload, 40), 40, NOW)
    assert info.value.cleanup is not None and info.value.cleanup.storage_key == upload.storage_key
    assert await store.get_object(B, "k") is None
    item = await store.finish_abort(upload.upload_id, NOW)  # the same backend object: queued once
    assert item is None or item.id == info.value.cleanup.id
    assert counters(await quota(store, "b1")) == (0, 40, 0, 0)
    await store.cleanup_done([info.value.cleanup.id])
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_abort_releases_everything_and_only_once(store: MetadataStore) -> None:
    upload = await opened(store, "k")
    await add_part(store, upload, 1, 40)
    assert await store.reserve_part(B, "k", upload.upload_id, 2, 60, "inflight", NOW)
    before = await store.begin_abort(B, "k", upload.upload_id, NOW)
    assert before.state == "open"
    assert (await store.begin_abort(B, "k", upload.upload_id, NOW)).state == "aborting"  # retry
    assert await store.finish_abort(upload.upload_id, NOW) is None
    assert await store.finish_abort(upload.upload_id, NOW) is None
    assert counters(await quota(store, "b1")) == (0, 0, 0, 0)
    with pytest.raises(UploadNotFound):
        await store.begin_abort(B, "k", upload.upload_id, NOW)
    # An interrupted Complete: the storage key may hold the assembled object.
    other = await opened(store, "o")
    await add_part(store, other, 1, 30, "a" * 32)
    await add_part(store, other, 2, 5, "b" * 32)
    await store.begin_complete(B, "o", other.upload_id, [(1, "a" * 32)], NOW)
    await store.begin_abort(B, "o", other.upload_id, NOW)
    item = await store.finish_abort(other.upload_id, NOW)
    assert item is not None and (item.storage_key, item.size) == (other.storage_key, 30)
    assert counters(await quota(store, "b1")) == (0, 30, 0, 0)


@pytest_twisted.ensureDeferred
async def test_reopen_returns_a_completing_upload_to_open(store: MetadataStore) -> None:
    upload = await opened(store, "k")
    await add_part(store, upload, 1, 10, "a" * 32)
    await store.begin_complete(B, "k", upload.upload_id, [(1, "a" * 32)], NOW)
    await store.reopen_upload(upload.upload_id, NOW)
    found = await store.get_multipart_upload(B, "k", upload.upload_id)
    assert found is not None and found.state == "open" and found.complete_parts is None
    await add_part(store, upload, 2, 5)


@pytest_twisted.ensureDeferred
async def test_list_uploads_orders_by_key_and_id_with_markers_and_groups(store: MetadataStore) -> None:
    ids = {}
    for key, upload_id in (("b/1", "04"), ("a/1", "01"), ("b/1", "02"), ("c", "05"), ("a/2", "03")):
        ids[(key, upload_id)] = (await opened(store, key, upload_id=upload_id.rjust(32, "0"))).upload_id
    creating = await store.create_multipart_upload(template("z"), ["b1"], "pack", 0, 0, NOW)
    assert creating is not None  # not listed until the backend upload exists
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
async def test_stale_uploads_and_tombstone_purge(store: MetadataStore) -> None:
    old = await opened(store, "old", when=NOW - 100)
    fresh = await opened(store, "fresh", when=NOW)
    creating = await store.create_multipart_upload(template("c", when=NOW - 100), ["b1"], "pack", 0, 0, NOW)
    assert creating is not None
    stale = await store.stale_multipart_uploads(NOW - 50, NOW - 50, 10)
    assert {u.upload_id for u in stale} == {old.upload_id, creating.upload_id}
    assert fresh.upload_id not in {u.upload_id for u in stale}
    assert await store.active_multipart_counts() == {"b1": 3}
    await store.begin_abort(B, "c", creating.upload_id, NOW, stale=True)
    await store.finish_abort(creating.upload_id, NOW)
    assert await store.active_multipart_counts() == {"b1": 2}
    assert await store.purge_multipart_uploads(NOW - 1) == 0
    assert await store.purge_multipart_uploads(NOW + 1) == 1
    assert await store.get_multipart_upload(B, "c", creating.upload_id) is None
