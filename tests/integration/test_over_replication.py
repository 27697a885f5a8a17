"""The over-replication cleaner in a real gateway (twistd) over three real backends (two moto
buckets, one SeaweedFS bucket, behind the fault rig's proxies): objects given three copies by a
factor-3 gateway are trimmed to two by the same database under ``factor: 2`` after a restart,
the copies on the fullest backend going; the backends themselves hold exactly two copies,
quotas are exact and the fault rig's auditor is clean.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import threading
import time
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
    assert_two_copies_of_each_write,
    own_moto,
    rig,
)
from tests.support.configs import GatewayConfig
from tests.support.faultproxy import Fault
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


def test_a_factor_three_replicator_and_a_factor_two_cleaner_race_on_postgresql_with_overwrites(
    start_gateway, moto_backends, postgres_dsn: str  # type: ignore[no-untyped-def]
) -> None:
    """The adversarial case: one instance copies to three while the other trims to two, both
    overwriting the same keys; every copy left is its write's, the auditor is clean, and once
    the copier stops, the cleaner leaves exactly two copies of everything with quotas exact."""

    from tests.integration.test_replication import _admin_post
    from tests.support.postgres import database_section

    backends = moto_backends(3)

    def config(factor: int) -> GatewayConfig:
        return GatewayConfig(
            backends=backends,
            database=database_section(postgres_dsn, max_conns=16),
            extra={
                "ui": {"admin_token": TOKEN},
                "replication": {"factor": factor, "worker_interval": "24h", "batch_size": 5, "concurrency": 4},
            },
        )

    copier, trimmer = start_gateway(config(3), name="three"), start_gateway(config(2), name="two")
    clients = [_client(copier), _client(trimmer)]
    keys = [f"r/{i:02d}" for i in range(18)]
    for index, key in enumerate(keys):
        clients[index % 2].put_object(Bucket="photos", Key=key, Body=f"{key} v0 ".encode() * 300)
    stop = threading.Event()
    failures: list[BaseException] = []
    answers: dict[str, list[dict[str, Any]]] = {"replicate": [], "over-replication": []}

    def overwrite(side: int) -> None:
        version = 0
        try:
            while not stop.is_set():
                version += 1
                for key in keys[side::3]:
                    body = f"{key} v{version} side {side} ".encode() * (200 + version)
                    clients[side].put_object(Bucket="photos", Key=key, Body=body)
        except BaseException as exc:
            failures.append(exc)

    copying = threading.Event()

    def passes(gw: GatewayProcess, path: str) -> None:
        """Five replicate passes; cleaner passes for as long as the copier runs (and one more)."""
        try:
            count = 0
            while count < 5 if path == "replicate" else not copying.is_set():
                status, body = _admin_post(gw, path)
                assert status == 200, body
                answers[path].append(body)
                count += 1
            answers[path].append(_admin_post(gw, path)[1])
        except BaseException as exc:
            failures.append(exc)
        finally:
            if path == "replicate":
                copying.set()

    threads = [threading.Thread(target=overwrite, args=(side,)) for side in (0, 1)]
    runners = [
        threading.Thread(target=passes, args=(copier, "replicate")),
        threading.Thread(target=passes, args=(trimmer, "over-replication")),
    ]
    for thread in threads + runners:
        thread.start()
    for thread in runners:
        thread.join(180)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert failures == []
    made = sum(a.get("copies_created", 0) for a in answers["replicate"])
    removed = sum(a.get("copies_removed", 0) for a in answers["over-replication"])
    print(f"racing: {made} copies made at factor 3, {removed} removed at factor 2")
    assert made > 0 and removed > 0
    # Quiet now: the factor-2 instance brings everything to exactly two.
    _admin_post(trimmer, "replicate")
    _admin_post(trimmer, "over-replication")
    assert_two_copies_of_each_write(postgres_dsn, backends, keys)


def _breaker(gw: GatewayProcess, backend: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request("GET", "/admin/api/status", headers={"X-Admin-Token": TOKEN})
        status = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    [found] = [b for b in status["backends"] if b["name"] == backend]
    return str(found["circuit_breaker"]["state"])


def test_a_backend_down_past_the_threshold_is_replaced_then_the_excess_removed_after_recovery(
    rig: Rig,  # noqa: F811  # the imported fixture
    start_gateway,  # type: ignore[no-untyped-def]
) -> None:
    """Issue 16's acceptance: factor 2; backend-1 refuses connections past
    ``unhealthy_threshold``, so replacement copies appear on the healthy backends; once it is
    back (its breaker closed by a probe) the cleaner leaves exactly two copies, quotas exact."""
    gw = start_gateway(
        GatewayConfig(
            backends=rig.specs(),
            extra={
                "ui": {"admin_token": TOKEN},
                "replication": {"factor": 2, "worker_interval": "24h", "unhealthy_threshold": "1s"},
                "backend_circuit_breaker": {"enabled": True, "failure_threshold": 1, "open_timeout": "3s"},
            },
        )
    )
    from tests.integration.test_replication import _admin_post

    client = _client(gw)
    bodies = {f"h/{i:02d}": bytes([97 + i]) * (3000 + 111 * i) for i in range(6)}
    for key, body in bodies.items():
        client.put_object(Bucket="photos", Key=key, Body=body)
    _admin_post(gw, "replicate")
    assert all(sorted(b for _, b, _ in _locations(gw, k)) == ["backend-1", "backend-2"] for k in bodies)
    rig.proxies[0].set(Fault.REFUSE)  # backend-1 down
    for key, body in bodies.items():  # the first read fails over (and opens backend-1's breaker)
        assert client.get_object(Bucket="photos", Key=key)["Body"].read() == body
    assert _breaker(gw, "backend-1") == "open"
    time.sleep(1.2)  # past unhealthy_threshold
    status, answer = _admin_post(gw, "replicate")
    assert status == 200 and answer["copies_created"] == len(bodies), answer
    assert all(
        sorted(b for _, b, _ in _locations(gw, k)) == ["backend-1", "backend-2", "backend-3"] for k in bodies
    )
    # Back: after open_timeout a write probes backend-1 (pack: the first) and closes its breaker.
    rig.proxies[0].set(Fault.PASS)
    time.sleep(3.2)
    client.put_object(Bucket="photos", Key="probe", Body=b"probe")
    assert _breaker(gw, "backend-1") == "closed"
    status, answer = _admin_post(gw, "over-replication")
    assert status == 200 and answer["copies_removed"] == len(bodies), answer
    _admin_post(gw, "replicate")  # "probe" gets its second copy
    for key, body in bodies.items():
        assert len(_locations(gw, key)) == 2, key
        assert client.get_object(Bucket="photos", Key=key)["Body"].read() == body
    total = sum(len(b) for b in bodies.values()) + len(b"probe")
    deadline = time.monotonic() + 30
    while True:
        rows = quota_rows(gw)
        settled = all(r["orphan"] == 0 and r["reserved"] == 0 for r in rows.values())
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert settled, rows
    assert sum(r["used"] for r in rows.values()) == 2 * total
    assert sum(len(backend_keys(spec)) for spec in rig.direct) == 2 * (len(bodies) + 1)
    _audit(gw, rig.direct)
