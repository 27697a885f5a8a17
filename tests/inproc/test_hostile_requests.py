"""Malformed and hostile raw requests against an in-process gateway: a 4xx or a closed
connection, never a 5xx or a failure behind the answer; and the gateway serves normally after
2,000 of them.  (A client that stops reading needs real socket buffers:
tests/integration/test_hostile_requests.py.)"""

from __future__ import annotations

import random
from collections.abc import Callable

from s3orch.testing import GatewayHarness
from tests.inproc.conftest import boto, make_backends
from tests.support.configs import GatewayConfig
from tests.unit.test_hostile_front_door import hostile_request

Start = Callable[..., GatewayHarness]

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


def _exchange(gw: GatewayHarness, raw: bytes) -> bytes:
    """Send ``raw`` on its own connection; every byte the gateway answered once all has settled."""
    connection = gw.connect()
    connection.send(raw)
    answer = connection.received
    connection.close()
    return answer


def _metric(gw: GatewayHarness, name: str) -> dict[str, float]:
    """Samples of one metric family from the gateway's /metrics, by label string."""
    text = gw.send_raw(f"GET /metrics HTTP/1.1\r\nHost: {gw.host}\r\n\r\n".encode()).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            labels, _, value = line.rpartition(" ")
            found[labels] = float(value)
    return found


def test_hostile_raw_requests_get_4xx_or_a_closed_connection_never_5xx(start_harness: Start) -> None:
    gw = start_harness(GatewayConfig(backends=make_backends(1, quota=1 << 20)))
    for raw in HOSTILE:
        status = _exchange(gw, raw).split(b"\r\n", 1)[0]
        assert status == b"" or status.startswith(b"HTTP/1.1 4"), (raw[:80], status)
    assert gw.problems.events == [], gw.problems.describe()
    assert gw.send_raw(f"GET /health HTTP/1.1\r\nHost: {gw.host}\r\n\r\n".encode()).status == 200  # still serving


def test_two_thousand_hostile_requests_then_a_normal_put_succeeds(start_harness: Start) -> None:
    gw = start_harness(GatewayConfig(
        backends=make_backends(1, quota=1 << 20), extra_server={"max_concurrent_requests": 20},
    ))
    # The registry is the test process's: other tests may have left requests of theirs counted.
    inflight_before = _metric(gw, "s3o_inflight_requests")
    rng = random.Random(2000)
    for _ in range(2000):
        raw = hostile_request(rng).replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
        answer = _exchange(gw, raw)
        status = answer.split(b"\r\n", 1)[0]
        assert status.startswith(b"HTTP/1.1 4"), (raw[:200], answer[:300])
    inflight = _metric(gw, "s3o_inflight_requests")
    assert inflight and all(value == inflight_before.get(labels, 0.0) for labels, value in inflight.items()), (
        inflight, inflight_before,
    )
    assert _metric(gw, "s3o_admission_slots_in_use")['s3o_admission_slots_in_use{pool="global"}'] == 0.0
    client = boto(gw)
    client.put_object(Bucket="photos", Key="after-the-storm", Body=b"still serving")
    assert client.get_object(Bucket="photos", Key="after-the-storm")["Body"].read() == b"still serving"
    # Random methods labelled OTHER: a handful of series, not thousands.
    methods = {labels.split('method="')[1].split('"')[0] for labels in _metric(gw, "s3o_requests_total")}
    assert methods <= {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "OTHER"}, methods
    assert gw.problems.events == [], gw.problems.describe()
