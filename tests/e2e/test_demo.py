"""`make run`'s demo: three real backends + s3orch on :9000, driven by the README's commands."""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import venv_tool
from tests.support.polling import poll, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DEMO_PORTS = (9000, 19000, 19002, 19004)


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_serves_the_readme_commands_and_stops_cleanly(tmp_path: Path) -> None:
    busy = [p for p in DEMO_PORTS if _port_in_use(p)]
    assert not busy, f"ports {busy} are taken (is `make run` already running?): the demo needs them"
    root = Path(__file__).resolve().parents[2]
    demo = subprocess.Popen(
        [sys.executable, "-m", "tools.demo", "--dir", str(tmp_path / "demo"), "--fresh-config"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        def ready() -> bool:
            assert demo.poll() is None, demo.stdout.read() if demo.stdout else ""
            try:
                with urllib.request.urlopen("http://127.0.0.1:9000/health/ready", timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        assert wait_for(ready, 90), "demo did not become ready"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID="photoskey", AWS_SECRET_ACCESS_KEY="photossecret",
                   AWS_DEFAULT_REGION="us-east-1", HOME=str(tmp_path))
        aws = [venv_tool("aws"), "--endpoint-url", "http://localhost:9000"]
        hostname = tmp_path / "hostname"
        hostname.write_text("demo-host\n")
        subprocess.run([*aws, "s3", "cp", str(hostname), "s3://photos/test.txt"], env=env, check=True,
                       capture_output=True, timeout=60)
        out = subprocess.run([*aws, "s3", "cp", "s3://photos/test.txt", "-"], env=env, check=True,
                             capture_output=True, text=True, timeout=60).stdout
        assert out == "demo-host\n"
        listing = subprocess.run([*aws, "s3", "ls", "s3://photos/"], env=env, check=True,
                                 capture_output=True, text=True, timeout=60).stdout
        assert "test.txt" in listing
        buckets = subprocess.run([*aws, "s3", "ls"], env=env, check=True, capture_output=True,
                                 text=True, timeout=60).stdout
        assert "photos" in buckets and "documents" not in buckets
        # The dashboard (demo login admin/admin) shows the upload on the first backend (pack).
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = urllib.parse.urlencode({"access_key": "admin", "secret_key": "admin"}).encode()
        with browser.open("http://127.0.0.1:9000/ui/login", data=form, timeout=30) as resp:
            assert resp.url == "http://127.0.0.1:9000/ui/"  # 303 to the overview, logged in
        with browser.open("http://127.0.0.1:9000/ui/api/dashboard", timeout=30) as resp:
            backends = {b["name"]: b for b in json.loads(resp.read())["backends"]}
        assert sorted(backends) == ["weed-1", "weed-2", "weed-3"]
        assert backends["weed-1"]["object_count"] == 1 and backends["weed-1"]["bytes_used"] == len("demo-host\n")
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            raise
    assert demo.returncode == 0
    output = demo.stdout.read() if demo.stdout else ""
    # The banner gives a ready-to-paste PATH line for the venv's `aws`; the text log shows each request.
    assert f'export PATH="{Path(sys.executable).parent}:$PATH"' in output
    assert "dashboard: http://localhost:9000/ui/   (login: admin / admin" in output
    assert "event=s3.PutObject" in output and "bucket=photos" in output
    still_open = poll(lambda: [p for p in DEMO_PORTS if _port_in_use(p)], lambda ports: ports == [], 2)
    assert still_open == [], "Ctrl-C left something running"
