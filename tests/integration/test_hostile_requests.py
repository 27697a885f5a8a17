"""Malformed and hostile raw requests: a 4xx or a closed connection, never a 5xx or a traceback."""

from __future__ import annotations

import socket
import time

from tests.support.configs import GatewayConfig
from tests.support.polling import wait_for

HOSTILE = [
    b"GET /photos/%ZZ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /photos/a HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 garbage\r\n\r\n",
    b"GET /photos/a HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 Credential=photoskey/2026/us/s3/"
    b"aws4_request, SignedHeaders=host, Signature=zz\r\nx-amz-date: nonsense\r\n\r\n",
    b"PUT /photos/a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2Fb&X-Amz-Expires=-1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /photos?list-type=2&max-keys=-5 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /photos?delete HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /photos/a?AWSAccessKeyId=photoskey&Signature=x&Expires=99999999999999999999999999 HTTP/1.1\r\n"
    b"Host: x\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,  # a TLS hello on the plain port
    b"GET /photos/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /photos/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\n\r\nzz\r\n",
]


def _send(port: int, raw: bytes) -> bytes:
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(raw)
        try:
            while b"\r\n\r\n" not in out:
                data = sock.recv(65536)
                if not data:
                    break
                out += data
        except TimeoutError:
            pass
    return out


def test_hostile_raw_requests_get_4xx_or_a_closed_connection_never_5xx(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    gw = start_gateway(GatewayConfig(backends=moto_backends(1, quota=1 << 20)))
    for raw in HOSTILE:
        status = _send(gw.port, raw).split(b"\r\n", 1)[0]
        assert status == b"" or status.startswith(b"HTTP/1.1 4"), (raw[:80], status)
    time.sleep(0.2)  # a real process: let its last log lines reach the file
    log = gw.log_text()
    assert "Traceback" not in log, log[-3000:]
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:  # still serving
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


# -- issue 11 item 1: 2,000 hostile requests against a real gateway -------------------------


def _exchange(port: int, raw: bytes) -> bytes:
    """Send one request on its own connection and read until the gateway closes it."""
    raw = raw.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # refused before its body: the gateway may close while we still send
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                out += data
        except (ConnectionResetError, TimeoutError):
            pass
    return out


def _metric(port: int, name: str) -> dict[str, float]:
    """Samples of one metric family from the gateway's /metrics, by label string."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    text = data.split(b"\r\n\r\n", 1)[1].decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            labels, _, value = line.rpartition(" ")
            found[labels] = float(value)
    return found


def test_two_thousand_hostile_requests_then_a_normal_put_succeeds(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    import random

    import boto3
    from botocore.config import Config

    from tests.unit.test_hostile_front_door import hostile_request

    gw = start_gateway(GatewayConfig(
        backends=moto_backends(1, quota=1 << 20), extra_server={"max_concurrent_requests": 20},
    ))
    rng = random.Random(2000)
    for _ in range(2000):
        raw = hostile_request(rng)
        answer = _exchange(gw.port, raw)
        status = answer.split(b"\r\n", 1)[0]
        assert status.startswith(b"HTTP/1.1 4"), (raw[:200], answer[:300])
    inflight = _metric(gw.port, "s3o_inflight_requests")
    assert inflight and all(value == 0 for value in inflight.values()), inflight
    assert _metric(gw.port, "s3o_admission_slots_in_use") == {'s3o_admission_slots_in_use{pool="global"}': 0.0}
    client = boto3.client(
        "s3", endpoint_url=gw.endpoint, aws_access_key_id="photoskey", aws_secret_access_key="photossecret",
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    client.put_object(Bucket="photos", Key="after-the-storm", Body=b"still serving")
    assert client.get_object(Bucket="photos", Key="after-the-storm")["Body"].read() == b"still serving"
    # Random methods labelled OTHER: a handful of series, not thousands.
    methods = {labels.split('method="')[1].split('"')[0] for labels in _metric(gw.port, "s3o_requests_total")}
    assert methods <= {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "OTHER"}, methods
    time.sleep(0.2)  # a real process: let its last log lines reach the file
    log = gw.log_text()
    assert "Traceback" not in log, log[-3000:]


def test_a_client_that_stops_reading_is_cut_off_at_write_timeout(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    """A real zero window: the GET's slot comes back once write_timeout passes with no progress."""
    import boto3
    from botocore.config import Config

    from s3orch.s3 import sigv4

    gw = start_gateway(GatewayConfig(
        backends=moto_backends(1),
        extra_server={"write_timeout": "2s", "backend_timeout": "2s", "max_concurrent_requests": 8},
    ))
    client = boto3.client(
        "s3", endpoint_url=gw.endpoint, aws_access_key_id="photoskey", aws_secret_access_key="photossecret",
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    size = 48 * 1024 * 1024  # more than both sockets' buffers can hold
    client.put_object(Bucket="photos", Key="big", Body=b"z" * size)
    url = f"{gw.endpoint}/photos/big"
    signed = sigv4.sign_headers("GET", url, {}, sigv4.UNSIGNED_PAYLOAD, "photoskey", "photossecret",
                                "us-east-1", time.time())
    head = f"GET /photos/big HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in signed.items()) + "\r\n"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, never read from
    sock.connect(("127.0.0.1", gw.port))
    try:
        sock.sendall(head.encode())
        slots = '{pool="global"}'

        def slots_in_use() -> float | None:
            return _metric(gw.port, "s3o_admission_slots_in_use").get("s3o_admission_slots_in_use" + slots)

        # the response starts and stalls
        assert wait_for(lambda: slots_in_use() == 1, 5), "the GET never took its slot"
        assert wait_for(lambda: slots_in_use() == 0, 20), "the stalled GET kept its slot past write_timeout"
        assert _metric(gw.port, "s3o_write_timeouts_total") == {"s3o_write_timeouts_total": 1.0}
        assert sum(_metric(gw.port, "s3o_inflight_requests").values()) == 0
    finally:
        sock.close()
    assert client.head_object(Bucket="photos", Key="big")["ContentLength"] == size  # still serving
