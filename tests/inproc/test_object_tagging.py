"""Object tagging through the real site, in process (BEHAVIOURS §1.22, issue 18 item 5).

Tags live in the metadata store only: ``x-amz-tagging`` on PUT / Create / Copy,
``?tagging`` GET / PUT / DELETE, ``x-amz-tagging-count`` on GET and HEAD only when tags exist,
AWS's limits and codes; an overwrite replaces the set, a delete clears it, and no backend ever
sees a tag.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS
from tests.inproc.conftest import boto as boto_client
from tests.inproc.conftest import make_backends
from tests.inproc.rawclient import Client
from tests.support.configs import GatewayConfig

BUCKET = PHOTOS.name


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    workdir: Path = tmp_path_factory.mktemp("tagging")
    with GatewayHarness(workdir, GatewayConfig(backends=make_backends(1)).render()) as harness:
        yield harness


@pytest.fixture(scope="module")
def client(gateway: GatewayHarness) -> Client:
    return Client(gateway)


@pytest.fixture(scope="module")
def boto(gateway: GatewayHarness) -> Any:
    return boto_client(gateway)


def _key() -> str:
    return f"tag-{uuid.uuid4().hex[:8]}"


def _tags(boto: Any, key: str) -> list[tuple[str, str]]:
    found = boto.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
    return [(t["Key"], t["Value"]) for t in found]


def _tag_set(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in pairs]}


def _error(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def _backend_text(gateway: GatewayHarness) -> bytes:
    """Every byte and name the in-memory backends hold (tags must be in none of them)."""
    out = b""
    for server in gateway.backends.values():
        for bucket in server.buckets:
            for name, stored in server.objects(bucket).items():
                out += name.encode() + stored.data + repr(getattr(stored, "metadata", {})).encode()
    return out


def test_put_with_tagging_header_then_get_head_and_get_tagging(boto: Any, gateway: GatewayHarness) -> None:
    key = _key()
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"x", Tagging="project=s3orch&secret%20tag=blue%2Bgreen")
    assert _tags(boto, key) == [("project", "s3orch"), ("secret tag", "blue+green")]
    assert boto.head_object(Bucket=BUCKET, Key=key)["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    got = boto.get_object(Bucket=BUCKET, Key=key)
    assert got["TagCount"] == 2 and got["Body"].read() == b"x"
    # the tag set is not a response header of its own, and no backend ever holds a tag
    assert "x-amz-tagging" not in got["ResponseMetadata"]["HTTPHeaders"]
    assert b"secret tag" not in _backend_text(gateway) and b"blue" not in _backend_text(gateway)


def test_no_tags_means_no_count_header_and_an_empty_set(boto: Any) -> None:
    key = _key()
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    assert "x-amz-tagging-count" not in boto.head_object(Bucket=BUCKET, Key=key)["ResponseMetadata"]["HTTPHeaders"]
    assert _tags(boto, key) == []


def test_put_tagging_replaces_delete_tagging_clears_and_the_version_is_kept(boto: Any) -> None:
    key = _key()
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"data", Tagging="a=1&b=2")
    before = boto.head_object(Bucket=BUCKET, Key=key)
    boto.put_object_tagging(Bucket=BUCKET, Key=key, Tagging=_tag_set([("z", "9"), ("c", "3")]))
    assert _tags(boto, key) == [("c", "3"), ("z", "9")]  # sorted by key
    after = boto.head_object(Bucket=BUCKET, Key=key)
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    deleted = boto.delete_object_tagging(Bucket=BUCKET, Key=key)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert _tags(boto, key) == []
    assert boto.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"data"


def test_an_overwrite_replaces_the_set_and_a_delete_clears_it(boto: Any) -> None:
    key = _key()
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"1", Tagging="old=1")
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"2")
    assert _tags(boto, key) == []
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"3", Tagging="new=3")
    assert _tags(boto, key) == [("new", "3")]
    boto.delete_object(Bucket=BUCKET, Key=key)
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"4")
    assert _tags(boto, key) == []


def test_tagging_a_missing_key_is_no_such_key(boto: Any) -> None:
    key = _key()
    assert _error(lambda: boto.get_object_tagging(Bucket=BUCKET, Key=key)) == (404, "NoSuchKey")
    assert _error(lambda: boto.put_object_tagging(Bucket=BUCKET, Key=key, Tagging=_tag_set([("a", "1")]))) == (
        404, "NoSuchKey",
    )
    assert _error(lambda: boto.delete_object_tagging(Bucket=BUCKET, Key=key)) == (404, "NoSuchKey")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("&".join(f"k{i}=v" for i in range(11)), "BadRequest"),
        ("a=1&a=2", "InvalidTag"),
        ("=v", "InvalidTag"),
        ("k" * 129 + "=v", "InvalidTag"),
        ("k=" + "v" * 257, "InvalidTag"),
        ("k=%ZZ", "InvalidTag"),
        ("k=%ff", "InvalidTag"),  # not UTF-8 once decoded
        ("a=1&&b=2", "InvalidTag"),
    ],
)
def test_a_bad_tagging_header_is_refused_before_the_body_and_stores_nothing(
    client: Client, boto: Any, header: str, code: str
) -> None:
    key = _key()
    reply = client.request("PUT", f"/{BUCKET}/{key}", headers={"x-amz-tagging": header}, body=b"x" * 100)
    assert (reply.status, reply.code) == (400, code)
    assert _error(lambda: boto.head_object(Bucket=BUCKET, Key=key))[0] == 404


def test_limits_are_inclusive_in_utf16_units(boto: Any) -> None:
    key = _key()
    emoji = "\U0001F600"  # two UTF-16 code units
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    tags = [(f"k{i}", "v") for i in range(9)] + [("k" * 128, "v" * 256)]
    boto.put_object_tagging(Bucket=BUCKET, Key=key, Tagging=_tag_set(tags))
    assert len(_tags(boto, key)) == 10
    boto.put_object_tagging(Bucket=BUCKET, Key=key, Tagging=_tag_set([(emoji * 64, emoji * 128)]))
    assert _tags(boto, key) == [(emoji * 64, emoji * 128)]
    too_long = _tag_set([(emoji * 64 + "x", "v")])
    assert _error(lambda: boto.put_object_tagging(Bucket=BUCKET, Key=key, Tagging=too_long)) == (400, "InvalidTag")
    eleven = _tag_set([(f"k{i}", "v") for i in range(11)])
    assert _error(lambda: boto.put_object_tagging(Bucket=BUCKET, Key=key, Tagging=eleven)) == (400, "BadRequest")
    assert _tags(boto, key) == [(emoji * 64, emoji * 128)]  # a refused set changes nothing


def test_copy_keeps_the_source_tags_unless_the_directive_replaces_them(boto: Any) -> None:
    source, copied, replaced, cleared = _key(), _key(), _key(), _key()
    boto.put_object(Bucket=BUCKET, Key=source, Body=b"src", Tagging="from=source")
    boto.copy_object(Bucket=BUCKET, Key=copied, CopySource={"Bucket": BUCKET, "Key": source})
    assert _tags(boto, copied) == [("from", "source")]
    boto.copy_object(
        Bucket=BUCKET, Key=replaced, CopySource={"Bucket": BUCKET, "Key": source},
        TaggingDirective="REPLACE", Tagging="from=request",
    )
    assert _tags(boto, replaced) == [("from", "request")]
    boto.copy_object(
        Bucket=BUCKET, Key=cleared, CopySource={"Bucket": BUCKET, "Key": source},
        MetadataDirective="REPLACE", TaggingDirective="REPLACE", Metadata={"m": "1"},
    )
    assert _tags(boto, cleared) == []
    # metadata REPLACE with the default tagging directive keeps the source's tags
    boto.copy_object(
        Bucket=BUCKET, Key=cleared, CopySource={"Bucket": BUCKET, "Key": source},
        MetadataDirective="REPLACE", Metadata={"m": "2"}, Tagging="ignored=1",
    )
    assert _tags(boto, cleared) == [("from", "source")]


def test_a_bad_tagging_directive_is_invalid_argument(client: Client, boto: Any) -> None:
    source = _key()
    boto.put_object(Bucket=BUCKET, Key=source, Body=b"src")
    reply = client.request(
        "PUT", f"/{BUCKET}/{_key()}",
        headers={"x-amz-copy-source": f"/{BUCKET}/{source}", "x-amz-tagging-directive": "MERGE"},
    )
    assert (reply.status, reply.code) == (400, "InvalidArgument")


def test_multipart_upload_carries_the_create_requests_tags(boto: Any) -> None:
    key = _key()
    upload = boto.create_multipart_upload(Bucket=BUCKET, Key=key, Tagging="mp=yes")
    part = boto.upload_part(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"p" * 1024)
    boto.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert _tags(boto, key) == [("mp", "yes")]
    assert boto.head_object(Bucket=BUCKET, Key=key)["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "1"


def test_malformed_tagging_documents(client: Client, boto: Any) -> None:
    key = _key()
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    for body in (b"", b"<Tagging>", b"<Tagging><TagSet><Tag><Key>a</Key></Tag></TagSet></Tagging>"):
        reply = client.request("PUT", f"/{BUCKET}/{key}", query="tagging", body=body)
        assert (reply.status, reply.code) == (400, "MalformedXML"), body
