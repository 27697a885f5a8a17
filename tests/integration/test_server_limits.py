"""A real gateway: slow clients are cut off at read_header_timeout on real sockets (the full
admission pool answering 503 SlowDown is tested in-process: tests/inproc/test_server_limits.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess


def _read_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionError):
        pass
    return data


def test_slowloris_headers_are_cut_off_at_read_header_timeout(
    moto_backends: Callable[..., list[BackendSpec]], start_gateway: Callable[..., GatewayProcess]
) -> None:
    gateway = start_gateway(
        GatewayConfig(backends=moto_backends(1), extra_server={"read_header_timeout": "1s"})
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        started = time.monotonic()
        closed = False
        # One byte every 0.2 s: each byte resets an idle timer, never this deadline.
        for byte in b"GET /photos/k HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
            except ConnectionError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 3:
                break
        answer = _read_all(sock)
    assert closed or answer
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"<Code>RequestTimeout</Code>" in answer
    assert time.monotonic() - started < 4
