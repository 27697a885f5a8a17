"""Multipart uploads whose parts are placed one by one, in-process: the state machine (create,
parts, list, complete, abort), each error's S3 code, foreign upload ids, part copies, every SigV4
variant on a part, listing uploads, the per-bucket limit, racing Completes, stale-upload
collection (by moving the clock) and quota exactness, driven by boto3 and raw requests through
the production wiring over in-memory backends.  tests/integration/test_multipart.py keeps the
crash-and-resume test, the SeaweedFS run and what is left of the native backend calls."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
from botocore.exceptions import ClientError

from s3orch.s3 import sigv4
from s3orch.testing import GatewayHarness, HarnessResponse
from tests.conftest import DOCS, PHOTOS, quota_rows
from tests.inproc.conftest import MiB, backend_keys, boto, make_backends, metric
from tests.support.awschunked import streaming_put
from tests.support.configs import BackendSpec, BucketSpec, GatewayConfig

Start = Callable[..., GatewayHarness]
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _mp_etag(parts: list[bytes]) -> str:
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


def _code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def _status(exc: ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


def _rows(gw: GatewayHarness) -> dict[str, dict[str, int]]:
    return quota_rows(gw)


def _raw(
    gw: GatewayHarness,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    creds: BucketSpec = PHOTOS,
    send_body: bool = True,
) -> HarnessResponse:
    """A SigV4-signed raw request (to send what SDKs refuse to send).

    ``target`` is the path with its query; with ``send_body=False`` only the headers go out
    (``Expect: 100-continue``) and the early answer is read."""
    headers = dict(headers or {})
    payload = headers.pop("x-amz-content-sha256", None)
    data = gw.encode_request(
        method, target, headers=headers, body=body if send_body else b"",
        credentials=(creds.access_key, creds.secret_key), payload_hash=payload or hashlib.sha256(body).hexdigest(),
    )
    connection = gw.connect()
    try:
        connection.send(data)
        return connection.response(method)
    finally:
        connection.close()


def _xml_code(body: bytes) -> str:
    found = re.search(rb"<Code>([^<]*)</Code>", body)
    return found.group(1).decode() if found else ""


def _complete_xml(parts: list[tuple[int, str]]) -> bytes:
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>\"{e}\"</ETag></Part>" for n, e in parts)
    return f"<CompleteMultipartUpload>{inner}</CompleteMultipartUpload>".encode()


def _upload(s3: Any, key: str, parts: list[bytes], bucket: str = "photos", **create: Any) -> tuple[str, list[str]]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    etags = [
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=i, Body=data)["ETag"]
        for i, data in enumerate(parts, 1)
    ]
    return upload_id, etags


def _done(etags: list[str], numbers: list[int] | None = None) -> dict[str, Any]:
    numbers = numbers or list(range(1, len(etags) + 1))
    return {"Parts": [{"PartNumber": n, "ETag": etags[n - 1]} for n in numbers]}


@pytest.fixture
def mp(start_harness: Start) -> tuple[GatewayHarness, list[BackendSpec], Any]:
    backends = make_backends(2, quota=256 * MiB)
    gw = start_harness(GatewayConfig(backends=backends))
    return gw, backends, boto(gw)


def test_multipart_round_trip_keeps_metadata_and_serves_ranges_and_parts(mp: Any, audit_events: list[str]) -> None:
    gw, backends, s3 = mp
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(MiB + 3)]
    whole = b"".join(parts)
    upload_id, etags = _upload(
        s3, "dir/big file+1.bin", parts,
        ContentType="video/mp4", Metadata={"owner": "alice"}, CacheControl="max-age=9",
        ContentDisposition="attachment",
    )
    assert len(upload_id) == 32 and re.fullmatch(r"[0-9a-f]{32}", upload_id)
    assert etags == [f'"{_md5(p)}"' for p in parts]
    assert metric(gw, "s3o_active_multipart_uploads") == 1
    first = s3.list_parts(Bucket="photos", Key="dir/big file+1.bin", UploadId=upload_id, MaxParts=2)
    assert [p["PartNumber"] for p in first["Parts"]] == [1, 2] and first["IsTruncated"]
    assert first["NextPartNumberMarker"] == 2 and first["Parts"][1]["Size"] == 5 * MiB
    rest = s3.list_parts(Bucket="photos", Key="dir/big file+1.bin", UploadId=upload_id, PartNumberMarker=2)
    assert [(p["PartNumber"], p["ETag"]) for p in rest["Parts"]] == [(3, etags[2])] and not rest["IsTruncated"]

    done = s3.complete_multipart_upload(
        Bucket="photos", Key="dir/big file+1.bin", UploadId=upload_id, MultipartUpload=_done(etags)
    )
    assert done["ETag"] == f'"{_mp_etag(parts)}"' and done["Key"] == "dir/big file+1.bin"
    head = s3.head_object(Bucket="photos", Key="dir/big file+1.bin")
    assert head["ETag"] == done["ETag"] and head["ContentLength"] == len(whole)
    assert (head["ContentType"], head["Metadata"], head["CacheControl"]) == ("video/mp4", {"owner": "alice"}, "max-age=9")
    assert head["ContentDisposition"] == "attachment"
    # Range GETs across part boundaries.
    got = s3.get_object(Bucket="photos", Key="dir/big file+1.bin", Range=f"bytes={5 * MiB - 10}-{10 * MiB + 9}")
    assert got["Body"].read() == whole[5 * MiB - 10 : 10 * MiB + 10]
    assert s3.get_object(Bucket="photos", Key="dir/big file+1.bin")["Body"].read() == whole
    # GET/HEAD ?partNumber=N: 206 with that part and the parts count.
    part2 = s3.get_object(Bucket="photos", Key="dir/big file+1.bin", PartNumber=2)
    assert part2["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part2["ContentRange"] == f"bytes {5 * MiB}-{10 * MiB - 1}/{len(whole)}"
    assert part2["PartsCount"] == 3 and part2["Body"].read() == parts[1]
    part3 = s3.head_object(Bucket="photos", Key="dir/big file+1.bin", PartNumber=3)
    assert part3["ContentLength"] == len(parts[2]) and part3["PartsCount"] == 3
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="photos", Key="dir/big file+1.bin", PartNumber=4)
    assert (_status(info.value), _code(info.value)) == (400, "InvalidPart")
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="photos", Key="dir/big file+1.bin", PartNumber=4)
    assert _status(info.value) == 400
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="photos", Key="dir/big file+1.bin", PartNumber=1, Range="bytes=0-1")
    assert (_status(info.value), _code(info.value)) == (400, "InvalidRequest")
    # A single-PUT object is one part.
    s3.put_object(Bucket="photos", Key="small", Body=b"0123456789")
    one = s3.get_object(Bucket="photos", Key="small", PartNumber=1)
    assert one["ResponseMetadata"]["HTTPStatusCode"] == 206 and one["Body"].read() == b"0123456789"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="photos", Key="small", PartNumber=2)
    assert (_status(info.value), _code(info.value)) == (400, "InvalidPart")

    listed = {o["Key"]: o for o in s3.list_objects_v2(Bucket="photos")["Contents"]}
    assert listed["dir/big file+1.bin"]["ETag"] == done["ETag"]
    # Complete moved nothing: each part stays the backend object it was uploaded as.
    keys = sorted(size for _, size in backend_keys(gw, backends[0]) + backend_keys(gw, backends[1]))
    assert keys == sorted([*map(len, parts), 10])
    assert all(not server.uploads[bucket] for server in gw.backends.values() for bucket in server.uploads)
    row = _rows(gw)[backends[0].name]
    assert (row["used"], row["reserved"], row["objects"]) == (len(whole) + 10, 0, 4)
    assert metric(gw, "s3o_active_multipart_uploads") == 0
    for event in ("storage.CreateMultipartUpload", "storage.UploadPart", "storage.CompleteMultipartUpload",
                  "s3.ListParts"):
        assert event in audit_events


def test_each_error_has_its_s3_code(mp: Any) -> None:
    gw, backends, s3 = mp
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="e")["UploadId"]
    base = f"/photos/e?uploadId={upload_id}"
    for bad in ("0", "10001", "x", "-1", ""):
        answer = _raw(gw, "PUT", f"{base}&partNumber={bad}", b"data")
        assert (answer.status, _xml_code(answer.body)) == (400, "InvalidArgument"), bad
    small = [s3.upload_part(Bucket="photos", Key="e", UploadId=upload_id, PartNumber=n, Body=b"%d" % n * 1000)["ETag"]
             for n in (1, 2)]
    big = s3.upload_part(Bucket="photos", Key="e", UploadId=upload_id, PartNumber=3, Body=b"3" * (5 * MiB))["ETag"]

    def complete(parts: list[dict[str, Any]]) -> str:
        with pytest.raises(ClientError) as info:
            s3.complete_multipart_upload(Bucket="photos", Key="e", UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
        assert _status(info.value) in (400, 404)
        return _code(info.value)

    assert complete([{"PartNumber": 1, "ETag": small[0]}, {"PartNumber": 2, "ETag": small[1]}]) == "EntityTooSmall"
    assert complete([{"PartNumber": 3, "ETag": big}, {"PartNumber": 1, "ETag": small[0]}]) == "InvalidPartOrder"
    assert complete([{"PartNumber": 3, "ETag": big}, {"PartNumber": 3, "ETag": big}]) == "InvalidPartOrder"
    assert complete([{"PartNumber": 3, "ETag": small[0]}]) == "InvalidPart"  # wrong ETag
    assert complete([{"PartNumber": 3, "ETag": big}, {"PartNumber": 7, "ETag": big}]) == "InvalidPart"  # missing
    answer = _raw(gw, "POST", base, b"<CompleteMultipartUpload><Part>")
    assert (answer.status, _xml_code(answer.body)) == (400, "MalformedXML")
    answer = _raw(gw, "POST", base, b"<CompleteMultipartUpload></CompleteMultipartUpload>")
    assert (answer.status, _xml_code(answer.body)) == (400, "MalformedXML")
    # Oversized: refused from the declared length, before the body is read.
    answer = _raw(gw, "POST", base, b"", {"content-length": str(5 * MiB), "expect": "100-continue",
                                          "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, send_body=False)
    assert (answer.status, _xml_code(answer.body)) == (400, "MalformedXML")
    # Content-MD5 and x-amz-checksum-* on parts are verified; nothing is stored on a mismatch.
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    answer = _raw(gw, "PUT", f"{base}&partNumber=4", b"payload", {"content-md5": wrong_md5})
    assert (answer.status, _xml_code(answer.body)) == (400, "BadDigest")
    answer = _raw(gw, "PUT", f"{base}&partNumber=4", b"payload", {"x-amz-checksum-crc32": "AAAAAA=="})
    assert (answer.status, _xml_code(answer.body)) == (400, "BadDigest")
    good = s3.upload_part(Bucket="photos", Key="e", UploadId=upload_id, PartNumber=4, Body=b"payload",
                          ChecksumAlgorithm="SHA256")
    assert good["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"payload").digest()).decode()
    parts = s3.list_parts(Bucket="photos", Key="e", UploadId=upload_id)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1, 2, 3, 4]
    assert _rows(gw)[backends[0].name]["reserved"] == 2000 + 5 * MiB + 7
    # Unknown upload ids.
    for call in (
        lambda: s3.upload_part(Bucket="photos", Key="e", UploadId="0" * 32, PartNumber=1, Body=b"x"),
        lambda: s3.list_parts(Bucket="photos", Key="e", UploadId="0" * 32),
        lambda: s3.complete_multipart_upload(Bucket="photos", Key="e", UploadId="0" * 32,
                                             MultipartUpload=_done([big])),
        lambda: s3.abort_multipart_upload(Bucket="photos", Key="e", UploadId="0" * 32),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert (_status(info.value), _code(info.value)) == (404, "NoSuchUpload")
    # An upload created without a checksum algorithm takes no part checksums on Complete.
    assert complete([{"PartNumber": 3, "ETag": big},
                     {"PartNumber": 4, "ETag": good["ETag"], "ChecksumSHA256": good["ChecksumSHA256"]}]) == "InvalidPart"
    s3.complete_multipart_upload(Bucket="photos", Key="e", UploadId=upload_id, MultipartUpload={"Parts": [
        {"PartNumber": 3, "ETag": big}, {"PartNumber": 4, "ETag": good["ETag"]}
    ]})
    assert s3.get_object(Bucket="photos", Key="e")["Body"].read() == b"3" * (5 * MiB) + b"payload"
    # Parts 1 and 2 were not listed: dropped, their reservation released.
    row = _rows(gw)[backends[0].name]
    assert (row["used"], row["reserved"]) == (5 * MiB + 7, 0)


def test_foreign_upload_id_is_indistinguishable_from_a_missing_one(mp: Any) -> None:
    gw, backends, s3 = mp
    docs = boto(gw, DOCS)
    secret_id, secret_etags = _upload(docs, "secret", [b"classified"], bucket="documents")
    own_id = s3.create_multipart_upload(Bucket="photos", Key="mine")["UploadId"]

    def answers(upload_id: str, key: str) -> list[tuple[int, bytes]]:
        xml = _complete_xml([(1, _md5(b"classified"))])
        out = []
        for method, target, body in (
            ("PUT", f"/photos/{key}?partNumber=1&uploadId={upload_id}", b"pwned"),
            ("GET", f"/photos/{key}?uploadId={upload_id}", b""),
            ("POST", f"/photos/{key}?uploadId={upload_id}", xml),
            ("DELETE", f"/photos/{key}?uploadId={upload_id}", b""),
        ):
            answer = _raw(gw, method, target, body)
            # Everything but the echoed ids must be identical.
            reply = re.sub(rb"<(RequestId|HostId|Resource|UploadId)>[^<]*</\1>", b"", answer.body)
            out.append((answer.status, reply))
        return out

    missing = answers("f" * 32, "secret")
    assert all(status == 404 and b"<Code>NoSuchUpload</Code>" in reply for status, reply in missing)
    assert answers(secret_id, "secret") == missing  # another bucket's upload
    assert answers(own_id, "other-key") == missing  # our upload, another key
    listed = s3.list_multipart_uploads(Bucket="photos").get("Uploads", [])
    assert [u["UploadId"] for u in listed] == [own_id]
    # The other bucket's upload is untouched and completes.
    docs.complete_multipart_upload(Bucket="documents", Key="secret", UploadId=secret_id,
                                   MultipartUpload=_done(secret_etags))
    assert docs.get_object(Bucket="documents", Key="secret")["Body"].read() == b"classified"
    with pytest.raises(ClientError) as info:  # and the bucket itself stays closed to photos
        s3.list_parts(Bucket="documents", Key="secret", UploadId=secret_id)
    assert _status(info.value) == 403


def test_part_replacement_and_abort_leave_quota_exact(mp: Any, audit_events: list[str]) -> None:
    gw, backends, s3 = mp
    name = backends[0].name
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="r")["UploadId"]
    s3.upload_part(Bucket="photos", Key="r", UploadId=upload_id, PartNumber=1, Body=b"a" * (6 * MiB))
    assert _rows(gw)[name]["reserved"] == 6 * MiB
    replaced = s3.upload_part(Bucket="photos", Key="r", UploadId=upload_id, PartNumber=1, Body=b"b" * (5 * MiB + 1))
    s3.upload_part(Bucket="photos", Key="r", UploadId=upload_id, PartNumber=2, Body=b"c" * MiB)
    assert _rows(gw)[name]["reserved"] == 6 * MiB + 1
    parts = s3.list_parts(Bucket="photos", Key="r", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [
        (1, replaced["ETag"], 5 * MiB + 1), (2, f'"{_md5(b"c" * MiB)}"', MiB)]
    assert s3.abort_multipart_upload(Bucket="photos", Key="r", UploadId=upload_id)[
        "ResponseMetadata"]["HTTPStatusCode"] == 204
    row = _rows(gw)[name]
    assert (row["used"], row["reserved"], row["orphan"]) == (0, 0, 0)
    assert backend_keys(gw, backends[0]) == [] and backend_keys(gw, backends[1]) == []  # every part deleted
    for call in (lambda: s3.list_parts(Bucket="photos", Key="r", UploadId=upload_id),
                 lambda: s3.abort_multipart_upload(Bucket="photos", Key="r", UploadId=upload_id),
                 lambda: s3.upload_part(Bucket="photos", Key="r", UploadId=upload_id, PartNumber=3, Body=b"x")):
        with pytest.raises(ClientError) as info:
            call()
        assert _code(info.value) == "NoSuchUpload"
    assert "storage.AbortMultipartUpload" in audit_events


def test_full_backend_answers_upload_part_with_507(start_harness: Start) -> None:
    backends = make_backends(1, quota=12 * MiB)
    gw = start_harness(GatewayConfig(backends=backends))
    s3 = boto(gw)
    name = backends[0].name
    upload_id, etags = _upload(s3, "f", [b"1" * (6 * MiB), b"2" * (6 * MiB)])
    for number in (3, 2):  # a new part, and a replacement (both copies exist until it commits)
        with pytest.raises(ClientError) as info:
            s3.upload_part(Bucket="photos", Key="f", UploadId=upload_id, PartNumber=number, Body=b"3" * MiB)
        assert (_status(info.value), _code(info.value)) == (507, "InsufficientStorage")
    row = _rows(gw)[name]
    assert (row["used"], row["reserved"]) == (0, 12 * MiB) and row["used"] + row["reserved"] <= row["limit"]
    with pytest.raises(ClientError) as info:  # no room for another upload either
        s3.put_object(Bucket="photos", Key="other", Body=b"x")
    assert _status(info.value) == 507
    s3.complete_multipart_upload(Bucket="photos", Key="f", UploadId=upload_id, MultipartUpload=_done(etags))
    row = _rows(gw)[name]
    assert (row["used"], row["reserved"], row["objects"]) == (12 * MiB, 0, 2)  # two parts, two objects
    assert sum(size for _, size in backend_keys(gw, backends[0])) == 12 * MiB


def test_complete_over_an_existing_key_releases_the_old_copies(mp: Any) -> None:
    gw, backends, s3 = mp
    name = backends[0].name
    s3.put_object(Bucket="photos", Key="k", Body=b"old" * MiB)
    old_keys = backend_keys(gw, backends[0])
    upload_id, etags = _upload(s3, "k", [b"n" * (5 * MiB), b"ew"])
    s3.complete_multipart_upload(Bucket="photos", Key="k", UploadId=upload_id, MultipartUpload=_done(etags))
    gw.advance(60)  # the cleanup queue removes the displaced copy
    row = _rows(gw)[name]
    assert (row["used"], row["reserved"], row["objects"], row["orphan"]) == (5 * MiB + 2, 0, 2, 0)
    assert sorted(size for _, size in backend_keys(gw, backends[0])) == [2, 5 * MiB]  # the parts only
    assert old_keys[0] not in backend_keys(gw, backends[0])
    assert s3.get_object(Bucket="photos", Key="k")["Body"].read() == b"n" * (5 * MiB) + b"ew"


def test_upload_part_copy_with_ranges_server_side_or_through_the_gateway(start_harness: Start) -> None:
    backends = make_backends(2, quota=64 * MiB)
    backends[0].quota_bytes = 7 * MiB  # the source fills backend-1: the upload lands on backend-2
    gw = start_harness(GatewayConfig(backends=backends))
    s3 = boto(gw)
    source = os.urandom(7 * MiB)
    s3.put_object(Bucket="photos", Key="src", Body=source)
    s3.put_object(Bucket="photos", Key="tiny", Body=b"")
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="dst")["UploadId"]
    one = s3.upload_part_copy(Bucket="photos", Key="dst", UploadId=upload_id, PartNumber=1,
                              CopySource={"Bucket": "photos", "Key": "src"}, CopySourceRange=f"bytes=1-{5 * MiB}")
    assert one["CopyPartResult"]["ETag"] == f'"{_md5(source[1 : 5 * MiB + 1])}"'
    two = s3.upload_part_copy(Bucket="photos", Key="dst", UploadId=upload_id, PartNumber=2, CopySource="photos/src")
    assert two["CopyPartResult"]["ETag"] == f'"{_md5(source)}"'
    for kwargs, code in (
        ({"CopySource": "documents/src"}, "AccessDenied"),
        ({"CopySource": "photos/missing"}, "NoSuchKey"),
        ({"CopySource": "photos/src", "CopySourceRange": f"bytes=0-{7 * MiB}"}, "InvalidArgument"),
        ({"CopySource": "photos/src", "CopySourceRange": "bytes=5-"}, "InvalidArgument"),
        ({"CopySource": "photos/src", "CopySourceIfMatch": '"nope"'}, "PreconditionFailed"),
    ):
        with pytest.raises(ClientError) as info:
            s3.upload_part_copy(Bucket="photos", Key="dst", UploadId=upload_id, PartNumber=3, **kwargs)
        assert _code(info.value) == code, kwargs
    done = s3.complete_multipart_upload(Bucket="photos", Key="dst", UploadId=upload_id, MultipartUpload=_done(
        [one["CopyPartResult"]["ETag"], two["CopyPartResult"]["ETag"]]))
    expected = [source[1 : 5 * MiB + 1], source]
    assert done["ETag"] == f'"{_mp_etag(expected)}"'
    assert s3.get_object(Bucket="photos", Key="dst")["Body"].read() == b"".join(expected)
    # backend-1 was full: both parts went to backend-2 (through the gateway)
    assert sorted(size for _, size in backend_keys(gw, backends[1])) == [5 * MiB, 7 * MiB]
    # Server-side when the range is one part of the source and a copy of it is where
    # placement puts the new part.
    upload2 = s3.create_multipart_upload(Bucket="photos", Key="dst2")["UploadId"]
    before = metric(gw, "s3o_backend_bytes_total", backend=backends[1].name, direction="out")
    copies = metric(gw, "s3o_backend_requests_total", operation="CopyObject", backend=backends[1].name)
    part = s3.upload_part_copy(Bucket="photos", Key="dst2", UploadId=upload2, PartNumber=1, CopySource="photos/dst",
                               CopySourceRange=f"bytes=0-{5 * MiB - 1}")
    assert part["CopyPartResult"]["ETag"] == f'"{_md5(expected[0])}"'
    assert metric(gw, "s3o_backend_bytes_total", backend=backends[1].name, direction="out") == before
    assert metric(gw, "s3o_backend_requests_total", operation="CopyObject", backend=backends[1].name) == copies + 1
    s3.complete_multipart_upload(Bucket="photos", Key="dst2", UploadId=upload2,
                                 MultipartUpload=_done([part["CopyPartResult"]["ETag"]]))
    assert s3.get_object(Bucket="photos", Key="dst2")["Body"].read() == expected[0]
    assert _rows(gw)[backends[1].name]["reserved"] == 0


def test_every_sigv4_variant_is_accepted_on_upload_part(mp: Any) -> None:
    gw, backends, s3 = mp
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="v")["UploadId"]
    parts = [os.urandom(5 * MiB) for _ in range(4)] + [os.urandom(1000)]
    presign = boto(gw, signature_version="s3v4")
    url = urlsplit(presign.generate_presigned_url("upload_part", ExpiresIn=60, Params={
        "Bucket": "photos", "Key": "v", "UploadId": upload_id, "PartNumber": 1}))
    answer = gw.send_raw(gw.encode_request("PUT", f"{url.path}?{url.query}", body=parts[0], host=url.netloc))
    assert answer.header("etag") == f'"{_md5(parts[0])}"'
    variants = [sigv4.STREAMING_PAYLOAD, sigv4.STREAMING_PAYLOAD_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER]
    for number, variant in enumerate(variants, 2):
        target = f"/photos/v?partNumber={number}&uploadId={upload_id}"
        req = streaming_put(f"http://{gw.host}{target}", parts[number - 1], access_key=PHOTOS.access_key,
                            secret_key=PHOTOS.secret_key, now=gw.clock.seconds(), variant=variant)
        answer = gw.send_raw(gw.encode_request("PUT", target, headers=req.headers, body=req.body))
        assert answer.status == 200, (variant, answer.body)
        assert answer.header("etag") == f'"{_md5(parts[number - 1])}"'
    etags = [f'"{_md5(p)}"' for p in parts[:4]]
    etags.append(s3.upload_part(Bucket="photos", Key="v", UploadId=upload_id, PartNumber=5, Body=parts[4])["ETag"])
    s3.complete_multipart_upload(Bucket="photos", Key="v", UploadId=upload_id, MultipartUpload=_done(etags))
    assert s3.get_object(Bucket="photos", Key="v")["Body"].read() == b"".join(parts)


def test_list_multipart_uploads_prefix_delimiter_and_markers(mp: Any) -> None:
    gw, backends, s3 = mp
    ids: dict[str, list[str]] = {}
    for key in ("a/1", "a/2", "b/1", "b/1", "c", "gone"):
        ids.setdefault(key, []).append(s3.create_multipart_upload(Bucket="photos", Key=key)["UploadId"])
        gw.advance(1)  # distinct initiation times
    s3.abort_multipart_upload(Bucket="photos", Key="gone", UploadId=ids["gone"][0])
    everything = [("a/1", ids["a/1"][0]), ("a/2", ids["a/2"][0]), ("b/1", ids["b/1"][0]),
                  ("b/1", ids["b/1"][1]), ("c", ids["c"][0])]

    def listed(**kwargs: Any) -> tuple[list[tuple[str, str]], list[str], dict[str, Any]]:
        page = s3.list_multipart_uploads(Bucket="photos", **kwargs)
        uploads = [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        return uploads, [p["Prefix"] for p in page.get("CommonPrefixes", [])], page

    assert listed()[0] == everything  # by key, then initiation
    assert listed(Prefix="b/")[0] == everything[2:4]
    uploads, prefixes, _ = listed(Delimiter="/")
    assert (uploads, prefixes) == ([everything[4]], ["a/", "b/"])
    assert listed(KeyMarker="b/1")[0] == [everything[4]]
    assert listed(KeyMarker="b/1", UploadIdMarker=ids["b/1"][0])[0] == everything[3:]
    assert listed(KeyMarker="a/", Delimiter="/")[1] == ["b/"]
    uploads, _, page = listed(MaxUploads=2)
    assert uploads == everything[:2] and page["IsTruncated"]
    assert (page["NextKeyMarker"], page["NextUploadIdMarker"]) == everything[1]
    pages = list(s3.get_paginator("list_multipart_uploads").paginate(Bucket="photos", PaginationConfig={"PageSize": 2}))
    assert [(u["Key"], u["UploadId"]) for p in pages for u in p.get("Uploads", [])] == everything
    with pytest.raises(ClientError) as info:
        s3.list_multipart_uploads(Bucket="photos", MaxUploads=-1)
    assert _code(info.value) == "InvalidArgument"


def test_max_multipart_uploads_limits_active_uploads_per_bucket(start_harness: Start) -> None:
    buckets = [
        {"name": "photos", "max_multipart_uploads": 2,
         "credentials": [{"access_key_id": PHOTOS.access_key, "secret_access_key": PHOTOS.secret_key}]},
        {"name": "documents",
         "credentials": [{"access_key_id": DOCS.access_key, "secret_access_key": DOCS.secret_key}]},
    ]
    gw = start_harness(GatewayConfig(backends=make_backends(1), extra={"buckets": buckets}))
    s3 = boto(gw)
    first = s3.create_multipart_upload(Bucket="photos", Key="1")["UploadId"]
    s3.create_multipart_upload(Bucket="photos", Key="2")
    with pytest.raises(ClientError) as info:
        s3.create_multipart_upload(Bucket="photos", Key="3")
    assert (_status(info.value), _code(info.value)) == (503, "SlowDown")
    assert "Too many active multipart uploads" in info.value.response["Error"]["Message"]
    docs = boto(gw, DOCS)
    for i in range(3):  # other buckets have their own count
        docs.create_multipart_upload(Bucket="documents", Key=f"d{i}")
    s3.abort_multipart_upload(Bucket="photos", Key="1", UploadId=first)
    s3.create_multipart_upload(Bucket="photos", Key="3")


def _answer_etag(answer: HarnessResponse) -> tuple[int, str]:
    """(status, ETag of a CompleteMultipartUploadResult or the S3 error code)."""
    if answer.status != 200:
        return answer.status, _xml_code(answer.body)
    return 200, ElementTree.fromstring(answer.body).findtext(f"{NS}ETag") or ""


def _race_round(gw: GatewayHarness, s3: Any, key: str) -> None:
    """Complete twice while a part the Complete does not list is being uploaded (all three sent
    together: the gateway interleaves them at every backend and database wait)."""
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB)]
    upload_id, etags = _upload(s3, key, parts)
    late = os.urandom(5 * MiB)
    credentials = (PHOTOS.access_key, PHOTOS.secret_key)
    xml = _complete_xml([(n, etag.strip('"')) for n, etag in enumerate(etags, 1)])
    complete = gw.encode_request("POST", f"/photos/{key}?uploadId={upload_id}", body=xml, credentials=credentials)
    late_part = gw.encode_request(
        "PUT", f"/photos/{key}?partNumber=3&uploadId={upload_id}", body=late, credentials=credentials
    )
    first, part, second = gw.send_together([complete, late_part, complete])
    completes = [_answer_etag(first), _answer_etag(second)]
    # A double Complete answers the same object (the second is a repeat).
    assert completes == [(200, f'"{_mp_etag(parts)}"')] * 2, (first, second)
    assert part.status == 200 or (part.status, _xml_code(part.body)) == (404, "NoSuchUpload"), part
    assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == b"".join(parts)
    # And once more, later: still the same answer; a part after Complete is refused.
    assert _answer_etag(gw.send_raw(complete)) == completes[0]
    assert _answer_etag(gw.send_raw(late_part)) == (404, "NoSuchUpload")


def test_racing_complete_with_late_upload_part_and_double_complete(mp: Any) -> None:
    gw, backends, s3 = mp
    name = backends[0].name
    for round_ in range(3):
        _race_round(gw, s3, f"race{round_}")
    gw.advance(60)  # late parts deleted
    row = _rows(gw)[name]
    assert (row["used"], row["reserved"], row["objects"], row["orphan"]) == (3 * 10 * MiB, 0, 6, 0)
    assert sorted(size for _, size in backend_keys(gw, backends[0])) == [5 * MiB] * 6


def test_complete_moves_no_object_data(start_harness: Start) -> None:
    spec = make_backends(1, quota=1024 * MiB)[0]
    gw = start_harness(GatewayConfig(backends=[spec]))
    s3 = boto(gw)
    parts = [os.urandom(8 * MiB) for _ in range(8)]
    out_before = metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="out")
    in_before = metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="in")
    requests_before = {
        operation: metric(gw, "s3o_backend_requests_total", operation=operation, backend=spec.name)
        for operation in ("PutObject", "UploadPart", "CompleteMultipartUpload", "CreateMultipartUpload", "CopyObject")
    }
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="64mib")["UploadId"]
    credentials = (PHOTOS.access_key, PHOTOS.secret_key)
    together = [  # 8 MiB parts, 4 at once
        gw.encode_request("PUT", f"/photos/64mib?partNumber={n}&uploadId={upload_id}", body=parts[n - 1],
                          credentials=credentials)
        for n in range(1, 9)
    ]
    answers = gw.send_together(together[:4]) + gw.send_together(together[4:])
    assert [a.status for a in answers] == [200] * 8
    etags = [str(a.header("etag")) for a in answers]
    uploaded = metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="out") - out_before
    s3.complete_multipart_upload(Bucket="photos", Key="64mib", UploadId=upload_id, MultipartUpload=_done(etags))
    sent = metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="out") - out_before
    received = metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="in") - in_before
    # Every object byte crossed to the backend exactly once, each part as its own object;
    # Complete made no backend call at all.
    assert uploaded == sent == 64 * MiB and received == 0
    assert sorted(size for _, size in backend_keys(gw, spec)) == [8 * MiB] * 8
    made = {
        operation: metric(gw, "s3o_backend_requests_total", operation=operation, backend=spec.name) - before
        for operation, before in requests_before.items()
    }
    assert made == {"PutObject": 8, "UploadPart": 0, "CompleteMultipartUpload": 0, "CreateMultipartUpload": 0,
                    "CopyObject": 0}
    got = s3.get_object(Bucket="photos", Key="64mib")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(parts)).digest()
    row = _rows(gw)[spec.name]
    assert (row["used"], row["reserved"]) == (64 * MiB, 0)


def test_stale_uploads_are_aborted_and_release_their_bytes(start_harness: Start, audit_events: list[str]) -> None:
    backends = make_backends(1, quota=64 * MiB)
    gw = start_harness(GatewayConfig(backends=backends, extra={"cleanup_queue": {"multipart_stale_timeout": "3s"}}))
    s3 = boto(gw)
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="forgotten")["UploadId"]
    s3.upload_part(Bucket="photos", Key="forgotten", UploadId=upload_id, PartNumber=1, Body=b"z" * MiB)
    assert _rows(gw)[backends[0].name]["reserved"] == MiB
    assert [size for _, size in backend_keys(gw, backends[0])] == [MiB]
    gw.advance(20)
    assert not s3.list_multipart_uploads(Bucket="photos").get("Uploads")
    row = _rows(gw)[backends[0].name]
    assert (row["reserved"], row["orphan"]) == (0, 0)
    assert backend_keys(gw, backends[0]) == []  # the part was deleted
    assert "storage.MultipartCleanup" in audit_events
    assert metric(gw, "s3o_active_multipart_uploads", backend=backends[0].name) == 0
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket="photos", Key="forgotten", UploadId=upload_id, PartNumber=2, Body=b"late")
    assert _code(info.value) == "NoSuchUpload"


def test_size_hint_and_backend_object_limits_apply_to_the_fleet_and_to_each_part(start_harness: Start) -> None:
    backends = make_backends(2, quota=64 * MiB)
    backends[0].max_object_size = 8 * MiB
    gw = start_harness(GatewayConfig(backends=backends))
    s3 = boto(gw)
    # x-amz-mp-object-size on Create (an s3orch extension): refused at once when the
    # backends together have no room for it ...
    answer = _raw(gw, "POST", "/photos/hinted?uploads", b"", {"x-amz-mp-object-size": str(129 * MiB)})
    assert (answer.status, _xml_code(answer.body)) == (507, "InsufficientStorage")
    # ... and accepted when they have, even if no single backend has.
    answer = _raw(gw, "POST", "/photos/hinted?uploads", b"", {"x-amz-mp-object-size": str(100 * MiB)})
    assert answer.status == 200
    hinted = re.search(rb"<UploadId>([0-9a-f]{32})</UploadId>", answer.body).group(1).decode()  # type: ignore[union-attr]
    # A backend's max_object_size limits each part it receives, not the object.
    parts = [b"h" * (9 * MiB), b"i" * (5 * MiB)]
    etags = [s3.upload_part(Bucket="photos", Key="hinted", UploadId=hinted, PartNumber=n, Body=d)["ETag"]
             for n, d in enumerate(parts, 1)]
    assert [size for _, size in backend_keys(gw, backends[0])] == [5 * MiB]
    assert [size for _, size in backend_keys(gw, backends[1])] == [9 * MiB]
    # The size a Complete declares must be the parts' total.
    answer = _raw(gw, "POST", f"/photos/hinted?uploadId={hinted}",
                  _complete_xml([(1, _md5(parts[0]))]), {"x-amz-mp-object-size": "1"})
    assert (answer.status, _xml_code(answer.body)) == (400, "InvalidRequest")
    s3.complete_multipart_upload(Bucket="photos", Key="hinted", UploadId=hinted, MultipartUpload=_done(etags))
    assert s3.head_object(Bucket="photos", Key="hinted")["ContentLength"] == 14 * MiB  # > 8 MiB: fine


def test_conditional_complete_checks_the_current_object(mp: Any) -> None:
    gw, backends, s3 = mp
    s3.put_object(Bucket="photos", Key="cond", Body=b"first")
    upload_id, etags = _upload(s3, "cond", [b"second"])
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket="photos", Key="cond", UploadId=upload_id,
                                     MultipartUpload=_done(etags), IfNoneMatch="*")
    assert (_status(info.value), _code(info.value)) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket="photos", Key="cond")["Body"].read() == b"first"
    current = s3.head_object(Bucket="photos", Key="cond")["ETag"]
    s3.complete_multipart_upload(Bucket="photos", Key="cond", UploadId=upload_id,
                                 MultipartUpload=_done(etags), IfMatch=current)  # the upload stayed open
    assert s3.get_object(Bucket="photos", Key="cond")["Body"].read() == b"second"
