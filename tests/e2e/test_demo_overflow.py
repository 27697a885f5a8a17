"""What a new user does in the demo: ``aws s3 cp`` of 50 MiB, then of 20 MiB.

The demo's backends (``tools.demo.BACKENDS``: pack over 64, 64 and 256 MiB
quotas, SeaweedFS) with the AWS CLI's default 8 MiB multipart chunks.  The first
upload nearly fills the first backend; the second must still succeed, its parts
overflowing to the next backend part by part, and both files must read back
byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import backend_keys, quota_rows
from tests.e2e.conftest import venv_tool
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.servers import WeedServer, create_bucket
from tools.demo import BACKENDS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024
KEY, SECRET = "demo-e2e-key", "demo-e2e-secret-0123456789"


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, list[BackendSpec]]]:
    weed = WeedServer(tmp_path_factory.mktemp("demo-weed"), KEY, SECRET)
    weed.start()
    specs = []
    for demo in BACKENDS:
        bucket = f"{demo.bucket}-{uuid.uuid4().hex[:8]}"
        create_bucket(weed.endpoint, bucket, KEY, SECRET, "us-east-1")
        specs.append(BackendSpec(demo.name, weed.endpoint, bucket, KEY, SECRET, quota_bytes=demo.quota_bytes))
    proc = GatewayProcess(tmp_path_factory.mktemp("demo-gw"),
                          GatewayConfig(backends=specs, routing_strategy="pack").render())
    proc.start()
    yield proc, specs
    proc.stop()
    weed.stop(timeout=3)


def _file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_aws_cli_cp_of_20_mib_after_50_mib_overflows_part_by_part(
    demo_like: tuple[GatewayProcess, list[BackendSpec]], tmp_path: Path
) -> None:
    gw, specs = demo_like
    assert [s.quota_bytes for s in specs] == [64 * MiB, 64 * MiB, 256 * MiB]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="photoskey", AWS_SECRET_ACCESS_KEY="photossecret", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               HOME=str(tmp_path))
    aws = [venv_tool("aws"), "--endpoint-url", gw.endpoint]
    digests = {}
    for name, size in (("fifty.bin", 50 * MiB), ("twenty.bin", 20 * MiB)):
        digests[name] = _file(tmp_path / name, size)
        done = subprocess.run([*aws, "s3", "cp", str(tmp_path / name), f"s3://photos/{name}"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    first = quota_rows(gw)
    assert first[specs[1].name]["used"] > 0, "the 20 MiB upload should have overflowed to weed-2"
    for name, digest in digests.items():
        out = tmp_path / f"{name}.out"
        done = subprocess.run([*aws, "s3", "cp", f"s3://photos/{name}", str(out)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10)
    try:
        placed = conn.execute(
            "SELECT object_key, part_number, backend_name FROM object_locations ORDER BY object_key, part_number"
        ).fetchall()
    finally:
        conn.close()
    twenty = [backend for key, _, backend in placed if key == "twenty.bin"]
    assert len(twenty) == 3 and set(twenty) == {"weed-1", "weed-2"}  # 8 + 4 MiB fit weed-1, 8 did not
    rows = quota_rows(gw)
    for spec in specs:
        held = backend_keys(spec)
        assert rows[spec.name]["used"] == sum(size for _, size in held) <= spec.quota_bytes
        assert rows[spec.name]["reserved"] == 0
