"""Flexible checksums of multipart uploads, GetObjectAttributes' ObjectParts, ?partNumber=
and UploadPartCopy ranges, in-process over in-memory backends, as boto3 sends them.

boto3 computes each part's checksum itself (header or aws-chunked trailer) once the
upload names an algorithm; the gateway verifies every part, checks the Complete's
part list and the object checksum (COMPOSITE: the checksum of the part checksums
with ``-N``; FULL_OBJECT: the CRC of the whole object, combined from the parts'),
stores it, and answers it on HEAD/GET with ``x-amz-checksum-mode: ENABLED`` and in
GetObjectAttributes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3orch.s3.checksums import new_checksum
from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS, quota_rows
from tests.inproc.conftest import MiB, boto, make_backends
from tests.support.configs import GatewayConfig


@pytest.fixture
def gw(start_harness: Callable[..., GatewayHarness]) -> tuple[GatewayHarness, Any]:
    harness = start_harness(GatewayConfig(backends=make_backends(2, quota=128 * MiB)))
    return harness, boto(harness)


def _b64(algorithm: str, data: bytes) -> str:
    checksum = new_checksum(algorithm)
    checksum.update(data)
    return checksum.b64digest()


def _error(call: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as info:
        call()
    error = info.value.response["Error"]
    return int(info.value.response["ResponseMetadata"]["HTTPStatusCode"]), str(error["Code"]), str(error.get("Message"))


def _parts(s3: Any, key: str, upload_id: str, bodies: list[bytes], algorithm: str) -> list[dict[str, Any]]:
    out = []
    for number, body in enumerate(bodies, 1):
        answer = s3.upload_part(Bucket="photos", Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                                ChecksumAlgorithm=algorithm)
        element = f"Checksum{algorithm}"
        assert answer[element] == _b64(algorithm, body)
        out.append({"PartNumber": number, "ETag": answer["ETag"], element: answer[element]})
    return out


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_a_composite_checksum_is_verified_stored_and_answered(gw: tuple[Any, Any], algorithm: str) -> None:
    proc, s3 = gw
    key = f"composite-{algorithm}"
    created = s3.create_multipart_upload(Bucket="photos", Key=key, ChecksumAlgorithm=algorithm)
    assert (created["ChecksumAlgorithm"], created["ChecksumType"]) == (algorithm, "COMPOSITE")
    bodies = [os.urandom(5 * MiB), os.urandom(1234)]
    parts = _parts(s3, key, created["UploadId"], bodies, algorithm)
    listed = s3.list_parts(Bucket="photos", Key=key, UploadId=created["UploadId"])
    assert listed["ChecksumAlgorithm"] == algorithm
    assert [p[f"Checksum{algorithm}"] for p in listed["Parts"]] == [p[f"Checksum{algorithm}"] for p in parts]
    # a missing part checksum, a wrong one
    missing = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
    status, code, message = _error(lambda: s3.complete_multipart_upload(
        Bucket="photos", Key=key, UploadId=created["UploadId"], MultipartUpload={"Parts": missing}))
    assert (status, code) == (400, "InvalidRequest") and "must include the checksum for each part" in message
    wrong = [dict(parts[0]), dict(parts[1])]
    wrong[1][f"Checksum{algorithm}"] = parts[0][f"Checksum{algorithm}"]
    assert _error(lambda: s3.complete_multipart_upload(
        Bucket="photos", Key=key, UploadId=created["UploadId"], MultipartUpload={"Parts": wrong}))[:2] == (400, "InvalidPart")
    done = s3.complete_multipart_upload(Bucket="photos", Key=key, UploadId=created["UploadId"],
                                        MultipartUpload={"Parts": parts})
    raw = b"".join(base64.b64decode(p[f"Checksum{algorithm}"]) for p in parts)
    expected = f"{_b64(algorithm, raw)}-2"
    assert (done[f"Checksum{algorithm}"], done["ChecksumType"]) == (expected, "COMPOSITE")
    head = s3.head_object(Bucket="photos", Key=key, ChecksumMode="ENABLED")
    assert (head[f"Checksum{algorithm}"], head["ChecksumType"]) == (expected, "COMPOSITE")
    assert f"Checksum{algorithm}" not in s3.head_object(Bucket="photos", Key=key)
    got = s3.get_object(Bucket="photos", Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(bodies)  # boto3 does not validate composite values
    attributes = s3.get_object_attributes(Bucket="photos", Key=key,
                                          ObjectAttributes=["Checksum", "ObjectParts", "ETag"], MaxParts=1)
    assert attributes["Checksum"] == {f"Checksum{algorithm}": expected[:-2], "ChecksumType": "COMPOSITE"}
    first = attributes["ObjectParts"]
    assert (first["TotalPartsCount"], first["MaxParts"], first["IsTruncated"], first["NextPartNumberMarker"]) == (
        2, 1, True, 1)
    assert first["Parts"] == [{"PartNumber": 1, "Size": 5 * MiB, f"Checksum{algorithm}": parts[0][f"Checksum{algorithm}"]}]
    rest = s3.get_object_attributes(Bucket="photos", Key=key, ObjectAttributes=["ObjectParts"],
                                    PartNumberMarker=1)["ObjectParts"]
    assert [p["PartNumber"] for p in rest["Parts"]] == [2] and not rest["IsTruncated"]


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_a_full_object_checksum_is_the_crc_of_the_whole_object(gw: tuple[Any, Any], algorithm: str) -> None:
    proc, s3 = gw
    key = f"full-{algorithm}"
    created = s3.create_multipart_upload(Bucket="photos", Key=key, ChecksumAlgorithm=algorithm,
                                         ChecksumType="FULL_OBJECT")
    assert created["ChecksumType"] == "FULL_OBJECT"
    bodies = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(77)]
    parts = _parts(s3, key, created["UploadId"], bodies, algorithm)
    whole = _b64(algorithm, b"".join(bodies))
    bad = _b64(algorithm, b"something else")
    status, code, _ = _error(lambda: s3.complete_multipart_upload(
        Bucket="photos", Key=key, UploadId=created["UploadId"], MultipartUpload={"Parts": parts},
        ChecksumType="FULL_OBJECT", **{f"Checksum{algorithm}": bad}))
    assert (status, code) == (400, "BadDigest")
    done = s3.complete_multipart_upload(
        Bucket="photos", Key=key, UploadId=created["UploadId"], ChecksumType="FULL_OBJECT",
        MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]},
        **{f"Checksum{algorithm}": whole})
    assert (done[f"Checksum{algorithm}"], done["ChecksumType"]) == (whole, "FULL_OBJECT")
    got = s3.get_object(Bucket="photos", Key=key, ChecksumMode="ENABLED")  # boto3 validates it
    assert got[f"Checksum{algorithm}"] == whole and got["Body"].read() == b"".join(bodies)
    attributes = s3.get_object_attributes(Bucket="photos", Key=key, ObjectAttributes=["Checksum", "ObjectParts"])
    assert attributes["Checksum"] == {f"Checksum{algorithm}": whole, "ChecksumType": "FULL_OBJECT"}
    assert attributes["ObjectParts"] == {"TotalPartsCount": 3}


def test_upload_file_with_a_checksum_end_to_end(gw: tuple[Any, Any], tmp_path: Any) -> None:
    from boto3.s3.transfer import TransferConfig

    proc, s3 = gw
    data = os.urandom(18 * MiB + 5)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    # One thread: the harness is driven from the test's thread (the parts' concurrency is not
    # what this checks; tests/inproc/test_multipart.py sends parts together).
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, use_threads=False)
    s3.upload_file(str(path), "photos", "uploaded", Config=config, ExtraArgs={"ChecksumAlgorithm": "CRC32"})
    head = s3.head_object(Bucket="photos", Key="uploaded", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"].endswith("-4") and head["PartsCount"] == 4
    out = tmp_path / "out.bin"
    s3.download_file("photos", "uploaded", str(out), Config=config)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()


def _signed(proc: GatewayHarness, method: str, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    answer = proc.send_raw(proc.encode_request(
        method, target, headers=headers, body=body, credentials=(PHOTOS.access_key, PHOTOS.secret_key)))
    return answer.status, answer.body


def test_checksum_rules_of_create_and_upload_part(gw: tuple[Any, Any]) -> None:
    proc, s3 = gw
    for headers, message in (
        ({"x-amz-checksum-algorithm": "SHA1", "x-amz-checksum-type": "FULL_OBJECT"},
         b"The FULL_OBJECT checksum type cannot be used with the sha1 checksum algorithm."),
        ({"x-amz-checksum-algorithm": "CRC64NVME", "x-amz-checksum-type": "COMPOSITE"},
         b"The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm."),
        ({"x-amz-checksum-type": "COMPOSITE"}, b"can only be used with the x-amz-checksum-algorithm header"),
        ({"x-amz-checksum-algorithm": "MD4"}, b"Checksum algorithm provided is unsupported"),
        ({"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "PARTS"},
         b"Value for x-amz-checksum-type header is invalid."),
    ):
        status, body = _signed(proc, "POST", "/photos/rules?uploads", b"", headers)
        assert status == 400 and b"<Code>InvalidRequest</Code>" in body and message in body, body
    created = s3.create_multipart_upload(Bucket="photos", Key="rules", ChecksumAlgorithm="CRC32")
    target = f"/photos/rules?partNumber=1&uploadId={created['UploadId']}"
    status, body = _signed(proc, "PUT", target, b"no checksum", {})
    assert status == 400 and b"expected checksum Type: crc32, actual checksum Type: null" in body
    status, body = _signed(proc, "PUT", target, b"data", {"x-amz-checksum-sha1": _b64("SHA1", b"data")})
    assert status == 400 and b"actual checksum Type: sha1" in body
    crc = base64.b64encode(zlib.crc32(b"data").to_bytes(4, "big")).decode()
    status, body = _signed(proc, "PUT", target, b"data", {"x-amz-checksum-crc32": crc})
    assert status == 200, body
    row = quota_rows(proc)
    assert sum(r["reserved"] for r in row.values()) == 4  # only the accepted part


def test_part_numbers_of_get_and_head_and_copy_ranges_answer_as_s3(gw: tuple[Any, Any]) -> None:
    proc, s3 = gw
    s3.put_object(Bucket="photos", Key="single", Body=b"0123456789")
    one = s3.head_object(Bucket="photos", Key="single", PartNumber=1)
    assert one["ResponseMetadata"]["HTTPStatusCode"] == 206 and one["ContentLength"] == 10
    assert _error(lambda: s3.get_object(Bucket="photos", Key="single", PartNumber=2))[:2] == (400, "InvalidPart")
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="copy")["UploadId"]
    copy = lambda value: s3.upload_part_copy(  # noqa: E731
        Bucket="photos", Key="copy", UploadId=upload_id, PartNumber=1,
        CopySource={"Bucket": "photos", "Key": "single"}, CopySourceRange=value)
    for value in ("bytes=0", "bytes=a-b", "bytes=0-2,3-5", "0-2", "bytes=-2"):
        status, code, message = _error(lambda value=value: copy(value))  # type: ignore[misc]
        assert (status, code) == (400, "InvalidArgument") and message.startswith(
            "The x-amz-copy-source-range value must be of the form"), value
    for value in ("bytes=0-10", "bytes=10-12", "bytes=5-2"):
        status, code, message = _error(lambda value=value: copy(value))  # type: ignore[misc]
        assert (status, code, message) == (
            400, "InvalidArgument", "Range specified is not valid for source object of size: 10"), value
    assert copy("bytes=2-5")["CopyPartResult"]["ETag"] == f'"{hashlib.md5(b"2345").hexdigest()}"'
