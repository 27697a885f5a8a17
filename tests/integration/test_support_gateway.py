"""tests.support.gateway: a started GatewayProcess is really ours, even when another process
took the port it picked (on a busy machine other test runs pick free ports too)."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tests.support.gateway as gateway_module
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess, listens_on
from tests.support.servers import free_port


class _AlwaysReady(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    """Another process's server on a loopback port, answering 200 to every GET (/health/ready too)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_listens_on_tells_which_process_holds_a_listening_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert listens_on(os.getpid(), port)
        assert not listens_on(os.getpid(), free_port())
        assert not listens_on(1, port)


def test_a_gateway_whose_port_was_taken_moves_to_another_and_is_really_started(
    impostor: int,
    tmp_path: Path,
    moto_backends: Callable[..., list[BackendSpec]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    picks = iter([impostor, free_port()])
    monkeypatch.setattr(gateway_module, "free_port", lambda: next(picks))
    gw = GatewayProcess(tmp_path / "gw", GatewayConfig(backends=moto_backends(1)).render())
    assert gw.port == impostor
    try:
        gw.start()
        assert gw.port != impostor
        assert gw.proc is not None and listens_on(gw.proc.pid, gw.port)
        assert "Address already in use" in gw.log_text()  # the first attempt lost the race
    finally:
        gw.stop()
