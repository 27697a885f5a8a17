"""compress-existing / decompress-existing through a real twistd over SeaweedFS (issue 18 item 2).

A few hundred text objects written while compression was off: ``POST /admin/api/compress-existing``
shrinks the bytes the backends hold (listed directly on the backends, not through s3orch), every
object reads back byte-exact (ranges too), ``bytes_used`` equals the backends' bytes;
``decompress-existing`` brings the backends back to the client's bytes; the auditor finds every
backend object referenced or queued.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PHOTOS, quota_rows, s3_client
from tests.integration.conftest import fresh_bucket
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.polling import poll

TOKEN = "compression-admin-token"
ROOT = Path(__file__).resolve().parents[2]
CHUNK = 16 * 1024


def _admin(gw: Any, path: str) -> tuple[int, dict[str, Any]]:
    """POST /admin/api/PATH: (status, JSON answer)."""
    request = urllib.request.Request(
        f"{gw.endpoint}/admin/api/{path}", data=b"{}", method="POST",
        headers={"X-Admin-Token": TOKEN, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            body: dict[str, Any] = json.loads(answer.read())
            body.pop("request_id", None)
            return answer.status, body
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _backend_bytes(specs: list[BackendSpec]) -> int:
    """The bytes every backend bucket holds, listed on the backends themselves."""
    total = 0
    for spec in specs:
        client: Any = s3_client(spec.endpoint, spec.access_key, spec.secret_key)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket):
            total += sum(item["Size"] for item in page.get("Contents", []))
    return total


def _used(gw: Any) -> int:
    return sum(row["used"] for row in quota_rows(gw).values())


@pytest.mark.slow
def test_compress_and_decompress_existing_over_seaweedfs(weed, start_gateway) -> None:  # type: ignore[no-untyped-def]
    specs = [
        BackendSpec(f"weed-{i}", weed.endpoint, fresh_bucket(weed), weed.access_key, weed.secret_key,
                    quota_bytes=512 * 1024 * 1024)
        for i in (1, 2)
    ]

    def config(compression: bool) -> GatewayConfig:
        section = {"enabled": compression, "chunk_size": CHUNK, "min_size": 2048}
        return GatewayConfig(backends=specs, routing_strategy="spread",
                             extra={"ui": {"admin_token": TOKEN}, "compression": section})

    gw = start_gateway(config(False))
    text = b"".join(p.read_bytes() for p in sorted((ROOT / "s3orch").rglob("*.py")))
    expected = {f"docs/{i:03d}": text[i * 997 : i * 997 + 2048 + (i * 331) % 40000] for i in range(300)}
    expected.update({f"noise/{i}": os.urandom(20000 + i) for i in range(5)})
    s3: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    for key, body in expected.items():
        s3.put_object(Bucket="photos", Key=key, Body=body)
    plain_bytes = _backend_bytes(specs)
    assert plain_bytes == sum(len(b) for b in expected.values()) == _used(gw)
    status, refused = _admin(gw, "compress-existing")
    assert (status, refused["error"]) == (400, "compression not enabled")

    def restart(compression: bool) -> None:
        gw.stop()
        gw._config_text = config(compression).render()
        gw._write_config(gw.port)
        gw.start()

    def check() -> int:
        for key, body in expected.items():
            assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == body, key
        for key in [k for k, b in expected.items() if len(b) > 2 * CHUNK][:5]:
            body = expected[key]
            got = s3.get_object(Bucket="photos", Key=key, Range=f"bytes={CHUNK - 10}-{CHUNK + 20}")["Body"].read()
            assert got == body[CHUNK - 10 : CHUNK + 21]
        auditor = Auditor(lambda: sqlite3.connect(gw.workdir / "s3orch.db"), specs)
        poll(auditor.audit, lambda r: not r.problems, timeout=60).assert_clean()
        stored = poll(lambda: _backend_bytes(specs), lambda b: b == _used(gw), timeout=60)
        assert stored == _used(gw)
        return stored

    restart(True)
    status, result = _admin(gw, "compress-existing")
    assert status == 200, result
    assert result == {"status": "complete", "compressed": 300, "skipped": 5, "failed": 0, "total": 305}
    compressed_bytes = check()
    assert compressed_bytes < plain_bytes * 0.6, (compressed_bytes, plain_bytes)
    status, again = _admin(gw, "compress-existing")
    assert (again["compressed"], again["failed"]) == (0, 0)
    assert _backend_bytes(specs) == compressed_bytes

    restart(False)  # decompress-existing is how compression is left
    status, back = _admin(gw, "decompress-existing")
    assert status == 200 and back == {"status": "complete", "decompressed": 300, "skipped": 0, "failed": 0,
                                      "total": 300}
    assert check() == plain_bytes
    assert _admin(gw, "decompress-existing")[1]["total"] == 0
