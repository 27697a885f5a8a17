"""A real gateway: slow clients are cut off at read_header_timeout, a full pool answers 503 SlowDown."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from s3orch.s3 import sigv4
from tests.conftest import PHOTOS
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


def _put_headers(port: int, key: str, length: int) -> bytes:
    url = f"http://127.0.0.1:{port}/photos/{key}"
    signed = sigv4.sign_headers(
        "PUT", url, {}, sigv4.UNSIGNED_PAYLOAD, PHOTOS.access_key, PHOTOS.secret_key, "us-east-1", time.time()
    )
    lines = [f"PUT /photos/{key} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {length}",
             "Expect: 100-continue"]
    lines += [f"{k}: {v}" for k, v in signed.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_full_admission_pool_answers_503_slowdown_and_health_still_answers(
    moto_backends: Callable[..., list[BackendSpec]], start_gateway: Callable[..., GatewayProcess]
) -> None:
    gateway = start_gateway(
        GatewayConfig(backends=moto_backends(1), extra_server={"max_concurrent_requests": 1})
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as holder:
        holder.sendall(_put_headers(gateway.port, "held", 5))
        holder.settimeout(5)
        assert b"100 Continue" in holder.recv(4096)  # admitted: the slot is held
        with socket.create_connection(("127.0.0.1", gateway.port)) as refused:
            refused.sendall(_put_headers(gateway.port, "refused", 5))
            answer = _read_all(refused)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"Retry-After: 1\r\n" in answer
        assert b"<Code>SlowDown</Code>" in answer and b"100 Continue" not in answer
        with socket.create_connection(("127.0.0.1", gateway.port)) as health:
            health.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_all(health).startswith(b"HTTP/1.1 200 ")
        holder.sendall(b"hello")
        assert b"HTTP/1.1 200 " in _read_all(holder, 3)
    # The slot came back: the next upload is admitted.
    with socket.create_connection(("127.0.0.1", gateway.port)) as again:
        again.sendall(_put_headers(gateway.port, "again", 0))
        assert b"HTTP/1.1 200 " in _read_all(again, 2)
