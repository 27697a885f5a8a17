"""MultipartService over a real SQLite store and in-memory backends: placement of parts
across backends, and the crash and race windows a live gateway cannot be stopped in on cue.

Each test puts the upload where a full backend, a crash, a timeout or a racing
request would leave it (by calling the store and the backends directly, or by
holding a backend call on a gate), then checks that what follows ends in one
object that reads back byte for byte, or a clean abort, with quota exact on every
backend and no backend object left that nothing references (I1, I4, I5).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from s3orch.backend.memory import MemoryBackend
from s3orch.config.model import BackendConfig, DatabaseConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.multipart import multipart_etag
from s3orch.core.objects import NewObject, ObjectService
from s3orch.core.placement import part_storage_key
from s3orch.core.spool import Spooler
from s3orch.core.uploads import MultipartService
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.s3.checksums import new_checksum
from s3orch.s3.conditions import WriteConditions
from s3orch.s3.xml import CompletedPart
from s3orch.store import open_store
from s3orch.store.interface import MetadataStore, MultipartUpload, ObjectRecord, QuotaRow, UploadedPart
from s3orch.store.txn.multipart import IN_FLIGHT_GRACE

MIN = 100  # the minimum part size in these tests (S3's is 5 MiB)
STALE = 3600.0
NEW = NewObject("text/plain", {"cache-control": "no-cache"}, {"owner": "alice"})


class Backend(MemoryBackend):
    """MemoryBackend whose PUTs (and copies) can be held on a gate, before or after they store."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gates: dict[tuple[str, str], Deferred[None]] = {}
        self.reached: dict[tuple[str, str], Deferred[None]] = {}

    def hold(self, when: str, part: int) -> Deferred[None]:
        """Hold the next PUT of part ``part`` there; fire the result to let it go on."""
        gate: Deferred[None] = Deferred()
        self.gates[(when, f"/{part:05d}-")] = gate
        self.reached[(when, f"/{part:05d}-")] = Deferred()
        return gate

    async def _gate(self, when: str, key: str) -> None:
        for (stage, marker), gate in list(self.gates.items()):
            if stage == when and marker in key:
                del self.gates[(stage, marker)]
                self.reached.pop((stage, marker)).callback(None)
                await gate

    async def put_object(self, storage_key: str, payload: Payload) -> str:
        await self._gate("before", storage_key)
        etag = await super().put_object(storage_key, payload)
        await self._gate("after", storage_key)
        return etag

    async def copy_object(self, source_key: str, dest_key: str) -> str:
        await self._gate("before", dest_key)
        etag = await super().copy_object(source_key, dest_key)
        await self._gate("after", dest_key)
        return etag


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.data += data


