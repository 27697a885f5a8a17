"""The core gateway against real S3 servers (moto_server), through real HTTP.

Each test starts a real ``twistd -n s3orch`` process and drives it with boto3
(or raw HTTP where a client would hide the behaviour), then checks the
backends directly and the gateway's SQLite file for quota exactness.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from s3orch.core.placement import key_digest
from tests.conftest import DOCS, PHOTOS, backend_keys, quota_rows, s3_client
from tests.support.configs import GatewayConfig
from tests.support.polling import poll
from tests.support.servers import MotoServer, create_bucket

KiB = 1024


def _code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def _status(exc: ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.fixture
def photos(start_gateway, moto_backends):  # type: ignore[no-untyped-def]
    backends = moto_backends(3, quota=1024 * 1024)
    gw = start_gateway(GatewayConfig(backends=backends))
    return gw, backends, s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)


def test_put_get_round_trip_with_md5_etag_and_metadata(photos) -> None:  # type: ignore[no-untyped-def]
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
    keys = backend_keys(backends[0])
    assert len(keys) == 1 and keys[0][0].startswith(f"photos/{key_digest('dir/a b+c.bin')}/")


def test_pack_fills_backends_in_config_order_and_overflows_at_quota(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    backends = moto_backends(3, quota=10 * KiB)
    gw = start_gateway(GatewayConfig(backends=backends, routing_strategy="pack"))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    for i in range(6):
        s3.put_object(Bucket="photos", Key=f"k{i}", Body=b"x" * (4 * KiB))
    assert [len(backend_keys(b)) for b in backends] == [2, 2, 2]
    rows = quota_rows(gw)
    assert [rows[b.name]["used"] for b in backends] == [8 * KiB] * 3
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="photos", Key="full", Body=b"x" * (4 * KiB))
    assert _status(info.value) == 507 and _code(info.value) == "InsufficientStorage"
    # A small object still fits in the first backend's remaining 2 KiB.
    s3.put_object(Bucket="photos", Key="small", Body=b"y" * KiB)
    assert len(backend_keys(backends[0])) == 3


def test_spread_balances_writes(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    backends = moto_backends(3, quota=100 * KiB)
    gw = start_gateway(GatewayConfig(backends=backends, routing_strategy="spread"))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    for i in range(9):
        s3.put_object(Bucket="photos", Key=f"k{i}", Body=b"x" * (2 * KiB))
    assert [len(backend_keys(b)) for b in backends] == [3, 3, 3]


def test_concurrent_puts_never_exceed_quota(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    backends = moto_backends(2, quota=100 * KiB)
    gw = start_gateway(GatewayConfig(backends=backends[:1]))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="base", Body=b"b" * (45 * KiB))  # nearly half full

    def put(i: int) -> int:
        try:
            s3.put_object(Bucket="photos", Key=f"c{i}", Body=b"c" * (10 * KiB))
            return 200
        except ClientError as exc:
            return _status(exc)

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(put, range(20)))
    assert statuses.count(200) == 5 and statuses.count(507) == 15
    rows = quota_rows(gw)[backends[0].name]
    assert rows["used"] == 45 * KiB + 5 * 10 * KiB <= rows["limit"]
    assert rows["reserved"] == 0
    assert sum(size for _, size in backend_keys(backends[0])) == rows["used"]


def _wait_quiet(gw, backend: str, predicate, timeout: float = 10.0) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return poll(lambda: quota_rows(gw)[backend], predicate, timeout)


def test_overwrite_and_delete_settle_quota_exactly(photos) -> None:  # type: ignore[no-untyped-def]
    gw, backends, s3 = photos
    name = backends[0].name
    s3.put_object(Bucket="photos", Key="k", Body=b"a" * 3000)
    s3.put_object(Bucket="photos", Key="k", Body=b"b" * 1200)
    row = _wait_quiet(gw, name, lambda r: r["orphan"] == 0)
    assert (row["used"], row["orphan"], row["reserved"], row["objects"]) == (1200, 0, 0, 1)
    assert backend_keys(backends[0]) == [(backend_keys(backends[0])[0][0], 1200)]
    assert s3.get_object(Bucket="photos", Key="k")["Body"].read() == b"b" * 1200
    s3.delete_object(Bucket="photos", Key="k")
    row = _wait_quiet(gw, name, lambda r: r["orphan"] == 0)
    assert (row["used"], row["orphan"], row["objects"]) == (0, 0, 0)
    assert backend_keys(backends[0]) == []
    # Deleting again is idempotent.
    assert s3.delete_object(Bucket="photos", Key="k")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_bucket_isolation(photos) -> None:  # type: ignore[no-untyped-def]
    gw, backends, s3 = photos
    docs = s3_client(gw.endpoint, DOCS.access_key, DOCS.secret_key)
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


def test_backend_stopped_mid_test_new_puts_go_elsewhere(start_gateway, moto_backends, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lonely = MotoServer()
    lonely.start()
    try:
        create_bucket(lonely.endpoint, "first", "testing", "testing", "us-east-1")
        others = moto_backends(1, quota=1024 * 1024)
        from tests.support.configs import BackendSpec

        first = BackendSpec("backend-first", lonely.endpoint, "first", quota_bytes=1024 * 1024)
        gw = start_gateway(GatewayConfig(backends=[first, *others]))
        s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
        s3.put_object(Bucket="photos", Key="before", Body=b"1" * 100)
        assert len(backend_keys(first)) == 1
        lonely.stop()
        s3.put_object(Bucket="photos", Key="after", Body=b"2" * 100)
        assert [k for k, _ in backend_keys(others[0])][0].startswith(f"photos/{key_digest('after')}/")
        assert s3.get_object(Bucket="photos", Key="after")["Body"].read() == b"2" * 100
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket="photos", Key="before")
        assert _status(info.value) == 503  # the only holder is down: 5xx, never 404
        rows = quota_rows(gw)
        assert rows[first.name]["reserved"] == 0 and rows[first.name]["used"] == 100
    finally:
        lonely.stop()


def test_ranges_and_conditionals(photos) -> None:  # type: ignore[no-untyped-def]
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


def _raw(gw, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """A SigV4-signed raw request (to send what SDKs would refuse to send)."""
    from s3orch.s3 import sigv4

    url = gw.endpoint + path
    headers = dict(headers or {})
    payload = headers.pop("x-amz-content-sha256", None) or hashlib.sha256(body).hexdigest()
    import time

    signed = sigv4.sign_headers(
        method, url, headers, payload, PHOTOS.access_key, PHOTOS.secret_key, "us-east-1", time.time()
    )
    req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None, method=method)
    for name, value in {**headers, **signed}.items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_integrity_errors_store_nothing(photos) -> None:  # type: ignore[no-untyped-def]
    gw, backends, s3 = photos
    import base64

    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    status, _, body = _raw(gw, "PUT", "/photos/bad-md5", b"payload", {"Content-MD5": wrong_md5})
    assert status == 400 and b"<Code>BadDigest</Code>" in body
    status, _, body = _raw(
        gw, "PUT", "/photos/bad-sha", b"payload", {"x-amz-content-sha256": hashlib.sha256(b"x").hexdigest()}
    )
    assert status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in body
    status, _, body = _raw(gw, "PUT", "/photos/" + "k" * 1025, b"payload")
    assert status == 400 and b"<Code>KeyTooLongError</Code>" in body
    assert backend_keys(backends[0]) == []
    rows = quota_rows(gw)
    assert all(r["used"] == 0 and r["reserved"] == 0 for r in rows.values())


def test_entity_too_large_refused_before_body(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    backends = moto_backends(1, quota=10 * 1024 * 1024)
    gw = start_gateway(GatewayConfig(backends=backends, extra_server={"max_object_size": 1024 * 1024}))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="photos", Key="big", Body=b"x" * (2 * 1024 * 1024))
    assert _code(info.value) == "EntityTooLarge" and _status(info.value) == 400
    assert backend_keys(backends[0]) == []


def test_listing_v1_v2_with_prefix_delimiter_and_pagination(photos) -> None:  # type: ignore[no-untyped-def]
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


def test_copy_object_copy_and_replace_directives(photos) -> None:  # type: ignore[no-untyped-def]
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


def test_delete_objects_batch_and_quiet(photos) -> None:  # type: ignore[no-untyped-def]
    gw, backends, s3 = photos
    for i in range(5):
        s3.put_object(Bucket="photos", Key=f"d{i}", Body=b"z")
    result = s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": f"d{i}"} for i in range(3)] + [{"Key": "nope"}]})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["d0", "d1", "d2", "nope"]
    quiet = s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": "d3"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="photos")["Contents"]] == ["d4"]


def test_presigned_get_and_request_ids(photos) -> None:  # type: ignore[no-untyped-def]
    gw, backends, s3 = photos
    s3.put_object(Bucket="photos", Key="p.txt", Body=b"presigned")
    # boto3's default presigner (SigV2 query parameters) and an explicit SigV4 one.
    for version in (None, "s3v4"):
        extra = {"signature_version": version} if version else {}
        signer = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key, **extra)
        url = signer.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "p.txt"}, ExpiresIn=60)
        assert ("X-Amz-Signature" in url) == (version == "s3v4")
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read() == b"presigned"
    req = urllib.request.Request(gw.endpoint + "/photos/p.txt", headers={"X-Request-Id": "my-trace-123"})
    try:
        urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError as err:
        assert err.code == 403
        assert err.headers["x-amz-request-id"] == "my-trace-123"
        assert b"<RequestId>my-trace-123</RequestId>" in err.read()
    else:
        raise AssertionError("anonymous request was accepted")


def test_health_metrics_and_audit_log(photos) -> None:  # type: ignore[no-untyped-def]
    gw, backends, s3 = photos
    s3.put_object(Bucket="photos", Key="m", Body=b"metrics")
    with urllib.request.urlopen(gw.endpoint + "/health", timeout=5) as resp:
        assert resp.status == 200 and b"ok" in resp.read()
    with urllib.request.urlopen(gw.endpoint + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for name in ("s3o_requests_total", "s3o_request_duration_seconds", "s3o_backend_requests_total",
                 "s3o_quota_bytes_used", "s3o_quota_bytes_limit", "s3o_quota_bytes_available",
                 "s3o_objects_count"):
        assert name in text
    log = gw.log_text()
    assert '"event":"s3.PutObject"' in log
    assert PHOTOS.secret_key not in log


def test_backend_max_object_size_skips_to_the_next_backend(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    backends = moto_backends(2, quota=1024 * 1024)
    backends[0].max_object_size = 2 * KiB
    gw = start_gateway(GatewayConfig(backends=backends))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="small", Body=b"s" * KiB)
    s3.put_object(Bucket="photos", Key="large", Body=b"l" * (4 * KiB))
    assert [k.rsplit("/", 1)[0] for k, _ in backend_keys(backends[0])] == [f"photos/{key_digest('small')}"]
    assert [k.rsplit("/", 1)[0] for k, _ in backend_keys(backends[1])] == [f"photos/{key_digest('large')}"]


def test_single_unlimited_backend_takes_anything(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    backends = moto_backends(1, quota=0)
    gw = start_gateway(GatewayConfig(backends=backends))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="big", Body=b"u" * (2 * 1024 * 1024))
    row = quota_rows(gw)[backends[0].name]
    assert (row["limit"], row["used"]) == (0, 2 * 1024 * 1024)


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_large_bodies_stream_without_growing_memory(start_gateway, moto_backends, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from boto3.s3.transfer import TransferConfig

    gw = start_gateway(GatewayConfig(backends=moto_backends(1, quota=1 << 30)))
    assert gw.proc is not None
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="warm", Body=b"w" * 1024)
    s3.get_object(Bucket="photos", Key="warm")["Body"].read()
    before = _peak_rss_kib(gw.proc.pid)
    src = tmp_path / "big.bin"
    with open(src, "wb") as out:
        for _ in range(96):
            out.write(os.urandom(1024 * 1024))
    single = TransferConfig(multipart_threshold=1 << 30)
    s3.upload_file(str(src), "photos", "big.bin", Config=single)
    dst = tmp_path / "big.out"
    s3.download_file("photos", "big.bin", str(dst), Config=single)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    growth_mib = (_peak_rss_kib(gw.proc.pid) - before) / 1024
    assert growth_mib < 40, f"gateway peak RSS grew by {growth_mib:.0f} MiB for a 96 MiB object"
