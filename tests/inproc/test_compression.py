"""Compression through the real site, in process (BEHAVIOURS §1.20, issue 18 item 2).

Text is stored in fewer bytes and reads back exactly (whole and by ranges across frame
boundaries); random data is stored as it came; with encryption on too, the stored bytes are the
ciphertext of the compressed stream and read back exactly; a damaged stored frame never yields a
clean 200.  The paths that compare stored bytes with the client's digests (scrubber, backfill,
replicator, fan-out, part copies, the encryption passes) each get the client's bytes or skip the
comparison, as the design in docs/compression.rst asks.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from twisted.internet.defer import Deferred

from s3orch.admin.ndjson import SilentProgress
from s3orch.testing import GatewayHarness
from s3orch.testing.httpclient import ResponseMissing
from tests.conftest import PHOTOS
from tests.inproc.conftest import boto as boto_client
from tests.inproc.conftest import make_backends
from tests.support.configs import GatewayConfig

BUCKET = PHOTOS.name
CHUNK = 16 * 1024
KEY = base64.b64encode(bytes(range(32))).decode()
ROOT = Path(__file__).resolve().parents[2]


def _corpus(size: int) -> bytes:
    """This project's own sources, ``size`` bytes of them (text that compresses like text)."""
    out = bytearray()
    paths = sorted((ROOT / "s3orch").rglob("*.py"))
    while len(out) < size:  # the sources again when ``size`` is more than all of them
        for path in paths:
            out += path.read_bytes()
            if len(out) >= size:
                break
    return bytes(out[:size])


def _harness(workdir: Path, encryption: bool) -> GatewayHarness:
    extra: dict[str, Any] = {
        "compression": {"enabled": True, "chunk_size": CHUNK, "min_size": 1024}, "integrity": {"enabled": True},
    }
    if encryption:
        extra["encryption"] = {"enabled": True, "master_key": KEY, "chunk_size": 4096}
    text = GatewayConfig(backends=make_backends(1), extra=extra).render()
    return GatewayHarness(workdir, text)


