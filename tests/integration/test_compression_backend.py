"""The compression seam against a real SeaweedFS: what lands on the backend (read directly with
boto3, not through s3orch) is chunked zstd and smaller; reads through the real backend client,
full and ranged across chunk boundaries, are byte-exact; random data is stored as is; a copy
altered on the backend is refused."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_twisted
from botocore.config import Config
from twisted.internet import reactor

from s3orch.backend.interface import BackendStream, PushProducer
from s3orch.backend.s3 import S3Backend
from s3orch.codec import zstd as z
from s3orch.codec.streams import (
    CompressedStreamRejected,
    CompressionSettings,
    compress_spool,
    open_decompressed,
)
from s3orch.core.spool import thread_offload
from s3orch.payload import Payload
from tests.support.servers import WeedServer

KiB = 1024
ROOT = Path(__file__).resolve().parents[2]


def corpus() -> bytes:
    """A real text corpus: this project's own Python sources (a few MiB), in a fixed order."""
    return b"".join(p.read_bytes() for p in sorted((ROOT / "s3orch").rglob("*.py")))


def boto(server: WeedServer) -> Any:
    return boto3.client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name=server.region,
        config=Config(s3={"addressing_style": "path"}),
    )


class Keep:
    def __init__(self) -> None:
        self.data = bytearray()

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.data += data


async def read(stream: BackendStream) -> bytes:
    keep = Keep()
    await stream.deliver(keep)
    return bytes(keep.data)


async def store(backend: S3Backend, key: str, data: bytes, settings: CompressionSettings) -> Payload | None:
    plain = Payload.from_bytes(data)
    stored = await compress_spool(plain, settings, spool_dir=None, offload=thread_offload(reactor))
    try:
        await backend.put_object(key, stored or plain)
    finally:
        if stored is not None:
            stored.file.close()
    return stored


async def open_logical(
    backend: S3Backend, key: str, stored_size: int, logical: int, chunk: int, rng: tuple[int, int] | None
) -> BackendStream:
    async def open_range(r: tuple[int, int] | None) -> BackendStream:
        return await backend.get_object(key, r)

    return await open_decompressed(
        open_range, stored_size=stored_size, logical_size=logical, chunk_size=chunk, byte_range=rng
    )


@pytest_twisted.ensureDeferred
async def test_a_text_corpus_is_stored_as_smaller_zstd_frames_and_reads_back_exactly(
    weed: WeedServer, weed_bucket: str, make_backend: Callable[..., S3Backend]
) -> None:
    backend = make_backend(weed, weed_bucket)
    text = corpus()
    chunk = 256 * KiB
    settings = CompressionSettings(chunk_size=chunk)
    stored = await store(backend, "corpus", text, settings)
    assert stored is not None
    on_backend = boto(weed).get_object(Bucket=weed_bucket, Key="corpus")["Body"].read()
    ratio = len(on_backend) / len(text)
    sys.stderr.write(f"\ncompression: corpus {len(text)} B -> stored {len(on_backend)} B, ratio {ratio:.3f}\n")
    assert len(on_backend) == stored.length and ratio < 0.5
    assert hashlib.sha256(text).hexdigest().encode() not in on_backend
    assert struct.unpack_from("<I", on_backend)[0] == 0xFD2FB528  # a zstd frame first
    assert struct.unpack_from("<I", on_backend, len(on_backend) - 4)[0] == z.SEEKABLE_MAGIC
    assert z.decompress(on_backend) == text

    full = await open_logical(backend, "corpus", len(on_backend), len(text), chunk, None)
    assert full.length == len(text)
    assert await read(full) == text
    for start, end in [
        (0, 0), (chunk - 1, chunk), (chunk - 5, 3 * chunk + 5), (len(text) - 10, len(text) - 1),
        (1234, 1234 + 100 * KiB), (0, len(text) - 1),
    ]:
        ranged = await open_logical(backend, "corpus", len(on_backend), len(text), chunk, (start, end))
        assert ranged.content_range == (start, end, len(text))
        assert await read(ranged) == text[start : end + 1], (start, end)


@pytest_twisted.ensureDeferred
async def test_random_data_is_stored_as_is(
    weed: WeedServer, weed_bucket: str, make_backend: Callable[..., S3Backend]
) -> None:
    backend = make_backend(weed, weed_bucket)
    noise = os.urandom(600 * KiB)
    assert await store(backend, "noise", noise, CompressionSettings(chunk_size=64 * KiB)) is None
    assert boto(weed).get_object(Bucket=weed_bucket, Key="noise")["Body"].read() == noise


@pytest_twisted.ensureDeferred
async def test_a_copy_altered_on_the_backend_is_refused(
    weed: WeedServer, weed_bucket: str, make_backend: Callable[..., S3Backend]
) -> None:
    backend = make_backend(weed, weed_bucket)
    text = corpus()[: 1024 * KiB]
    chunk = 64 * KiB
    stored = await store(backend, "c", text, CompressionSettings(chunk_size=chunk))
    assert stored is not None
    client = boto(weed)
    bad = bytearray(client.get_object(Bucket=weed_bucket, Key="c")["Body"].read())
    bad[len(bad) // 2] ^= 0x01
    client.put_object(Bucket=weed_bucket, Key="c", Body=bytes(bad))
    with pytest.raises(CompressedStreamRejected):
        await read(await open_logical(backend, "c", len(bad), len(text), chunk, None))
    client.put_object(Bucket=weed_bucket, Key="c", Body=bytes(bad[:-100]))
    with pytest.raises(CompressedStreamRejected):
        await open_logical(backend, "c", len(bad), len(text), chunk, None)
