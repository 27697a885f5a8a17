"""A real twistd gateway: SIGHUP reloads config.yaml (what ``systemctl reload`` sends), and
``--mode`` chooses what one process runs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from s3orch.s3 import sigv4
from tests.conftest import PHOTOS, s3_client
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import wait_for

NEW_KEY = ("photos-rotated", "photos-rotated-secret")


def _records(gw: GatewayProcess) -> list[dict[str, Any]]:
    out = []
    for line in gw.log_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _hup_and_wait(gw: GatewayProcess, done: str) -> None:
    """SIGHUP, then wait for the reload's last line (``done``) to appear once more."""
    assert gw.proc is not None
    before = sum(1 for r in _records(gw) if r.get("msg") == done)
    os.kill(gw.proc.pid, signal.SIGHUP)
    assert wait_for(lambda: sum(1 for r in _records(gw) if r.get("msg") == done) > before, 15), (
        f"no {done!r} line after SIGHUP:\n{gw.log_text()[-3000:]}"
    )


def _edit(gw: GatewayProcess, old: str, new: str) -> None:
    text = gw.config_path.read_text()
    assert old in text, text
    gw.config_path.write_text(text.replace(old, new))


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except ClientError as exc:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def _start_slow_put(gw: GatewayProcess, key: str, body: bytes, first: int) -> socket.socket:
    """A PUT signed with the photos key whose headers and first ``first`` bytes are sent now."""
    path = f"/photos/{key}"
    url = f"http://127.0.0.1:{gw.port}{path}"
    headers = sigv4.sign_headers("PUT", url, {}, hashlib.sha256(body).hexdigest(), PHOTOS.access_key,
                                 PHOTOS.secret_key, "us-east-1", time.time())
    lines = [f"PUT {path} HTTP/1.1", f"Host: 127.0.0.1:{gw.port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=15)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body[:first])
    return sock


def test_sighup_swaps_credentials_keeps_a_put_in_flight_and_names_restart_only_fields(
    start_gateway: Callable[..., GatewayProcess], moto_backends: Callable[..., list[BackendSpec]]
) -> None:
    gw = start_gateway(GatewayConfig(backends=moto_backends(1, quota=1 << 30)))
    old: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    new: Any = s3_client(gw.endpoint, *NEW_KEY)
    old.put_object(Bucket="photos", Key="before", Body=b"1")
    assert _status(lambda: new.head_object(Bucket="photos", Key="before")) == 403

    body = os.urandom(256 * 1024)
    slow = _start_slow_put(gw, "in-flight", body, 64 * 1024)
    # The photos key is replaced; the listen address changes too (needs a restart).
    _edit(gw, f"access_key_id: {PHOTOS.access_key}\n", f"access_key_id: {NEW_KEY[0]}\n")
    _edit(gw, f"secret_access_key: {PHOTOS.secret_key}\n", f"secret_access_key: {NEW_KEY[1]}\n")
    _edit(gw, f'listen_addr: 127.0.0.1:{gw.port}', "listen_addr: 127.0.0.1:1")
    _hup_and_wait(gw, "Configuration reload complete")

    # The PUT authenticated before the reload finishes with the key it started with.
    slow.sendall(body[64 * 1024 :])
    answer = slow.recv(65536)
    slow.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert new.get_object(Bucket="photos", Key="in-flight")["Body"].read() == body
    assert _status(lambda: old.head_object(Bucket="photos", Key="before")) == 403
    assert new.get_object(Bucket="photos", Key="before")["Body"].read() == b"1"

    records = _records(gw)
    restart = [r for r in records if r.get("msg") == "server.listen_addr changed; takes effect at restart"]
    assert len(restart) == 1 and restart[0]["level"] == "WARN" and restart[0]["field"] == "server.listen_addr"
    assert any(r.get("msg") == "Reloaded bucket credentials" for r in records)
    complete = [r for r in records if r.get("msg") == "Configuration reload complete"][-1]
    assert complete["restart_required"] == ["server.listen_addr"]
    assert NEW_KEY[1] not in gw.log_text() and PHOTOS.secret_key not in gw.log_text()
    assert gw.proc is not None and gw.proc.poll() is None  # still serving on the old port


def test_an_invalid_file_changes_nothing_and_the_log_level_reloads(
    start_gateway: Callable[..., GatewayProcess], moto_backends: Callable[..., list[BackendSpec]]
) -> None:
    gw = start_gateway(GatewayConfig(backends=moto_backends(1, quota=1 << 30)))
    client: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    good = gw.config_path.read_text()
    _edit(gw, f"access_key_id: {PHOTOS.access_key}\n", f"access_key_id: {NEW_KEY[0]}\n")
    gw.config_path.write_text(gw.config_path.read_text() + "routing_strategy: random\nrate_limit: {enabled: true}\n")
    _hup_and_wait(gw, "Config reload failed, keeping current config")
    problems = [r["problem"] for r in _records(gw) if r.get("msg", "").startswith("config reload: ")]
    assert any(p.startswith("routing_strategy") for p in problems), problems
    client.put_object(Bucket="photos", Key="still", Body=b"ok")  # the old key still works

    # log_level error: the audit lines (info) stop; back to info, they return.
    gw.config_path.write_text(good.replace("server:\n", "server:\n  log_level: error\n", 1))
    _hup_and_wait(gw, "Reloaded log level")  # written before the level changes
    client.put_object(Bucket="photos", Key="quiet", Body=b"q")
    gw.config_path.write_text(good)
    _hup_and_wait(gw, "Configuration reload complete")
    client.put_object(Bucket="photos", Key="loud", Body=b"l")
    # The request's own line (s3.PutObject) is written after its storage line and after the
    # answer went out: wait for it, not for the first line that names the key.
    def loud_line() -> bool:
        return any(r.get("key") == "loud" and r.get("event") == "s3.PutObject" for r in _records(gw))

    assert wait_for(loud_line, 10)
    keys = {r.get("key") for r in _records(gw) if r.get("event") == "s3.PutObject"}
    assert "still" in keys and "loud" in keys and "quiet" not in keys


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _ready_line(gw: GatewayProcess) -> dict[str, Any]:
    return next(r for r in _records(gw) if r.get("msg") == "s3orch is ready")


def test_api_mode_serves_s3_and_runs_no_worker_but_usage_flush(
    tmp_path: Path, moto_backends: Callable[..., list[BackendSpec]]
) -> None:
    config = GatewayConfig(backends=moto_backends(1, quota=1 << 30))
    with GatewayProcess(tmp_path / "api", config.render(), args=["--mode", "api"]) as gw:
        client: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
        client.put_object(Bucket="photos", Key="a", Body=b"api")
        assert client.get_object(Bucket="photos", Key="a")["Body"].read() == b"api"
        ready = _ready_line(gw)
        # The location journal's refresh serves degraded S3 reads: it runs where the S3 API is.
        # The drain worker only refreshes the draining set there (it moves nothing).
        assert ready["mode"] == "api" and ready["workers"] == ["drain", "usage-flush", "journal-refresh", "rate-limit-sweep"]
        status, metrics = _get(gw.endpoint + "/metrics")
        assert status == 200 and b'service="usage_flush"' in metrics
        assert b'service="cleanup_queue"' not in metrics


def test_worker_mode_runs_every_worker_and_answers_s3_paths_with_503(
    tmp_path: Path, moto_backends: Callable[..., list[BackendSpec]]
) -> None:
    config = GatewayConfig(backends=moto_backends(1, quota=1 << 30))
    with GatewayProcess(tmp_path / "worker", config.render(), args=["--mode", "worker"]) as gw:
        ready = _ready_line(gw)
        assert ready["mode"] == "worker"
        assert set(ready["workers"]) == {
            "cleanup-queue", "multipart-gc", "lifecycle", "scrubber", "rebalancer", "drain", "reconcile",
            "usage-flush", "pending-reaper", "rate-limit-sweep",
        }
        assert _get(gw.endpoint + "/health") == (200, b'{"status": "ok"}')
        status, body = _get(gw.endpoint + "/photos/a")
        assert status == 503 and b"<Code>ServiceUnavailable</Code>" in body and b"worker mode" in body
        client: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
        assert _status(lambda: client.put_object(Bucket="photos", Key="b", Body=b"x" * 1000)) == 503
        assert _get(gw.endpoint + "/metrics")[0] == 200


def test_an_invalid_mode_exits_1_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("buckets: []\n")
    twistd = str(Path(sys.executable).with_name("twistd"))
    done = subprocess.run(
        [twistd, "-n", "--pidfile=", "s3orch", "--config", str(config), "--mode", "both"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: --mode must be one of all, api, worker, not 'both'"]