@pytest.fixture(scope="module", params=[False, True], ids=["compressed", "compressed+encrypted"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    with _harness(tmp_path_factory.mktemp("compression"), request.param) as harness:
        harness.encrypted = request.param  # type: ignore[attr-defined]
        yield harness


@pytest.fixture(scope="module")
def boto(gateway: GatewayHarness) -> Any:
    return boto_client(gateway)


def _record(gateway: GatewayHarness, key: str) -> Any:
    found: list[Any] = []
    Deferred.fromCoroutine(gateway.store.get_object(BUCKET, key)).addBoth(found.append)
    assert found and found[0] is not None, found
    return found[0]


def _backend_object(gateway: GatewayHarness, key: str) -> Any:
    """The in-memory backend's object holding ``key`` (storage keys are opaque: ask the row)."""
    location = _record(gateway, key).locations[0]
    server = gateway.backends[location.backend]
    for bucket in server.buckets:
        objects = server.objects(bucket)
        if location.storage_key in objects:
            return objects[location.storage_key]
    raise AssertionError(f"no stored object for {key}")


def _stored(gateway: GatewayHarness, key: str) -> bytes:
    return bytes(_backend_object(gateway, key).data)


@pytest.mark.parametrize("size", [1024, CHUNK - 1, CHUNK, 5 * CHUNK + 7, 300_000])
def test_text_is_stored_smaller_and_reads_back(gateway: GatewayHarness, boto: Any, size: int) -> None:
    body = _corpus(size)
    key = f"text-{size}"
    put = boto.put_object(Bucket=BUCKET, Key=key, Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = boto.get_object(Bucket=BUCKET, Key=key)
    assert got["Body"].read() == body
    assert got["ContentLength"] == size
    assert got["ETag"] == put["ETag"]
    assert boto.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size
    listed = {o["Key"]: o["Size"] for o in boto.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert listed[key] == size
    stored = _stored(gateway, key)
    assert len(stored) < 0.75 * size, f"stored {len(stored)} of {size}"
    assert body[:64] not in stored
    if not gateway.encrypted:  # type: ignore[attr-defined]
        # The stored form is stock zstd (seekable format): the CLI's library reads it back.
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored), read_across_frames=True)
        assert reader.readall() == body


def test_ratio_of_the_corpus(gateway: GatewayHarness, boto: Any) -> None:
    body = _corpus(1_000_000)
    boto.put_object(Bucket=BUCKET, Key="corpus", Body=body)
    stored = _stored(gateway, "corpus")
    ratio = len(stored) / len(body)
    print(f"\ncorpus {len(body)} bytes stored in {len(stored)} (ratio {ratio:.3f}, encrypted={gateway.encrypted})")  # type: ignore[attr-defined]
    assert ratio < 0.4
    assert boto.get_object(Bucket=BUCKET, Key="corpus")["Body"].read() == body


def test_random_data_is_stored_as_is(gateway: GatewayHarness, boto: Any) -> None:
    body = os.urandom(3 * CHUNK + 5)
    boto.put_object(Bucket=BUCKET, Key="random", Body=body)
    stored = _stored(gateway, "random")
    if gateway.encrypted:  # type: ignore[attr-defined]
        assert len(stored) > len(body) and body[:64] not in stored  # sealed, not compressed
    else:
        assert stored == body
    assert boto.get_object(Bucket=BUCKET, Key="random")["Body"].read() == body
    got = boto.get_object(Bucket=BUCKET, Key="random", Range="bytes=10-20000")
    assert got["Body"].read() == body[10:20001]


@pytest.mark.parametrize(
    "first,last",
    [(0, 0), (CHUNK - 1, CHUNK), (CHUNK - 3, 3 * CHUNK + 2), (2 * CHUNK, 5 * CHUNK - 1), (5, 5 * CHUNK + 6),
     (5 * CHUNK + 6, 5 * CHUNK + 6)],
)
def test_ranges_are_byte_exact(boto: Any, first: int, last: int) -> None:
    body = _corpus(5 * CHUNK + 7)
    boto.put_object(Bucket=BUCKET, Key="ranged", Body=body)
    got = boto.get_object(Bucket=BUCKET, Key="ranged", Range=f"bytes={first}-{last}")
    assert got["Body"].read() == body[first : last + 1]
    assert got["ContentRange"] == f"bytes {first}-{last}/{len(body)}"
    suffix = boto.get_object(Bucket=BUCKET, Key="ranged", Range="bytes=-100")
    assert suffix["Body"].read() == body[-100:]


def test_copy_keeps_the_object_readable(gateway: GatewayHarness, boto: Any) -> None:
    body = _corpus(2 * CHUNK + 7)
    boto.put_object(Bucket=BUCKET, Key="copy-src", Body=body)
    boto.copy_object(Bucket=BUCKET, Key="copy-dst", CopySource={"Bucket": BUCKET, "Key": "copy-src"})
    assert boto.get_object(Bucket=BUCKET, Key="copy-dst")["Body"].read() == body
    assert boto.head_object(Bucket=BUCKET, Key="copy-dst")["ContentLength"] == len(body)
    assert len(_stored(gateway, "copy-dst")) < len(body)
    got = boto.get_object(Bucket=BUCKET, Key="copy-dst", Range=f"bytes={CHUNK}-{CHUNK + 9}")
    assert got["Body"].read() == body[CHUNK : CHUNK + 10]


def test_a_damaged_frame_is_never_served(gateway: GatewayHarness, boto: Any) -> None:
    body = _corpus(4 * CHUNK)
    boto.put_object(Bucket=BUCKET, Key="damaged", Body=body)
    stored = _backend_object(gateway, "damaged")
    data = bytearray(stored.data)
    data[len(data) // 3] ^= 0x40
    stored.data = bytes(data)
    try:
        response = gateway.get(BUCKET, "damaged")
    except ResponseMissing:
        return  # aborted mid-answer: the client sees a short body, never a clean 200
    assert response.status != 200 or response.body != body
    assert response.status == 500 or len(response.body) < len(body)


def test_the_scrubber_checks_compressed_copies_by_decompressing_them(gateway: GatewayHarness, boto: Any) -> None:
    body = _corpus(3 * CHUNK + 5)
    boto.put_object(Bucket=BUCKET, Key="scrubbed", Body=body)
    scrubber = gateway.service.getServiceNamed("scrubber").scrubber
    copies = gateway.run(gateway.store.copies_to_scrub(BUCKET, "scrubbed"))
    assert [c.compressed for c in copies] == [True]
    assert [c.expected for c in copies] == [("sha256", hashlib.sha256(body).hexdigest())]
    assert gateway.run(scrubber.verdict(copies[0])) == "verified"
    stored = _backend_object(gateway, "scrubbed")
    data = bytearray(stored.data)
    data[len(data) // 2] ^= 1
    stored.data = bytes(data)
    assert gateway.run(scrubber.verdict(copies[0])) == "mismatch"


def test_backfill_never_hashes_compressed_bytes(gateway: GatewayHarness, boto: Any) -> None:
    """Even without its SHA-256 (an older row), a compressed object is not offered to the backfill:
    hashing its stored bytes would record the digest of the frames, not of the client's bytes."""
    boto.put_object(Bucket=BUCKET, Key="hashed", Body=_corpus(2 * CHUNK))
    boto.put_object(Bucket=BUCKET, Key="plain-unhashed", Body=os.urandom(2 * CHUNK))  # stored as is
    with sqlite3.connect(gateway.workdir / "s3orch.db") as db:
        db.execute("UPDATE objects SET content_hash = NULL WHERE object_key IN ('hashed', 'plain-unhashed')")
    unhashed, _ = gateway.run(gateway.store.unhashed_objects(None, 1000))
    keys = [c.key for c in unhashed]
    assert "hashed" not in keys
    assert "plain-unhashed" in keys or gateway.encrypted  # type: ignore[attr-defined]


@pytest.mark.parametrize("fan_out", [False, True], ids=["replicator", "fan-out"])
def test_copies_of_compressed_bytes_are_made_as_stored(tmp_path: Path, fan_out: bool) -> None:
    """The replicator (its MD5 check is of the client's bytes) and a fan-out write both copy the
    compressed frames; each copy reads back."""
    extra: dict[str, Any] = {
        "compression": {"enabled": True, "chunk_size": CHUNK, "min_size": 1024},
        "replication": {"factor": 2, "worker_interval": "60s", "ack": "all"},
    }
    if fan_out:
        extra["write_path"] = {"parallel_copies": {"enabled": True}}
    text = GatewayConfig(backends=make_backends(2), extra=extra).render()
    with GatewayHarness(tmp_path, text) as gateway:
        body = _corpus(4 * CHUNK + 3)
        assert gateway.put(BUCKET, "replicated", body).status == 200
        gateway.advance(120)
        record = _record(gateway, "replicated")
        assert len(record.locations) == 2
        copies = [
            bytes(gateway.backends[loc.backend].objects(bucket)[loc.storage_key].data)
            for loc in record.locations
            for bucket in gateway.backends[loc.backend].buckets
            if loc.storage_key in gateway.backends[loc.backend].objects(bucket)
        ]
        assert len(copies) == 2 and copies[0] == copies[1] and len(copies[0]) < len(body)
        assert gateway.get(BUCKET, "replicated").body == body


def test_upload_part_copy_of_a_compressed_source_copies_the_clients_bytes(gateway: GatewayHarness, boto: Any) -> None:
    """A part copied from a compressed object holds the client's bytes (never the frames, which a
    backend-side copy of the stored object would give); into an encrypted upload, compressed again
    and sealed under the upload's key."""
    body = _corpus(6 * 1024 * 1024)
    boto.put_object(Bucket=BUCKET, Key="part-source", Body=body)
    _assemble(boto, body, boto.create_multipart_upload(Bucket=BUCKET, Key="assembled")["UploadId"])
    if gateway.encrypted:  # type: ignore[attr-defined]
        record = _record(gateway, "assembled")
        assert record.encrypted and record.compressed
        # Encryption switched off: a plaintext upload copies the source's plaintext, never its ciphertext.
        envelope = gateway.service.encryption.envelope
        envelope.enabled = False
        sealed = os.urandom(5 * 1024 * 1024 + 3)  # random: sealed, not compressed
        envelope.enabled = True
        boto.put_object(Bucket=BUCKET, Key="sealed-source", Body=sealed)
        assert _record(gateway, "sealed-source").encrypted and not _record(gateway, "sealed-source").compressed
        envelope.enabled = False
        try:
            for source, data in (("part-source", body), ("sealed-source", sealed)):
                _assemble(boto, data, boto.create_multipart_upload(Bucket=BUCKET, Key="assembled")["UploadId"], source)
        finally:
            envelope.enabled = True


def _assemble(boto: Any, body: bytes, upload: str, source: str = "part-source") -> None:
    part = boto.upload_part_copy(
        Bucket=BUCKET, Key="assembled", UploadId=upload, PartNumber=1,
        CopySource={"Bucket": BUCKET, "Key": source},
    )
    tail = b"tail" * 100
    last = boto.upload_part(Bucket=BUCKET, Key="assembled", UploadId=upload, PartNumber=2, Body=tail)
    boto.complete_multipart_upload(
        Bucket=BUCKET, Key="assembled", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]},
                                   {"PartNumber": 2, "ETag": last["ETag"]}]},
    )
    assert part["CopyPartResult"]["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert boto.get_object(Bucket=BUCKET, Key="assembled")["Body"].read() == body + tail


def test_encryption_passes_keep_compression(tmp_path: Path) -> None:
    """encrypt-existing and decrypt-existing read the client's bytes back and store them compressed
    again (then sealed, or not): every object still reads back, whole and by ranges, stored smaller
    than it came."""
    with _harness(tmp_path, encryption=True) as gateway:
        passes = gateway.service.encryption
        progress = SilentProgress()
        bodies = {f"conv/{i}": _corpus(CHUNK * (i + 1) + i) for i in range(3)}
        passes.envelope.enabled = False  # compressed only
        for key, body in bodies.items():
            assert gateway.put(BUCKET, key, body).status == 200
        passes.envelope.enabled = True
        assert gateway.put(BUCKET, "both", bodies["conv/2"]).status == 200  # compressed, then sealed
        bodies["both"] = bodies["conv/2"]
        assert all(_record(gateway, key).compressed for key in bodies)
        result = gateway.run(passes.convert(True, progress))
        assert (result["encrypted"], result["failed"]) == (3, 0)
        for key, body in bodies.items():
            record = _record(gateway, key)
            assert record.encrypted and record.compressed
            assert len(_stored(gateway, key)) < len(body) // 2
            assert gateway.get(BUCKET, key).body == body
            edge = CHUNK - 3
            got = gateway.get(BUCKET, key, headers={"Range": f"bytes={edge}-{edge + CHUNK}"}).body
            assert got == body[edge : edge + CHUNK + 1]
        result = gateway.run(passes.convert(False, progress))
        assert (result["decrypted"], result["failed"]) == (4, 0)
        gateway.advance(60)
        for key, body in bodies.items():
            record = _record(gateway, key)
            assert not record.encrypted and record.compressed
            stored = io.BytesIO(_stored(gateway, key))
            assert zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True).readall() == body
            assert gateway.get(BUCKET, key).body == body


def test_switched_off_new_puts_are_stored_as_is_and_old_ones_still_read(gateway: GatewayHarness, boto: Any) -> None:
    """Reads need no settings (the row keeps the chunk size): compression off is only the write's."""
    objects = gateway.service.getServiceNamed("lifecycle").objects
    body = _corpus(3 * CHUNK)
    boto.put_object(Bucket=BUCKET, Key="before-off", Body=body)
    compressor, objects.compressor = objects.compressor, None
    try:
        boto.put_object(Bucket=BUCKET, Key="after-off", Body=body)
        assert _record(gateway, "before-off").compressed and not _record(gateway, "after-off").compressed
        if not gateway.encrypted:  # type: ignore[attr-defined]
            assert _stored(gateway, "after-off") == body
        for key in ("before-off", "after-off"):
            assert boto.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    finally:
        objects.compressor = compressor
