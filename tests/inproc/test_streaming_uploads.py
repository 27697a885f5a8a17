"""aws-chunked uploads (all three SigV4 streaming variants) through an in-process gateway:
round trips, a tampered chunk, a wrong trailing checksum, a truncated body, and refusals that
cost no backend call."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest

from s3orch.s3 import sigv4
from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS, quota_rows
from tests.inproc.conftest import MiB, backend_keys, boto, make_backends, metric
from tests.support.awschunked import streaming_put
from tests.support.configs import BackendSpec, GatewayConfig

VARIANTS = [sigv4.STREAMING_PAYLOAD, sigv4.STREAMING_PAYLOAD_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER]
Gateway = tuple[GatewayHarness, list[BackendSpec]]


def _send(gateway: GatewayHarness, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """PUT exactly as prepared (signed by its builder)."""
    answer = gateway.send_raw(gateway.encode_request("PUT", path, headers=headers, body=body))
    return answer.status, answer.body


def _rows(gateway: GatewayHarness) -> dict[str, dict[str, int]]:
    return quota_rows(gateway)


@pytest.fixture
def gw(start_harness: Callable[..., GatewayHarness]) -> Gateway:
    backends = make_backends(1, quota=64 * MiB)
    return start_harness(GatewayConfig(backends=backends)), backends


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_variant_round_trip(gw: Gateway, variant: str) -> None:
    gateway, backends = gw
    data = os.urandom(200 * 1024 + 3)
    path = f"/photos/stream/{variant}"
    req = streaming_put(f"http://{gateway.host}{path}", data, access_key=PHOTOS.access_key,
                        secret_key=PHOTOS.secret_key, now=gateway.clock.seconds(), variant=variant)
    status, body = _send(gateway, path, req.headers, req.body)
    assert status == 200, body
    got = boto(gateway).get_object(Bucket="photos", Key=f"stream/{variant}")
    assert got["Body"].read() == data  # the framing never reaches the object
    assert got["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert _rows(gateway)[backends[0].name]["used"] == len(data)


@pytest.mark.parametrize("variant", [sigv4.STREAMING_PAYLOAD, sigv4.STREAMING_PAYLOAD_TRAILER])
def test_tampered_chunk_is_refused_and_nothing_stored(gw: Gateway, variant: str) -> None:
    gateway, backends = gw
    data = os.urandom(150 * 1024)
    path = "/photos/tampered"
    req = streaming_put(f"http://{gateway.host}{path}", data, access_key=PHOTOS.access_key,
                        secret_key=PHOTOS.secret_key, now=gateway.clock.seconds(), variant=variant)
    body = bytearray(req.body)
    body[len(body) // 2] ^= 0x01  # flip one payload bit in the middle chunk
    status, reply = _send(gateway, path, req.headers, bytes(body))
    assert status == 403 and b"SignatureDoesNotMatch" in reply
    assert backend_keys(gateway, backends[0]) == []
    rows = _rows(gateway)[backends[0].name]
    assert (rows["used"], rows["reserved"]) == (0, 0)


def test_wrong_trailing_checksum_is_bad_digest(gw: Gateway) -> None:
    gateway, backends = gw
    data = os.urandom(10_000)
    path = "/photos/badsum"
    req = streaming_put(f"http://{gateway.host}{path}", data, access_key=PHOTOS.access_key,
                        secret_key=PHOTOS.secret_key, now=gateway.clock.seconds(),
                        variant=sigv4.STREAMING_UNSIGNED_TRAILER)
    good = req.body
    value_start = good.index(b"x-amz-checksum-crc32:") + len(b"x-amz-checksum-crc32:")
    bad = good[:value_start] + b"AAAAAA==" + good[value_start + 8:]
    status, reply = _send(gateway, path, req.headers, bad)
    assert status == 400 and b"<Code>BadDigest</Code>" in reply
    assert backend_keys(gateway, backends[0]) == []


def test_truncated_chunked_body_is_incomplete(gw: Gateway) -> None:
    gateway, backends = gw
    data = os.urandom(100 * 1024)
    path = "/photos/truncated"
    req = streaming_put(f"http://{gateway.host}{path}", data, access_key=PHOTOS.access_key,
                        secret_key=PHOTOS.secret_key, now=gateway.clock.seconds(),
                        variant=sigv4.STREAMING_PAYLOAD, chunk_size=16 * 1024)
    cut = req.body[: len(req.body) // 2]
    headers = dict(req.headers, **{"content-length": str(len(cut))})
    status, reply = _send(gateway, path, headers, cut)
    assert status == 400 and b"<Code>IncompleteBody</Code>" in reply
    assert backend_keys(gateway, backends[0]) == []
    assert _rows(gateway)[backends[0].name]["reserved"] == 0


def test_failed_authentication_causes_no_backend_call(gw: Gateway) -> None:
    gateway, backends = gw
    path = "/photos/denied"
    before = metric(gateway, "s3o_backend_requests_total")
    received = len(gateway.backends[backends[0].name].received)
    signed = sigv4.sign_headers("PUT", f"http://{gateway.host}{path}", {}, hashlib.sha256(b"x").hexdigest(),
                                PHOTOS.access_key, "wrong-secret", "us-east-1", gateway.clock.seconds())
    status, reply = _send(gateway, path, dict(signed, **{"content-length": "1"}), b"x")
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in reply
    status, reply = _send(gateway, path, {"content-length": "1"}, b"x")  # anonymous
    assert status == 403 and b"<Code>AccessDenied</Code>" in reply
    assert metric(gateway, "s3o_backend_requests_total") == before
    assert len(gateway.backends[backends[0].name].received) == received
    head = gateway.send_raw(f"HEAD {path} HTTP/1.1\r\nHost: {gateway.host}\r\n\r\n".encode())
    assert head.status == 403 and head.body == b""  # HEAD errors carry no body
