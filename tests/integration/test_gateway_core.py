"""The core gateway against real S3 servers (moto_server), through real HTTP: what needs a
process -- a backend process stopping under it, the process's memory on large bodies, its log
file and metrics endpoint.  The S3 semantics are tested in-process (tests/inproc/test_gateway_core.py).
"""

from __future__ import annotations

import hashlib
import os
import urllib.request

import pytest
from botocore.exceptions import ClientError

from s3orch.core.placement import key_digest
from tests.conftest import PHOTOS, backend_keys, quota_rows, s3_client
from tests.support.configs import GatewayConfig
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
