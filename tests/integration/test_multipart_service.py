"""MultipartService over a real SQLite store and in-memory backends: the crash
and race windows that a live gateway cannot be stopped in on cue.

Each test puts the upload where a crash, a timeout or a racing request would
leave it (by calling the store and the backend directly, or by holding a
backend call on a gate), then checks that what follows ends in one object or
a clean abort, with quota exact and nothing left on the backend.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from s3orch.backend.interface import BackendError, BackendUnavailable
from s3orch.backend.memory import MemoryBackend
from s3orch.core.multipart import MultipartService, multipart_etag, new_upload_id
from s3orch.core.objects import NewObject, ObjectService
from s3orch.core.placement import storage_key
from s3orch.s3 import errors
from s3orch.s3.xml import CompletedPart
from s3orch.store.interface import MultipartUpload, QuotaRow
from s3orch.store.sqlite import SQLiteStore

MIN = 100  # the minimum part size in these tests (S3's is 5 MiB)
STALE = 3600.0
NEW = NewObject("text/plain", {"cache-control": "no-cache"}, {"owner": "alice"})


class Backend(MemoryBackend):
    """MemoryBackend whose calls can be held on a gate, before or after they act."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.min_part_size = MIN
        self.gates: dict[tuple[str, str, int], Deferred[None]] = {}
        self.reached: dict[tuple[str, str, int], Deferred[None]] = {}
        self.complete_then_fail = False

    def hold(self, operation: str, when: str = "before", part: int = 0) -> Deferred[None]:
        """Hold the call (of that part number) there; fire the result to let it go on."""
        gate: Deferred[None] = Deferred()
        self.gates[(operation, when, part)] = gate
        self.reached[(operation, when, part)] = Deferred()
        return gate

    async def _gate(self, operation: str, when: str, part: int = 0) -> None:
        gate = self.gates.pop((operation, when, part), None)
        if gate is not None:
            self.reached.pop((operation, when, part)).callback(None)
            await gate

    async def upload_part(self, *args: Any, **kwargs: Any) -> str:
        await self._gate("upload_part", "before", args[2])
        etag = await super().upload_part(*args, **kwargs)
        await self._gate("upload_part", "after", args[2])
        return etag

    async def complete_multipart_upload(self, *args: Any, **kwargs: Any) -> str:
        await self._gate("complete_multipart_upload", "before")
        etag = await super().complete_multipart_upload(*args, **kwargs)
        if self.complete_then_fail:
            self.complete_then_fail = False
            raise BackendUnavailable("timed out waiting for the answer", backend=self.name)
        return etag


class Rig:
    def __init__(self, store: SQLiteStore, backends: list[Backend], clock: Clock, limits: dict[str, int]) -> None:
        self.store = store
        self.backends = {b.name: b for b in backends}
        self.clock = clock
        configs = [type("Cfg", (), {"name": b.name, "max_object_size": 0})() for b in backends]
        self.objects = ObjectService(
            store=store, backends=self.backends, backend_configs=configs, routing_strategy="pack", clock=clock
        )
        self.mp = MultipartService(
            objects=self.objects, bucket_limits=limits, clock=clock, stale_timeout=STALE, min_part_size=MIN
        )

    @property
    def b1(self) -> Backend:
        return self.backends["b1"]

    async def quota(self, name: str = "b1") -> QuotaRow:
        return (await self.store.get_quotas())[name]

    async def part(self, upload: MultipartUpload, number: int, data: bytes, key: str = "k") -> str:
        part = await self.mp.upload_part(
            "bkt", key, upload.upload_id, number, io.BytesIO(data), len(data),
            md5_hex=hashlib.md5(data).hexdigest(), sha256_hex=hashlib.sha256(data).hexdigest(),
        )
        return part.etag


@pytest_twisted.async_yield_fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SQLiteStore(tmp_path / "meta.db", reactor)
    await store.start()
    await store.sync_quota_limits({"b1": 10_000, "b2": 10_000})
    clock = Clock()
    clock.advance(1_700_000_000)
    yield Rig(store, [Backend("b1"), Backend("b2")], clock, {"bkt": 3})
    await store.close()


