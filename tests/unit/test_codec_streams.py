"""The compression seam over the in-memory backend: spools in, exact ranges out, corrupt copies refused."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from s3orch.backend.interface import BackendError, BackendStream, PushProducer
from s3orch.backend.memory import MemoryBackend
from s3orch.codec import zstd as z
from s3orch.codec.streams import (
    CompressedStreamRejected,
    CompressionSettings,
    compress_spool,
    open_decompressed,
)
from s3orch.config.features import CompressionConfig
from s3orch.core.spool import run_here
from s3orch.observe import compression_metrics as m
from s3orch.payload import Payload

T = TypeVar("T")
CHUNK = z.MIN_CHUNK_SIZE
TEXT = b"".join(b"%05d some log line with a repeated tail of words\n" % i for i in range(3000))
SETTINGS = CompressionSettings(chunk_size=CHUNK)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine whose Deferreds all fire synchronously (MemoryStream without a clock)."""
    results: list[T | Failure] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)
    assert results, "the coroutine did not finish synchronously"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.producer: PushProducer | None = None

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.data += data


def read(stream: BackendStream) -> bytes:
    sink = Sink()
    results: list[object] = []
    stream.deliver(sink).addBoth(results.append)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return bytes(sink.data)


def store(data: bytes, backend: MemoryBackend, key: str = "k", cfg: CompressionSettings = SETTINGS) -> Payload | None:
    plain = Payload.from_bytes(data)
    stored = run(compress_spool(plain, cfg, spool_dir=None, offload=run_here))
    run(backend.put_object(key, stored or plain))
    return stored


def open_(backend: MemoryBackend, data: bytes, rng: tuple[int, int] | None, key: str = "k") -> BackendStream:
    async def open_range(r: tuple[int, int] | None) -> BackendStream:
        return await backend.get_object(key, r)

    return run(open_decompressed(
        open_range, stored_size=len(backend.objects[key]), logical_size=len(data),
        chunk_size=CHUNK, byte_range=rng,
    ))


def test_text_is_stored_compressed_with_the_stored_digests() -> None:
    backend = MemoryBackend("b1")
    saved = m.COMPRESSION_BYTES_SAVED._value.get()
    stored = store(TEXT, backend)
    assert stored is not None
    on_backend = backend.objects["k"]
    assert len(on_backend) == stored.length < len(TEXT) / 4
    assert stored.md5_hex == hashlib.md5(on_backend).hexdigest()
    assert stored.sha256_hex == hashlib.sha256(on_backend).hexdigest()
    assert z.decompress(on_backend) == TEXT
    assert m.COMPRESSION_BYTES_SAVED._value.get() - saved == len(TEXT) - len(on_backend)
    stream = open_(backend, TEXT, None)
    assert (stream.status, stream.length) == (200, len(TEXT))
    assert read(stream) == TEXT


def test_random_data_and_small_bodies_are_stored_as_is() -> None:
    backend = MemoryBackend("b1")
    ratio = m.COMPRESSION_SKIPPED.labels("ratio")._value.get()
    small = m.COMPRESSION_SKIPPED.labels("below_min_size")._value.get()
    noise = os.urandom(50_000)
    assert store(noise, backend) is None
    assert backend.objects["k"] == noise
    assert store(TEXT[:4095], backend, "s") is None
    assert backend.objects["s"] == TEXT[:4095]
    assert m.COMPRESSION_SKIPPED.labels("ratio")._value.get() == ratio + 1
    assert m.COMPRESSION_SKIPPED.labels("below_min_size")._value.get() == small + 1
    # min_ratio is the bar: text that saves 50% is kept only when the bar is above 0.5.
    half = os.urandom(20_000) + b"\0" * 20_000
    assert store(half, backend, "h", CompressionSettings(chunk_size=CHUNK, min_ratio=0.4)) is None
    assert store(half, backend, "h", CompressionSettings(chunk_size=CHUNK, min_ratio=0.6)) is not None


def test_settings_are_checked() -> None:
    assert CompressionSettings.from_config(CompressionConfig()) == CompressionSettings(
        "default", 1024 * 1024, 4096, 0.95
    )
    assert CompressionSettings.from_config(CompressionConfig(level="best", chunk_size=CHUNK)).level == "best"
    with pytest.raises(ValueError):
        CompressionSettings(level="ultra")
    with pytest.raises(ValueError):
        CompressionSettings(chunk_size=1024)


@settings(max_examples=40, deadline=None)
@given(a=st.integers(0, len(TEXT) - 1), b=st.integers(0, len(TEXT) - 1), ignore_range=st.booleans())
def test_ranges_are_exact_and_fetch_only_their_frames(a: int, b: int, ignore_range: bool) -> None:
    backend = MemoryBackend("b1")
    store(TEXT, backend)
    backend.ranged_get_returns_full = ignore_range
    start, end = sorted((a, b))
    fetched = m.COMPRESSION_READ_FETCHED._value.get()
    stream = open_(backend, TEXT, (start, end))
    assert (stream.status, stream.length, stream.content_range) == (206, end - start + 1, (start, end, len(TEXT)))
    assert read(stream) == TEXT[start : end + 1]
    frames = end // CHUNK - start // CHUNK + 1
    assert m.COMPRESSION_READ_FETCHED._value.get() - fetched <= frames * len(z.compress(TEXT[:CHUNK], chunk_size=CHUNK))


