"""Stream-through of a large PUT over real SeaweedFS, through the real gateway process.

A 64 MiB PutObject goes to ``weed`` while it arrives (no spool file, counted in
``s3o_stream_through_writes_total``) and reads back byte-exact; a bad Content-MD5 is
BadDigest with nothing committed; a backend connection reset mid-body (the fault proxy)
is a 503, and the auditor then finds quotas exact and nothing leaked.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3orch.s3.sigv4 import sign_headers
from tests.integration.conftest import fresh_bucket
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.gateway import GatewayProcess
from tests.support.polling import wait_for
from tests.support.servers import WeedServer

MiB = 1024 * 1024
BODY = os.urandom(64 * MiB)
BODY_MD5 = base64.b64encode(hashlib.md5(BODY).digest()).decode()
BODY_SHA256 = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def rig(tmp_path: Path, weed: WeedServer) -> Iterator[tuple[GatewayProcess, FaultProxy, Path, BackendSpec]]:
    bucket = fresh_bucket(weed)
    with FaultProxy.for_endpoint(weed.endpoint) as proxy:
        spec = BackendSpec("weed", proxy.endpoint, bucket, weed.access_key, weed.secret_key, quota_bytes=1024 * MiB)
        spool = tmp_path / "spool"
        spool.mkdir()
        config = GatewayConfig(
            [spec], extra_server={"spool_dir": str(spool), "spool_memory_limit": "16KiB"}
        )
        gateway = GatewayProcess(tmp_path / "gw", config.render())
        gateway.start()
        try:
            yield gateway, proxy, spool, spec
        finally:
            gateway.stop()


def put(gateway: GatewayProcess, key: str, body: bytes, *, content_md5: str, sha256: str) -> tuple[int, bytes]:
    """A SigV4 PUT with a hex payload hash, sent in 1 MiB writes."""
    url = f"{gateway.endpoint}/photos/{key}"
    headers = {"Content-MD5": content_md5}
    headers.update(sign_headers("PUT", url, headers, sha256, "photoskey", "photossecret", "us-east-1", time.time()))
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.putrequest("PUT", f"/photos/{key}", skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            for offset in range(0, len(body), MiB):
                conn.send(body[offset : offset + MiB])
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole body went: read the answer
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get(gateway: GatewayProcess, key: str) -> tuple[int, bytes]:
    url = f"{gateway.endpoint}/photos/{key}"
    headers = sign_headers("GET", url, {}, hashlib.sha256(b"").hexdigest(), "photoskey", "photossecret",
                           "us-east-1", time.time())
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def streamed(gateway: GatewayProcess, result: str) -> float:
    with urllib.request.urlopen(f"{gateway.endpoint}/metrics", timeout=30) as response:
        text = response.read().decode()
    found = re.search(rf'^s3o_stream_through_writes_total{{result="{result}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def audit(gateway: GatewayProcess, spec: BackendSpec) -> None:
    report = Auditor(lambda: sqlite3.connect(str(gateway.workdir / "s3orch.db")), [spec]).audit()
    report.assert_clean()


def test_a_64mib_put_streams_without_a_spool_and_reads_back(
    rig: tuple[GatewayProcess, FaultProxy, Path, BackendSpec],
) -> None:
    gateway, _, spool, spec = rig
    status, answer = put(gateway, "big", BODY, content_md5=BODY_MD5, sha256=BODY_SHA256)
    assert status == 200, answer
    assert streamed(gateway, "success") == 1
    assert list(spool.iterdir()) == []
    status, back = get(gateway, "big")
    assert status == 200
    assert hashlib.sha256(back).hexdigest() == BODY_SHA256
    gateway.stop()
    audit(gateway, spec)


def test_a_bad_content_md5_is_bad_digest_and_commits_nothing(
    rig: tuple[GatewayProcess, FaultProxy, Path, BackendSpec],
) -> None:
    gateway, _, _, spec = rig
    wrong = base64.b64encode(hashlib.md5(b"not the body").digest()).decode()
    status, answer = put(gateway, "big", BODY, content_md5=wrong, sha256=BODY_SHA256)
    assert status == 400
    assert b"<Code>BadDigest</Code>" in answer
    assert streamed(gateway, "client_error") == 1
    assert get(gateway, "big")[0] == 404
    gateway.stop()
    audit(gateway, spec)


def test_a_backend_reset_mid_body_is_503_with_exact_quotas(
    rig: tuple[GatewayProcess, FaultProxy, Path, BackendSpec],
) -> None:
    gateway, proxy, _, spec = rig
    proxy.set(Fault.RESET_REQUEST, after=8 * MiB)  # the backend connection dies after 8 MiB
    status, answer = put(gateway, "big", BODY, content_md5=BODY_MD5, sha256=BODY_SHA256)
    assert status == 503, answer
    proxy.set(Fault.PASS)
    assert get(gateway, "big")[0] == 404
    assert wait_for(lambda: streamed(gateway, "backend_error") == 1, timeout=10)
    # A small write afterwards goes through: nothing was left reserved.
    small = os.urandom(1024)
    status, _ = put(gateway, "small", small, content_md5=base64.b64encode(hashlib.md5(small).digest()).decode(),
                    sha256=hashlib.sha256(small).hexdigest())
    assert status == 200
    gateway.stop()
    audit(gateway, spec)
