"""Conditional writes through a real gateway over moto_server, as boto3 sends them.

PutObject, CopyObject and CompleteMultipartUpload with ``If-Match: <etag>`` (412 when
another object is there, 404 NoSuchKey when none is), ``If-Match: *`` (404 unless the
key exists), ``If-None-Match: *`` and ``If-None-Match: <etag>`` (412 when it is the
current ETag).  A refused write leaves the previous object and costs no quota; many
writers racing on one condition let exactly one through (checked in the commit).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import PHOTOS, backend_keys, quota_rows, s3_client
from tests.support.configs import GatewayConfig
from tests.support.polling import poll


@pytest.fixture
def gw(start_gateway: Any, moto_backends: Any) -> tuple[Any, Any, Any]:
    backends = moto_backends(1, quota=64 * 1024 * 1024)
    proc = start_gateway(GatewayConfig(backends=backends))
    return proc, backends[0], s3_client(proc.endpoint, PHOTOS.access_key, PHOTOS.secret_key)


def _error(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call()
    return int(info.value.response["ResponseMetadata"]["HTTPStatusCode"]), str(info.value.response["Error"]["Code"])


def _settled(proc: Any, spec: Any) -> dict[str, int]:
    return poll(lambda: quota_rows(proc)[spec.name], lambda row: not (row["orphan"] or row["reserved"]), 10)


def test_put_if_match_and_if_none_match_in_every_form(gw: tuple[Any, Any, Any]) -> None:
    proc, spec, s3 = gw
    put = lambda body, **kw: s3.put_object(Bucket="photos", Key="k", Body=body, **kw)  # noqa: E731
    assert _error(lambda: put(b"x", IfMatch='"0123456789abcdef0123456789abcdef"')) == (404, "NoSuchKey")
    assert _error(lambda: put(b"x", IfMatch="*")) == (404, "NoSuchKey")
    first = put(b"first", IfNoneMatch="*")["ETag"]
    assert _error(lambda: put(b"x", IfNoneMatch="*")) == (412, "PreconditionFailed")
    assert _error(lambda: put(b"x", IfMatch='"0123456789abcdef0123456789abcdef"')) == (412, "PreconditionFailed")
    assert _error(lambda: put(b"x", IfNoneMatch=first)) == (412, "PreconditionFailed")
    second = put(b"second", IfMatch=first)["ETag"]
    third = put(b"third", IfMatch="*")["ETag"]
    put(b"fourth", IfNoneMatch=second)  # not the current ETag any more: goes ahead
    assert third != second
    assert s3.get_object(Bucket="photos", Key="k")["Body"].read() == b"fourth"
    row = _settled(proc, spec)
    assert (row["used"], row["orphan"], row["reserved"], row["objects"]) == (6, 0, 0, 1)
    assert [size for _, size in backend_keys(spec)] == [6]  # refused writes left no bytes


def test_copy_object_checks_the_destination(gw: tuple[Any, Any, Any]) -> None:
    proc, spec, s3 = gw
    s3.put_object(Bucket="photos", Key="src", Body=b"source")
    copy = lambda **kw: s3.copy_object(  # noqa: E731
        Bucket="photos", Key="dst", CopySource={"Bucket": "photos", "Key": "src"}, **kw)
    assert _error(lambda: copy(IfMatch="*")) == (404, "NoSuchKey")
    copy(IfNoneMatch="*")
    assert _error(lambda: copy(IfNoneMatch="*")) == (412, "PreconditionFailed")
    current = s3.head_object(Bucket="photos", Key="dst")["ETag"]
    assert _error(lambda: copy(IfNoneMatch=current)) == (412, "PreconditionFailed")
    assert _error(lambda: copy(IfMatch='"nope"')) == (412, "PreconditionFailed")
    copy(IfMatch=current)
    assert s3.get_object(Bucket="photos", Key="dst")["Body"].read() == b"source"
    row = _settled(proc, spec)
    assert (row["used"], row["orphan"], row["reserved"]) == (12, 0, 0)


def test_complete_multipart_upload_with_if_match(gw: tuple[Any, Any, Any]) -> None:
    proc, spec, s3 = gw
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket="photos", Key="mp", UploadId=upload_id, PartNumber=1, Body=b"part")["ETag"]
    done = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    complete = lambda **kw: s3.complete_multipart_upload(  # noqa: E731
        Bucket="photos", Key="mp", UploadId=upload_id, MultipartUpload=done, **kw)
    assert _error(lambda: complete(IfMatch="*")) == (404, "NoSuchKey")
    s3.put_object(Bucket="photos", Key="mp", Body=b"old")
    assert _error(lambda: complete(IfMatch='"0123456789abcdef0123456789abcdef"')) == (412, "PreconditionFailed")
    current = s3.head_object(Bucket="photos", Key="mp")["ETag"]
    assert _error(lambda: complete(IfNoneMatch=current)) == (412, "PreconditionFailed")
    complete(IfMatch=current)  # the upload stayed open through the refusals
    assert s3.get_object(Bucket="photos", Key="mp")["Body"].read() == b"part"
    row = _settled(proc, spec)
    assert (row["used"], row["orphan"], row["reserved"]) == (4, 0, 0)


def test_racing_conditional_writers_let_exactly_one_through(gw: tuple[Any, Any, Any]) -> None:
    proc, spec, s3 = gw

    def attempt(kwargs: dict[str, str], i: int) -> int:
        try:
            s3.put_object(Bucket="photos", Key="race", Body=b"w%02d" % i, **kwargs)
            return 200
        except ClientError as exc:
            return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])

    with ThreadPoolExecutor(12) as pool:
        created = list(pool.map(lambda i: attempt({"IfNoneMatch": "*"}, i), range(12)))
    assert sorted(created) == [200] + [412] * 11
    current = s3.head_object(Bucket="photos", Key="race")["ETag"]
    with ThreadPoolExecutor(12) as pool:
        replaced = list(pool.map(lambda i: attempt({"IfMatch": current}, i + 20), range(12)))
    assert sorted(replaced) == [200] + [412] * 11
    row = _settled(proc, spec)
    assert (row["used"], row["orphan"], row["reserved"], row["objects"]) == (3, 0, 0, 1)
    assert len(backend_keys(spec)) == 1
