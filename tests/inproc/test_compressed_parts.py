"""Compressed multipart parts through MultipartService over a real SQLite store and in-memory backends.

Each part is compressed on its own when that pays (random data and a tail below ``min_size`` are
stored as sent), sealed after when the upload is encrypted; quotas count the stored bytes exactly,
clients see their own sizes (ListParts, the 5 MiB rule, the object's size, ranges), ETags are AWS's
over the client's bytes.  The other readers of parts (UploadPartCopy, CopyObject, the scrubber, the
replicator's and the drain's work items) each take every part in its own form (I1, I4, I5).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from s3orch.codec import zstd as z
from s3orch.codec.objects import Compressor
from s3orch.codec.streams import CompressionSettings
from s3orch.config.features import IntegrityConfig
from s3orch.config.model import DatabaseConfig
from s3orch.core.integrity import Scrubber
from s3orch.core.multipart import multipart_etag
from s3orch.crypto.envelope import Envelope
from s3orch.crypto.format import ciphertext_size
from s3orch.crypto.keys import LocalKeys
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.store import open_store
from s3orch.store.interface import MultipartUpload, ObjectRecord, UploadedPart
from tests.inproc.test_multipart_service import NEW, Rig, listing

CHUNK = z.MIN_CHUNK_SIZE
TEXT = b"".join(b"%05d a log line, %d, with a repeated tail of words\n" % (i, i * 7919 % 1000) for i in range(9000))
RANDOM = os.urandom(2 * CHUNK + 5)
#: Text (compressed), random (as sent), text, a tail below ``min_size`` (as sent).
PARTS = (TEXT[: 3 * CHUNK + 11], RANDOM, TEXT[5000 : 5000 + 4 * CHUNK + 3], TEXT[:700])
BODY = b"".join(PARTS)
LIMIT = 10_000_000


@pytest_twisted.async_yield_fixture(params=[False, True], ids=["compressed", "compressed+encrypted"])
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    store = open_store(DatabaseConfig(path=str(tmp_path / "meta.db")), reactor)
    await store.start()
    clock = Clock()
    clock.advance(1_700_000_000)
    await store.sync_quota_limits({"b1": LIMIT, "b2": LIMIT, "b3": LIMIT}, clock.seconds())
    made = Rig(store, clock, {"bkt": 10})
    made.objects.compressor = Compressor(CompressionSettings(chunk_size=CHUNK, min_size=1024))
    if request.param:
        made.objects.envelope = Envelope(LocalKeys({"k1": bytes(range(32))}, "k1"), chunk_size=4096)
    made.mp.min_part_size = 500
    yield made
    await store.close()


async def upload(rig: Rig, key: str, parts: tuple[bytes, ...] = PARTS) -> tuple[MultipartUpload, list[UploadedPart]]:
    created = await rig.mp.create("bkt", key, NEW)
    return created, [await rig.part(created, n, data, key=key) for n, data in enumerate(parts, 1)]


async def completed(rig: Rig, key: str, parts: tuple[bytes, ...] = PARTS) -> ObjectRecord:
    created, uploaded = await upload(rig, key, parts)
    await rig.mp.complete("bkt", key, created.upload_id, listing(uploaded))
    record = await rig.store.get_object("bkt", key)  # with its extents, as a reader finds it
    assert record is not None
    return record


def held(rig: Rig) -> dict[str, int]:
    """Bytes each backend holds (what its provider bills)."""
    return {name: sum(len(v) for v in backend.objects.values()) for name, backend in rig.backends.items()}


async def assert_quota_exact(rig: Rig) -> None:
    await rig.settle()
    assert {name: row[0] for name, row in (await rig.used()).items()} == held(rig)


@pytest_twisted.ensureDeferred
async def test_parts_are_stored_compressed_and_clients_see_their_own_sizes(rig: Rig) -> None:
    created, parts = await upload(rig, "k")
    assert [p.etag for p in parts] == [hashlib.md5(d).hexdigest() for d in PARTS]
    assert [p.logical_size for p in parts] == [len(PARTS[0]), None, len(PARTS[2]), None]
    rows, _ = await rig.store.list_parts(created.upload_id)
    assert [r.compression_chunk_size for r in rows] == [CHUNK, None, CHUNK, None]
    assert sum(r.size for r in rows) == sum(held(rig).values())  # reserved: the stored bytes
    assert sum(r.size for r in rows) < len(BODY) * 0.6
    _, listed, _ = await rig.mp.list_parts("bkt", "k", created.upload_id, 0, 1000)
    assert [p.size for p in listed] == [len(d) for d in PARTS]
    quotas = await rig.used()
    assert sum(row[2] for row in quotas.values()) == sum(held(rig).values())  # reserved until Complete

    record = await rig.mp.complete("bkt", "k", created.upload_id, listing(parts))
    assert record.size == len(BODY) and record.part_sizes == tuple(len(d) for d in PARTS)
    assert record.etag == multipart_etag([hashlib.md5(d).hexdigest() for d in PARTS])
    again = await rig.store.get_object("bkt", "k")
    assert again is not None and again.size == len(BODY) and again.compressed
    assert [e.compression_chunk_size for e in again.parts] == [CHUNK, None, CHUNK, None]
    assert [e.size for e in again.parts] == [len(d) for d in PARTS]
    assert again.parts[0].locations[0].size < again.parts[0].size  # the stored size of a compressed part
    listed_objects = await rig.objects.list("bkt", "", "", "", 10)
    assert [(e.key, e.size) for e in listed_objects.entries] == [("k", len(BODY))]
    assert await rig.read("k") == BODY
    await assert_quota_exact(rig)
    await rig.assert_clean(["k"])


@pytest.mark.parametrize("first,last", [(0, 0), (3 * CHUNK, 3 * CHUNK + 20), (CHUNK + 7, len(BODY) - 3),
                                        (len(PARTS[0]) + len(PARTS[1]) - 1, len(PARTS[0]) + len(PARTS[1]) + 2 * CHUNK),
                                        (len(BODY) - 700, len(BODY) - 1)])
@pytest_twisted.ensureDeferred
async def test_ranges_across_part_boundaries_are_byte_exact(rig: Rig, first: int, last: int) -> None:
    await completed(rig, "r")
    assert await rig.read("r", (first, last)) == BODY[first : last + 1]


@pytest_twisted.ensureDeferred
async def test_the_minimum_part_size_is_the_clients(rig: Rig) -> None:
    """A 40 KB text part stored in a few KB is still a 40 KB part (not EntityTooSmall)."""
    rig.mp.min_part_size = 40_000
    parts = (TEXT[:40_000], TEXT[:900])
    record = await completed(rig, "min", parts)
    assert record.size == 40_900
    assert await rig.read("min") == b"".join(parts)


@pytest_twisted.ensureDeferred
async def test_upload_part_copy_reads_the_clients_bytes_and_may_compress_them(rig: Rig) -> None:
    source = await completed(rig, "src")
    created = await rig.mp.create("bkt", "dst", NEW)
    boundary = (len(PARTS[0]) - 100, len(PARTS[0]) + len(PARTS[1]) + CHUNK)  # text | random | text
    whole = await rig.mp.upload_part_copy("bkt", "dst", created.upload_id, 1, source, None)
    spanning = await rig.mp.upload_part_copy("bkt", "dst", created.upload_id, 2, source, boundary)
    text = await rig.mp.upload_part_copy("bkt", "dst", created.upload_id, 3, source, (0, len(PARTS[0]) - 1))
    want = [BODY, BODY[boundary[0] : boundary[1] + 1], PARTS[0]]
    assert [p.etag for p in (whole, spanning, text)] == [hashlib.md5(d).hexdigest() for d in want]
    rows, _ = await rig.store.list_parts(created.upload_id)
    assert all(r.compression_chunk_size == CHUNK and r.size < r.logical_size for r in rows if r.logical_size)
    assert [r.logical_size for r in rows] == [len(d) for d in want]
    record = await rig.mp.complete("bkt", "dst", created.upload_id, listing([whole, spanning, text]))
    assert record.size == sum(len(d) for d in want)
    assert await rig.read("dst") == b"".join(want)
    await assert_quota_exact(rig)


@pytest_twisted.ensureDeferred
async def test_upload_part_copy_of_a_part_stored_as_sent_copies_it_on_the_backend(rig: Rig) -> None:
    """Unless the upload is encrypted: then the part is sealed afresh under the upload's key (the
    ciphertext binds the upload and the part number), never a backend's copy of stored bytes."""
    encrypted = rig.objects.envelope is not None
    source = await completed(rig, "src2")
    created = await rig.mp.create("bkt", "dst2", NEW)
    raw = source.parts[1]
    before = {name: len(b.calls) for name, b in rig.backends.items()}
    copied = await rig.mp.upload_part_copy("bkt", "dst2", created.upload_id, 1, source,
                                           (raw.offset, raw.offset + raw.size - 1))
    assert copied.etag == hashlib.md5(RANDOM).hexdigest()
    writes = [op for name, b in rig.backends.items() for op, _ in b.calls[before[name]:] if op != "get_object"]
    assert writes == (["put_object"] if encrypted else ["copy_object"])
    rows, _ = await rig.store.list_parts(created.upload_id)
    stored = ciphertext_size(len(RANDOM), 4096) if encrypted else len(RANDOM)
    assert rows[0].compression_chunk_size is None and rows[0].size == stored
    if encrypted:
        source_bytes = rig.backends[raw.locations[0].backend].objects[raw.locations[0].storage_key]
        assert rows[0].backend is not None and rows[0].storage_key is not None
        sealed = rig.backends[rows[0].backend].objects[rows[0].storage_key]
        assert sealed != source_bytes and RANDOM[:32] not in sealed
    _, listed, _ = await rig.mp.list_parts("bkt", "dst2", created.upload_id, 0, 1000)
    assert [p.size for p in listed] == [len(RANDOM)]
    record = await rig.mp.complete("bkt", "dst2", created.upload_id, listing([copied]))
    assert record.size == len(RANDOM)
    assert await rig.read("dst2") == RANDOM
    await assert_quota_exact(rig)


