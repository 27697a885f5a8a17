"""The admin API and s3orch-admin against a real ``twistd s3orch`` process."""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from s3orch.cli.main import cli
from tests.conftest import PHOTOS, s3_client
from tests.integration.test_tls import PKI
from tests.support.configs import GatewayConfig
from tests.support.gateway import PROJECT_ROOT, GatewayProcess

TOKEN = "integration-admin-token"
DEAD = 250


def _admin(gw: GatewayProcess, method: str, path: str, *, token: str | None = TOKEN, body: bytes = b"",
           headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    sent = {"Content-Length": str(len(body)), **(headers or {})}
    if token is not None:
        sent["X-Admin-Token"] = token
    conn.request(method, "/admin/api/" + path, body=body, headers=sent)
    response = conn.getresponse()
    out = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    conn.close()
    return out


def _bury(gw: GatewayProcess, backend: str, count: int, size: int = 10) -> None:
    """Put ``count`` dead letters of ``size`` bytes in the gateway's DLQ, their bytes orphaned,
    as ten failed deletes each would have left them."""
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10)
    try:
        with conn:
            now = time.time()
            conn.executemany(
                "INSERT INTO cleanup_dlq (original_id, backend_name, storage_key, reason, size_bytes, attempts,"
                " last_error, first_enqueued_at, moved_at) VALUES (?, ?, ?, 'delete', ?, 10, '403 AccessDenied', ?, ?)",
                [(1000 + i, backend, f"gone/{i}", size, now, now) for i in range(count)],
            )
            conn.execute(
                "UPDATE backend_quotas SET orphan_bytes = orphan_bytes + ? WHERE backend_name = ?",
                (count * size, backend),
            )
    finally:
        conn.close()


@pytest.fixture
def gateway(start_gateway, moto_backends) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(GatewayConfig(backends=moto_backends(1, quota=1 << 20), extra={"ui": {"admin_token": TOKEN}}))


def _cli(gw: GatewayProcess, *args: str, token: str | None = None) -> Result:
    env = {"S3ORCH_ADMIN_TOKEN": token} if token is not None else {"S3ORCH_ADMIN_TOKEN": ""}
    return CliRunner().invoke(cli, [*args, "--config", str(gw.config_path)], env=env)


def test_the_admin_api_of_a_real_process_checks_tokens_caps_bodies_and_answers_json(gateway: GatewayProcess) -> None:
    status, headers, body = _admin(gateway, "GET", "status", token=None)
    assert status == 401 and json.loads(body) == {"error": "unauthorized", "request_id": headers["x-request-id"]}
    assert _admin(gateway, "GET", "status", token="nope")[0] == 401
    status, headers, body = _admin(gateway, "GET", "status")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["db_healthy"] is True
    # 1 MiB + 1 byte: refused on its Content-Length, before the body is read -- so the test sends
    # only the headers (sending the body would race the server's close: a broken pipe)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.putrequest("PUT", "/admin/api/log-level")
    conn.putheader("Content-Length", str(1024 * 1024 + 1))
    conn.putheader("X-Admin-Token", TOKEN)
    conn.endheaders()
    response = conn.getresponse()
    status, headers, body = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    conn.close()
    assert status == 413 and json.loads(body)["error"] == "request body too large"
    assert headers["content-type"] == "application/json"
    # and the gateway still serves S3
    s3 = s3_client(gateway.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="still", Body=b"ok")


def test_every_s3orch_admin_command_against_a_running_gateway(gateway: GatewayProcess) -> None:
    s3 = s3_client(gateway.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="dir/k.txt", Body=b"hello")
    backend = json.loads(_admin(gateway, "GET", "status")[2])["backends"][0]["name"]

    result = _cli(gateway, "status")
    assert result.exit_code == 0, result.output
    assert "database: healthy" in result.stdout and backend in result.stdout
    parsed = json.loads(_cli(gateway, "status", "--json").stdout)
    assert parsed["db_healthy"] is True and parsed["backends"][0]["bytes_used"] == 5

    result = _cli(gateway, "object-locations", "--key", "photos/dir/k.txt")
    assert result.exit_code == 0 and backend in result.stdout and "photos/dir/k.txt: 5 B" in result.stdout
    missing = _cli(gateway, "object-locations", "-key", "photos/none")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: no object photos/none (HTTP 404")

    assert _cli(gateway, "cleanup-queue").stdout.startswith("depth: 0")

    _bury(gateway, backend, DEAD)
    result = _cli(gateway, "cleanup-dlq", "--limit", "3")
    assert result.exit_code == 0 and f"dead letters: {DEAD}" in result.stdout
    assert result.stdout.count("gone/") == 3
    first = json.loads(_cli(gateway, "cleanup-dlq", "--json", "--limit", "1").stdout)["items"][0]["id"]

    assert _cli(gateway, "cleanup-dlq-write-off").exit_code == 2  # must say which rows
    result = _cli(gateway, "cleanup-dlq-write-off", "--id", str(first))
    assert result.exit_code == 0 and "wrote off 1 row(s), released 10 B" in result.stdout

    result = _cli(gateway, "cleanup-dlq-requeue", "--backend", backend)
    assert result.exit_code == 0, result.output
    assert f"requeued {DEAD - 1} row(s)" in result.stdout
    # the progress went to stderr (lines: not a terminal), ending at the total
    assert f"{DEAD - 1}/{DEAD - 1} 100%" in result.stderr and "/s" in result.stderr
    assert json.loads(_cli(gateway, "cleanup-dlq", "--json").stdout)["count"] == 0

    result = _cli(gateway, "usage-flush")
    assert result.exit_code == 0 and result.stdout.strip() == "flushed"
    result = _cli(gateway, "usage", "--backend", backend)
    assert result.exit_code == 0, result.output
    row = [line for line in result.stdout.splitlines() if line.startswith(backend)]
    assert len(row) == 1 and "unlimited" in row[0]  # API requests, egress and ingress against no limit
    assert _cli(gateway, "usage", "--period", "2026-13").exit_code == 1

    assert _cli(gateway, "log-level").stdout.strip() == "log level: info"
    assert _cli(gateway, "log-level", "--set", "debug").stdout.strip() == "log level: debug (was info)"
    assert json.loads(_cli(gateway, "log-level", "--json").stdout)["level"] == "debug"
    assert _cli(gateway, "log-level", "--set", "loud").exit_code == 2

    result = _cli(gateway, "workers")
    assert result.exit_code == 0 and "cleanup-queue" in result.stdout and "usage-flush" in result.stdout

    assert _cli(gateway, "reload-status").stdout.strip() == "status: never"

    result = _cli(gateway, "logs", "--component", "admin", "--limit", "5")
    assert result.exit_code == 0 and "[admin]" in result.stdout
    assert TOKEN not in result.stdout

    refused = _cli(gateway, "status", token="wrong")
    assert refused.exit_code == 1 and refused.stderr.startswith("error: unauthorized (HTTP 401")


def test_the_installed_entry_point_exits_0_1_and_2(gateway: GatewayProcess) -> None:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), S3ORCH_ADMIN_TOKEN="")
    command = [sys.executable, "-c", "from s3orch.cli.main import cli; cli()"]

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], env={**env, **extra}, capture_output=True, text=True, timeout=60)

    ok = run("status", "--config", str(gateway.config_path))
    assert ok.returncode == 0 and "database: healthy" in ok.stdout
    refused = run("status", "--addr", f"127.0.0.1:{gateway.port}", S3ORCH_ADMIN_TOKEN="bad")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    down = run("status", "--addr", "127.0.0.1:1", S3ORCH_ADMIN_TOKEN="t")
    assert down.returncode == 2 and down.stderr.startswith("error: cannot reach")


