"""``Content-Encoding: aws-chunked`` with a plain body, and boto3's aws-chunked PUT, through a
gateway process over SeaweedFS: what a real provider is handed must be the bytes as stored, never
a framing it would decode again; and the Owner of listed keys as boto3 reads it.  Every other
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
