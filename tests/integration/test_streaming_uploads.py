"""aws-chunked uploads (all three SigV4 streaming variants) through a live gateway."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from urllib.parse import urlsplit

import pytest

from s3orch.s3 import sigv4
from tests.conftest import PHOTOS, backend_keys, quota_rows, s3_client
from tests.support.awschunked import streaming_put
from tests.support.configs import GatewayConfig

VARIANTS = [sigv4.STREAMING_PAYLOAD, sigv4.STREAMING_PAYLOAD_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER]


def _send(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("PUT", parts.path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def gw(start_gateway, moto_backends):  # type: ignore[no-untyped-def]
    backends = moto_backends(1, quota=64 * 1024 * 1024)
    return start_gateway(GatewayConfig(backends=backends)), backends


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_variant_round_trip(gw, variant: str) -> None:  # type: ignore[no-untyped-def]
    gateway, backends = gw
    data = os.urandom(200 * 1024 + 3)
    url = f"{gateway.endpoint}/photos/stream/{variant}"
    req = streaming_put(url, data, access_key=PHOTOS.access_key, secret_key=PHOTOS.secret_key,
                        now=time.time(), variant=variant)
    status, body = _send(url, req.headers, req.body)
    assert status == 200, body
    s3 = s3_client(gateway.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    got = s3.get_object(Bucket="photos", Key=f"stream/{variant}")
    assert got["Body"].read() == data  # the framing never reaches the object
    assert got["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert quota_rows(gateway)[backends[0].name]["used"] == len(data)


@pytest.mark.parametrize("variant", [sigv4.STREAMING_PAYLOAD, sigv4.STREAMING_PAYLOAD_TRAILER])
def test_tampered_chunk_is_refused_and_nothing_stored(gw, variant: str) -> None:  # type: ignore[no-untyped-def]
    gateway, backends = gw
    data = os.urandom(150 * 1024)
    url = f"{gateway.endpoint}/photos/tampered"
    req = streaming_put(url, data, access_key=PHOTOS.access_key, secret_key=PHOTOS.secret_key,
                        now=time.time(), variant=variant)
    body = bytearray(req.body)
    body[len(body) // 2] ^= 0x01  # flip one payload bit in the middle chunk
    try:
        status, reply = _send(url, req.headers, bytes(body))
    except (ConnectionResetError, BrokenPipeError):
        status, reply = 403, b"SignatureDoesNotMatch (connection closed after the answer)"
    assert status == 403 and b"SignatureDoesNotMatch" in reply
    assert backend_keys(backends[0]) == []
    rows = quota_rows(gateway)[backends[0].name]
    assert (rows["used"], rows["reserved"]) == (0, 0)


def test_wrong_trailing_checksum_is_bad_digest(gw) -> None:  # type: ignore[no-untyped-def]
    gateway, backends = gw
    data = os.urandom(10_000)
    url = f"{gateway.endpoint}/photos/badsum"
    req = streaming_put(url, data, access_key=PHOTOS.access_key, secret_key=PHOTOS.secret_key,
                        now=time.time(), variant=sigv4.STREAMING_UNSIGNED_TRAILER)
    good = req.body
    value_start = good.index(b"x-amz-checksum-crc32:") + len(b"x-amz-checksum-crc32:")
    bad = good[:value_start] + b"AAAAAA==" + good[value_start + 8:]
    status, reply = _send(url, req.headers, bad)
    assert status == 400 and b"<Code>BadDigest</Code>" in reply
    assert backend_keys(backends[0]) == []


def test_truncated_chunked_body_is_incomplete(gw) -> None:  # type: ignore[no-untyped-def]
    gateway, backends = gw
    data = os.urandom(100 * 1024)
    url = f"{gateway.endpoint}/photos/truncated"
    req = streaming_put(url, data, access_key=PHOTOS.access_key, secret_key=PHOTOS.secret_key,
                        now=time.time(), variant=sigv4.STREAMING_PAYLOAD, chunk_size=16 * 1024)
    cut = req.body[: len(req.body) // 2]
    headers = dict(req.headers, **{"content-length": str(len(cut))})
    status, reply = _send(url, headers, cut)
    assert status == 400 and b"<Code>IncompleteBody</Code>" in reply
    assert backend_keys(backends[0]) == []
    assert quota_rows(gateway)[backends[0].name]["reserved"] == 0


def test_failed_authentication_causes_no_backend_call(gw) -> None:  # type: ignore[no-untyped-def]
    gateway, backends = gw
    url = f"{gateway.endpoint}/photos/denied"

    def backend_calls() -> float:
        import urllib.request

        text = urllib.request.urlopen(gateway.endpoint + "/metrics", timeout=5).read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("s3o_backend_requests_total{")
        )

    before = backend_calls()
    signed = sigv4.sign_headers("PUT", url, {}, hashlib.sha256(b"x").hexdigest(), PHOTOS.access_key,
                                "wrong-secret", "us-east-1", time.time())
    status, reply = _send(url, dict(signed, **{"content-length": "1"}), b"x")
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in reply
    status, reply = _send(url, {"content-length": "1"}, b"x")  # anonymous
    assert status == 403 and b"<Code>AccessDenied</Code>" in reply
    assert backend_calls() == before
    assert backend_keys(backends[0]) == []
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request("HEAD", "/photos/denied")
    resp = conn.getresponse()
    assert resp.status == 403 and resp.read() == b""  # HEAD errors carry no body
