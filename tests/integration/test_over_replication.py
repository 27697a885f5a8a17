"""The over-replication cleaner in a real gateway (twistd) over three real backends (two moto
buckets, one SeaweedFS bucket, behind the fault rig's proxies): objects given three copies by a
factor-3 gateway are trimmed to two by the same database under ``factor: 2`` after a restart,
the copies on the fullest backend going; the backends themselves hold exactly two copies,
quotas are exact and the fault rig's auditor is clean.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from s3orch.cli.main import cli
from tests.conftest import backend_keys, quota_rows
from tests.integration.test_replication import (  # noqa: F401  # the fixtures
    TOKEN,
    Rig,
    _audit,
    _client,
    _locations,
    own_moto,
    rig,
)
from tests.support.configs import GatewayConfig
from tests.support.gateway import GatewayProcess

MB = 1024 * 1024


def _admin(gw: GatewayProcess, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, [*args, "--json", "--config", str(gw.config_path)], env={"S3ORCH_ADMIN_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def _config(backends: Rig, factor: int) -> str:
    # backend-3 has the smallest quota: once it holds copies it is the fullest.
    specs = [
        dataclasses.replace(spec, quota_bytes=(8 if spec.name == "backend-3" else 64) * MB)
        for spec in backends.specs()
    ]
    return GatewayConfig(
        backends=specs,
        extra={
            "ui": {"admin_token": TOKEN},
            "replication": {"factor": factor, "worker_interval": "24h", "batch_size": 4},
        },
    ).render()


def test_excess_copies_are_removed_from_the_fullest_backend_after_the_factor_drops(
    rig: Rig,  # noqa: F811  # the imported fixture
    tmp_path: Path,
) -> None:
    gw = GatewayProcess(tmp_path / "gw", _config(rig, 3)).start()
    try:
        client = _client(gw)
        bodies = {f"obj/{i:02d}": bytes([65 + i]) * (2048 + 331 * i) for i in range(9)}
        for key, body in bodies.items():
            client.put_object(Bucket="photos", Key=key, Body=body)
        assert _admin(gw, "replicate")["copies_created"] == 2 * len(bodies)
        assert all(len(_locations(gw, key)) == 3 for key in bodies)
        gw.stop()
        gw._config_text = _config(rig, 2)
        gw._write_config(gw.port)
        gw.start()
        preview = _admin(gw, "over-replication")
        assert (preview["factor"], preview["pending"]) == (2, len(bodies))
        assert {v["backend"] for r in preview["removals"] for v in r["remove"]} == {"backend-3"}
        assert all(len(_locations(gw, key)) == 3 for key in bodies)  # a preview removes nothing
        done = _admin(gw, "over-replication", "--execute")
        assert (done["status"], done["copies_removed"]) == ("ok", len(bodies))
        assert done["bytes_freed"] == sum(len(b) for b in bodies.values())
        for key, body in bodies.items():
            assert sorted(b for _, b, _ in _locations(gw, key)) == ["backend-1", "backend-2"], key
            got = client.get_object(Bucket="photos", Key=key)["Body"].read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), key
        # The backends themselves: two copies of everything, nothing left on backend-3.
        assert backend_keys(rig.direct[2]) == []
        assert sum(len(backend_keys(spec)) for spec in rig.direct) == 2 * len(bodies)
        rows = quota_rows(gw)
        assert sum(r["used"] for r in rows.values()) == 2 * sum(len(b) for b in bodies.values())
        assert all(r["orphan"] == 0 and r["reserved"] == 0 for r in rows.values()), rows
        assert rows["backend-3"]["objects"] == 0
        _audit(gw, rig.direct)
        # Nothing more: neither the cleaner nor the replicator has work.
        assert _admin(gw, "over-replication", "--execute")["copies_removed"] == 0
        assert _admin(gw, "replicate")["copies_created"] == 0
    finally:
        gw.stop()