# --- a long pass: the timeout is per progress line, not per call ------------------------------


class _SlowPass(BaseHTTPRequestHandler):
    """A stand-in gateway whose pass takes ``lines * pace`` seconds, one progress line per ``pace``;
    ``silent`` first waits that long without a byte."""

    lines = 6
    pace = 0.4
    silent = 0.0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        stop = threading.Event()
        if self.silent:
            stop.wait(self.silent)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        self._line({"type": "start", "total": self.lines})
        for done in range(1, self.lines + 1):
            stop.wait(self.pace)  # the work of one step
            self._line({"type": "step_end", "step": "batch", "done": done, "total": self.lines})
        self._line({"type": "result", "status": "requeued", "requeued": self.lines})

    def _line(self, event: dict[str, Any]) -> None:
        try:
            self.wfile.write(json.dumps({**event, "request_id": "r1"}).encode() + b"\n")
            self.wfile.flush()
        except OSError:  # the client gave up (the timeout test)
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[tuple[ThreadingHTTPServer, type[_SlowPass]]]:
    handler = type("Handler", (_SlowPass,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_a_pass_longer_than_the_timeout_completes_while_progress_flows(slow_server: Any) -> None:
    server, _ = slow_server
    addr = f"127.0.0.1:{server.server_address[1]}"
    started = time.monotonic()
    result = CliRunner().invoke(
        cli, ["cleanup-dlq-requeue", "--addr", addr, "--timeout", "1"], env={"S3ORCH_ADMIN_TOKEN": "t"}
    )
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert took > 2.0  # longer than the 1 s timeout: the timeout is per line
    assert result.stdout.strip() == "requeued 6 row(s)"
    progress = result.stderr.splitlines()
    assert progress[0].startswith("requeue [") and "0/6" in progress[0]
    assert "6/6 100%" in progress[-1] and "/s" in progress[-1]


@pytest.mark.slow
def test_a_silent_server_times_out_after_one_timeout(slow_server: Any) -> None:
    server, handler = slow_server
    handler.silent = 3.0
    addr = f"127.0.0.1:{server.server_address[1]}"
    result = CliRunner().invoke(
        cli, ["usage-flush", "--addr", addr, "--timeout", "1"], env={"S3ORCH_ADMIN_TOKEN": "t"}
    )
    assert result.exit_code == 2
    assert "timed out" in result.stderr and result.stderr.count("\n") == 1


@pytest.fixture
def tls_gateway(tmp_path: Path, moto_backends) -> Iterator[tuple[GatewayProcess, PKI]]:  # type: ignore[no-untyped-def]
    pki = PKI(tmp_path / "pki")
    config = GatewayConfig(
        backends=moto_backends(1),
        extra_server={"tls": {"cert_file": pki.server_cert, "key_file": pki.server_key}},
        extra={"ui": {"admin_token": TOKEN}},
    )
    gw = GatewayProcess(tmp_path / "tls-gw", config.render(), tls_context=pki.client_context()).start()
    try:
        yield gw, pki
    finally:
        gw.stop()


def test_over_tls_the_address_from_the_config_is_https(tls_gateway: tuple[GatewayProcess, PKI]) -> None:
    gw, pki = tls_gateway
    trusted = _cli(gw, "status", "--cacert", pki.ca_file)
    assert trusted.exit_code == 0, trusted.output
    assert "database: healthy" in trusted.stdout
    untrusted = _cli(gw, "status")
    assert untrusted.exit_code == 2 and f"https://127.0.0.1:{gw.port}" in untrusted.stderr
    assert _cli(gw, "status", "--insecure").exit_code == 0
