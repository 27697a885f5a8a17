"""A real gateway with ``rate_limit`` on: a burst beyond ``burst`` gets 429 SlowDown with
Retry-After before any body byte is sent, whatever X-Forwarded-For a client writes, and the
admin API is limited too; and ``admission_wait`` holding a request on a real socket until a
slot frees (unit tests with a Clock: tests/unit/test_rate_limit.py, test_admission_wait.py)."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable

from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.socketclient import Client, _read_reply

BIG = 1 << 30


def _metric(gateway: GatewayProcess, prefix: str) -> float:
    with urllib.request.urlopen(f"{gateway.endpoint}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_burst_beyond_burst_gets_429_before_the_body_and_xff_from_an_untrusted_peer_is_ignored(
    moto_backends: Callable[..., list[BackendSpec]], start_gateway: Callable[..., GatewayProcess]
) -> None:
    gateway = start_gateway(
        GatewayConfig(
            backends=moto_backends(1),
            extra={"rate_limit": {"enabled": True, "requests_per_sec": 0.01, "burst": 3},
                   "ui": {"admin_token": "t0ken"}},
        )
    )
    client = Client(gateway)
    for n in range(3):  # each claims another client address: ignored, the peer is not trusted
        reply = client.request("PUT", f"/photos/k{n}", headers={"X-Forwarded-For": f"192.0.2.{n}"}, body=b"data")
        assert reply.status == 200, reply
    # A 1 GiB upload: only its headers are sent; the answer comes without a body byte.
    headers = client.sign("PUT", "/photos/huge", headers={"X-Forwarded-For": "192.0.2.77"})
    headers["content-length"] = str(BIG)
    with client.connect() as sock:
        sock.sendall(client.head_text("PUT", "/photos/huge", "", headers).encode())
        reply = _read_reply(sock, "PUT")
        sock.settimeout(10)
        assert sock.recv(1) == b""  # and the connection is closed: the body is never read
    assert reply.status == 429 and reply.code == "SlowDown", reply
    assert reply.headers["retry-after"] == "1"
    assert b"Rate limit exceeded" in reply.body
    assert client.request("HEAD", "/photos/k0").status == 429
    assert _metric(gateway, 's3o_rate_limit_rejections_total{api="s3",key="ip"}') == 2
    # /admin/ shares the client's bucket: empty too, answered in JSON before its body.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /admin/api/log-level HTTP/1.1\r\nHost: x\r\nX-Admin-Token: t0ken\r\n"
            b"Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n"
        )
        admin = _read_reply(sock, "POST")
    assert admin.status == 429 and admin.headers["retry-after"] == "1"
    assert json.loads(admin.body)["error"] == "rate limit exceeded"
    with urllib.request.urlopen(f"{gateway.endpoint}/health", timeout=10) as health:
        assert health.status == 200  # never limited


def _read_continue_or_reply(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data


def test_admission_wait_holds_a_request_on_a_real_socket_until_a_slot_frees(
    moto_backends: Callable[..., list[BackendSpec]], start_gateway: Callable[..., GatewayProcess]
) -> None:
    gateway = start_gateway(
        GatewayConfig(
            backends=moto_backends(1),
            extra_server={"max_concurrent_requests": 1, "admission_wait": "20s"},
        )
    )
    client = Client(gateway)

    def put_head(key: str) -> bytes:
        headers = client.sign("PUT", f"/photos/{key}", headers={"Expect": "100-continue"})
        headers["content-length"] = "4"
        return client.head_text("PUT", f"/photos/{key}", "", headers).encode()

    with client.connect() as first, client.connect() as second:
        first.sendall(put_head("first"))
        assert _read_continue_or_reply(first).startswith(b"HTTP/1.1 100 ")
        second.sendall(put_head("second"))
        second.settimeout(0.5)
        try:
            early = second.recv(1)
        except TimeoutError:
            early = b""
        assert early == b""  # held: no 100 Continue, no 503, while the only slot is taken
        first.sendall(b"data")
        assert _read_reply(first, "PUT").status == 200
        second.settimeout(20)
        assert _read_continue_or_reply(second).startswith(b"HTTP/1.1 100 ")  # the freed slot is its
        second.sendall(b"more")
        assert _read_reply(second, "PUT").status == 200
    assert _metric(gateway, 's3o_admission_waits_total{outcome="admitted"}') == 1
