"""Malformed and hostile raw requests: a 4xx or a closed connection, never a 5xx or a traceback."""

from __future__ import annotations

import socket
import time

from s3orch.testing.configs import GatewayConfig

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
