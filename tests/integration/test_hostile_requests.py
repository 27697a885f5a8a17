"""A client that stops reading, against a real process with real socket buffers: cut off at
write_timeout.  The malformed and hostile requests themselves (a 4xx or a closed connection,
never a 5xx) are tested in-process: tests/inproc/test_hostile_requests.py."""

from __future__ import annotations

import socket
import time

from tests.support.configs import GatewayConfig
from tests.support.polling import wait_for


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
