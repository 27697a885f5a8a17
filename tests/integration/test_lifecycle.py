"""Lifecycle expiration in a real ``twistd s3orch`` process over a moto backend.

A real process keeps the wall clock, and ``expiration_days`` is at least 1, so the test ages
objects the only way it can without waiting days: it moves their commit time back in the
SQLite database (the age the worker reads), then runs a pass through the admin API and the CLI.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
import urllib.request
from typing import Any

import boto3
from botocore.exceptions import ClientError
from click.testing import CliRunner

from s3orch.cli.main import cli
from tests.conftest import s3_client
from tests.support.configs import GatewayConfig
from tests.support.gateway import GatewayProcess

TOKEN = "lifecycle-admin-token"
DAY = 86400.0


def _age(gw: GatewayProcess, bucket: str, key: str, days: float) -> None:
    """Make the key's current version ``days`` old (as if it had been written then)."""
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10)
    try:
        with conn:
            changed = conn.execute(
                "UPDATE objects SET created_at = ? WHERE bucket = ? AND object_key = ?",
                (time.time() - days * DAY, bucket, key),
            ).rowcount
        assert changed == 1
    finally:
        conn.close()


def _lifecycle(gw: GatewayProcess) -> list[dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request(
        "POST", "/admin/api/lifecycle", body=b"",
        headers={"X-Admin-Token": TOKEN, "Accept": "application/x-ndjson", "Content-Length": "0"},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("content-type") == "application/x-ndjson"
    events = [json.loads(line) for line in response.read().splitlines()]
    conn.close()
    return events


def _lifecycle_worker(gw: GatewayProcess) -> dict[str, Any]:
    request = urllib.request.Request(f"{gw.endpoint}/admin/api/workers", headers={"X-Admin-Token": TOKEN})
    workers = json.loads(urllib.request.urlopen(request, timeout=10).read())["workers"]
    (found,) = [w for w in workers if w["name"] == "lifecycle"]
    assert found["lock_id"] == 1005 and found["running"] is True
    return dict(found)


def _backend_keys(backend: Any) -> list[str]:
    client = boto3.client(
        "s3", endpoint_url=backend.endpoint, aws_access_key_id=backend.access_key,
        aws_secret_access_key=backend.secret_key, region_name="us-east-1",
    )
    return [o["Key"] for o in client.list_objects_v2(Bucket=backend.bucket).get("Contents", [])]


def test_an_expired_object_disappears_after_an_admin_triggered_run(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    backends = moto_backends(1)
    gw = start_gateway(GatewayConfig(backends=backends, extra={
        "ui": {"admin_token": TOKEN},
        "lifecycle": {"rules": [{"prefix": "photos/tmp/", "expiration_days": 7}]},
    }))
    s3: Any = s3_client(gw.endpoint, "photoskey", "photossecret")
    for key in ("tmp/old", "tmp/new", "keep/old"):
        s3.put_object(Bucket="photos", Key=key, Body=key.encode())
    _age(gw, "photos", "tmp/old", 8)
    _age(gw, "photos", "keep/old", 8)  # old, but no rule covers it
    _age(gw, "photos", "tmp/new", 6)  # covered, but younger than 7 days
    assert len(_backend_keys(backends[0])) == 3

    events = _lifecycle(gw)
    assert [e["type"] for e in events][0] == "start" and events[-1]["type"] == "result"
    result = events[-1]
    assert (result["status"], result["failed"]) == ("ok", 0)
    # The hourly pass starts at a random moment in its first half hour: unless it happened to
    # run in the last seconds, the admin-triggered pass is the one that deleted.
    if _lifecycle_worker(gw)["last_tick_at"] is None:
        assert (result["outcome"], result["deleted"]) == ("success", 1)

    try:
        s3.head_object(Bucket="photos", Key="tmp/old")
        raise AssertionError("tmp/old survived its expiry")
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert s3.get_object(Bucket="photos", Key="tmp/new")["Body"].read() == b"tmp/new"
    assert s3.get_object(Bucket="photos", Key="keep/old")["Body"].read() == b"keep/old"
    assert len(_backend_keys(backends[0])) == 2  # its bytes were deleted from the backend too

    metrics = urllib.request.urlopen(f"{gw.endpoint}/metrics", timeout=10).read().decode()
    assert "s3o_lifecycle_deleted_total 1.0" in metrics
    assert 's3o_lifecycle_runs_total{status="success"}' in metrics

    ran = CliRunner().invoke(cli, ["lifecycle", "--config", str(gw.config_path)], env={"S3ORCH_ADMIN_TOKEN": TOKEN})
    assert ran.exit_code == 0, ran.output
    assert ran.stdout.startswith("lifecycle empty: deleted 0, failed 0")


def test_rules_added_by_a_sighup_expire_objects_without_a_restart(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.test_reload_and_modes import _hup_and_wait

    gw = start_gateway(GatewayConfig(backends=moto_backends(1), extra={"ui": {"admin_token": TOKEN}}))
    s3: Any = s3_client(gw.endpoint, "photoskey", "photossecret")
    s3.put_object(Bucket="photos", Key="scratch/1", Body=b"1")
    _age(gw, "photos", "scratch/1", 3)
    (result,) = [e for e in _lifecycle(gw) if e["type"] == "result"]
    assert (result["status"], result["reason"]) == ("skipped", "no lifecycle rules are configured")
    with gw.config_path.open("a") as config:
        config.write('lifecycle:\n  rules:\n    - prefix: "photos/scratch/"\n      expiration_days: 2\n')
    _hup_and_wait(gw, "Configuration reload complete")
    (result,) = [e for e in _lifecycle(gw) if e["type"] == "result"]
    assert (result["status"], result["deleted"]) == ("ok", 1) or _lifecycle_worker(gw)["last_tick_at"] is not None
    assert s3.list_objects_v2(Bucket="photos").get("KeyCount") == 0
