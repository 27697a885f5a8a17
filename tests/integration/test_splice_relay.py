"""The zero-copy relay (``splice(2)``) of large GET bodies, through the real gateway process
over real SeaweedFS (behind the fault proxy, plain TCP both sides).

A 20 MiB GET and a large ranged GET arrive byte-exact and are counted in
``s3o_spliced_bytes_total``; two GETs on one keep-alive client connection both complete and
reuse one backend connection; a client leaving mid-body, a backend reset or a stalled backend
mid-body abort that GET only (the client reads short, never a short 200) and leak no file
descriptor; over TLS the body takes the ordinary path and is still exact.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from s3orch.s3.sigv4 import sign_headers
from tests.integration.conftest import fresh_bucket
from tests.integration.test_tls import PKI, pki, start_tls_gateway  # noqa: F401 - fixtures
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.gateway import GatewayProcess
from tests.support.polling import wait_for
from tests.support.servers import WeedServer

MiB = 1024 * 1024
BODY = os.urandom(20 * MiB)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@pytest.fixture
def rig(tmp_path: Path, weed: WeedServer) -> Iterator[tuple[GatewayProcess, FaultProxy]]:
    bucket = fresh_bucket(weed)
    with FaultProxy.for_endpoint(weed.endpoint) as proxy:
        spec = BackendSpec("weed", proxy.endpoint, bucket, weed.access_key, weed.secret_key, unsigned_payload=True)
        config = GatewayConfig([spec], extra_server={"backend_timeout": "3s"})
        gateway = GatewayProcess(tmp_path / "gw", config.render())
        gateway.start()
        try:
            status = request(gateway, "PUT", "big", body=BODY)[0]
            assert status == 200
            yield gateway, proxy
        finally:
            gateway.stop()


def signed(gateway: GatewayProcess, method: str, key: str, body: bytes = b"", **extra: str) -> dict[str, str]:
    url = f"{gateway.endpoint}/photos/{key}"
    payload = hashlib.sha256(body).hexdigest()
    return sign_headers(method, url, dict(extra), payload, "photoskey", "photossecret", "us-east-1", time.time()) | extra


def connect(gateway: GatewayProcess, context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    if context is not None:
        return http.client.HTTPSConnection("127.0.0.1", gateway.port, timeout=60, context=context)
    return http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)


def request(
    gateway: GatewayProcess,
    method: str,
    key: str,
    *,
    body: bytes = b"",
    conn: http.client.HTTPConnection | None = None,
    **headers: str,
) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or connect(gateway)
    try:
        conn.request(method, f"/photos/{key}", body=body or None, headers=signed(gateway, method, key, body, **headers))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def spliced(gateway: GatewayProcess, context: ssl.SSLContext | None = None) -> float:
    with urllib.request.urlopen(f"{gateway.endpoint}/metrics", timeout=30, context=context) as response:
        text = response.read().decode()
    found = re.search(r"^s3o_spliced_bytes_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def open_fds(gateway: GatewayProcess) -> int:
    assert gateway.proc is not None
    return len(os.listdir(f"/proc/{gateway.proc.pid}/fd"))


def raw_get(gateway: GatewayProcess, key: str) -> socket.socket:
    """A GET sent on a raw socket, its answer left unread."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    lines = [f"GET /photos/{key} HTTP/1.1", f"Host: 127.0.0.1:{gateway.port}"]
    lines += [f"{name}: {value}" for name, value in signed(gateway, "GET", key).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_a_20mib_get_is_spliced_and_byte_exact(rig: tuple[GatewayProcess, FaultProxy]) -> None:
    gateway, _ = rig
    before = spliced(gateway)
    status, body = request(gateway, "GET", "big")
    assert status == 200
    assert body == BODY
    assert spliced(gateway) - before >= 19 * MiB  # all but what came with the backend's headers


def test_a_large_ranged_get_is_spliced_and_exact(rig: tuple[GatewayProcess, FaultProxy]) -> None:
    gateway, _ = rig
    before = spliced(gateway)
    status, body = request(gateway, "GET", "big", Range="bytes=1000-15000999")
    assert status == 206
    assert body == BODY[1000:15001000]
    assert spliced(gateway) - before >= 14 * MiB


def test_two_spliced_gets_on_one_keep_alive_connection_reuse_the_backend_connection(
    rig: tuple[GatewayProcess, FaultProxy],
) -> None:
    gateway, proxy = rig
    before = spliced(gateway)
    conn = connect(gateway)
    try:
        assert request(gateway, "GET", "big", conn=conn) == (200, BODY)
        backend_connections = proxy.connections
        assert request(gateway, "GET", "big", conn=conn) == (200, BODY)
        assert request(gateway, "GET", "big", conn=conn, Range="bytes=0-9") == (206, BODY[:10])
    finally:
        conn.close()
    assert proxy.connections == backend_connections  # the first GET's connection went back to the pool
    assert spliced(gateway) - before >= 38 * MiB


def test_a_client_leaving_mid_body_leaks_nothing_and_the_next_get_works(
    rig: tuple[GatewayProcess, FaultProxy],
) -> None:
    gateway, _ = rig
    request(gateway, "GET", "big")  # the pool and the process settle
    fds = open_fds(gateway)
    before = spliced(gateway)
    for _ in range(3):
        sock = raw_get(gateway, "big")
        received = 0
        while received < 4 * MiB:
            received += len(sock.recv(1 << 20))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset, with most of the body unread
    assert wait_for(lambda: open_fds(gateway) <= fds, timeout=10)  # the descriptors came back
    assert spliced(gateway) > before  # those GETs did take the zero-copy path
    assert request(gateway, "GET", "big") == (200, BODY)


def test_a_backend_reset_mid_body_aborts_the_client_connection(rig: tuple[GatewayProcess, FaultProxy]) -> None:
    gateway, proxy = rig
    request(gateway, "GET", "big")
    fds = open_fds(gateway)
    proxy.set(Fault.RESET_BODY, after=6 * MiB)
    sock = raw_get(gateway, "big")
    answer = read_all(sock)
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: %d" % len(BODY) in head
    assert 0 < len(body) < len(BODY)  # cut short, never a complete 200
    proxy.set(Fault.PASS)
    assert request(gateway, "GET", "big") == (200, BODY)
    assert wait_for(lambda: open_fds(gateway) <= fds, timeout=10)  # the descriptors came back


def test_a_backend_stalling_mid_body_is_cut_after_backend_timeout(rig: tuple[GatewayProcess, FaultProxy]) -> None:
    gateway, proxy = rig
    before = spliced(gateway)
    proxy.set(Fault.STALL_BODY, after=4 * MiB)
    sock = raw_get(gateway, "big")
    started = time.monotonic()
    answer = read_all(sock)
    sock.close()
    proxy.set(Fault.PASS)
    body = answer.partition(b"\r\n\r\n")[2]
    assert answer.startswith(b"HTTP/1.1 200")
    assert 0 < len(body) < len(BODY)
    assert time.monotonic() - started < 30  # backend_timeout (3s) cut it, not the test's patience
    assert spliced(gateway) > before
    assert "body stalled" in gateway.log_text()


def test_over_tls_a_large_get_takes_the_ordinary_path(
    tmp_path: Path, weed: WeedServer, start_tls_gateway: Callable[..., GatewayProcess], pki: PKI  # noqa: F811
) -> None:
    spec = BackendSpec("weed", weed.endpoint, fresh_bucket(weed), weed.access_key, weed.secret_key)
    config = GatewayConfig([spec], extra_server={"tls": {"cert_file": pki.server_cert, "key_file": pki.server_key}})
    context = pki.client_context()
    gateway = start_tls_gateway(config, context)
    conn = connect(gateway, context)
    try:
        assert request(gateway, "PUT", "big", body=BODY, conn=conn)[0] == 200
        assert request(gateway, "GET", "big", conn=conn) == (200, BODY)
    finally:
        conn.close()
    assert spliced(gateway, context) == 0


def test_a_client_that_stops_reading_a_spliced_body_is_cut_by_write_timeout(
    tmp_path: Path, weed: WeedServer
) -> None:
    spec = BackendSpec("weed", weed.endpoint, fresh_bucket(weed), weed.access_key, weed.secret_key,
                       unsigned_payload=True)
    config = GatewayConfig([spec], extra_server={"write_timeout": "2s", "backend_timeout": "2s"})
    with GatewayProcess(tmp_path / "gw", config.render()) as gateway:
        assert request(gateway, "PUT", "big", body=BODY)[0] == 200
        before = spliced(gateway)
        sock = raw_get(gateway, "big")
        first = sock.recv(1 << 20)  # the headers and the first bytes; then nothing is read
        assert first.startswith(b"HTTP/1.1 200")
        assert wait_for(lambda: timeouts(gateway) >= 1, timeout=60), gateway.log_text()[-4000:]
        body = first.partition(b"\r\n\r\n")[2] + read_all(sock)
        sock.close()
        assert len(body) < len(BODY)  # cut, never completed
        assert spliced(gateway) > before  # it was cut while spliced
        assert request(gateway, "GET", "big") == (200, BODY)


def timeouts(gateway: GatewayProcess) -> float:
    with urllib.request.urlopen(f"{gateway.endpoint}/metrics", timeout=30) as response:
        text = response.read().decode()
    found = re.search(r"^s3o_write_timeouts_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
