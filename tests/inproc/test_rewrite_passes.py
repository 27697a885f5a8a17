"""compress-existing / decompress-existing through the production wiring, in process (BEHAVIOURS
§1.20, issue 18 item 2): in-memory backends, a real SQLite store, the harness's clock.

Each pass rewrites what it should and nothing else: every object reads back byte-exact (whole and
by ranges across frame boundaries), the backends hold fewer bytes after compress-existing and the
client's bytes again after decompress-existing, ``bytes_used`` equals the bytes on the backends,
a second run rewrites nothing, incompressible data is skipped, encryption is kept, a client write
racing the pass wins (the pass's bytes are deleted); a multipart object is rewritten part by part
(each part compressed when it pays, its ETag kept, ranges across parts byte-exact).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from s3orch.admin.calls import AdminError
from s3orch.admin.compression import CompressionRoutes
from s3orch.admin.ndjson import SilentProgress
from s3orch.core.objects import NewObject
from s3orch.payload import Payload
from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS
from tests.inproc.conftest import boto as boto_client
from tests.inproc.conftest import make_backends
from tests.inproc.test_compression import _corpus
from tests.support.configs import GatewayConfig

BUCKET = PHOTOS.name
CHUNK = 16 * 1024
MIN_SIZE = 1024
KEY = base64.b64encode(bytes(range(32))).decode()


def _harness(workdir: Path, encryption: bool) -> GatewayHarness:
    extra: dict[str, Any] = {"compression": {"enabled": True, "chunk_size": CHUNK, "min_size": MIN_SIZE}}
    if encryption:
        extra["encryption"] = {"enabled": True, "master_key": KEY, "chunk_size": 4096}
    return GatewayHarness(workdir, GatewayConfig(backends=make_backends(1), extra=extra).render())


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayHarness]:
    with _harness(tmp_path, request.param) as harness:
        harness.encrypted = request.param  # type: ignore[attr-defined]
        yield harness




def _stored(gateway: GatewayHarness) -> dict[str, bytes]:
    """Every backend object's bytes, read directly from the in-memory servers."""
    found: dict[str, bytes] = {}
    for name, server in gateway.backends.items():
        for bucket in server.buckets:
            for key, stored in server.objects(bucket).items():
                found[f"{name}/{bucket}/{key}"] = bytes(stored.data)
    return found


def _quota_used(gateway: GatewayHarness) -> int:
    return sum(row.bytes_used for row in gateway.run(gateway.store.get_quotas()).values())


def _record(gateway: GatewayHarness, key: str) -> Any:
    record = gateway.run(gateway.store.get_object(BUCKET, key))
    assert record is not None
    return record


def _write_uncompressed(gateway: GatewayHarness, bodies: dict[str, bytes]) -> None:
    """PUT ``bodies`` as a gateway with compression off would have stored them."""
    objects = gateway.service.compression.rewriter.objects
    compressor, objects.compressor = objects.compressor, None
    try:
        for key, body in bodies.items():
            assert gateway.put(BUCKET, key, body).status == 200
    finally:
        objects.compressor = compressor


def _reads_back(gateway: GatewayHarness, bodies: dict[str, bytes]) -> None:
    for key, body in bodies.items():
        assert gateway.get(BUCKET, key).body == body, key
        if len(body) > CHUNK + 10:  # a range across a frame boundary
            got = gateway.get(BUCKET, key, headers={"Range": f"bytes={CHUNK - 7}-{CHUNK + 9}"}).body
            assert got == body[CHUNK - 7 : CHUNK + 10], key


def _quota_exact(gateway: GatewayHarness) -> int:
    gateway.advance(60)  # the replaced copies' cleanup
    total = sum(len(data) for data in _stored(gateway).values())
    assert _quota_used(gateway) == total
    return total


def test_compress_then_decompress_existing(gateway: GatewayHarness) -> None:
    passes = gateway.service.compression
    encrypted: bool = gateway.encrypted  # type: ignore[attr-defined]
    progress = SilentProgress()
    texts = {f"text/{i:02d}": _corpus(MIN_SIZE + 7919 * i * i) for i in range(12)}
    noise = {"noise": os.urandom(3 * CHUNK)}
    small = {"small": _corpus(MIN_SIZE - 1)}
    everything = {**texts, **noise, **small}
    _write_uncompressed(gateway, everything)
    before = _quota_exact(gateway)

    result = gateway.run(passes.compress(progress))
    assert result == {"status": "complete", "compressed": 12, "skipped": 1, "failed": 0, "total": 13}
    after = _quota_exact(gateway)
    assert after < before - sum(len(b) for b in texts.values()) // 2
    _reads_back(gateway, everything)
    for key in everything:
        record = _record(gateway, key)
        assert record.compressed == (key in texts) and record.encrypted == encrypted
    if encrypted:
        for data in _stored(gateway).values():
            assert not any(body[:64] in data for body in everything.values())

    stored = _stored(gateway)
    again = gateway.run(passes.compress(progress))
    assert (again["compressed"], again["failed"], again["skipped"]) == (0, 0, 1)  # only the noise, again
    assert _stored(gateway) == stored  # nothing rewritten

    result = gateway.run(passes.decompress(progress))
    assert result == {"status": "complete", "decompressed": 12, "skipped": 0, "failed": 0, "total": 12}
    assert _quota_exact(gateway) == before
    _reads_back(gateway, everything)
    for key in everything:
        record = _record(gateway, key)
        assert not record.compressed and record.encrypted == encrypted
    if not encrypted:
        assert sorted(_stored(gateway).values()) == sorted(everything.values())
    assert gateway.run(passes.decompress(progress))["total"] == 0  # second run: nothing