@pytest.mark.parametrize("rig", [True], ids=["compressed+encrypted"], indirect=True)  # only such an upload seals
@pytest_twisted.ensureDeferred
async def test_upload_part_copy_whose_sealing_fails_stores_nothing_and_closes_its_spool(rig: Rig) -> None:
    """The upload's data key will not unwrap (a key service down): the S3 error, no part, no
    reservation left, the spool of the source's range closed."""
    envelope = rig.objects.envelope
    assert envelope is not None
    envelope.enabled = False  # a source written while encryption was off: it reads without a key
    source = await completed(rig, "src3")
    envelope.enabled = True
    created = await rig.mp.create("bkt", "dst3", NEW)
    assert created.encrypted and not source.encrypted
    spools: list[Payload] = []
    spool_range = rig.objects.spool_range

    async def spying(*args: Any, **kwargs: Any) -> Payload:
        spools.append(await spool_range(*args, **kwargs))
        return spools[-1]

    rig.objects.spool_range = spying  # type: ignore[method-assign]
    envelope.keys = LocalKeys({"k1": bytes(range(1, 33))}, "k1")  # not the key the upload's DEK is wrapped by
    with pytest.raises(errors.InternalError):
        await rig.mp.upload_part_copy("bkt", "dst3", created.upload_id, 1, source, (0, len(PARTS[0]) - 1))
    assert len(spools) == 1 and spools[0].file.closed
    assert (await rig.store.list_parts(created.upload_id))[0] == []
    await assert_quota_exact(rig)


