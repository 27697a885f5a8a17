"""Envelope encryption through the real site, in process (BEHAVIOURS §1.19, issue 18 item 1).

The backends hold ciphertext (never the plaintext, nor its SHA-256); clients see the plaintext, its
size and its MD5 ETag; ranges across chunk boundaries are byte-exact; quotas count stored bytes;
a flipped byte, a truncation, swapped chunks or another object's chunk on the backend never yield
a clean 200; a wrong master key answers 500 before any byte; UploadPartCopy into an encrypted
upload seals the plaintext of its range (from plaintext, sealed or compressed sources).
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from s3orch.admin.ndjson import SilentProgress
from s3orch.crypto.format import CHUNK_OVERHEAD, HEADER_SIZE, ciphertext_size
from s3orch.crypto.keys import LocalKeys, wrap_local
from s3orch.observe.metrics import REGISTRY
from s3orch.testing import GatewayHarness
from s3orch.testing.httpclient import ResponseMissing
from tests.conftest import PHOTOS
from tests.inproc.conftest import boto as boto_client
from tests.inproc.conftest import make_backends
from tests.support.configs import GatewayConfig

BUCKET = PHOTOS.name
CHUNK = 4096
KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()


def _config(master_key: str = KEY, **encryption: Any) -> str:
    section = {"enabled": True, "master_key": master_key, "chunk_size": CHUNK, **encryption}
    return GatewayConfig(backends=make_backends(1), extra={"encryption": section}).render()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    workdir: Path = tmp_path_factory.mktemp("encryption")
    with GatewayHarness(workdir, _config()) as harness:
        yield harness


@pytest.fixture(scope="module")
def boto(gateway: GatewayHarness) -> Any:
    return boto_client(gateway)


def _stored(gateway: GatewayHarness) -> dict[str, bytes]:
    """Every backend object's bytes, read directly from the in-memory servers."""
    found: dict[str, bytes] = {}
    for name, server in gateway.backends.items():
        for bucket in server.buckets:
            for key, stored in server.objects(bucket).items():
                found[f"{name}/{bucket}/{key}"] = bytes(stored.data)
    return found