def listing(parts: list[tuple[int, str]]) -> list[CompletedPart]:
    return [CompletedPart(n, e) for n, e in parts]


async def raises(coro: Any, error: type[errors.S3Error]) -> errors.S3Error:
    with pytest.raises(error) as info:
        await coro
    return info.value


@pytest_twisted.ensureDeferred
async def test_crash_between_backend_create_and_its_record_is_cleaned_up(rig: Rig) -> None:
    upload_id = new_upload_id(rig.clock.seconds())
    template = MultipartUpload(upload_id, "bkt", "k", "", storage_key("bkt", "k", upload_id), rig.clock.seconds())
    upload = await rig.store.create_multipart_upload(template, ["b1"], "pack", 0, 0, rig.clock.seconds())
    assert upload is not None and upload.state == "creating"
    await rig.b1.create_multipart_upload(upload.storage_key)  # ... and the process dies here
    assert (await rig.mp.list_uploads("bkt", "", "", "", "", 10)).uploads == ()  # invisible
    await raises(rig.mp.upload_part("bkt", "k", upload_id, 1, io.BytesIO(b"x"), 1, md5_hex="0" * 32,
                                    sha256_hex=None), errors.NoSuchUpload)
    assert await rig.mp.abort_stale() == 0  # not stale yet
    assert len(rig.b1.uploads) == 1
    rig.clock.advance(STALE + 1)
    assert await rig.mp.abort_stale() == 1
    assert rig.b1.uploads == {}  # found by listing the backend's uploads under the storage key
    found = await rig.store.get_multipart_upload("bkt", "k", upload_id)
    assert found is not None and found.state == "aborted"
    rig.clock.advance(STALE + 1)
    await rig.mp.abort_stale()
    assert await rig.store.get_multipart_upload("bkt", "k", upload_id) is None  # tombstone purged


