"""Conditional writes, in-process, as boto3 sends them.

PutObject, CopyObject and CompleteMultipartUpload with ``If-Match: <etag>`` (412 when
another object is there, 404 NoSuchKey when none is), ``If-Match: *`` (404 unless the
key exists), ``If-None-Match: *`` and ``If-None-Match: <etag>`` (412 when it is the
current ETag).  A refused write leaves the previous object and costs no quota; many
writers racing on one condition (sent together, interleaved by the gateway at every
backend wait) let exactly one through (checked in the commit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS, quota_rows
from tests.inproc.conftest import MiB, backend_keys, boto, make_backends
from tests.support.configs import BackendSpec, GatewayConfig


@pytest.fixture
def gw(start_harness: Callable[..., GatewayHarness]) -> tuple[GatewayHarness, BackendSpec, Any]:
    backends = make_backends(1, quota=64 * MiB)
    harness = start_harness(GatewayConfig(backends=backends))
    return harness, backends[0], boto(harness)


def _error(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call()
    return int(info.value.response["ResponseMetadata"]["HTTPStatusCode"]), str(info.value.response["Error"]["Code"])


def _settled(harness: GatewayHarness, spec: BackendSpec) -> dict[str, int]:
    harness.advance(60)  # the cleanup queue removes displaced and refused copies
    row: dict[str, int] = quota_rows(harness)[spec.name]
    return row


def test_put_if_match_and_if_none_match_in_every_form(gw: tuple[GatewayHarness, BackendSpec, Any]) -> None:
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
    assert [size for _, size in backend_keys(proc, spec)] == [6]  # refused writes left no bytes


def test_copy_object_checks_the_destination(gw: tuple[GatewayHarness, BackendSpec, Any]) -> None:
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


def test_complete_multipart_upload_with_if_match(gw: tuple[GatewayHarness, BackendSpec, Any]) -> None:
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


def test_racing_conditional_writers_let_exactly_one_through(gw: tuple[GatewayHarness, BackendSpec, Any]) -> None:
    proc, spec, s3 = gw
    credentials = (PHOTOS.access_key, PHOTOS.secret_key)
    target = proc.target("photos", "race")

    def race(condition: dict[str, str], first: int) -> list[int]:
        writes = [
            proc.encode_request("PUT", target, headers=condition, body=b"w%02d" % i, credentials=credentials)
            for i in range(first, first + 12)
        ]
        return sorted(answer.status for answer in proc.send_together(writes))

    received = proc.backends[spec.name].received
    before = len(received)
    assert race({"If-None-Match": "*"}, 0) == [200] + [412] * 11
    # They really raced: every write reached the backend, the losers were refused at commit.
    assert [r.method for r in received[before:]].count("PUT") == 12
    current = s3.head_object(Bucket="photos", Key="race")["ETag"]
    assert race({"If-Match": current}, 20) == [200] + [412] * 11
    row = _settled(proc, spec)
    assert (row["used"], row["orphan"], row["reserved"], row["objects"]) == (3, 0, 0, 1)
    assert len(backend_keys(proc, spec)) == 1
