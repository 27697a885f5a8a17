"""``Content-Encoding: aws-chunked`` with a plain body, and boto3's aws-chunked PUT, through a
gateway process over SeaweedFS: what a real provider is handed must be the bytes as stored, never
a framing it would decode again; the Owner of listed keys as boto3 reads it; and boto3's
ListObjectVersions paginator emptying a prefix by (Key, VersionId 'null'), as the s3-tests
cleanup and rclone, restic, mc and the AWS CLI do.  Every other
object-level S3 fidelity test (issue 12 item 2) runs in-process: tests/inproc/test_s3_fidelity.py.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import PHOTOS
from tests.integration.conftest import fresh_bucket
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.socketclient import Client


@pytest.fixture(scope="module")
def gateway(weed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    bucket = fresh_bucket(weed)
    spec = BackendSpec("backend-1", weed.endpoint, bucket, weed.access_key, weed.secret_key)
    proc = GatewayProcess(tmp_path_factory.mktemp("fidelity-weed"), GatewayConfig(backends=[spec]).render())
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Client:
    return Client(gateway)


@pytest.fixture(scope="module")
def boto(gateway: GatewayProcess) -> Any:
    return boto3.client(
        "s3", endpoint_url=gateway.endpoint, aws_access_key_id=PHOTOS.access_key,
        aws_secret_access_key=PHOTOS.secret_key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def _prefix() -> str:
    return f"fid-{uuid.uuid4().hex[:8]}/"


def test_aws_chunked_content_encoding_with_a_plain_body_is_stored_as_sent(client: Client) -> None:
    path = "/photos/" + _prefix() + "plain-aws-chunked"
    data = b"5\r\nhello\r\n0\r\n\r\n plain bytes that only look framed"
    reply = client.request("PUT", path, headers={"content-encoding": "aws-chunked"}, body=data,
                           sign_body=True)
    assert reply.status == 200, reply.body
    assert reply.headers.get("etag") == '"' + hashlib.md5(data).hexdigest() + '"'
    got = client.request("GET", path)
    assert got.body == data
    assert "content-encoding" not in got.headers  # aws-chunked is a wire detail, never stored


def test_boto3_put_with_aws_chunked_content_encoding_reads_back(boto: Any) -> None:
    key = _prefix() + "boto-aws-chunked"
    data = b"botocore body " * 1000
    boto.put_object(Bucket="photos", Key=key, Body=data, ContentEncoding="aws-chunked")
    got = boto.get_object(Bucket="photos", Key=key)
    assert got["Body"].read() == data
    assert "ContentEncoding" not in got


# -- Owner in listings ------------------------------------------------------------------


def test_list_objects_names_the_owner_and_v2_only_when_asked(boto: Any) -> None:
    """AWS: ListObjects (v1) carries Owner in every Contents, ListObjectsV2 only with FetchOwner."""
    base = _prefix()
    for key in ("a", "b"):
        boto.put_object(Bucket="photos", Key=base + key, Body=b"owned")
    owner = {"ID": "s3orch", "DisplayName": "s3orch"}
    v1 = boto.list_objects(Bucket="photos", Prefix=base)["Contents"]
    assert [(c["Key"], c["Owner"]) for c in v1] == [(base + "a", owner), (base + "b", owner)]
    fetched = boto.list_objects_v2(Bucket="photos", Prefix=base, FetchOwner=True)["Contents"]
    assert [c["Owner"] for c in fetched] == [owner, owner]
    plain = boto.list_objects_v2(Bucket="photos", Prefix=base)["Contents"]
    assert len(plain) == 2 and all("Owner" not in c for c in plain)


# -- ListObjectVersions on a bucket that was never versioned ----------------------------------


def test_object_versions_page_every_key_once_as_null_and_delete_by_version_empties(boto: Any) -> None:
    """Every current object is its one version, ``null``: boto3's paginator walks all of them
    once, DeleteObjects by (Key, VersionId='null') removes them, and versionId=null reads the
    current object (the s3-tests teardown path)."""
    base = _prefix()
    keys = [base + f"k{i}" for i in range(7)]
    for key in keys:
        boto.put_object(Bucket="photos", Key=key, Body=key.encode())
    head = boto.head_object(Bucket="photos", Key=keys[0], VersionId="null")
    assert head["ContentLength"] == len(keys[0])
    assert boto.get_object(Bucket="photos", Key=keys[1], VersionId="null")["Body"].read() == keys[1].encode()

    pages = list(boto.get_paginator("list_object_versions").paginate(
        Bucket="photos", Prefix=base, PaginationConfig={"PageSize": 3}
    ))
    assert len(pages) == 3
    versions = [v for page in pages for v in page.get("Versions", [])]
    assert [v["Key"] for v in versions] == keys
    assert all(v["VersionId"] == "null" and v["IsLatest"] for v in versions)
    assert all("DeleteMarkers" not in page for page in pages)

    with pytest.raises(ClientError) as refused:
        boto.delete_object(Bucket="photos", Key=keys[0], VersionId="3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")
    assert refused.value.response["Error"]["Code"] == "InvalidArgument"
    assert boto.head_object(Bucket="photos", Key=keys[0])["ContentLength"] == len(keys[0])  # not deleted

    objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]
    out = boto.delete_objects(Bucket="photos", Delete={"Objects": objects})
    assert sorted(d["Key"] for d in out["Deleted"]) == keys and "Errors" not in out
    assert "Versions" not in boto.list_object_versions(Bucket="photos", Prefix=base)
    assert boto.list_objects_v2(Bucket="photos", Prefix=base)["KeyCount"] == 0


def test_copy_sources_name_the_null_version_or_are_refused(boto: Any) -> None:
    """A copy source's VersionId may only be 'null' (the current object); another is refused as
    AWS refuses a malformed one, before the source is read."""
    base = _prefix()
    boto.put_object(Bucket="photos", Key=base + "src", Body=b"source bytes")
    null_source = {"Bucket": "photos", "Key": base + "src", "VersionId": "null"}
    boto.copy_object(Bucket="photos", Key=base + "dst", CopySource=null_source)
    assert boto.get_object(Bucket="photos", Key=base + "dst")["Body"].read() == b"source bytes"
    other = dict(null_source, VersionId="3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")
    with pytest.raises(ClientError) as copy:
        boto.copy_object(Bucket="photos", Key=base + "dst2", CopySource=other)
    assert copy.value.response["Error"]["Code"] == "InvalidRequest"
    upload = boto.create_multipart_upload(Bucket="photos", Key=base + "mpu")["UploadId"]
    with pytest.raises(ClientError) as part:
        boto.upload_part_copy(Bucket="photos", Key=base + "mpu", UploadId=upload, PartNumber=1, CopySource=other)
    assert part.value.response["Error"]["Code"] == "InvalidArgument"
    boto.upload_part_copy(Bucket="photos", Key=base + "mpu", UploadId=upload, PartNumber=1, CopySource=null_source)
    boto.abort_multipart_upload(Bucket="photos", Key=base + "mpu", UploadId=upload)