@pytest_twisted.ensureDeferred
async def test_copy_object_moves_each_part_in_its_stored_form(rig: Rig) -> None:
    source = await completed(rig, "orig")
    copy = await rig.objects.copy("bkt", source, "copied", NEW)
    assert copy.size == len(BODY) and copy.etag == source.etag
    record = await rig.store.get_object("bkt", "copied")
    assert record is not None
    assert [e.compression_chunk_size for e in record.parts] == [CHUNK, None, CHUNK, None]
    assert [e.locations[0].size for e in record.parts] == [e.locations[0].size for e in source.parts]
    assert await rig.read("copied") == BODY
    assert await rig.read("copied", (CHUNK, 5 * CHUNK)) == BODY[CHUNK : 5 * CHUNK + 1]
    await assert_quota_exact(rig)
    await rig.assert_clean(["orig", "copied"])


@pytest_twisted.ensureDeferred
async def test_scrubber_and_placement_workers_take_each_part_in_its_own_form(rig: Rig) -> None:
    """The scrubber decompresses (decrypts) a compressed part and hashes the client's bytes
    against the part's MD5; the replicator's and the drain's work items compare an MD5 only for
    bytes stored as the client sent them (ciphertext and frames move as they are)."""
    encrypted = rig.objects.envelope is not None
    await completed(rig, "s")
    copies = await rig.store.copies_to_scrub("bkt", "s")
    assert [c.compressed for c in copies] == [True, False, True, False]
    assert [c.expected for c in copies] == [("md5", hashlib.md5(d).hexdigest()) for d in PARTS]
    scrubber = Scrubber(rig.store, rig.objects.fleet, rig.cleanups, rig.clock, IntegrityConfig(enabled=True))
    scrubber.envelope = rig.objects.envelope
    assert [await scrubber.verdict(c) for c in copies] == ["verified"] * 4
    damaged = copies[2]
    stored = rig.backends[damaged.backend].objects
    good = stored[damaged.storage_key]
    data = bytearray(good)
    data[len(data) // 2] ^= 1
    stored[damaged.storage_key] = bytes(data)
    assert await scrubber.verdict(damaged) == "mismatch"
    stored[damaged.storage_key] = good

    raw_md5 = "" if encrypted else hashlib.md5(RANDOM).hexdigest()
    short = [e for e in await rig.store.under_replicated(2, 100, None, ()) if e.key == "s"]
    tail_md5 = "" if encrypted else hashlib.md5(PARTS[3]).hexdigest()
    assert [(e.part_number, e.etag) for e in short] == [(1, ""), (2, raw_md5), (3, ""), (4, tail_md5)]
    assert [e.size for e in short] == [c.size for c in copies]  # the stored sizes
    drained = [e for name in rig.backends for e in await rig.store.backend_extents(name, 100) if e.key == "s"]
    assert sorted((e.part_number, e.etag) for e in drained) == [(e.part_number, e.etag) for e in short]
    assert await rig.read("s") == BODY
