"""A drain in a real gateway (twistd) over three moto backends, while PUTs go on and with a
restart in the middle: afterwards the drained backend holds nothing (checked on the backend
itself), every object reads back with its SHA-256 and the quotas are exact."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli.main import cli
from tests.conftest import backend_keys, quota_rows, s3_client
from tests.support.configs import GatewayConfig

TOKEN = "drain-admin-token"


def admin_cli(gw: Any, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, [*args, "--json", "--addr", gw.endpoint, "--timeout", "60"], env={"S3ORCH_ADMIN_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    answer.pop("request_id", None)
    return answer


@pytest.mark.slow
def test_a_drain_with_puts_going_on_and_a_restart_empties_the_backend(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    backends = moto_backends(3, quota=10_000_000)
    gw = start_gateway(GatewayConfig(backends=backends, extra={"ui": {"admin_token": TOKEN}}))
    s3: Any = s3_client(gw.endpoint, "photoskey", "photossecret")
    bodies: dict[str, bytes] = {}

    def put(key: str) -> None:
        bodies[key] = os.urandom(2000 + len(bodies))
        s3.put_object(Bucket="photos", Key=key, Body=bodies[key])

    for i in range(40):
        put(f"before/{i:03d}")
    assert len(backend_keys(backends[0])) == 40  # pack: all on the first backend
    assert admin_cli(gw, "drain", "backend-1") == {"status": "drain started", "backend": "backend-1"}
    for i in range(10):
        put(f"during/{i:03d}")  # none lands on the draining backend
    assert len(backend_keys(backends[0])) <= 40
    gw.stop()
    gw.start()  # the drain is persisted: the restarted gateway resumes it
    for i in range(10):
        put(f"after/{i:03d}")
    status = admin_cli(gw, "drain", "backend-1", "--status", "--wait", "--interval", "0.5")
    assert status["state"] == "completed" and status["objects_remaining"] == 0
    assert status["objects_moved"] == 40
    assert backend_keys(backends[0]) == []
    for key, body in bodies.items():
        got = s3.get_object(Bucket="photos", Key=key)["Body"].read()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest(), key
    quotas = quota_rows(gw)
    assert quotas["backend-1"]["used"] == 0 and quotas["backend-1"]["objects"] == 0
    total = sum(len(b) for b in bodies.values())
    assert sum(q["used"] for q in quotas.values()) == total
    assert sum(q["objects"] for q in quotas.values()) == len(bodies)
    stored = sum(size for spec in backends for _, size in backend_keys(spec))
    assert stored == total  # no copy left behind anywhere
