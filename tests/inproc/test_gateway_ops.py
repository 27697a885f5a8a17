"""Addressing styles and the S3 port's operational surface, in-process: virtual-hosted style,
public /metrics and /health, a legacy proxy token, and the spool directory for large bodies.
(Logs, signals, start-up refusals and a separate metrics listener need a process:
tests/integration/test_gateway_ops.py.)"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from s3orch.testing import GatewayHarness
from tests.conftest import DOCS, PHOTOS
from tests.inproc.conftest import boto, make_backends
from tests.support.configs import GatewayConfig

Start = Callable[..., GatewayHarness]


def _signed(gw: GatewayHarness, method: str, host: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    answer = gw.send_raw(gw.encode_request(
        method, path, body=body, credentials=(PHOTOS.access_key, PHOTOS.secret_key),
        payload_hash=hashlib.sha256(body).hexdigest(), host=host,
    ))
    return answer.status, answer.body


def _get(gw: GatewayHarness, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    lines = [f"GET {path} HTTP/1.1", f"Host: {gw.host}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    answer = gw.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())
    return answer.status, answer.body, answer.header("content-type") or ""


def test_virtual_hosted_style_when_suffix_is_set(start_harness: Start) -> None:
    gw = start_harness(GatewayConfig(backends=make_backends(1, quota=1 << 20),
                                     extra_server={"virtual_host_suffix": "s3.example.test"}))
    host = "photos.s3.example.test:9000"
    assert _signed(gw, "PUT", host, "/v/key.txt", b"vhost")[0] == 200
    assert _signed(gw, "GET", host, "/v/key.txt") == (200, b"vhost")
    # The same object, path-style.
    assert boto(gw).get_object(Bucket="photos", Key="v/key.txt")["Body"].read() == b"vhost"
    # Another bucket's virtual host is refused for these credentials.
    status, body = _signed(gw, "GET", "documents.s3.example.test:9000", "/v/key.txt")
    assert status == 403 and b"AccessDenied" in body


def test_metrics_and_health_are_public_on_the_s3_port_when_metrics_have_no_address(start_harness: Start) -> None:
    gw = start_harness(GatewayConfig(backends=make_backends(1, quota=1 << 20)))
    status, body, _ = _get(gw, "/metrics")
    assert status == 200 and b"s3o_requests_total" in body
    assert _get(gw, "/health")[:2] == (200, b'{"status": "ok"}')


def test_a_legacy_proxy_token_opens_its_own_bucket_only(start_harness: Start) -> None:
    buckets = [
        {"name": "photos",
         "credentials": [{"access_key_id": PHOTOS.access_key, "secret_access_key": PHOTOS.secret_key}]},
        {"name": "documents",
         "credentials": [{"token": "legacy-token-123"},
                         {"access_key_id": DOCS.access_key, "secret_access_key": DOCS.secret_key}]},
    ]
    gw = start_harness(GatewayConfig(backends=make_backends(1, quota=1 << 20), extra={"buckets": buckets}))
    token = {"X-Proxy-Token": "legacy-token-123"}
    put = gw.request("PUT", "documents", "t.txt", headers=token, body=b"by token", signed=False)
    assert put.status == 200, put.text
    got = gw.request("GET", "documents", "t.txt", headers=token, signed=False)
    assert (got.status, got.body) == (200, b"by token")
    assert gw.request("GET", "photos", "t.txt", headers=token, signed=False).status == 403  # another bucket
    wrong = gw.request("GET", "documents", "t.txt", headers={"X-Proxy-Token": "legacy-token-124"}, signed=False)
    assert wrong.status == 403 and b"<Code>AccessDenied</Code>" in wrong.body


def test_bodies_over_spool_memory_limit_go_to_spool_dir(start_harness: Start, tmp_path: Path) -> None:
    spool = tmp_path / "spool-that-is-missing"
    gw = start_harness(GatewayConfig(backends=make_backends(1, quota=1 << 20),
                                     extra_server={"spool_dir": str(spool), "spool_memory_limit": "4KiB"}))
    s3 = boto(gw)
    s3.put_object(Bucket="photos", Key="small", Body=b"s" * 4096)  # stays in memory
    with pytest.raises(ClientError) as info:  # needs the spool directory
        s3.put_object(Bucket="photos", Key="large", Body=b"l" * 4097)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    spool.mkdir()
    s3.put_object(Bucket="photos", Key="large", Body=b"l" * 4097)
    assert s3.get_object(Bucket="photos", Key="large")["Body"].read() == b"l" * 4097
    assert list(spool.iterdir()) == []  # the spool file is gone once the object is stored