def test_a_flipped_byte_on_the_backend_is_refused() -> None:
    backend = MemoryBackend("b1")
    store(TEXT, backend)
    bad = bytearray(backend.objects["k"])
    bad[len(bad) // 3] ^= 0x20
    backend.objects["k"] = bytes(bad)
    with pytest.raises(CompressedStreamRejected):
        read(open_(backend, TEXT, None))
    with pytest.raises(CompressedStreamRejected):
        read(open_(backend, TEXT, (0, len(TEXT) - 1)))


def test_a_truncated_copy_is_refused_before_the_first_byte() -> None:
    backend = MemoryBackend("b1")
    store(TEXT, backend)
    full = backend.objects["k"]
    backend.objects["k"] = full[:-1]

    async def open_range(r: tuple[int, int] | None) -> BackendStream:
        return await backend.get_object("k", r)

    with pytest.raises(CompressedStreamRejected):
        run(open_decompressed(open_range, stored_size=len(full), logical_size=len(TEXT), chunk_size=CHUNK, byte_range=None))
    with pytest.raises(CompressedStreamRejected):
        run(open_decompressed(open_range, stored_size=len(full), logical_size=len(TEXT), chunk_size=CHUNK, byte_range=(5, 9)))


def test_a_seek_table_that_disagrees_with_the_row_is_refused() -> None:
    backend = MemoryBackend("b1")
    store(TEXT, backend)

    async def open_range(r: tuple[int, int] | None) -> BackendStream:
        return await backend.get_object("k", r)

    with pytest.raises(CompressedStreamRejected):
        run(open_decompressed(
            open_range, stored_size=len(backend.objects["k"]), logical_size=len(TEXT) - 1,
            chunk_size=CHUNK, byte_range=(0, 10),
        ))


def test_backpressure_reaches_the_backend() -> None:
    backend = MemoryBackend("b1")
    store(TEXT, backend)
    stream = open_(backend, TEXT, None)
    sink = Sink()
    stream.deliver(sink)
    assert sink.producer is stream._inner  # type: ignore[attr-defined]


class PausingSink(Sink):
    """Pauses its producer once ``limit`` bytes arrived (a slow client)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.data) >= self.limit and self.producer is not None:
            self.producer.pauseProducing()


def test_a_paused_client_pauses_the_backend_and_resumes_to_the_exact_bytes() -> None:
    clock = Clock()
    backend = MemoryBackend("b1", chunk_size=1024, clock=clock)
    data = b"".join(hashlib.sha256(b"%d" % (i // 8)).digest() for i in range(8192))  # 256 KiB, compressible
    store(data, backend)
    stream = open_(backend, data, None)
    sink = PausingSink(2 * CHUNK)
    results: list[object] = []
    stream.deliver(sink).addBoth(results.append)
    for _ in range(2000):
        clock.advance(0)
    inner = stream._inner  # type: ignore[attr-defined]
    assert inner.producerState == "paused" and not results
    held = inner.delivered
    clock.advance(0)
    assert inner.delivered == held  # nothing more is read from the backend while paused
    sink.limit = len(data) + 1
    assert sink.producer is not None
    sink.producer.resumeProducing()
    for _ in range(2000):
        clock.advance(0)
    assert results == [None] and bytes(sink.data) == data


def test_a_body_cut_short_releases_only_whole_verified_chunks() -> None:
    backend = MemoryBackend("b1", chunk_size=1000)
    store(TEXT, backend)
    backend.body_fails_after = len(backend.objects["k"]) // 2
    stream = open_(backend, TEXT, None)
    sink = Sink()
    results: list[object] = []
    stream.deliver(sink).addBoth(results.append)
    assert isinstance(results[0], Failure) and results[0].check(BackendError)
    assert len(sink.data) % CHUNK == 0 and TEXT.startswith(bytes(sink.data))


def test_a_backend_that_ignores_the_range_is_cut_off_after_the_wanted_frames() -> None:
    backend = MemoryBackend("b1", chunk_size=1024)
    hexes = b"".join(hashlib.sha256(b"%d" % i).hexdigest().encode() for i in range(5000))  # ~0.5 ratio
    assert store(hexes, backend) is not None
    backend.ranged_get_returns_full = True
    stream = open_(backend, hexes, (10, 20))
    inner = stream._inner  # type: ignore[attr-defined]
    assert read(stream) == hexes[10:21]
    assert inner.cancelled and inner.delivered < len(backend.objects["k"]) // 2


def test_a_copy_longer_than_the_row_says_is_refused_before_the_first_byte() -> None:
    backend = MemoryBackend("b1")
    store(TEXT, backend)
    backend.objects["k"] += b"extra"

    async def open_range(r: tuple[int, int] | None) -> BackendStream:
        return await backend.get_object("k", r)

    with pytest.raises(CompressedStreamRejected):
        run(open_decompressed(
            open_range, stored_size=len(backend.objects["k"]) - 5, logical_size=len(TEXT),
            chunk_size=CHUNK, byte_range=None,
        ))
