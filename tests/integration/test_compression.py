"""Compression through a real twistd over SeaweedFS (issue 18 item 2's acceptance).

What lands on the backends, read directly with boto3 (not through s3orch), is stock zstd (the
seekable format) and smaller for text, the client's bytes for random data; with encryption on
too, it is neither the text nor its zstd.  boto3 round-trips PUT, copy and ranged GETs; quotas
count the stored bytes; clients see their own sizes and ETags.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.conftest import PHOTOS, quota_rows, s3_client
from tests.integration.conftest import fresh_bucket
from tests.support.configs import BackendSpec, GatewayConfig

KEY = base64.b64encode(os.urandom(32)).decode()
ROOT = Path(__file__).resolve().parents[2]
CHUNK = 64 * 1024


def _corpus(size: int) -> bytes:
    out = bytearray()
    paths = sorted((ROOT / "s3orch").rglob("*.py"))
    while len(out) < size:
        for path in paths:
            out += path.read_bytes()
            if len(out) >= size:
                break
    return bytes(out[:size])


def _stored(spec: BackendSpec) -> list[bytes]:
    client: Any = s3_client(spec.endpoint, spec.access_key, spec.secret_key)
    found: list[bytes] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket):
        for item in page.get("Contents", []):
            found.append(client.get_object(Bucket=spec.bucket, Key=item["Key"])["Body"].read())
    return found


@pytest.mark.slow
@pytest.mark.parametrize("encrypted", [False, True], ids=["compressed", "compressed+encrypted"])
def test_backends_hold_compressed_bytes_and_clients_round_trip(  # type: ignore[no-untyped-def]
    weed, start_gateway, encrypted: bool
) -> None:
    spec = BackendSpec("weed-1", weed.endpoint, fresh_bucket(weed), weed.access_key, weed.secret_key,
                       quota_bytes=512 * 1024 * 1024)
    extra: dict[str, Any] = {"compression": {"enabled": True, "chunk_size": "64KiB"}}
    if encrypted:
        extra["encryption"] = {"enabled": True, "master_key": KEY}
    gw = start_gateway(GatewayConfig(backends=[spec], extra=extra))
    s3: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    text = _corpus(3 * 1024 * 1024 + 17)
    put = s3.put_object(Bucket="photos", Key="text.py", Body=text)
    assert put["ETag"] == f'"{hashlib.md5(text).hexdigest()}"'
    stored = _stored(spec)
    assert len(stored) == 1
    ratio = len(stored[0]) / len(text)
    print(f"\nSeaweedFS: {len(text)} bytes of text stored in {len(stored[0])} (ratio {ratio:.3f}, encrypted={encrypted})")
    assert ratio < 0.4
    assert text[:64] not in stored[0]
    readable = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored[0]), read_across_frames=True)
    if encrypted:
        with pytest.raises(zstandard.ZstdError):
            readable.readall()
    else:
        assert readable.readall() == text

    assert s3.get_object(Bucket="photos", Key="text.py")["Body"].read() == text
    head = s3.head_object(Bucket="photos", Key="text.py")
    assert (head["ContentLength"], head["ETag"]) == (len(text), put["ETag"])
    for first, last in [(0, 0), (CHUNK - 5, CHUNK + 5), (CHUNK * 7 + 3, CHUNK * 20), (len(text) - 100, len(text) - 1)]:
        got = s3.get_object(Bucket="photos", Key="text.py", Range=f"bytes={first}-{last}")
        assert got["Body"].read() == text[first : last + 1]
    listed = s3.list_objects_v2(Bucket="photos")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("text.py", len(text))]

    noise = os.urandom(300 * 1024)
    s3.put_object(Bucket="photos", Key="noise.bin", Body=noise)
    s3.copy_object(Bucket="photos", Key="text-copy.py", CopySource={"Bucket": "photos", "Key": "text.py"})
    assert s3.get_object(Bucket="photos", Key="text-copy.py")["Body"].read() == text
    assert s3.get_object(Bucket="photos", Key="noise.bin")["Body"].read() == noise
    stored = _stored(spec)
    if not encrypted:
        assert noise in stored  # random data is stored as it came
    assert sum(len(data) for data in stored) < 2 * len(text) * 0.4 + len(noise) + 4096
    assert sum(row["used"] for row in quota_rows(gw).values()) == sum(len(data) for data in stored)


@pytest.mark.slow
@pytest.mark.parametrize("encrypted", [False, True], ids=["compressed", "compressed+encrypted"])
def test_multipart_parts_are_stored_compressed_and_read_back(  # type: ignore[no-untyped-def]
    weed, start_gateway, encrypted: bool
) -> None:
    """A multipart upload of text (plus one random part, stored as sent) lands on SeaweedFS smaller,
    part by part; boto3 reads it back whole and by ranges across parts; sizes and the ETag are the
    client's, quotas the backend's bytes."""
    spec = BackendSpec("weed-1", weed.endpoint, fresh_bucket(weed), weed.access_key, weed.secret_key,
                       quota_bytes=512 * 1024 * 1024)
    extra: dict[str, Any] = {"compression": {"enabled": True, "chunk_size": "64KiB"}}
    if encrypted:
        extra["encryption"] = {"enabled": True, "master_key": KEY}
    gw = start_gateway(GatewayConfig(backends=[spec], extra=extra))
    s3: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    text = _corpus(12 * 1024 * 1024)
    parts = [text[: 5 * 1024 * 1024], os.urandom(5 * 1024 * 1024 + 3), text[5 * 1024 * 1024 :]]
    body = b"".join(parts)
    upload = s3.create_multipart_upload(Bucket="photos", Key="mp.txt")["UploadId"]
    etags = [
        s3.upload_part(Bucket="photos", Key="mp.txt", UploadId=upload, PartNumber=n, Body=data)["ETag"]
        for n, data in enumerate(parts, 1)
    ]
    assert etags == [f'"{hashlib.md5(data).hexdigest()}"' for data in parts]
    listed_parts = s3.list_parts(Bucket="photos", Key="mp.txt", UploadId=upload)["Parts"]
    assert [p["Size"] for p in listed_parts] == [len(data) for data in parts]
    done = s3.complete_multipart_upload(
        Bucket="photos", Key="mp.txt", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    digest = hashlib.md5(b"".join(hashlib.md5(data).digest() for data in parts)).hexdigest()
    assert done["ETag"] == f'"{digest}-3"'

    stored = _stored(spec)  # measured on the backend directly
    assert len(stored) == 3
    held = sum(len(data) for data in stored)
    print(f"\nSeaweedFS multipart: {len(body)} bytes stored in {held} (encrypted={encrypted})")
    assert held < len(parts[1]) + 0.4 * (len(parts[0]) + len(parts[2])) + 8192
    if not encrypted:
        assert parts[1] in stored  # random data stored as it came
        assert parts[0][:64] not in b"".join(d for d in stored if d != parts[1])
    assert sum(row["used"] for row in quota_rows(gw).values()) == held

    assert s3.get_object(Bucket="photos", Key="mp.txt")["Body"].read() == body
    head = s3.head_object(Bucket="photos", Key="mp.txt")
    assert (head["ContentLength"], head["ETag"]) == (len(body), done["ETag"])
    first_end = len(parts[0])
    second_end = first_end + len(parts[1])
    for first, last in [(0, 0), (first_end - 10, first_end + 10), (CHUNK * 3 + 1, second_end + CHUNK * 2),
                        (second_end - 1, second_end), (len(body) - 100, len(body) - 1)]:
        got = s3.get_object(Bucket="photos", Key="mp.txt", Range=f"bytes={first}-{last}")
        assert got["Body"].read() == body[first : last + 1], (first, last)
    third = s3.get_object(Bucket="photos", Key="mp.txt", PartNumber=3)
    assert third["Body"].read() == parts[2] and third["ContentLength"] == len(parts[2])
    listed = s3.list_objects_v2(Bucket="photos")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("mp.txt", len(body))]
