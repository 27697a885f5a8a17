"""Replication in a real gateway (twistd) over three real backends (issue 16's acceptance):

two moto buckets (one on a moto_server process of this test's own) and one SeaweedFS bucket,
each behind the fault rig's TCP proxy.  With ``replication.factor: 2`` a replicator pass
(``s3orch-admin replicate``) puts every object on two distinct backends (checked on the
backends themselves); with any one backend refusing connections every object reads back with
its SHA-256, and with a backend process really stopped too; an overwrite racing a copy keeps
its own bytes and the refused copy is deleted by its own key.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli.main import cli
from tests.conftest import PHOTOS, backend_keys, quota_rows, s3_client
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY, fresh_bucket
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.servers import MotoServer, WeedServer, create_bucket

TOKEN = "replication-admin-token"
#: Long enough that the jittered start-up pass (within half of it) never runs during the test:
#: the test runs its passes itself.
INTERVAL = "24h"


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A moto_server of this test's own, so stopping it stops exactly one backend."""
    server = MotoServer(log_path=tmp_path / "moto-own.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Rig:
    """Three backends behind proxies, and the gateway over them."""

    def __init__(self, moto_server: MotoServer, own: MotoServer, weed: WeedServer) -> None:
        self.servers: list[Any] = [moto_server, weed, own]
        self.proxies = [FaultProxy.for_endpoint(s.endpoint).start() for s in self.servers]
        self.direct: list[BackendSpec] = []
        for index, server in enumerate(self.servers):
            if isinstance(server, WeedServer):
                bucket = fresh_bucket(server)
                spec = BackendSpec(f"backend-{index + 1}", server.endpoint, bucket, WEED_ACCESS_KEY, WEED_SECRET_KEY)
            else:
                bucket = f"rep{index}-{time.time_ns() % 10**9}"
                create_bucket(server.endpoint, bucket, "testing", "testing", "us-east-1")
                spec = BackendSpec(f"backend-{index + 1}", server.endpoint, bucket)
            self.direct.append(spec)

    def specs(self) -> list[BackendSpec]:
        """The backends as the gateway sees them: through the proxies."""
        return [
            BackendSpec(s.name, p.endpoint, s.bucket, s.access_key, s.secret_key)
            for s, p in zip(self.direct, self.proxies, strict=True)
        ]

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.stop()


@pytest.fixture
def rig(moto_server: MotoServer, own_moto: MotoServer, weed: WeedServer) -> Iterator[Rig]:
    made = Rig(moto_server, own_moto, weed)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def gateway(start_gateway, rig: Rig) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        GatewayConfig(
            backends=rig.specs(),
            extra={
                "ui": {"admin_token": TOKEN},
                "replication": {"factor": 2, "worker_interval": INTERVAL, "batch_size": 7, "concurrency": 3},
            },
        )
    )


