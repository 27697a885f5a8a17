"""Compressed multipart parts, in memory: each part stored as a PUT would store it, read back per extent.

:func:`~s3orch.codec.parts.prepare_part` compresses a part when that pays (then seals it in an
encrypted upload); :func:`~s3orch.codec.objects.open_compressed` reads a multi-extent record
mixing compressed extents and extents stored as sent, a range decompressing only the frames it
needs in each part it touches.  Backends are :class:`MemoryBackend` (every Deferred fires at once).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from functools import cache
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from s3orch.backend.interface import BackendStream, PushProducer
from s3orch.backend.memory import MemoryBackend
from s3orch.codec import zstd as z
from s3orch.codec.objects import Compressor, open_compressed
from s3orch.codec.parts import client_parts, mark_compressed, prepare_part
from s3orch.codec.streams import CompressionSettings
from s3orch.core.multipart import multipart_etag
from s3orch.crypto import parts as sealing
from s3orch.crypto.envelope import Envelope
from s3orch.crypto.format import ciphertext_size
from s3orch.crypto.keys import LocalKeys
from s3orch.payload import Payload
from s3orch.store.records import Extent, Location, MultipartUpload, ObjectRecord, UploadedPart

T = TypeVar("T")
CHUNK = z.MIN_CHUNK_SIZE
TEXT = b"".join(b"%05d a log line, %d, with a repeated tail of words\n" % (i, i * 7919 % 1000) for i in range(9000))
COMPRESSOR = Compressor(CompressionSettings(chunk_size=CHUNK, min_size=1024))
ENVELOPE = Envelope(LocalKeys({"k1": bytes(range(32))}, "k1"), chunk_size=4096)
#: Text (compressed), random (stored as sent), text again, a tail below ``min_size`` (as sent).
PARTS = (TEXT[:3 * CHUNK + 11], os.urandom(2 * CHUNK + 5), TEXT[5000:5000 + 4 * CHUNK + 3], TEXT[:700])
BODY = b"".join(PARTS)


def run(coro: Coroutine[Any, Any, T]) -> T:
    results: list[T | Failure] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)
    assert results, "the coroutine did not finish synchronously"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.data += data


class Stored:
    """An object completed from ``PARTS`` on one in-memory backend, and the reads made of it."""

    def __init__(self, encrypted: bool) -> None:
        self.backend = MemoryBackend("b1")
        upload = MultipartUpload(upload_id="u1", bucket="bkt", key="k", initiated=0.0)
        self.upload = run(sealing.seal_upload(ENVELOPE, upload)) if encrypted else upload
        envelope = ENVELOPE if encrypted else None
        self.parts: list[UploadedPart] = []
        for number, data in enumerate(PARTS, 1):
            body = run(prepare_part(COMPRESSOR, envelope, self.upload, number, Payload.from_bytes(data)))
            try:
                run(self.backend.put_object(f"p{number}", body.stored))
                part = UploadedPart(number, hashlib.md5(data).hexdigest(), len(data), 0.0, "b1", f"p{number}")
                self.parts.append(body.stamp(part))
            finally:
                body.close()
        sizes = [p.size for p in client_parts(ENVELOPE, self.upload, self.parts)]
        extents, offset = [], 0
        for part, size in zip(self.parts, sizes):
            location = Location("b1", part.storage_key or "", part.size)
            extents.append(Extent(part.part_number, offset, size, (location,), part.etag,
                                  compression_chunk_size=part.compression_chunk_size))
            offset += size
        record = ObjectRecord("bkt", "k", "u1", offset, multipart_etag([p.etag for p in self.parts]), 0.0,
                              parts_count=len(PARTS), part_sizes=tuple(sizes), parts=tuple(extents))
        self.record = mark_compressed(sealing.stamp_upload(self.upload, record), self.parts)
        self.opened: list[tuple[str, tuple[int, int] | None]] = []

    async def opener(self, locations: Sequence[Location], rng: tuple[int, int] | None) -> tuple[BackendStream, Location]:
        self.opened.append((locations[0].storage_key, rng))
        return await self.backend.get_object(locations[0].storage_key, rng), locations[0]

    def read(self, rng: tuple[int, int] | None) -> bytes:
        stream, _ = run(open_compressed(self.record, rng, self.opener, ENVELOPE))
        sink = Sink()
        results: list[object] = []
        stream.deliver(sink).addBoth(results.append)
        if isinstance(results[0], Failure):
            results[0].raiseException()
        assert stream.length == len(sink.data)
        return bytes(sink.data)


@cache
def stored(encrypted: bool) -> Stored:
    return Stored(encrypted)


@pytest.mark.parametrize("encrypted", [False, True], ids=["compressed", "compressed+encrypted"])
def test_each_part_is_stored_as_a_put_would_store_it(encrypted: bool) -> None:
    obj = stored(encrypted)
    chunks = [p.compression_chunk_size for p in obj.parts]
    assert chunks == [CHUNK, None, CHUNK, None]  # random and below min_size: as sent
    assert obj.record.compressed and obj.record.size == len(BODY)
    for part, data in zip(obj.parts, PARTS):
        held = obj.backend.objects[part.storage_key or ""]
        assert part.size == len(held)  # the row's size is the stored size (quotas count it)
        if part.compression_chunk_size is not None:
            assert part.logical_size == len(data) and len(held) < len(data) // 2
        elif encrypted:
            assert len(held) == ciphertext_size(len(data), ENVELOPE.chunk_size) and data[:64] not in held
        else:
            assert held == data and part.logical_size is None
    assert [p.size for p in client_parts(ENVELOPE, obj.upload, obj.parts)] == [len(d) for d in PARTS]
    assert obj.record.etag == multipart_etag([hashlib.md5(d).hexdigest() for d in PARTS])
    assert obj.read(None) == BODY


@settings(max_examples=60, deadline=None)
@given(data=st.data(), encrypted=st.booleans())
def test_every_range_reads_back_byte_exact(data: st.DataObject, encrypted: bool) -> None:
    obj = stored(encrypted)
    first = data.draw(st.integers(0, len(BODY) - 1))
    last = data.draw(st.integers(first, len(BODY) - 1))
    assert obj.read((first, last)) == BODY[first : last + 1]


@pytest.mark.parametrize("encrypted", [False, True], ids=["compressed", "compressed+encrypted"])
def test_a_range_fetches_only_the_frames_it_needs_in_each_part(encrypted: bool) -> None:
    obj = Stored(encrypted)
    p1, p2, p3, _ = (len(d) for d in PARTS)
    start, end = p1 - 10, p1 + p2 + CHUNK + 5  # the end of part 1, all of part 2, two frames of part 3
    assert obj.read((start, end)) == BODY[start : end + 1]
    asked: dict[str, list[tuple[int, int] | None]] = {key: [] for key in ("p1", "p2", "p3", "p4")}
    for key, rng in obj.opened:
        asked[key].append(rng)
    assert asked["p4"] == []  # outside the range: never opened
    assert asked["p2"] == [None]  # a whole part stored as sent
    if encrypted:
        return  # the sealed stream is fetched by 4 KiB cipher chunks: these parts are a few of them
    for key in ("p1", "p3"):
        held = obj.backend.objects[key]
        assert asked[key] and all(rng is not None for rng in asked[key])  # the seek table, then frames
        fetched = sum(r[1] - r[0] + 1 for r in asked[key] if r is not None)
        assert fetched < len(held) / 2, (key, asked[key], len(held))


def test_a_record_is_marked_compressed_only_when_a_part_is() -> None:
    record = ObjectRecord("bkt", "k", "u1", 10, "e-1", 0.0)
    plain = UploadedPart(1, "e", 10, 0.0)
    assert mark_compressed(record, [plain]) is record
    packed = replace(plain, compression_chunk_size=CHUNK, logical_size=10)
    assert mark_compressed(record, [plain, packed]).compression_chunk_size == CHUNK
