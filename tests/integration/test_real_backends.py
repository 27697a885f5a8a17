"""The gateway over signature-checking and quirky real backends.

SeaweedFS checks every SigV4 signature and Content-MD5 like a real provider
and keeps data across restarts; ``rclone serve s3`` answers ranged GETs with
the whole object and capitalises metadata names.  Clients of s3orch must see
neither difference.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.conftest import PHOTOS, backend_keys, quota_rows, s3_client
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.servers import RcloneServer, WeedServer, create_bucket


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = WeedServer(tmp_path_factory.mktemp("weed"), "weedkey", "weedsecret")
    server.start()
    create_bucket(server.endpoint, "gwdata", "weedkey", "weedsecret", "us-east-1")
    yield server
    server.stop()


def test_gateway_over_seaweedfs_signs_and_survives_restarts(weed, start_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = BackendSpec("weed", weed.endpoint, "gwdata", "weedkey", "weedsecret", quota_bytes=256 * 1024 * 1024)
    config = GatewayConfig(backends=[spec])
    gw = start_gateway(config)
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    data = os.urandom(3 * 1024 * 1024 + 5)
    key = "weird keys/a+b=c&d ü.bin"
    s3.put_object(Bucket="photos", Key=key, Body=data, Metadata={"mixed": "Case"})
    assert s3.get_object(Bucket="photos", Key=key, Range="bytes=1000-2999")["Body"].read() == data[1000:3000]
    s3.copy_object(Bucket="photos", Key="copy", CopySource={"Bucket": "photos", "Key": key})
    assert hashlib.sha256(s3.get_object(Bucket="photos", Key="copy")["Body"].read()).digest() == hashlib.sha256(data).digest()

    # Restart both the backend and the gateway: data and metadata persist.
    weed.restart()
    gw.stop()
    gw.start()
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    got = s3.get_object(Bucket="photos", Key=key)
    assert got["Body"].read() == data and got["Metadata"] == {"mixed": "Case"}
    s3.delete_object(Bucket="photos", Key=key)
    s3.delete_object(Bucket="photos", Key="copy")
    assert backend_keys(spec) == []
    assert quota_rows(gw)["weed"]["used"] == 0


def test_wrong_backend_secret_fails_writes_cleanly(weed, start_gateway) -> None:  # type: ignore[no-untyped-def]
    spec = BackendSpec("weed", weed.endpoint, "gwdata", "weedkey", "not-the-secret", quota_bytes=1024 * 1024)
    gw = start_gateway(GatewayConfig(backends=[spec]))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="photos", Key="k", Body=b"data")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    rows = quota_rows(gw)["weed"]
    assert (rows["used"], rows["reserved"]) == (0, 0)  # no leaked byte of quota


def test_quirky_backend_is_hidden_from_clients(start_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = RcloneServer(tmp_path / "rclone", "rkey", "rsecret")
    server.make_bucket("quirky")
    server.start()
    try:
        spec = BackendSpec("rclone", server.endpoint, "quirky", "rkey", "rsecret", quota_bytes=64 * 1024 * 1024)
        gw = start_gateway(GatewayConfig(backends=[spec]))
        s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
        data = bytes(range(256)) * 4096  # 1 MiB
        s3.put_object(Bucket="photos", Key="q.bin", Body=data, Metadata={"lower": "case"})
        got = s3.get_object(Bucket="photos", Key="q.bin", Range="bytes=100000-100099")
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"] == "bytes 100000-100099/1048576"
        assert got["Body"].read() == data[100000:100100]
        headers = got["ResponseMetadata"]["HTTPHeaders"]
        assert not any(h.startswith("x-amz-checksum") for h in headers)
        assert got["Metadata"] == {"lower": "case"}
        assert s3.get_object(Bucket="photos", Key="q.bin", Range="bytes=-10")["Body"].read() == data[-10:]
    finally:
        server.stop()