def _stored_of(gateway: GatewayHarness, size: int) -> tuple[Any, str]:
    """The (stored object, key) of the one stored object of ciphertext size ``size``."""
    for server in gateway.backends.values():
        for bucket in server.buckets:
            for key, stored in server.objects(bucket).items():
                if len(stored.data) == ciphertext_size(size, CHUNK):
                    return stored, key
    raise AssertionError("no stored object of that size")


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 7 * CHUNK + 5])
def test_round_trip_and_backends_hold_ciphertext(gateway: GatewayHarness, boto: Any, size: int) -> None:
    body = os.urandom(size)
    key = f"round-{size}"
    put = boto.put_object(Bucket=BUCKET, Key=key, Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = boto.get_object(Bucket=BUCKET, Key=key)
    assert got["Body"].read() == body
    assert got["ContentLength"] == size
    assert boto.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size
    listed = {o["Key"]: o["Size"] for o in boto.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert listed[key] == size
    digest = hashlib.sha256(body).hexdigest()
    for stored in _stored(gateway).values():
        assert digest.encode() not in stored and bytes.fromhex(digest) not in stored
        if size >= 16:
            assert body[:16] not in stored
    assert any(len(data) == size + HEADER_SIZE + CHUNK_OVERHEAD * max(1, -(-size // CHUNK))
               for data in _stored(gateway).values())


@pytest.mark.parametrize(
    "first,last", [(0, 0), (CHUNK - 1, CHUNK), (CHUNK - 3, 3 * CHUNK + 2), (2 * CHUNK, 5 * CHUNK - 1), (5, 7 * CHUNK + 4)]
)
def test_ranges_are_byte_exact(boto: Any, first: int, last: int) -> None:
    body = os.urandom(7 * CHUNK + 5)
    boto.put_object(Bucket=BUCKET, Key="ranged", Body=body)
    got = boto.get_object(Bucket=BUCKET, Key="ranged", Range=f"bytes={first}-{last}")
    assert got["Body"].read() == body[first : last + 1]
    assert got["ContentRange"] == f"bytes {first}-{last}/{len(body)}"


def test_quota_counts_stored_bytes(gateway: GatewayHarness, boto: Any) -> None:
    body = os.urandom(3 * CHUNK)
    boto.put_object(Bucket=BUCKET, Key="quota", Body=body)
    quotas: list[Any] = []
    Deferred.fromCoroutine(gateway.store.get_quotas()).addBoth(quotas.append)
    stored = sum(len(d) for d in _stored(gateway).values())
    assert sum(row.bytes_used for row in quotas[0].values()) == stored


def test_copy_keeps_the_object_readable(boto: Any) -> None:
    body = os.urandom(2 * CHUNK + 7)
    boto.put_object(Bucket=BUCKET, Key="copy-src", Body=body)
    boto.copy_object(Bucket=BUCKET, Key="copy-dst", CopySource={"Bucket": BUCKET, "Key": "copy-src"})
    assert boto.get_object(Bucket=BUCKET, Key="copy-dst")["Body"].read() == body


def _tamper_and_get(gateway: GatewayHarness, boto: Any, key: str, size: int, change: Any) -> tuple[int, bytes]:
    body = os.urandom(size)
    boto.put_object(Bucket=BUCKET, Key=key, Body=body)
    stored, _ = _stored_of(gateway, size)
    stored.data = change(bytes(stored.data))
    return _get(gateway, key)


def _get(gateway: GatewayHarness, key: str) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, received) when the connection was aborted mid-answer."""
    try:
        response = gateway.get(BUCKET, key)
    except ResponseMissing:
        return 0, b""
    return response.status, response.body


def _swap_first_two_chunks(data: bytes) -> bytes:
    step = CHUNK + CHUNK_OVERHEAD
    c0, c1 = data[HEADER_SIZE : HEADER_SIZE + step], data[HEADER_SIZE + step : HEADER_SIZE + 2 * step]
    return data[:HEADER_SIZE] + c1 + c0 + data[HEADER_SIZE + 2 * step :]


@pytest.mark.parametrize(
    "name,size,change",
    [
        ("flip", 3 * CHUNK + 11, lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:]),
        ("flip-last", 3 * CHUNK + 13, lambda d: d[:-1] + bytes([d[-1] ^ 1])),
        ("truncate", 3 * CHUNK + 17, lambda d: d[:-CHUNK]),
        ("swap", 3 * CHUNK + 19, _swap_first_two_chunks),
    ],
)
def test_tampered_ciphertext_never_yields_a_clean_200(
    gateway: GatewayHarness, boto: Any, name: str, size: int, change: Any
) -> None:
    status, body = _tamper_and_get(gateway, boto, f"tamper-{name}", size, change)
    # Refused before the first byte (500), or the connection aborted: never a complete answer.
    assert status in (0, 500), (status, len(body))
    assert len(body) < size


def test_a_chunk_from_another_object_fails(gateway: GatewayHarness, boto: Any) -> None:
    size = 2 * CHUNK + 23
    boto.put_object(Bucket=BUCKET, Key="victim", Body=os.urandom(size))
    victim, _ = _stored_of(gateway, size)
    boto.put_object(Bucket=BUCKET, Key="donor", Body=os.urandom(size + 1))
    donor, _ = _stored_of(gateway, size + 1)
    start = HEADER_SIZE + CHUNK + CHUNK_OVERHEAD
    victim.data = bytes(victim.data)[:start] + bytes(donor.data)[start : start + CHUNK + CHUNK_OVERHEAD] + bytes(
        victim.data
    )[start + CHUNK + CHUNK_OVERHEAD :]
    status, body = _get(gateway, "victim")
    assert status in (0, 500) and len(body) < size


def test_wrong_master_key_answers_500_before_any_byte(gateway: GatewayHarness, boto: Any) -> None:
    boto.put_object(Bucket=BUCKET, Key="secret", Body=b"x" * 5000)
    # The row's data key wrapped under another master key (what a wrong key_id/key would give).
    other = wrap_local(base64.b64decode(OTHER_KEY), os.urandom(32))
    with sqlite3.connect(gateway.workdir / "s3orch.db") as db:
        db.execute("UPDATE objects SET wrapped_dek = ? WHERE object_key = 'secret'", (other,))
    response = gateway.get(BUCKET, "secret")
    assert response.status == 500
    assert b"x" * 16 not in response.body


def test_multipart_parts_are_sealed_and_read_back(gateway: GatewayHarness, boto: Any) -> None:
    first, second = os.urandom(5 * 1024 * 1024 + 3), os.urandom(CHUNK * 2 + 9)
    upload = boto.create_multipart_upload(Bucket=BUCKET, Key="mp")["UploadId"]
    etags = [
        boto.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload, PartNumber=n, Body=body)["ETag"]
        for n, body in ((1, first), (2, second))
    ]
    assert etags[0] == f'"{hashlib.md5(first).hexdigest()}"'
    listed = boto.list_parts(Bucket=BUCKET, Key="mp", UploadId=upload)["Parts"]
    assert [p["Size"] for p in listed] == [len(first), len(second)]
    boto.complete_multipart_upload(
        Bucket=BUCKET, Key="mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]},
    )
    whole = first + second
    got = boto.get_object(Bucket=BUCKET, Key="mp")
    assert got["ContentLength"] == len(whole) and got["Body"].read() == whole
    edge = len(first)
    ranged = boto.get_object(Bucket=BUCKET, Key="mp", Range=f"bytes={edge - 5}-{edge + CHUNK + 1}")
    assert ranged["Body"].read() == whole[edge - 5 : edge + CHUNK + 2]
    for stored in _stored(gateway).values():
        assert first[:32] not in stored and second[:32] not in stored
    # A copy of the multipart object (extent by extent) reads back too.
    boto.copy_object(Bucket=BUCKET, Key="mp-copy", CopySource={"Bucket": BUCKET, "Key": "mp"})
    assert boto.get_object(Bucket=BUCKET, Key="mp-copy")["Body"].read() == whole


MiB = 1024 * 1024
#: Text that compresses (a compressed source, and a compressed copied part).
TEXT = b"".join(b"%06d a log line of the copy test, %d\n" % (i, i * 7919 % 1000) for i in range(200_000))


def test_upload_part_copy_into_an_encrypted_upload_seals_the_ranges_plaintext(tmp_path: Path) -> None:
    """UploadPartCopy from a plaintext, an encrypted, a compressed+encrypted and a compressed-only
    source into an encrypted upload: each part is the range's plaintext (its MD5 the ETag, its
    SHA-256 the upload's checksum), compressed when that pays and sealed under the upload's key
    (never a backend's copy of the source's stored bytes); the object reads back byte-exact, its
    parts' stored bytes hold none of the plaintext, quotas count the stored bytes."""
    extra = {"encryption": {"enabled": True, "master_key": KEY, "chunk_size": CHUNK},
             "compression": {"enabled": True, "chunk_size": 16 * 1024, "min_size": 1024}}
    config = GatewayConfig(backends=make_backends(1), extra=extra).render()
    with GatewayHarness(tmp_path, config) as gateway:
        boto = boto_client(gateway)
        envelope = gateway.service.encryption.envelope
        sources = {"plain": os.urandom(5 * MiB + 3 * CHUNK + 1), "sealed": os.urandom(5 * MiB + 4 * CHUNK + 9),
                   "packed": TEXT[: 6 * MiB], "packed-plain": TEXT[MiB : 2 * MiB]}
        for name, body in sources.items():
            envelope.enabled = name in ("sealed", "packed")  # the others written while encryption was off
            # A SHA-256 known: the plaintext one stored as sent would be a backend's copy if not sealed.
            boto.put_object(Bucket=BUCKET, Key=f"pc-{name}", Body=body, ChecksumAlgorithm="SHA256")
        envelope.enabled = True
        upload = boto.create_multipart_upload(Bucket=BUCKET, Key="pc-dst", ChecksumAlgorithm="SHA256")["UploadId"]
        copies = [  # (source, range or None): whole, and ranges across chunk and frame boundaries
            ("plain", None),
            ("sealed", (CHUNK - 3, CHUNK - 3 + 5 * MiB + 2 * CHUNK)),
            ("packed", (3 * CHUNK + 1, 3 * CHUNK + 5 * MiB + 16 * 1024 + 5)),
            ("packed-plain", (100, 100 + 2 * CHUNK + 50)),
        ]
        wanted: list[bytes] = []
        parts: list[dict[str, Any]] = []
        for number, (name, span) in enumerate(copies, 1):
            data = sources[name] if span is None else sources[name][span[0] : span[1] + 1]
            ranged = {} if span is None else {"CopySourceRange": f"bytes={span[0]}-{span[1]}"}
            answer = boto.upload_part_copy(Bucket=BUCKET, Key="pc-dst", UploadId=upload, PartNumber=number,
                                           CopySource={"Bucket": BUCKET, "Key": f"pc-{name}"}, **ranged)
            result = answer["CopyPartResult"]
            assert result["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
            assert result["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
            wanted.append(data)
            parts.append({"PartNumber": number, "ETag": result["ETag"], "ChecksumSHA256": result["ChecksumSHA256"]})
        listed = boto.list_parts(Bucket=BUCKET, Key="pc-dst", UploadId=upload)["Parts"]
        assert [p["Size"] for p in listed] == [len(d) for d in wanted]
        boto.complete_multipart_upload(Bucket=BUCKET, Key="pc-dst", UploadId=upload, MultipartUpload={"Parts": parts})

        whole = b"".join(wanted)
        got = boto.get_object(Bucket=BUCKET, Key="pc-dst")
        assert got["ContentLength"] == len(whole) and got["Body"].read() == whole
        edges = [sum(len(d) for d in wanted[:n]) for n in (1, 2, 3)]
        for first, last in [(edges[0] - 5, edges[0] + CHUNK + 1), (edges[1] - CHUNK - 1, edges[2] + 3),
                            (CHUNK - 1, CHUNK), (edges[2] - 1, len(whole) - 1)]:
            ranged_get = boto.get_object(Bucket=BUCKET, Key="pc-dst", Range=f"bytes={first}-{last}")
            assert ranged_get["Body"].read() == whole[first : last + 1]

        records: list[Any] = []
        Deferred.fromCoroutine(gateway.store.get_object(BUCKET, "pc-dst")).addBoth(records.append)
        gateway.settle()
        record = records[0]
        assert record.encrypted and [e.compression_chunk_size is not None for e in record.parts] == [
            False, False, True, True]
        stored = _stored(gateway)
        held = {key: bytes(o.data) for server in gateway.backends.values() for bucket in server.buckets
                for key, o in server.objects(bucket).items()}
        for extent, data in zip(record.parts, wanted):
            sealed = held[extent.locations[0].storage_key]
            if extent.compression_chunk_size is None:
                assert len(sealed) == ciphertext_size(len(data), CHUNK)
            else:
                assert len(sealed) < len(data) // 2
            for at in range(0, len(data) - 32, max(1, len(data) // 7)):
                assert data[at : at + 32] not in sealed
            assert hashlib.sha256(data).digest() not in sealed
        assert _quota_used(gateway) == sum(len(d) for d in stored.values())




def _quota_used(gateway: GatewayHarness) -> int:
    quotas: list[Any] = []
    Deferred.fromCoroutine(gateway.store.get_quotas()).addBoth(quotas.append)
    gateway.settle()
    return sum(row.bytes_used for row in quotas[0].values())


def test_encrypt_and_decrypt_existing_and_rotation_are_idempotent_and_keep_quota_exact(tmp_path: Path) -> None:
    config = _config(previous_keys=[OTHER_KEY])
    with GatewayHarness(tmp_path, config) as gateway:
        passes = gateway.service.encryption
        envelope = passes.envelope
        bodies = {f"conv/{i}": os.urandom(100 + 997 * i) for i in range(12)}
        envelope.enabled = False  # written while encryption was off
        for key, body in bodies.items():
            assert gateway.put(BUCKET, key, body).status == 200
        envelope.enabled = True
        progress = SilentProgress()
        assert gateway.run(passes.convert(False, progress))["total"] == 0  # nothing encrypted yet
        result = gateway.run(passes.convert(True, progress))
        assert result == {"status": "complete", "encrypted": 12, "failed": 0, "total": 12}
        gateway.advance(60)  # the old plaintext copies' cleanup
        stored = _stored(gateway)
        for key, body in bodies.items():
            assert gateway.get(BUCKET, key).body == body
            assert not any(body[:64] in data for data in stored.values())
        assert _quota_used(gateway) == sum(len(d) for d in stored.values())
        assert sum(len(d) for d in stored.values()) == sum(ciphertext_size(len(b), CHUNK) for b in bodies.values())
        assert gateway.run(passes.convert(True, progress))["total"] == 0  # second run: nothing

        # Rotation: objects wrapped under the previous key move to the primary; no data rewritten.
        primary = envelope.keys
        envelope.keys = LocalKeys({"config-1": base64.b64decode(OTHER_KEY)}, "config-1")
        gateway.put(BUCKET, "old-key", b"o" * 5000)
        envelope.keys = primary
        before = _stored(gateway)
        result = gateway.run(passes.rotate("config-1", progress))
        assert result == {"status": "complete", "rotated": 1, "failed": 0, "total": 1}
        assert _stored(gateway) == before
        assert gateway.get(BUCKET, "old-key").body == b"o" * 5000
        assert gateway.run(passes.rotate("config-1", progress))["total"] == 0

        result = gateway.run(passes.convert(False, progress))
        assert result["decrypted"] == 13 and result["failed"] == 0
        gateway.advance(60)
        stored = _stored(gateway)
        assert sorted(len(d) for d in stored.values()) == sorted([len(b) for b in bodies.values()] + [5000])
        assert _quota_used(gateway) == sum(len(d) for d in stored.values())
        for key, body in bodies.items():
            assert gateway.get(BUCKET, key).body == body


def _multipart(gateway: GatewayHarness, key: str, parts: list[bytes]) -> str:
    boto = boto_client(gateway)
    upload = boto.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etags = [boto.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=body)["ETag"]
             for n, body in enumerate(parts, 1)]
    done = boto.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    etag: str = done["ETag"]
    return etag.strip('"')


def _reads_back_across_parts(gateway: GatewayHarness, key: str, parts: list[bytes]) -> None:
    whole = b"".join(parts)
    assert gateway.get(BUCKET, key).body == whole
    edge = len(parts[0])
    first, last = edge - CHUNK - 3, edge + CHUNK + 5
    got = gateway.get(BUCKET, key, headers={"Range": f"bytes={first}-{last}"}).body
    assert got == whole[first : last + 1]


def test_encrypt_decrypt_and_rotate_a_multipart_object(tmp_path: Path) -> None:
    """encrypt-existing seals every part (one data key, the part number bound in), decrypt-existing
    stores the client's bytes again; the ETag stays, ranges across parts read back, quotas exact;
    rotation re-wraps the object's one data key without rewriting a part."""
    with GatewayHarness(tmp_path, _config(previous_keys=[OTHER_KEY])) as gateway:
        passes = gateway.service.encryption
        envelope = passes.envelope
        parts = [os.urandom(5 * 1024 * 1024 + 3), os.urandom(2 * CHUNK + 9)]
        envelope.enabled = False  # written while encryption was off
        etag = _multipart(gateway, "mp-conv", parts)
        envelope.enabled = True
        progress = SilentProgress()
        result = gateway.run(passes.convert(True, progress))
        assert result == {"status": "complete", "encrypted": 1, "failed": 0, "total": 1}
        gateway.advance(60)  # the old plaintext parts' cleanup
        stored = _stored(gateway)
        assert not any(part[:64] in data for part in parts for data in stored.values())
        assert sorted(len(d) for d in stored.values()) == sorted(ciphertext_size(len(p), CHUNK) for p in parts)
        assert _quota_used(gateway) == sum(len(d) for d in stored.values())
        _reads_back_across_parts(gateway, "mp-conv", parts)
        assert gateway.head(BUCKET, "mp-conv").header("etag") == f'"{etag}"'
        assert gateway.run(passes.convert(True, progress))["total"] == 0  # second run: nothing

        # Rotation of a multipart object sealed at upload under the previous key: re-wrap only.
        primary = envelope.keys
        envelope.keys = LocalKeys({"config-1": base64.b64decode(OTHER_KEY)}, "config-1")
        rotated_parts = [os.urandom(5 * 1024 * 1024), os.urandom(CHUNK + 1)]
        _multipart(gateway, "mp-old-key", rotated_parts)
        envelope.keys = primary
        before = _stored(gateway)
        result = gateway.run(passes.rotate("config-1", progress))
        assert result == {"status": "complete", "rotated": 1, "failed": 0, "total": 1}
        assert _stored(gateway) == before
        _reads_back_across_parts(gateway, "mp-old-key", rotated_parts)

        result = gateway.run(passes.convert(False, progress))
        assert result == {"status": "complete", "decrypted": 2, "failed": 0, "total": 2}
        gateway.advance(60)
        stored = _stored(gateway)
        assert sorted(stored.values()) == sorted(parts + rotated_parts)
        assert _quota_used(gateway) == sum(len(d) for d in stored.values())
        _reads_back_across_parts(gateway, "mp-conv", parts)
        _reads_back_across_parts(gateway, "mp-old-key", rotated_parts)
        assert gateway.head(BUCKET, "mp-conv").header("etag") == f'"{etag}"'


def test_a_swap_against_a_replaced_write_changes_nothing(gateway: GatewayHarness, boto: Any) -> None:
    boto.put_object(Bucket=BUCKET, Key="raced", Body=b"first")
    record: list[Any] = []
    Deferred.fromCoroutine(gateway.store.get_object(BUCKET, "raced")).addBoth(record.append)
    boto.put_object(Bucket=BUCKET, Key="raced", Body=b"second")  # a client write wins the race
    swapped: list[Any] = []
    Deferred.fromCoroutine(
        gateway.store.swap_stored_bytes(record[0], record[0].write_id, 0.0)
    ).addBoth(swapped.append)
    gateway.settle()
    assert swapped == [None]
    assert boto.get_object(Bucket=BUCKET, Key="raced")["Body"].read() == b"second"


def test_the_scrubber_checks_encrypted_copies_by_decrypting_them(tmp_path: Path) -> None:
    config = _config().replace("encryption:", "integrity:\n  enabled: true\nencryption:", 1)
    with GatewayHarness(tmp_path, config) as gateway:
        body = os.urandom(3 * CHUNK + 5)
        assert gateway.put(BUCKET, "scrubbed", body).status == 200
        scrubber = gateway.service.getServiceNamed("scrubber").scrubber
        copies = gateway.run(gateway.store.copies_to_scrub(BUCKET, "scrubbed"))
        assert [c.encrypted for c in copies] == [True]
        assert gateway.run(scrubber.verdict(copies[0])) == "verified"
        stored, _ = _stored_of(gateway, len(body))
        stored.data = bytes(stored.data)[:-1] + bytes([stored.data[-1] ^ 1])
        assert gateway.run(scrubber.verdict(copies[0])) == "mismatch"


def _flag_mismatches(component: str) -> float:
    return REGISTRY.get_sample_value("s3o_encryption_flag_mismatch_total", {"component": component}) or 0.0


def test_a_row_and_bytes_that_disagree_on_encryption_are_counted(tmp_path: Path) -> None:
    """``s3o_encryption_flag_mismatch_total``: a row saying encrypted over plaintext bytes (found
    while decrypting), and a row saying plaintext over our ciphertext (found by the scrubber)."""
    config = _config().replace("encryption:", "integrity:\n  enabled: true\nencryption:", 1)
    with GatewayHarness(tmp_path, config) as gateway:
        plain = os.urandom(3 * CHUNK + 5)
        assert gateway.put(BUCKET, "says-sealed", plain).status == 200
        stored, _ = _stored_of(gateway, len(plain))
        before = _flag_mismatches("decrypt")
        stored.data = plain + bytes(ciphertext_size(len(plain), CHUNK) - len(plain))  # plaintext, right size
        status, body = _get(gateway, "says-sealed")
        assert status in (0, 500) and plain[:64] not in body
        assert _flag_mismatches("decrypt") == before + 1

        sealed = os.urandom(2 * CHUNK + 7)
        assert gateway.put(BUCKET, "says-plain", sealed).status == 200
        with sqlite3.connect(gateway.workdir / "s3orch.db") as db:  # the row forgets it was sealed
            db.execute("UPDATE objects SET encrypted = 0 WHERE object_key = 'says-plain'")
        scrubber = gateway.service.getServiceNamed("scrubber").scrubber
        copies = gateway.run(gateway.store.copies_to_scrub(BUCKET, "says-plain"))
        before = _flag_mismatches("scrubber")
        assert gateway.run(scrubber.verdict(copies[0])) == "mismatch"
        assert _flag_mismatches("scrubber") == before + 1
