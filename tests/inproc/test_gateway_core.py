"""The core gateway's S3 semantics, in-process: operations, errors, ranges, conditionals,
listing, copy, batch delete, presigned URLs, placement (pack, spread, overflow, 507) and quota
exactness, driven by boto3 (or raw requests where a client would hide the behaviour) through
the production wiring over in-memory backends, then checked on the backends directly and in
the gateway's SQLite file.  tests/integration/test_gateway_core.py keeps what needs processes
(a backend process stopping, memory of a real process, the log file)."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from s3orch.core.placement import key_digest
from s3orch.testing import GatewayHarness
from tests.conftest import DOCS, PHOTOS, quota_rows
from tests.inproc.conftest import KiB, MiB, backend_keys, boto, make_backends
from tests.support.configs import BackendSpec, GatewayConfig

Start = Callable[..., GatewayHarness]


def _code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def _status(exc: ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.fixture
def photos(start_harness: Start) -> tuple[GatewayHarness, list[BackendSpec], Any]:
    backends = make_backends(3, quota=MiB)
    gw = start_harness(GatewayConfig(backends=backends))
    return gw, backends, boto(gw)


def test_put_get_round_trip_with_md5_etag_and_metadata(photos: Any) -> None:
    gw, backends, s3 = photos
    body = os.urandom(100 * KiB)
    put = s3.put_object(
        Bucket="photos",
        Key="dir/a b+c.bin",
        Body=body,
        ContentType="image/png",
        Metadata={"owner": "alice"},
        CacheControl="max-age=60",
        ContentDisposition="attachment",
    )
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    got = s3.get_object(Bucket="photos", Key="dir/a b+c.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "image/png"
    assert got["Metadata"] == {"owner": "alice"}
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentDisposition"] == "attachment"
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    # The bytes live on the first backend under a per-write, opaque key.
    keys = backend_keys(gw, backends[0])
    assert len(keys) == 1 and keys[0][0].startswith(f"photos/{key_digest('dir/a b+c.bin')}/")


def test_pack_fills_backends_in_config_order_and_overflows_at_quota(start_harness: Start) -> None:
    backends = make_backends(3, quota=10 * KiB)
    gw = start_harness(GatewayConfig(backends=backends, routing_strategy="pack"))
    s3 = boto(gw)
    for i in range(6):
        s3.put_object(Bucket="photos", Key=f"k{i}", Body=b"x" * (4 * KiB))
    assert [len(backend_keys(gw, b)) for b in backends] == [2, 2, 2]
    rows = quota_rows(gw)
    assert [rows[b.name]["used"] for b in backends] == [8 * KiB] * 3
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="photos", Key="full", Body=b"x" * (4 * KiB))
    assert _status(info.value) == 507 and _code(info.value) == "InsufficientStorage"
    # A small object still fits in the first backend's remaining 2 KiB.
    s3.put_object(Bucket="photos", Key="small", Body=b"y" * KiB)
    assert len(backend_keys(gw, backends[0])) == 3


def test_spread_balances_writes(start_harness: Start) -> None:
    backends = make_backends(3, quota=100 * KiB)
    gw = start_harness(GatewayConfig(backends=backends, routing_strategy="spread"))
    s3 = boto(gw)
    for i in range(9):
        s3.put_object(Bucket="photos", Key=f"k{i}", Body=b"x" * (2 * KiB))
    assert [len(backend_keys(gw, b)) for b in backends] == [3, 3, 3]


def test_concurrent_puts_never_exceed_quota(start_harness: Start) -> None:
    backends = make_backends(1, quota=100 * KiB)
    gw = start_harness(GatewayConfig(backends=backends))
    assert gw.put("photos", "base", b"b" * (45 * KiB)).status == 200  # nearly half full
    credentials = (PHOTOS.access_key, PHOTOS.secret_key)
    racing = [
        gw.encode_request("PUT", gw.target("photos", f"c{i}"), body=b"c" * (10 * KiB), credentials=credentials)
        for i in range(20)
    ]
    statuses = [answer.status for answer in gw.send_together(racing)]
    assert statuses.count(200) == 5 and statuses.count(507) == 15
    rows = quota_rows(gw)[backends[0].name]
    assert rows["used"] == 45 * KiB + 5 * 10 * KiB <= rows["limit"]
    assert rows["reserved"] == 0
    assert sum(size for _, size in backend_keys(gw, backends[0])) == rows["used"]


def test_overwrite_and_delete_settle_quota_exactly(photos: Any) -> None:
    gw, backends, s3 = photos
    name = backends[0].name
    s3.put_object(Bucket="photos", Key="k", Body=b"a" * 3000)
    s3.put_object(Bucket="photos", Key="k", Body=b"b" * 1200)
    gw.advance(60)  # the cleanup queue removes the displaced copy
    row = quota_rows(gw)[name]
    assert (row["used"], row["orphan"], row["reserved"], row["objects"]) == (1200, 0, 0, 1)
    assert [size for _, size in backend_keys(gw, backends[0])] == [1200]
    assert s3.get_object(Bucket="photos", Key="k")["Body"].read() == b"b" * 1200
    s3.delete_object(Bucket="photos", Key="k")
    gw.advance(60)
    row = quota_rows(gw)[name]
    assert (row["used"], row["orphan"], row["objects"]) == (0, 0, 0)
    assert backend_keys(gw, backends[0]) == []
    # Deleting again is idempotent.
    assert s3.delete_object(Bucket="photos", Key="k")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_bucket_isolation(photos: Any) -> None:
    gw, backends, s3 = photos
    docs = boto(gw, DOCS)
    docs.put_object(Bucket="documents", Key="secret.txt", Body=b"top secret")
    attempts = [
        lambda: s3.get_object(Bucket="documents", Key="secret.txt"),
        lambda: s3.head_object(Bucket="documents", Key="secret.txt"),
        lambda: s3.put_object(Bucket="documents", Key="secret.txt", Body=b"pwned"),
        lambda: s3.delete_object(Bucket="documents", Key="secret.txt"),
        lambda: s3.list_objects_v2(Bucket="documents"),
        lambda: s3.head_object(Bucket="documents", Key="missing"),
        lambda: s3.copy_object(Bucket="photos", Key="stolen", CopySource="documents/secret.txt"),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as info:
            attempt()
        assert _status(info.value) == 403
    assert docs.get_object(Bucket="documents", Key="secret.txt")["Body"].read() == b"top secret"
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["photos"]
    with pytest.raises(ClientError):
        s3.head_object(Bucket="photos", Key="stolen")


def test_ranges_and_conditionals(photos: Any) -> None:
    gw, backends, s3 = photos
    s3.put_object(Bucket="photos", Key="r", Body=b"hello world")
    got = s3.get_object(Bucket="photos", Key="r", Range="bytes=4-7")
    assert got["Body"].read() == b"o wo"
    assert got["ContentRange"] == "bytes 4-7/11"
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert s3.get_object(Bucket="photos", Key="r", Range="bytes=-3")["Body"].read() == b"rld"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="photos", Key="r", Range="bytes=40-50")
    assert _status(info.value) == 416 and _code(info.value) == "InvalidRange"
    etag = s3.head_object(Bucket="photos", Key="r")["ETag"]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="photos", Key="r", IfNoneMatch=etag)
    assert _status(info.value) == 304
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="photos", Key="r", IfMatch='"0000"')
    assert _status(info.value) == 412
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="photos", Key="r", Body=b"new", IfNoneMatch="*")
    assert _status(info.value) == 412
    assert s3.get_object(Bucket="photos", Key="r")["Body"].read() == b"hello world"
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="photos", Key="nope")
    assert _status(info.value) == 404


def test_integrity_errors_store_nothing(photos: Any) -> None:
    gw, backends, s3 = photos
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    answer = gw.put("photos", "bad-md5", b"payload", {"Content-MD5": wrong_md5})
    assert answer.status == 400 and b"<Code>BadDigest</Code>" in answer.body
    answer = gw.put("photos", "bad-sha", b"payload", payload_hash=hashlib.sha256(b"x").hexdigest())
    assert answer.status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in answer.body
    answer = gw.put("photos", "k" * 1025, b"payload")
    assert answer.status == 400 and b"<Code>KeyTooLongError</Code>" in answer.body
    assert backend_keys(gw, backends[0]) == []
    rows = quota_rows(gw)
    assert all(r["used"] == 0 and r["reserved"] == 0 for r in rows.values())


def test_entity_too_large_refused_before_body(start_harness: Start) -> None:
    backends = make_backends(1, quota=10 * MiB)
    gw = start_harness(GatewayConfig(backends=backends, extra_server={"max_object_size": MiB}))
    with pytest.raises(ClientError) as info:
        boto(gw).put_object(Bucket="photos", Key="big", Body=b"x" * (2 * MiB))
    assert _code(info.value) == "EntityTooLarge" and _status(info.value) == 400
    assert backend_keys(gw, backends[0]) == []


def test_listing_v1_v2_with_prefix_delimiter_and_pagination(photos: Any) -> None:
    gw, backends, s3 = photos
    keys = ["a/1", "a/2", "a/b/3", "b/4", "c", "d%+ ü"]
    for key in keys:
        s3.put_object(Bucket="photos", Key=key, Body=key.encode())
    listed = s3.list_objects_v2(Bucket="photos", Delimiter="/")
    assert [c["Prefix"] for c in listed["CommonPrefixes"]] == ["a/", "b/"]
    assert [o["Key"] for o in listed["Contents"]] == ["c", "d%+ ü"]
    assert listed["KeyCount"] == 4
    under_a = s3.list_objects_v2(Bucket="photos", Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in under_a["Contents"]] == ["a/1", "a/2"]
    assert [c["Prefix"] for c in under_a["CommonPrefixes"]] == ["a/b/"]
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="photos", PaginationConfig={"PageSize": 2}))
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == sorted(keys)
    assert len(pages) == 3 and pages[0]["IsTruncated"]
    after = s3.list_objects_v2(Bucket="photos", StartAfter="b/4")
    assert [o["Key"] for o in after["Contents"]] == ["c", "d%+ ü"]
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket="photos", PaginationConfig={"PageSize": 4}))
    assert [o["Key"] for p in v1 for o in p.get("Contents", [])] == sorted(keys)
    entry = next(o for o in listed["Contents"] if o["Key"] == "c")
    assert entry["ETag"] == '"%s"' % hashlib.md5(b"c").hexdigest() and entry["Size"] == 1


def test_copy_object_copy_and_replace_directives(photos: Any) -> None:
    gw, backends, s3 = photos
    s3.put_object(Bucket="photos", Key="src", Body=b"data", ContentType="text/plain", Metadata={"a": "1"})
    result = s3.copy_object(Bucket="photos", Key="dst", CopySource={"Bucket": "photos", "Key": "src"})
    assert result["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(b"data").hexdigest()
    head = s3.head_object(Bucket="photos", Key="dst")
    assert head["Metadata"] == {"a": "1"} and head["ContentType"] == "text/plain"
    s3.copy_object(
        Bucket="photos", Key="dst2", CopySource="photos/src", MetadataDirective="REPLACE",
        Metadata={"b": "2"}, ContentType="application/json",
    )
    head = s3.head_object(Bucket="photos", Key="dst2")
    assert head["Metadata"] == {"b": "2"} and head["ContentType"] == "application/json"
    assert s3.get_object(Bucket="photos", Key="dst2")["Body"].read() == b"data"
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="photos", Key="x", CopySource="photos/missing")
    assert _code(info.value) == "NoSuchKey"


def test_delete_objects_batch_and_quiet(photos: Any) -> None:
    gw, backends, s3 = photos
    for i in range(5):
        s3.put_object(Bucket="photos", Key=f"d{i}", Body=b"z")
    result = s3.delete_objects(
        Bucket="photos", Delete={"Objects": [{"Key": f"d{i}"} for i in range(3)] + [{"Key": "nope"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["d0", "d1", "d2", "nope"]
    quiet = s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": "d3"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="photos")["Contents"]] == ["d4"]


def test_presigned_get_and_request_ids(photos: Any) -> None:
    gw, backends, s3 = photos
    s3.put_object(Bucket="photos", Key="p.txt", Body=b"presigned")
    # boto3's default presigner (SigV2 query parameters) and an explicit SigV4 one.
    for version in (None, "s3v4"):
        extra: dict[str, Any] = {"signature_version": version} if version else {}
        signer = boto(gw, **extra)
        url = urlsplit(
            signer.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "p.txt"}, ExpiresIn=60)
        )
        assert ("X-Amz-Signature" in url.query) == (version == "s3v4")
        answer = gw.send_raw(gw.encode_request("GET", f"{url.path}?{url.query}", host=url.netloc))
        assert (answer.status, answer.body) == (200, b"presigned")
    anonymous = gw.send_raw(gw.encode_request("GET", "/photos/p.txt", headers={"X-Request-Id": "my-trace-123"}))
    assert anonymous.status == 403
    assert anonymous.header("x-amz-request-id") == "my-trace-123"
    assert b"<RequestId>my-trace-123</RequestId>" in anonymous.body


def test_backend_max_object_size_skips_to_the_next_backend(start_harness: Start) -> None:
    backends = make_backends(2, quota=MiB)
    backends[0].max_object_size = 2 * KiB
    gw = start_harness(GatewayConfig(backends=backends))
    s3 = boto(gw)
    s3.put_object(Bucket="photos", Key="small", Body=b"s" * KiB)
    s3.put_object(Bucket="photos", Key="large", Body=b"l" * (4 * KiB))
    assert [k.rsplit("/", 1)[0] for k, _ in backend_keys(gw, backends[0])] == [f"photos/{key_digest('small')}"]
    assert [k.rsplit("/", 1)[0] for k, _ in backend_keys(gw, backends[1])] == [f"photos/{key_digest('large')}"]


def test_single_unlimited_backend_takes_anything(start_harness: Start) -> None:
    backends = make_backends(1, quota=0)
    gw = start_harness(GatewayConfig(backends=backends))
    boto(gw).put_object(Bucket="photos", Key="big", Body=b"u" * (2 * MiB))
    row = quota_rows(gw)[backends[0].name]
    assert (row["limit"], row["used"]) == (0, 2 * MiB)