class Rig:
    def __init__(self, store: MetadataStore, clock: Clock, limits: dict[str, int]) -> None:
        self.store = store
        self.backends = {name: Backend(name) for name in ("b1", "b2", "b3")}
        self.clock = clock
        self.configs = [BackendConfig(name=n) for n in self.backends]
        fleet = BackendFleet(self.configs, self.backends)
        self.cleanups = Cleanups(store=store, fleet=fleet, clock=clock, concurrency=16)
        self.objects = ObjectService(
            store=store, fleet=fleet, cleanups=self.cleanups, spooler=Spooler(), routing_strategy="pack", clock=clock
        )
        self.mp = MultipartService(
            store=store, fleet=fleet, objects=self.objects, cleanups=self.cleanups, clock=clock,
            bucket_limits=limits, stale_timeout=STALE, min_part_size=MIN,
        )

    @property
    def b1(self) -> Backend:
        return self.backends["b1"]

    async def quota(self, name: str = "b1") -> QuotaRow:
        return (await self.store.get_quotas())[name]

    async def used(self) -> dict[str, tuple[int, int, int, int]]:
        return {
            name: (row.bytes_used, row.orphan_bytes, row.reserved_bytes, row.object_count)
            for name, row in (await self.store.get_quotas()).items()
        }

    async def part(
        self, upload: MultipartUpload, number: int, data: bytes, key: str = "k", checksum: str | None = None
    ) -> UploadedPart:
        value = None
        if checksum is not None:
            summer = new_checksum(checksum)
            summer.update(data)
            value = (checksum, summer.b64digest())
        return await self.mp.upload_part("bkt", key, upload.upload_id, number, Payload.from_bytes(data, value))

    async def read(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        record = await self.store.get_object("bkt", key)
        assert record is not None
        stream, _ = await self.objects.open(record, byte_range)
        sink = Sink()
        await stream.deliver(sink)  # type: ignore[arg-type]
        return bytes(sink.data)

    def stored(self) -> dict[tuple[str, str], int]:
        return {(n, k): len(v) for n, b in self.backends.items() for k, v in b.objects.items()}

    async def settle(self) -> None:
        """Let background cleanups finish, then delete whatever is due far in the future
        (as the cleanup worker would once the graces have passed)."""
        await self.cleanups.quiesce()
        due = await self.store.due_cleanups(self.clock.seconds() + 10 * IN_FLIGHT_GRACE, 1000)
        await self.cleanups.retry(due)

    async def assert_clean(self, keys: list[str]) -> None:
        """Every backend object belongs to one of ``keys``' copies or an open upload's part,
        and no bytes are orphaned or reserved beyond those."""
        await self.settle()
        wanted: set[tuple[str, str]] = set()
        for key in keys:
            record = await self.store.get_object("bkt", key)
            assert record is not None
            for extent in record.extents:
                wanted |= {(loc.backend, loc.storage_key) for loc in extent.locations}
        assert set(self.stored()) == wanted
        for name, row in (await self.store.get_quotas()).items():
            assert row.orphan_bytes == 0 and row.reserved_bytes == 0, name


@pytest_twisted.async_yield_fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = open_store(DatabaseConfig(path=str(tmp_path / "meta.db")), reactor)
    await store.start()
    clock = Clock()
    clock.advance(1_700_000_000)
    await store.sync_quota_limits({"b1": 1000, "b2": 1000, "b3": 1000}, clock.seconds())
    yield Rig(store, clock, {"bkt": 3})
    await store.close()


def listing(parts: list[UploadedPart], checksums: bool = False) -> list[CompletedPart]:
    out = []
    for p in parts:
        extra = {f"Checksum{p.checksum_algorithm}": p.checksum_value} if checksums and p.checksum_value else {}
        out.append(CompletedPart(p.part_number, p.etag, extra))  # type: ignore[arg-type]
    return out


async def raises(coro: Any, error: type[errors.S3Error]) -> errors.S3Error:
    with pytest.raises(error) as info:
        await coro
    return info.value


async def fill(rig: Rig, key: str, size: int, backend: str) -> None:
    """A committed object of ``size`` bytes on ``backend`` (through the PUT path)."""
    data = b"f" * size
    everywhere = rig.objects.fleet
    rig.objects.fleet = BackendFleet([c for c in rig.configs if c.name == backend], rig.backends)
    try:
        await rig.objects.put("bkt", key, Payload.from_bytes(data), new=NEW)
    finally:
        rig.objects.fleet = everywhere


@pytest_twisted.ensureDeferred
async def test_an_upload_started_when_the_first_backend_is_nearly_full_continues_on_the_next(rig: Rig) -> None:
    await fill(rig, "filler", 850, "b1")
    upload = await rig.mp.create("bkt", "k", NEW)
    data = [bytes([n]) * size for n, size in ((1, 120), (2, 300), (3, 150), (4, 90))]
    parts = [await rig.part(upload, n, d) for n, d in enumerate(data, 1)]
    # pack, part by part: b1 has 150 free, room for the first part only
    assert [p.backend for p in parts] == ["b1", "b2", "b2", "b2"]
    record = await rig.mp.complete("bkt", "k", upload.upload_id, listing(parts))
    assert record.etag == multipart_etag([p.etag for p in parts]) and record.size == 660
    assert await rig.read("k") == b"".join(data)
    assert await rig.read("k", (100, 479)) == b"".join(data)[100:480]
    assert await rig.used() == {"b1": (970, 0, 0, 2), "b2": (540, 0, 0, 3), "b3": (0, 0, 0, 0)}
    await rig.assert_clean(["filler", "k"])


@pytest_twisted.ensureDeferred
async def test_an_object_larger_than_any_backends_free_space_is_stored_across_them(rig: Rig) -> None:
    await fill(rig, "a", 700, "b1")
    await fill(rig, "b", 700, "b2")
    await fill(rig, "c", 700, "b3")
    upload = await rig.mp.create("bkt", "big", NEW)
    data = [bytes([n]) * 250 for n in range(1, 4)] + [b"z" * 40]  # 790 > 300 free anywhere
    parts = [await rig.part(upload, n, d, key="big") for n, d in enumerate(data, 1)]
    assert [p.backend for p in parts] == ["b1", "b2", "b3", "b1"]
    await raises(rig.part(upload, 5, b"x" * 200, key="big"), errors.InsufficientStorage)  # now full
    record = await rig.mp.complete("bkt", "big", upload.upload_id, listing(parts))
    assert record.size == 790
    assert await rig.read("big") == b"".join(data)
    assert {name: row[0] for name, row in (await rig.used()).items()} == {"b1": 990, "b2": 950, "b3": 950}
    await rig.assert_clean(["a", "b", "c", "big"])


@pytest_twisted.ensureDeferred
async def test_a_part_uploaded_again_while_the_first_upload_is_in_flight_the_last_to_finish_wins(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    gate = rig.b1.hold("after", 1)
    slow = Deferred.fromCoroutine(rig.part(upload, 1, b"1" * 200))  # stored, then held
    await rig.b1.reached[("after", "/00001-")]
    fast = await rig.part(upload, 1, b"2" * 150)  # the re-upload finishes first
    gate.callback(None)
    slow_part = await slow  # ... the first one finishes last: it wins
    parts, _ = await rig.store.list_parts(upload.upload_id)
    assert [(p.etag, p.size) for p in parts] == [(slow_part.etag, 200)]
    await raises(rig.mp.complete("bkt", "k", upload.upload_id, listing([fast])), errors.InvalidPart)
    tail = await rig.part(upload, 2, b"t" * 10)
    await rig.mp.complete("bkt", "k", upload.upload_id, listing([slow_part, tail]))
    assert await rig.read("k") == b"1" * 200 + b"t" * 10
    await rig.assert_clean(["k"])  # the loser's bytes were deleted, quota exact


@pytest_twisted.ensureDeferred
async def test_a_failing_backend_makes_the_part_fail_over_to_the_next(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    rig.b1.fail_next("put_object")
    part = await rig.part(upload, 1, b"x" * 120)
    assert part.backend == "b2"
    assert await rig.used() == {"b1": (0, 0, 0, 0), "b2": (0, 0, 120, 0), "b3": (0, 0, 0, 0)}
    for backend in rig.backends.values():
        backend.fail.add("put_object")
    await raises(rig.part(upload, 2, b"y" * 120), errors.ServiceUnavailable)
    assert (await rig.quota("b2")).reserved_bytes == 120  # every failed attempt released


@pytest_twisted.ensureDeferred
async def test_a_part_no_backend_has_room_for_is_refused_before_any_backend_call(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    calls = sum(len(b.calls) for b in rig.backends.values())
    await raises(rig.part(upload, 1, b"x" * 1001), errors.InsufficientStorage)
    assert sum(len(b.calls) for b in rig.backends.values()) == calls
    await raises(rig.mp.create("bkt", "k2", NEW, size_hint=3001), errors.InsufficientStorage)


@pytest_twisted.ensureDeferred
async def test_late_parts_racing_complete_are_refused_and_leak_nothing(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    parts = [await rig.part(upload, 1, b"a" * 100), await rig.part(upload, 2, b"b" * 100)]
    # One late part reached the backend but not the store; one has not reached the backend.
    after = rig.b1.hold("after", 3)
    before = rig.b1.hold("before", 4)
    arrived = [rig.b1.reached[("after", "/00003-")], rig.b1.reached[("before", "/00004-")]]
    landed = Deferred.fromCoroutine(rig.part(upload, 3, b"c" * 100))
    waiting = Deferred.fromCoroutine(rig.part(upload, 4, b"d" * 100))
    for reached in arrived:
        await reached
    assert (await rig.quota()).reserved_bytes == 400  # both reserved
    record = await rig.mp.complete("bkt", "k", upload.upload_id, listing(parts))
    after.callback(None)
    before.callback(None)
    for late in (landed, waiting):
        with pytest.raises(errors.NoSuchUpload):
            await late
    assert record.size == 200 and await rig.read("k") == b"a" * 100 + b"b" * 100
    await rig.assert_clean(["k"])


@pytest_twisted.ensureDeferred
async def test_a_part_stored_by_a_process_that_died_before_recording_it_is_cleaned_up(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    kept = await rig.part(upload, 1, b"a" * 100)
    # the process reserved part 2, stored its bytes, and died before commit_part
    key = part_storage_key("bkt", "k", upload.upload_id, 2, "dead")
    res = await rig.store.reserve_part("bkt", "k", upload.upload_id, 2, 50, "dead", key, ["b2"], "pack", 0.0)
    assert res is not None
    await rig.backends["b2"].put_object(key, Payload.from_bytes(b"d" * 50))
    await rig.mp.complete("bkt", "k", upload.upload_id, listing([kept]))
    assert (await rig.quota("b2")).orphan_bytes == 50  # queued, first tried after a grace
    assert key in rig.backends["b2"].objects
    await rig.assert_clean(["k"])


@pytest_twisted.ensureDeferred
async def test_abort_deletes_every_part_on_every_backend(rig: Rig) -> None:
    await fill(rig, "filler", 900, "b1")
    upload = await rig.mp.create("bkt", "k", NEW)
    for n in range(1, 4):
        await rig.part(upload, n, bytes([n]) * 200)
    assert {b for (b, _) in rig.stored()} == {"b1", "b2"}
    await rig.mp.abort("bkt", "k", upload.upload_id)
    await raises(rig.part(upload, 4, b"late"), errors.NoSuchUpload)
    await raises(rig.mp.abort("bkt", "k", upload.upload_id), errors.NoSuchUpload)
    await rig.assert_clean(["filler"])


@pytest_twisted.ensureDeferred
async def test_stale_uploads_are_aborted_with_their_parts(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    await rig.part(upload, 1, b"p" * 300)
    assert await rig.mp.abort_stale() == 0  # not stale yet
    rig.clock.advance(STALE + 1)
    assert await rig.mp.abort_stale() == 1
    found = await rig.store.get_multipart_upload("bkt", "k", upload.upload_id)
    assert found is not None and found.state == "aborted"
    await rig.assert_clean([])
    rig.clock.advance(STALE + 1)
    await rig.mp.abort_stale()
    assert await rig.store.get_multipart_upload("bkt", "k", upload.upload_id) is None  # tombstone purged


@pytest_twisted.ensureDeferred
async def test_double_complete_in_flight_gives_one_object(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    parts = [await rig.part(upload, 1, b"a" * 100), await rig.part(upload, 2, b"b")]
    first = Deferred.fromCoroutine(rig.mp.complete("bkt", "k", upload.upload_id, listing(parts)))
    second = Deferred.fromCoroutine(rig.mp.complete("bkt", "k", upload.upload_id, listing(parts[:1])))
    one, two = await first, await second
    assert one.etag == two.etag == multipart_etag([p.etag for p in parts])
    assert (await rig.quota()).bytes_used == 101
    await rig.assert_clean(["k"])


@pytest_twisted.ensureDeferred
async def test_complete_honours_write_conditions_and_keeps_the_upload_open_when_they_fail(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    part = await rig.part(upload, 1, b"a" * 100)
    await raises(rig.mp.complete("bkt", "k", upload.upload_id, listing([part]),
                                 conditions=WriteConditions(("*",), None)), errors.NoSuchKey)
    await fill(rig, "k", 10, "b2")
    current = await rig.store.get_object("bkt", "k")
    assert current is not None
    error = await raises(rig.mp.complete("bkt", "k", upload.upload_id, listing([part]),
                                         conditions=WriteConditions(("other",), None)), errors.PreconditionFailed)
    assert error.status == 412
    await raises(rig.mp.complete("bkt", "k", upload.upload_id, listing([part]),
                                 conditions=WriteConditions(None, (current.etag,))), errors.PreconditionFailed)
    record = await rig.mp.complete("bkt", "k", upload.upload_id, listing([part]),
                                   conditions=WriteConditions((current.etag,), None))
    assert record.write_id == upload.upload_id
    await rig.assert_clean(["k"])


@pytest_twisted.ensureDeferred
async def test_create_respects_the_bucket_limit(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "k", NEW)
    await rig.mp.create("bkt", "k2", NEW)
    await rig.mp.create("bkt", "k3", NEW)
    await raises(rig.mp.create("bkt", "k4", NEW), errors.SlowDown)
    await rig.mp.create("other", "k4", NEW)
    await rig.mp.abort("bkt", "k", upload.upload_id)
    await rig.mp.create("bkt", "k4", NEW)


@pytest_twisted.ensureDeferred
async def test_checksum_uploads_store_a_full_object_crc_of_parts_on_several_backends(rig: Rig) -> None:
    await fill(rig, "filler", 900, "b1")
    upload = await rig.mp.create("bkt", "k", NEW, checksum_algorithm="CRC32C", checksum_type="FULL_OBJECT")
    await raises(rig.part(upload, 1, b"a" * 120), errors.InvalidRequest)  # no checksum
    await raises(rig.part(upload, 1, b"a" * 120, checksum="CRC32"), errors.InvalidRequest)  # another one
    data = [b"a" * 120, b"b" * 80]
    parts = [await rig.part(upload, n, d, checksum="CRC32C") for n, d in enumerate(data, 1)]
    record = await rig.mp.complete("bkt", "k", upload.upload_id, listing(parts))
    whole = new_checksum("crc32c")
    whole.update(b"".join(data))
    assert (record.checksum_algorithm, record.checksum_value) == ("CRC32C", whole.b64digest())
    stored = await rig.store.get_object("bkt", "k")
    assert stored is not None and [e.checksum_value for e in stored.parts] == [p.checksum_value for p in parts]


@pytest_twisted.ensureDeferred
async def test_part_copy_is_server_side_where_the_source_extent_lives_else_through_a_spool(rig: Rig) -> None:
    await fill(rig, "filler", 900, "b1")
    src_upload = await rig.mp.create("bkt", "src", NEW)
    src_data = [bytes([n]) * 150 for n in (7, 8)]
    src_parts = [await rig.part(src_upload, n, d, key="src") for n, d in enumerate(src_data, 1)]
    await rig.mp.complete("bkt", "src", src_upload.upload_id, listing(src_parts))
    source = await rig.store.get_object("bkt", "src")
    assert source is not None and [e.locations[0].backend for e in source.parts] == ["b2", "b2"]
    upload = await rig.mp.create("bkt", "k", NEW)
    whole_extent = await rig.mp.upload_part_copy("bkt", "k", upload.upload_id, 1, source, (150, 299))
    assert whole_extent.backend == "b2" and whole_extent.etag == hashlib.md5(src_data[1]).hexdigest()
    assert [c[0] for c in rig.backends["b2"].calls].count("copy_object") == 1  # server-side
    across = await rig.mp.upload_part_copy("bkt", "k", upload.upload_id, 2, source, (100, 199))
    whole = b"".join(src_data)
    assert across.etag == hashlib.md5(whole[100:200]).hexdigest() and across.size == 100
    assert [c[0] for c in rig.backends["b2"].calls].count("copy_object") == 1  # spooled
    await rig.mp.complete("bkt", "k", upload.upload_id, listing([whole_extent, across]))
    assert await rig.read("k") == src_data[1] + whole[100:200]
    await rig.assert_clean(["filler", "src", "k"])


@pytest_twisted.ensureDeferred
async def test_copy_object_of_a_multi_extent_source_places_each_extent_on_its_own(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "src", NEW)
    data = [bytes([n]) * 400 for n in (1, 2, 3)]
    parts = [await rig.part(upload, n, d, key="src") for n, d in enumerate(data, 1)]
    assert [p.backend for p in parts] == ["b1", "b1", "b2"]
    await rig.mp.complete("bkt", "src", upload.upload_id, listing(parts))
    source = await rig.store.get_object("bkt", "src")
    assert source is not None
    # 1200 bytes: more than any backend's free room (200, 600, 1000), so never one piece
    copy = await rig.objects.copy("bkt", source, "dst", NewObject("image/png", {}, {"new": "1"}))
    assert copy.etag == source.etag and copy.parts_count == 3
    got = await rig.store.get_object("bkt", "dst")
    assert got is not None and got.content_type == "image/png" and got.user_metadata == {"new": "1"}
    assert [e.locations[0].backend for e in got.parts] == ["b2", "b3", "b3"]
    assert [e.etag for e in got.parts] == [e.etag for e in source.parts]
    assert await rig.read("dst") == b"".join(data)
    # a conditional copy that fails leaves nothing behind
    await raises(rig.objects.copy("bkt", source, "dst", NEW, conditions=WriteConditions(None, ("*",))),
                 errors.PreconditionFailed)
    assert (await rig.store.list_multipart_uploads("bkt", "", "", "", "", 10)).uploads == ()
    await rig.assert_clean(["src", "dst"])


@pytest_twisted.ensureDeferred
async def test_copy_object_conditions_are_checked_at_commit_against_a_concurrent_writer(rig: Rig) -> None:
    upload = await rig.mp.create("bkt", "src", NEW)
    parts = [await rig.part(upload, 1, b"s" * 150, key="src"), await rig.part(upload, 2, b"t" * 10, key="src")]
    await rig.mp.complete("bkt", "src", upload.upload_id, listing(parts))
    source = await rig.store.get_object("bkt", "src")
    assert source is not None
    gate = rig.backends["b1"].hold("after", 2)
    copying = Deferred.fromCoroutine(
        rig.objects.copy("bkt", source, "dst", NEW, conditions=WriteConditions(None, ("*",)))
    )
    await rig.backends["b1"].reached[("after", "/00002-")]
    await fill(rig, "dst", 5, "b3")  # another writer gets there first
    gate.callback(None)
    with pytest.raises(errors.PreconditionFailed):
        await copying
    got = await rig.store.get_object("bkt", "dst")
    assert got is not None and got.size == 5
    await rig.assert_clean(["src", "dst"])


def test_records_of_multi_extent_objects_list_their_extents_in_order() -> None:
    record = ObjectRecord("b", "k", "w", 0, "e", 0.0)
    assert [e.part_number for e in record.extents] == [0]