@pytest_twisted.ensureDeferred
async def test_complete_interrupted_after_the_backend_assembled_is_finished_by_a_retry(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    data = [b"a" * 150, b"b" * 40]
    etags = [await rig.part(upload, 1, data[0]), await rig.part(upload, 2, data[1])]
    # The first Complete reached the backend, then the process died before committing.
    await rig.store.begin_complete("bkt", "k", upload.upload_id, list(zip([1, 2], etags)), rig.clock.seconds())
    parts, _ = await rig.store.list_parts(upload.upload_id)
    await rig.b1.complete_multipart_upload(
        upload.storage_key, upload.backend_upload_id or "", [(p.part_number, p.backend_etag) for p in parts]
    )
    assert (await rig.mp.list_parts("bkt", "k", upload.upload_id, 0, 10))[0] == parts
    record = await rig.mp.complete("bkt", "k", upload.upload_id, listing(list(zip([1, 2], etags))))
    assert record.etag == multipart_etag(etags) and record.size == 190
    assert (record.content_type, record.user_metadata, record.headers) == (
        "text/plain", {"owner": "alice"}, {"cache-control": "no-cache"})
    stored = await rig.store.get_object("bkt", "k")
    assert stored is not None and stored.part_sizes == (150, 40) and stored.parts_count == 2
    row = await rig.quota()
    assert (row.bytes_used, row.reserved_bytes, row.object_count) == (190, 0, 1)


@pytest_twisted.ensureDeferred
async def test_ambiguous_backend_failure_keeps_completing_and_a_retry_answers_the_object(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    etags = [await rig.part(upload, 1, b"x" * 200), await rig.part(upload, 2, b"y")]
    rig.b1.complete_then_fail = True
    await raises(rig.mp.complete("bkt", "k", upload.upload_id, listing(list(zip([1, 2], etags)))),
                 errors.ServiceUnavailable)
    state = await rig.store.get_multipart_upload("bkt", "k", upload.upload_id)
    assert state is not None and state.state == "completing"
    assert await rig.store.get_object("bkt", "k") is None  # not acknowledged, not visible
    record = await rig.mp.complete("bkt", "k", upload.upload_id, listing(list(zip([1, 2], etags))))
    assert record.etag == multipart_etag(etags)
    again = await rig.mp.complete("bkt", "k", upload.upload_id, listing(list(zip([1, 2], etags))))
    assert again.etag == record.etag and again.write_id == upload.upload_id
    row = await rig.quota()
    assert (row.bytes_used, row.reserved_bytes) == (201, 0)


@pytest_twisted.ensureDeferred
async def test_a_backend_refusing_complete_reopens_the_upload(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    etag = await rig.part(upload, 1, b"x" * 200)
    rig.b1.fail_next("complete_multipart_upload", error=BackendError("no", status=400, code="InvalidPart"))
    await raises(rig.mp.complete("bkt", "k", upload.upload_id, listing([(1, etag)])), errors.InvalidPart)
    again = await rig.part(upload, 2, b"z")  # still open
    record = await rig.mp.complete("bkt", "k", upload.upload_id, listing([(1, etag), (2, again)]))
    assert record.size == 201


@pytest_twisted.ensureDeferred
async def test_aborting_an_interrupted_complete_deletes_what_the_backend_assembled(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    etags = [await rig.part(upload, 1, b"q" * 300)]
    rig.b1.complete_then_fail = True
    await raises(rig.mp.complete("bkt", "k", upload.upload_id, listing([(1, etags[0])])), errors.ServiceUnavailable)
    assert upload.storage_key in rig.b1.objects
    await rig.mp.abort("bkt", "k", upload.upload_id)
    assert upload.storage_key not in rig.b1.objects and rig.b1.uploads == {}
    row = await rig.quota()
    assert (row.bytes_used, row.reserved_bytes, row.orphan_bytes) == (0, 0, 0)
    await raises(rig.mp.complete("bkt", "k", upload.upload_id, listing([(1, etags[0])])), errors.NoSuchUpload)


@pytest_twisted.ensureDeferred
async def test_failed_part_upload_releases_its_reservation_and_keeps_the_old_part(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    first = await rig.part(upload, 1, b"1" * 120)
    rig.b1.fail_next("upload_part")
    await raises(rig.part(upload, 1, b"2" * 500), errors.ServiceUnavailable)
    assert (await rig.quota()).reserved_bytes == 120
    parts, _ = await rig.store.list_parts(upload.upload_id)
    assert [(p.part_number, p.etag) for p in parts] == [(1, first)]
    # No room: refused before the backend sees the part.
    calls = len(rig.b1.calls)
    await raises(rig.part(upload, 2, b"3" * 9_900), errors.InsufficientStorage)
    assert len(rig.b1.calls) == calls and (await rig.quota()).reserved_bytes == 120


@pytest_twisted.ensureDeferred
async def test_late_part_racing_complete_is_refused_and_leaks_nothing(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    etags = [await rig.part(upload, 1, b"a" * 100), await rig.part(upload, 2, b"b" * 100)]
    # One late part reached the backend but not the store; one has not reached the backend.
    after = rig.b1.hold("upload_part", "after", part=3)
    before = rig.b1.hold("upload_part", "before", part=4)
    arrived = [rig.b1.reached[("upload_part", "after", 3)], rig.b1.reached[("upload_part", "before", 4)]]
    landed = Deferred.fromCoroutine(rig.part(upload, 3, b"c" * 100))
    waiting = Deferred.fromCoroutine(rig.part(upload, 4, b"d" * 100))
    for reached in arrived:
        await reached
    assert (await rig.quota()).reserved_bytes == 400  # both reserved
    record = await rig.mp.complete("bkt", "k", upload.upload_id, listing(list(zip([1, 2], etags))))
    after.callback(None)
    before.callback(None)
    for late in (landed, waiting):
        with pytest.raises(errors.NoSuchUpload):
            await late
    assert record.size == 200 and rig.b1.objects[upload.storage_key] == b"a" * 100 + b"b" * 100
    row = await rig.quota()
    assert (row.bytes_used, row.reserved_bytes) == (200, 0)
    assert rig.b1.uploads == {}


@pytest_twisted.ensureDeferred
async def test_double_complete_in_flight_gives_one_object(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    etags = [await rig.part(upload, 1, b"a" * 100), await rig.part(upload, 2, b"b")]
    gate = rig.b1.hold("complete_multipart_upload")
    first = Deferred.fromCoroutine(rig.mp.complete("bkt", "k", upload.upload_id, listing(list(zip([1, 2], etags)))))
    await rig.b1.reached[("complete_multipart_upload", "before", 0)]
    second = Deferred.fromCoroutine(rig.mp.complete("bkt", "k", upload.upload_id, listing([(1, etags[0])])))
    gate.callback(None)
    one, two = await first, await second
    assert one.etag == two.etag == multipart_etag(etags)
    assert [c for c in rig.b1.calls if c[0] == "complete_multipart_upload"] == [
        ("complete_multipart_upload", upload.storage_key)]
    assert (await rig.quota()).bytes_used == 101


@pytest_twisted.ensureDeferred
async def test_create_fails_over_and_respects_the_bucket_limit(rig: Rig) -> None:
    rig.b1.fail_next("create_multipart_upload")
    upload = await rig.mp.create("bkt", "k", NEW)
    assert upload.backend == "b2" and len(rig.backends["b2"].uploads) == 1
    await rig.mp.create("bkt", "k2", NEW)
    await rig.mp.create("bkt", "k3", NEW)
    await raises(rig.mp.create("bkt", "k4", NEW), errors.SlowDown)
    await rig.mp.create("other", "k4", NEW)
    await rig.mp.abort("bkt", "k", upload.upload_id)
    await rig.mp.create("bkt", "k4", NEW)
    assert await rig.store.active_multipart_counts() == {"b1": 4}  # k2, k3, k4 and other/k4


@pytest_twisted.ensureDeferred
async def test_abort_that_fails_on_the_backend_can_be_retried(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    await rig.part(upload, 1, b"z" * 500)
    rig.b1.fail_next("abort_multipart_upload")
    await raises(rig.mp.abort("bkt", "k", upload.upload_id), errors.ServiceUnavailable)
    await raises(rig.part(upload, 2, b"late"), errors.NoSuchUpload)  # aborting: no more parts
    assert (await rig.quota()).reserved_bytes == 500
    await rig.mp.abort("bkt", "k", upload.upload_id)
    assert (await rig.quota()).reserved_bytes == 0 and rig.b1.uploads == {}


@pytest_twisted.ensureDeferred
async def test_part_copy_from_another_backend_goes_through_the_gateway(rig: Rig) -> None:
    source = bytes(range(256)) * 2
    from s3orch.store.interface import Intent

    res = await rig.store.reserve(Intent("w1", "bkt", "src", len(source), "bkt/src@w1"), ["b2"], "pack", 0.0)
    assert res is not None
    await rig.backends["b2"].put_object("bkt/src@w1", io.BytesIO(source), len(source))
    from s3orch.store.interface import ObjectRecord

    await rig.store.commit_object(res, ObjectRecord("bkt", "src", "w1", len(source), hashlib.md5(source).hexdigest(), 0.0), 0.0)
    src = await rig.store.get_object("bkt", "src")
    assert src is not None
    upload = await rig.mp.create("bkt", "k", NEW)
    assert upload.backend == "b1"
    part = await rig.mp.upload_part_copy("bkt", "k", upload.upload_id, 1, src, (10, 209))
    assert part.etag == hashlib.md5(source[10:210]).hexdigest() and part.size == 200
    whole = await rig.mp.upload_part_copy("bkt", "k", upload.upload_id, 2, src, None)
    assert whole.etag == hashlib.md5(source).hexdigest()
    assert not any(c[0] == "upload_part_copy" for c in rig.b1.calls)
    await rig.mp.complete("bkt", "k", upload.upload_id, listing([(1, part.etag), (2, whole.etag)]))
    assert rig.b1.objects[upload.storage_key] == source[10:210] + source
