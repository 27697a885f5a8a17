"""The fault rig's TCP proxy does to real HTTP traffic what each mode says."""

from __future__ import annotations

import http.client
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import Fault, FaultProxy, Mode
from tests.support.polling import wait_for

BODY = os.urandom(256 * 1024)


#: Bytes of each PUT body the upstream received (RESET_REQUEST cuts them short).
RECEIVED: list[int] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        wanted = int(self.headers["Content-Length"])
        got = 0
        while got < wanted:
            try:
                chunk = self.rfile.read(min(65536, wanted - got))
            except ConnectionError:
                chunk = b""
            if not chunk:
                break
            got += len(chunk)
        RECEIVED.append(got)
        if got < wanted:
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: int) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", upstream) as p:
        yield p


def _get(proxy: FaultProxy, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        conn.request("GET", "/obj")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_pass_forwards_untouched(proxy: FaultProxy) -> None:
    assert _get(proxy) == (200, BODY)


def test_refuse_resets_every_new_connection(proxy: FaultProxy) -> None:
    proxy.set(Fault.REFUSE)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _get(proxy)
    proxy.set(Fault.PASS)
    assert _get(proxy) == (200, BODY)


def test_reset_mid_body_delivers_a_short_body_then_an_error(proxy: FaultProxy) -> None:
    proxy.set(Fault.RESET_BODY, after=100_000)
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        _get(proxy)


def test_stall_headers_never_answers(proxy: FaultProxy) -> None:
    proxy.set(Fault.STALL_HEADERS)
    with pytest.raises((socket.timeout, TimeoutError)):
        _get(proxy, timeout=0.5)


def test_stall_body_sends_headers_then_nothing(proxy: FaultProxy) -> None:
    proxy.set(Fault.STALL_BODY, after=1000)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=0.5)
    conn.request("GET", "/obj")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises((socket.timeout, TimeoutError)):
        resp.read()
    conn.close()


def test_corrupt_flips_exactly_one_byte(proxy: FaultProxy) -> None:
    proxy.set(Fault.CORRUPT, after=50_000)
    status, body = _get(proxy)
    assert status == 200 and len(body) == len(BODY)
    diffs = [i for i, (a, b) in enumerate(zip(body, BODY, strict=True)) if a != b]
    assert len(diffs) == 1


def test_slow_and_delay_deliver_everything(proxy: FaultProxy) -> None:
    proxy.mode = Mode(Fault.SLOW, rate=2_000_000)
    assert _get(proxy) == (200, BODY)
    proxy.mode = Mode(Fault.DELAY, delay=0.3)
    started = time.monotonic()
    assert _get(proxy) == (200, BODY)
    assert time.monotonic() - started >= 0.3  # a lower bound: sleep guarantees it


def test_a_mode_change_applies_to_new_connections_and_reset_all_cuts_old_ones(proxy: FaultProxy) -> None:
    proxy.set(Fault.STALL_BODY, after=1000)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("GET", "/obj")
    resp = conn.getresponse()
    proxy.set(Fault.PASS)
    assert _get(proxy) == (200, BODY)  # new connection, new mode
    proxy.reset_all()
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        resp.read()
    conn.close()
    assert proxy.connections >= 2


def test_slow_delivers_at_about_the_rate_asked(proxy: FaultProxy) -> None:
    proxy.set(Fault.SLOW, rate=len(BODY) * 2)  # the body in about half a second
    started = time.monotonic()
    assert _get(proxy) == (200, BODY)
    assert time.monotonic() - started >= 0.4  # a lower bound: the sleeps guarantee it


def test_a_kept_alive_connection_takes_the_new_mode_at_its_next_request(proxy: FaultProxy) -> None:
    """The gateway pools connections: a switch must reach them too, request by request."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        conn.request("GET", "/obj")
        first = conn.getresponse()
        assert (first.status, first.read()) == (200, BODY)
        proxy.set(Fault.CORRUPT, after=10_000)
        conn.request("GET", "/obj")
        second = conn.getresponse().read()
        assert len(second) == len(BODY) and second != BODY and second[10_001:] == BODY[10_001:]
        proxy.set(Fault.REFUSE)
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            conn.request("GET", "/obj")
            conn.getresponse().read()
    finally:
        conn.close()
    assert proxy.connections == 1  # all three went over the one kept-alive connection


def test_reset_request_cuts_the_request_body_and_the_connection(proxy: FaultProxy) -> None:
    RECEIVED.clear()
    proxy.set(Fault.RESET_REQUEST, after=50_000)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("PUT", "/obj", body=BODY)
        conn.getresponse().read()
    conn.close()
    assert wait_for(lambda: RECEIVED, timeout=5)
    assert RECEIVED[0] < len(BODY)  # the upstream saw a cut body, never the whole
    RECEIVED.clear()
    proxy.set(Fault.PASS)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("PUT", "/obj", body=BODY)
    assert conn.getresponse().status == 200
    conn.close()
    assert RECEIVED == [len(BODY)]