def test_a_client_write_racing_the_pass_wins(gateway: GatewayHarness) -> None:
    passes = gateway.service.compression
    objects = passes.rewriter.objects
    body = _corpus(4 * CHUNK)
    _write_uncompressed(gateway, {"raced": body, "calm": body})
    store = gateway.store
    swap = store.swap_stored_bytes
    client = b"the client's newer bytes" * 100

    async def racing_swap(record: Any, write_id: str, now: float) -> Any:
        if record.key == "raced":  # a client overwrites the key after the pass read it
            await objects.put(BUCKET, "raced", Payload.from_bytes(client),
                              new=NewObject("application/octet-stream", {}, {}))
        return await swap(record, write_id, now)

    store.swap_stored_bytes = racing_swap  # type: ignore[method-assign]
    try:
        result = gateway.run(passes.compress(SilentProgress()))
    finally:
        del store.swap_stored_bytes  # type: ignore[method-assign]
    assert (result["compressed"], result["skipped"], result["failed"]) == (1, 1, 0)
    assert gateway.get(BUCKET, "raced").body == client
    assert gateway.get(BUCKET, "calm").body == body
    _quota_exact(gateway)
    # Only the two current objects' copies remain: the pass's bytes for "raced" were deleted.
    referenced = {loc.storage_key for key in ("raced", "calm") for loc in _record(gateway, key).locations}
    assert {name.split("/", 2)[2] for name in _stored(gateway)} == referenced


def _upload_uncompressed(gateway: GatewayHarness, key: str, parts: list[bytes]) -> str:
    """A multipart object of ``parts`` as a gateway with compression off stored it; its ETag."""
    objects = gateway.service.compression.rewriter.objects
    compressor, objects.compressor = objects.compressor, None
    boto = boto_client(gateway)
    try:
        upload = boto.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        etags = [boto.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=body)["ETag"]
                 for n, body in enumerate(parts, 1)]
        done = boto.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    finally:
        objects.compressor = compressor
    etag: str = done["ETag"]
    return etag


def _multipart_reads_back(gateway: GatewayHarness, key: str, parts: list[bytes]) -> None:
    """The whole object, and ranges across every part boundary and across a frame boundary."""
    whole = b"".join(parts)
    assert gateway.get(BUCKET, key).body == whole
    edge = 0
    for part in parts[:-1]:
        edge += len(part)
        first, last = edge - CHUNK - 3, edge + CHUNK + 5
        got = gateway.get(BUCKET, key, headers={"Range": f"bytes={first}-{last}"}).body
        assert got == whole[first : last + 1], (key, edge)
    got = gateway.get(BUCKET, key, headers={"Range": f"bytes={CHUNK - 7}-{CHUNK + 9}"}).body
    assert got == whole[CHUNK - 7 : CHUNK + 10]


def _mixed_parts() -> list[bytes]:
    """Two text parts (compressible), then a random one (stored as sent by compress-existing)."""
    return [_corpus(5 * 1024 * 1024 + 3), _corpus(5 * 1024 * 1024 + 17)[::-1], os.urandom(2 * CHUNK + 5)]


def test_multipart_objects_are_compressed_and_decompressed_part_by_part(gateway: GatewayHarness) -> None:
    passes = gateway.service.compression
    encrypted: bool = gateway.encrypted  # type: ignore[attr-defined]
    progress = SilentProgress()
    parts = _mixed_parts()
    noise = [os.urandom(5 * 1024 * 1024), os.urandom(CHUNK)]
    etag = _upload_uncompressed(gateway, "mp", parts)
    _upload_uncompressed(gateway, "mp-noise", noise)
    before = _quota_exact(gateway)
    noise_copies = {loc.storage_key for part in _record(gateway, "mp-noise").parts for loc in part.locations}

    result = gateway.run(passes.compress(progress))
    assert result == {"status": "complete", "compressed": 1, "skipped": 1, "failed": 0, "total": 2}
    after = _quota_exact(gateway)
    assert after < before - len(parts[0]) // 2
    _multipart_reads_back(gateway, "mp", parts)
    _multipart_reads_back(gateway, "mp-noise", noise)
    record = _record(gateway, "mp")
    assert record.etag == etag.strip('"') and record.size == sum(map(len, parts))
    assert record.compressed and record.encrypted == encrypted
    assert [p.compression_chunk_size for p in record.parts] == [CHUNK, CHUNK, None]
    assert [p.size for p in record.parts] == [len(p) for p in parts]
    # The object that did not pay was left alone: nothing uploaded for it, nothing deleted.
    assert {loc.storage_key for part in _record(gateway, "mp-noise").parts for loc in part.locations} == noise_copies
    if encrypted:
        for data in _stored(gateway).values():
            assert not any(body[:64] in data for body in parts)

    stored = _stored(gateway)
    again = gateway.run(passes.compress(progress))
    assert (again["compressed"], again["failed"], again["skipped"]) == (0, 0, 1)  # only the noise, again
    assert _stored(gateway) == stored

    result = gateway.run(passes.decompress(progress))
    assert result == {"status": "complete", "decompressed": 1, "skipped": 0, "failed": 0, "total": 1}
    assert _quota_exact(gateway) == before
    _multipart_reads_back(gateway, "mp", parts)
    record = _record(gateway, "mp")
    assert not record.compressed and record.encrypted == encrypted and record.etag == etag.strip('"')
    assert [p.compression_chunk_size for p in record.parts] == [None, None, None]
    if not encrypted:
        assert sorted(_stored(gateway).values()) == sorted(parts + noise)
    assert gateway.run(passes.decompress(progress))["total"] == 0  # second run: nothing