def _replicate(gw: GatewayProcess) -> dict[str, Any]:
    """``s3orch-admin replicate --json``: one pass, its answer."""
    result = CliRunner().invoke(
        cli, ["replicate", "--json", "--config", str(gw.config_path)], env={"S3ORCH_ADMIN_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def _locations(gw: GatewayProcess, key: str) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10)
    try:
        rows = conn.execute(
            "SELECT part_number, backend_name, storage_key FROM object_locations"
            " WHERE bucket = 'photos' AND object_key = ? ORDER BY part_number, backend_name",
            (key,),
        ).fetchall()
    finally:
        conn.close()
    return [(int(r[0]), r[1], r[2]) for r in rows]


def _audit(gw: GatewayProcess, backends: list[BackendSpec]) -> None:
    """The fault rig's auditor (nothing leaked, referenced bytes present, quotas exact)."""
    Auditor(lambda: sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10), backends).audit().assert_clean()


def _client(gw: GatewayProcess) -> Any:
    return s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_factor_two_reaches_two_backends_and_survives_any_one_stopped(
    gateway: GatewayProcess, rig: Rig, own_moto: MotoServer
) -> None:
    client = _client(gateway)
    bodies = {f"obj/{i:02d}": bytes([i]) * (4096 + 997 * i) for i in range(20)}
    for key, body in bodies.items():
        client.put_object(Bucket="photos", Key=key, Body=body)
    # A multipart object: its parts are extents replicated one by one.
    part = b"m" * (5 * 1024 * 1024)
    upload = client.create_multipart_upload(Bucket="photos", Key="big")["UploadId"]
    etags = [
        client.upload_part(Bucket="photos", Key="big", UploadId=upload, PartNumber=n, Body=body)["ETag"]
        for n, body in ((1, part), (2, b"tail"))
    ]
    client.complete_multipart_upload(
        Bucket="photos", Key="big", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    bodies["big"] = part + b"tail"
    # Progress bar on stderr, the answer on stdout.
    shown = CliRunner().invoke(cli, ["replicate", "--config", str(gateway.config_path)], env={"S3ORCH_ADMIN_TOKEN": TOKEN})
    assert shown.exit_code == 0, shown.output
    assert "copies created: 22" in shown.stdout and "replicate" in shown.stderr
    for key in bodies:
        per_part: dict[int, set[str]] = {}
        for number, backend, _ in _locations(gateway, key):
            per_part.setdefault(number, set()).add(backend)
        assert per_part and all(len(holders) == 2 for holders in per_part.values()), (key, per_part)
    # The backends themselves hold the copies: two of every extent, nothing else.
    on_backends = sum(len(backend_keys(spec)) for spec in rig.direct)
    assert on_backends == 2 * (len(bodies) - 1 + 2)
    # Quota exact: used bytes are two copies of everything; nothing orphaned or reserved.
    rows = quota_rows(gateway)
    assert sum(r["used"] for r in rows.values()) == 2 * sum(len(b) for b in bodies.values())
    assert all(r["orphan"] == 0 and r["reserved"] == 0 for r in rows.values()), rows
    assert _replicate(gateway)["copies_created"] == 0
    _audit(gateway, rig.direct)
    # Any one backend down (connections reset): every object reads back, byte for byte.
    for proxy in rig.proxies:
        proxy.set(Fault.REFUSE)
        for key, body in bodies.items():
            got = client.get_object(Bucket="photos", Key=key)["Body"].read()
            assert _sha(got) == _sha(body), key
            assert client.head_object(Bucket="photos", Key=key)["ContentLength"] == len(body)
        proxy.set(Fault.PASS)
    # A backend process really stopped.
    own_moto.stop()
    for key, body in bodies.items():
        assert _sha(client.get_object(Bucket="photos", Key=key)["Body"].read()) == _sha(body), key


def test_an_overwrite_racing_a_copy_keeps_its_bytes_and_only_the_new_copy_is_deleted(
    gateway: GatewayProcess, rig: Rig
) -> None:
    client = _client(gateway)
    old, new = b"o" * 300_000, b"n" * 200_000
    client.put_object(Bucket="photos", Key="race", Body=old)
    ((_, first, old_key),) = _locations(gateway, "race")
    assert first == "backend-1"  # pack: the first backend; the copy goes to backend-2
    rig.proxies[1].set(Fault.DELAY, delay=2.5)  # the copy is stored, its answer held back
    answers: list[dict[str, Any]] = []
    passing = threading.Thread(target=lambda: answers.append(_replicate(gateway)))
    passing.start()
    time.sleep(1.0)
    client.put_object(Bucket="photos", Key="race", Body=new)  # backend-1, committed at once
    passing.join(30)
    rig.proxies[1].set(Fault.PASS)
    assert answers and answers[0]["copies_created"] == 0 and answers[0]["stale"] == 1, answers
    ((_, holder, new_key),) = _locations(gateway, "race")
    assert new_key != old_key
    # The new write's bytes are intact where it was written; the refused copy is gone by its own key.
    direct = {spec.name: spec for spec in rig.direct}
    holder_client = s3_client(direct[holder].endpoint, direct[holder].access_key, direct[holder].secret_key)
    stored = holder_client.get_object(Bucket=direct[holder].bucket, Key=new_key)["Body"].read()  # type: ignore[attr-defined]
    assert _sha(stored) == _sha(new)
    deadline = time.monotonic() + 10
    while backend_keys(direct["backend-2"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend_keys(direct["backend-2"]) == []
    assert _sha(client.get_object(Bucket="photos", Key="race")["Body"].read()) == _sha(new)
    # The next pass replicates the new write, never the old one.
    assert _replicate(gateway)["copies_created"] == 1
    copies = _locations(gateway, "race")
    assert len({backend for _, backend, _ in copies}) == 2
    for _, backend, key in copies:
        spec = direct[backend]
        reader = s3_client(spec.endpoint, spec.access_key, spec.secret_key)
        assert _sha(reader.get_object(Bucket=spec.bucket, Key=key)["Body"].read()) == _sha(new)  # type: ignore[attr-defined]
    # The old write's copy was displaced by the overwrite; once the queue is empty, nothing leaked.
    deadline = time.monotonic() + 15
    while quota_rows(gateway)["backend-1"]["orphan"] and time.monotonic() < deadline:
        time.sleep(0.2)
    _audit(gateway, rig.direct)


def test_replicate_streams_ndjson_progress_one_step_per_extent(
    gateway: GatewayProcess, rig: Rig
) -> None:
    client = _client(gateway)
    for index in range(4):
        client.put_object(Bucket="photos", Key=f"s/{index}", Body=b"s" * 1000)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    conn.request("POST", "/admin/api/replicate", headers={
        "X-Admin-Token": TOKEN, "Accept": "application/x-ndjson", "Content-Length": "0",
    })
    response = conn.getresponse()
    events = [json.loads(line) for line in response.read().splitlines()]
    conn.close()
    assert response.status == 200
    assert [e["type"] for e in events][:1] == ["start"] and events[-1]["type"] == "result"
    assert sum(1 for e in events if e["type"] == "step_end" and e["outcome"] == "copied") == 4
    assert events[-1]["copies_created"] == 4


def test_two_instances_on_postgresql_replicate_while_both_overwrite_and_every_copy_is_its_write(
    start_gateway, moto_backends, postgres_dsn: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:

    from tests.support.postgres import database_section

    backends = moto_backends(3)
    config = GatewayConfig(
        backends=backends,
        database=database_section(postgres_dsn, max_conns=16),
        extra={
            "ui": {"admin_token": TOKEN},
            "replication": {"factor": 2, "worker_interval": INTERVAL, "batch_size": 5, "concurrency": 4},
        },
    )
    gateways = [start_gateway(config, name="a"), start_gateway(config, name="b")]
    clients = [_client(gw) for gw in gateways]
    keys = [f"k/{i:02d}" for i in range(24)]
    for index, key in enumerate(keys):
        clients[index % 2].put_object(Bucket="photos", Key=key, Body=f"{key} v0 ".encode() * 400)
    stop = threading.Event()
    failures: list[BaseException] = []

    def overwrite(side: int) -> None:
        version = 0
        try:
            while not stop.is_set():
                version += 1
                for key in keys[side::3]:
                    body = f"{key} v{version} side {side} ".encode() * (300 + version)
                    clients[side].put_object(Bucket="photos", Key=key, Body=body)
        except BaseException as exc:
            failures.append(exc)

    answers: list[dict[str, Any]] = []

    def replicate(gw: GatewayProcess) -> None:
        try:
            for _ in range(4):
                status, body = _admin_post(gw, "replicate")
                assert status == 200, body
                answers.append(body)
        except BaseException as exc:
            failures.append(exc)

    writers = [threading.Thread(target=overwrite, args=(side,)) for side in (0, 1)]
    passes = [threading.Thread(target=replicate, args=(gw,)) for gw in gateways]
    for thread in writers + passes:
        thread.start()
    for thread in passes:
        thread.join(120)
    stop.set()
    for thread in writers:
        thread.join(60)
    assert failures == []
    ran = [a for a in answers if a["status"] == "ok"]
    print(
        f"passes: {len(ran)} ran, {len(answers) - len(ran)} skipped (lock);"
        f" copies {sum(a['copies_created'] for a in ran)}, refused as stale {sum(a['stale'] for a in ran)}"
    )
    for gw in gateways:  # quiet now: one more pass each (one may find the other's lock)
        _admin_post(gw, "replicate")
    _admin_post(gateways[0], "replicate")
    assert_two_copies_of_each_write(postgres_dsn, backends, keys)


def assert_two_copies_of_each_write(postgres_dsn: str, backends: Rig, keys: list[str]) -> None:
    """Once quiet: every key has exactly two copies on distinct backends, each copy's bytes are
    its write's (read from the backend directly), quotas settle to the referenced bytes, and the
    auditor finds nothing leaked."""
    import psycopg2

    from tests.conftest import postgres_quota_rows
    from tests.support.auditor import Auditor

    conn = psycopg2.connect(postgres_dsn)
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT o.object_key, o.etag, o.size_bytes, l.backend_name, l.storage_key FROM objects o"
            " JOIN object_locations l ON l.bucket = o.bucket AND l.object_key = o.object_key"
            " WHERE o.bucket = 'photos' ORDER BY o.object_key, l.backend_name"
        )
        rows = cur.fetchall()
    finally:
        conn.close()
    direct = {spec.name: spec for spec in backends}
    copies: dict[str, list[str]] = {}
    total = 0
    for key, etag, size, backend, storage_key in rows:
        copies.setdefault(key, []).append(backend)
        spec = direct[backend]
        reader = s3_client(spec.endpoint, spec.access_key, spec.secret_key)
        data = reader.get_object(Bucket=spec.bucket, Key=storage_key)["Body"].read()  # type: ignore[attr-defined]
        assert hashlib.md5(data).hexdigest() == etag, (key, backend)  # every copy is its write's
        total += int(size)
    assert sorted(copies) == keys
    assert all(len(set(holders)) == len(holders) == 2 for holders in copies.values()), copies
    quotas = poll(
        lambda: postgres_quota_rows(postgres_dsn),
        lambda rows: all(r["orphan"] == 0 and r["reserved"] == 0 for r in rows.values()),
        timeout=30,
    )
    assert all(r["orphan"] == 0 and r["reserved"] == 0 for r in quotas.values()), quotas
    assert sum(r["used"] for r in quotas.values()) == total
    Auditor(lambda: psycopg2.connect(postgres_dsn), backends).audit().assert_clean()


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _admin_post(gw: GatewayProcess, path: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
    conn.request("POST", "/admin/api/" + path, headers={"X-Admin-Token": TOKEN, "Content-Length": "0"})
    response = conn.getresponse()
    out = response.status, json.loads(response.read())
    conn.close()
    return out


@pytest.mark.slow
def test_replicating_a_large_object_does_not_grow_the_gateways_memory(
    start_gateway, moto_backends, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    import os

    from boto3.s3.transfer import TransferConfig

    backends = moto_backends(2)
    gw = start_gateway(GatewayConfig(
        backends=backends,
        extra={"ui": {"admin_token": TOKEN}, "replication": {"factor": 2, "worker_interval": INTERVAL}},
    ))
    assert gw.proc is not None
    client = _client(gw)
    client.put_object(Bucket="photos", Key="warm", Body=b"w" * 1024)
    assert _replicate(gw)["copies_created"] == 1
    src = tmp_path / "big.bin"
    with open(src, "wb") as out:
        for _ in range(96):
            out.write(os.urandom(1024 * 1024))
    client.upload_file(str(src), "photos", "big.bin", Config=TransferConfig(multipart_threshold=1 << 30))
    before = _peak_rss_kib(gw.proc.pid)
    answer = _replicate(gw)
    growth_mib = (_peak_rss_kib(gw.proc.pid) - before) / 1024
    print(f"replicating 96 MiB: gateway peak RSS grew {growth_mib:.1f} MiB")
    assert answer["copies_created"] == 1 and answer["bytes_copied"] == 96 * 1024 * 1024
    assert growth_mib < 40, f"gateway peak RSS grew by {growth_mib:.0f} MiB replicating a 96 MiB object"
    assert len({backend for _, backend, _ in _locations(gw, "big.bin")}) == 2
    direct = {spec.name: spec for spec in backends}
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    for _, backend, key in _locations(gw, "big.bin"):
        spec = direct[backend]
        reader = s3_client(spec.endpoint, spec.access_key, spec.secret_key)
        assert _sha(reader.get_object(Bucket=spec.bucket, Key=key)["Body"].read()) == digest  # type: ignore[attr-defined]
