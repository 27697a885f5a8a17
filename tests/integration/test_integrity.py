"""Integrity in a real gateway (twistd) over three real backends (moto and SeaweedFS behind the
fault rig's proxies): a copy corrupted on its backend, behind s3orch's back, is found by the
scrubber, dropped with its row, rebuilt by the replicator from the good copy, and every copy on
the backends (read directly) is its object's bytes again; quotas settle exactly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from s3orch.cli.main import cli
from tests.conftest import PHOTOS, quota_rows, s3_client
from tests.integration.test_replication import (  # noqa: F401  # the fixtures
    TOKEN,
    Rig,
    _locations,
    _replicate,
    own_moto,
    rig,
)
from tests.support.configs import GatewayConfig
from tests.support.gateway import GatewayProcess


def _admin(gw: GatewayProcess, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, [*args, "--json", "--config", str(gw.config_path)], env={"S3ORCH_ADMIN_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_a_copy_corrupted_on_its_backend_is_scrubbed_and_rebuilt_from_the_other(
    rig: Rig,  # noqa: F811  # the imported fixture
    tmp_path: Path,
) -> None:
    config = GatewayConfig(
        backends=rig.specs(),
        extra={
            "ui": {"admin_token": TOKEN},
            "replication": {"factor": 2, "worker_interval": "24h", "batch_size": 10},
            "integrity": {"enabled": True, "verify_on_read": True, "scrubber_interval": "24h"},
        },
    ).render()
    gw = GatewayProcess(tmp_path / "gw", config).start()
    try:
        client = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
        bodies = {f"scrub/{i}": bytes([97 + i]) * (50_000 + 1000 * i) for i in range(4)}
        for key, body in bodies.items():
            client.put_object(Bucket="photos", Key=key, Body=body)
        assert _replicate(gw)["copies_created"] == len(bodies)
        victim_key = "scrub/2"
        _, victim_backend, victim_storage = _locations(gw, victim_key)[0]
        spec = {s.name: s for s in rig.direct}[victim_backend]
        direct = s3_client(spec.endpoint, spec.access_key, spec.secret_key)
        tampered = bytearray(bodies[victim_key])
        tampered[1234] ^= 0x55
        direct.put_object(Bucket=spec.bucket, Key=victim_storage, Body=bytes(tampered))  # behind s3orch's back

        verdicts = _admin(gw, "object-scrub", f"photos/{victim_key}")
        assert verdicts["mismatches"] == 1
        assert {(c["backend"], c["verdict"]) for c in verdicts["copies"]} == {
            (victim_backend, "mismatch"), *((b, "verified") for _, b, _ in _locations(gw, victim_key)),
        }
        assert [b for _, b, _ in _locations(gw, victim_key)] != [victim_backend]
        assert len(_locations(gw, victim_key)) == 1  # dropped with its row: the replicator sees it
        scrub = _admin(gw, "scrub", "--batch-size", "20")
        assert scrub["mismatches"] == 0 and scrub["checked"] == 2 * len(bodies) - 1
        assert _replicate(gw)["copies_created"] == 1
        for key, body in bodies.items():
            copies = _locations(gw, key)
            assert len({b for _, b, _ in copies}) == 2, key
            for _, backend, storage_key in copies:
                held = {s.name: s for s in rig.direct}[backend]
                got = s3_client(held.endpoint, held.access_key, held.secret_key).get_object(
                    Bucket=held.bucket, Key=storage_key
                )["Body"].read()
                assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), (key, backend)
            assert client.get_object(Bucket="photos", Key=key)["Body"].read() == body
        quotas = quota_rows(gw)
        assert sum(q["used"] for q in quotas.values()) == 2 * sum(len(b) for b in bodies.values())
        assert all(q["reserved"] == 0 for q in quotas.values())
        assert all(q["orphan"] == 0 for q in quotas.values()), quotas  # the bad copy was deleted
    finally:
        gw.stop()