def test_a_client_write_racing_a_multipart_rewrite_wins(gateway: GatewayHarness) -> None:
    passes = gateway.service.compression
    objects = passes.rewriter.objects
    parts = _mixed_parts()
    _upload_uncompressed(gateway, "raced-mp", parts)
    store = gateway.store
    swap = store.swap_stored_bytes
    client = b"the client's newer bytes" * 100

    async def racing_swap(record: Any, write_id: str, now: float) -> Any:
        await objects.put(BUCKET, "raced-mp", Payload.from_bytes(client),
                          new=NewObject("application/octet-stream", {}, {}))
        return await swap(record, write_id, now)

    store.swap_stored_bytes = racing_swap  # type: ignore[method-assign]
    try:
        result = gateway.run(passes.compress(SilentProgress()))
    finally:
        del store.swap_stored_bytes  # type: ignore[method-assign]
    assert (result["compressed"], result["skipped"], result["failed"]) == (0, 1, 0)
    assert gateway.get(BUCKET, "raced-mp").body == client
    _quota_exact(gateway)
    # Only the client's copy remains: the pass's bytes were deleted, the old parts cleaned up.
    assert {name.split("/", 2)[2] for name in _stored(gateway)} == {
        loc.storage_key for loc in _record(gateway, "raced-mp").locations
    }


class _Service:
    def __init__(self, compression: Any) -> None:
        self.compression = compression


def test_compress_existing_is_refused_while_compression_is_off(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, GatewayConfig(backends=make_backends(1)).render()) as gateway:
        passes = gateway.service.compression
        assert not passes.enabled
        routes = CompressionRoutes()
        routes.service = lambda: _Service(passes)  # type: ignore[assignment,return-value]
        call: Any = type("Call", (), {"progress": SilentProgress()})()
        refused = _run_failure(gateway, routes.compress_existing(call))
        assert isinstance(refused, AdminError) and refused.status == 400
        assert "compression not enabled" in str(refused)
        # decompress-existing still runs (it is how compression is left).
        assert gateway.run(routes.decompress_existing(call))["total"] == 0


def _run_failure(gateway: GatewayHarness, coroutine: Any) -> BaseException:
    results: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    gateway.settle()
    assert results and hasattr(results[0], "value"), results
    value: BaseException = results[0].value
    return value


def test_encrypt_existing_keeps_each_parts_compression(tmp_path: Path) -> None:
    """A multipart object whose text parts were compressed at upload (the random one stored as
    sent) is sealed part by part with each part's own state kept: same chunk sizes, reads back."""
    with _harness(tmp_path, encryption=True) as gateway:
        passes = gateway.service.encryption
        parts = _mixed_parts()
        passes.envelope.enabled = False  # uploaded compressed only
        boto = boto_client(gateway)
        upload = boto.create_multipart_upload(Bucket=BUCKET, Key="mixed")["UploadId"]
        etags = [boto.upload_part(Bucket=BUCKET, Key="mixed", UploadId=upload, PartNumber=n, Body=body)["ETag"]
                 for n, body in enumerate(parts, 1)]
        boto.complete_multipart_upload(
            Bucket=BUCKET, Key="mixed", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
        passes.envelope.enabled = True
        assert [p.compression_chunk_size for p in _record(gateway, "mixed").parts] == [CHUNK, CHUNK, None]
        result = gateway.run(passes.convert(True, SilentProgress()))
        assert (result["encrypted"], result["failed"]) == (1, 0)
        record = _record(gateway, "mixed")
        assert record.encrypted and [p.compression_chunk_size for p in record.parts] == [CHUNK, CHUNK, None]
        _quota_exact(gateway)
        _multipart_reads_back(gateway, "mixed", parts)
        assert not any(part[:64] in data for part in parts for data in _stored(gateway).values())
