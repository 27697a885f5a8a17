"""Reconcile and sync/import in a real gateway (twistd) over two real SeaweedFS buckets.

* Objects deleted behind s3orch's back and foreign keys added: after ``s3orch-admin reconcile``
  the database matches the backends (every copy it names exists; every backend key is a copy,
  a queued orphan of s3orch's layout, or the foreign key left alone), the lost objects answer
  404, the others read back, quotas are exact (the fault rig's auditor is clean once the
  foreign keys are gone).
* A pre-populated bucket in the original product's ``{bucket}/{key}`` layout: the dry run lists,
  the real run imports in place (nothing copied), the objects read back through s3orch, and a
  second run imports nothing; an object s3orch wrote is never replaced.
* Peak RSS of a reconcile pass stays flat from 5,000 to 50,000 keys (slow; figures printed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli.main import cli
from s3orch.core.placement import storage_key
from tests.conftest import PHOTOS, backend_keys, quota_rows, s3_client
from tests.integration.conftest import fresh_bucket
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.servers import WeedServer

TOKEN = "reconcile-admin-token"
MiB = 1024 * 1024


def _specs(weed: WeedServer, count: int = 2, quota: int = 0) -> list[BackendSpec]:
    return [
        BackendSpec(f"backend-{i + 1}", weed.endpoint, fresh_bucket(weed), weed.access_key, weed.secret_key, quota)
        for i in range(count)
    ]


def _config(specs: list[BackendSpec], **extra: Any) -> GatewayConfig:
    return GatewayConfig(
        backends=specs,
        extra={
            "ui": {"admin_token": TOKEN},
            "reconcile": {"enabled": False, "grace_period": "0s"},
            **extra,
        },
    )


def _admin(gw: GatewayProcess, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, [*args, "--json", "--timeout", "300", "--config", str(gw.config_path)],
        env={"S3ORCH_ADMIN_TOKEN": TOKEN},
    )
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def _direct(spec: BackendSpec) -> Any:
    return s3_client(spec.endpoint, spec.access_key, spec.secret_key)


def _db(gw: GatewayProcess, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _copies(gw: GatewayProcess, backend: str) -> set[str]:
    return {r[0] for r in _db(gw, "SELECT storage_key FROM object_locations WHERE backend_name = ?", (backend,))}


def _queued(gw: GatewayProcess, backend: str) -> set[str]:
    return {r[0] for r in _db(gw, "SELECT storage_key FROM cleanup_queue WHERE backend_name = ?", (backend,))}


def test_after_deletes_behind_its_back_and_foreign_keys_the_database_matches_the_backends(
    weed: WeedServer, start_gateway: Callable[..., GatewayProcess]
) -> None:
    specs = _specs(weed, quota=128 * 1024)
    gw = start_gateway(_config(specs))
    client = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    bodies = {f"r/{i:02d}": bytes([65 + i]) * (3000 + 977 * i) for i in range(16)}
    for key, body in bodies.items():
        client.put_object(Bucket="photos", Key=key, Body=body)
    located = {
        key: _db(gw, "SELECT backend_name, storage_key FROM object_locations WHERE object_key = ?", (key,))[0]
        for key in bodies
    }
    assert {backend for backend, _ in located.values()} == {"backend-1", "backend-2"}  # pack overflowed
    by_name = {spec.name: spec for spec in specs}
    lost = ["r/01", "r/07", "r/14"]
    for key in lost:
        backend, backend_key = located[key]
        _direct(by_name[backend]).delete_object(Bucket=by_name[backend].bucket, Key=backend_key)
    _direct(specs[0]).put_object(Bucket=specs[0].bucket, Key="someone/else.txt", Body=b"foreign")
    _direct(specs[1]).put_object(Bucket=specs[1].bucket, Key="photos/legacy.txt", Body=b"the original's layout")
    stray = storage_key("photos", "never-committed", uuid.uuid4().hex)
    _direct(specs[1]).put_object(Bucket=specs[1].bucket, Key=stray, Body=b"an orphan of ours")

    done = _admin(gw, "reconcile")
    assert (done["status"], done["outcome"], done["backends_scanned"]) == ("ok", "success", 2)
    assert (done["lost"], done["orphaned"], done["foreign"], done["removed"]) == (3, 1, 2, 0)
    assert done["matched"] == len(bodies) - len(lost)
    assert sorted(o["key"] for o in done["lost_objects"]) == lost
    # The database matches the backends.
    foreign = {"backend-1": {"someone/else.txt"}, "backend-2": {"photos/legacy.txt"}}
    for spec in specs:
        on_backend = {k for k, _ in backend_keys(spec)}
        assert _copies(gw, spec.name) == on_backend - foreign[spec.name] - _queued(gw, spec.name), spec.name
    assert _queued(gw, "backend-2") >= {stray}
    for key, body in bodies.items():
        if key in lost:
            with pytest.raises(client.exceptions.NoSuchKey):
                client.get_object(Bucket="photos", Key=key)
        else:
            got = client.get_object(Bucket="photos", Key=key)["Body"].read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), key
    rows = quota_rows(gw)
    assert sum(r["used"] for r in rows.values()) == sum(len(b) for k, b in bodies.items() if k not in lost)
    assert sum(r["objects"] for r in rows.values()) == len(bodies) - len(lost)
    again = _admin(gw, "reconcile", "--backend", "backend-2")
    assert (again["lost"], again["orphaned"], again["backends_scanned"]) == (0, 0, 1), again
    assert again["suppressed_pending_cleanup"] + again["kept"] <= 1  # the stray, if still queued
    # Foreign keys are not s3orch's: take them away, and nothing else is out of place.
    _direct(specs[0]).delete_object(Bucket=specs[0].bucket, Key="someone/else.txt")
    _direct(specs[1]).delete_object(Bucket=specs[1].bucket, Key="photos/legacy.txt")
    Auditor(lambda: sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10), specs).audit().assert_clean()


def test_sync_adopts_a_pre_populated_bucket_in_place_once(
    weed: WeedServer, start_gateway: Callable[..., GatewayProcess]
) -> None:
    specs = _specs(weed, quota=64 * MiB)
    old = _direct(specs[1])
    legacy = {f"photos/album/{i:02d}.jpg": f"picture {i} ".encode() * (50 + i) for i in range(12)}
    legacy["photos/album/03.jpg"] = b"must not replace what s3orch wrote"
    others = {"documents/cv.pdf": b"another bucket's", "loose.txt": b"no bucket head"}
    for key, data in {**legacy, **others}.items():
        old.put_object(Bucket=specs[1].bucket, Key=key, Body=data)
    gw = start_gateway(_config(specs))
    client = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    client.put_object(Bucket="photos", Key="album/03.jpg", Body=b"written through s3orch")

    dry = _admin(gw, "sync", "--backend", "backend-2", "--bucket", "photos", "--dry-run")
    assert (dry["status"], dry["dry_run"], dry["imported"], dry["skipped"]) == ("ok", True, 12, 1)
    assert sorted(k["key"] for k in dry["keys"]) == sorted([k[len("photos/"):] for k in legacy if k != "photos/album/03.jpg"] + ["loose.txt"])
    assert dry["other_bucket"] == 1 and _copies(gw, "backend-2") == set()
    with pytest.raises(client.exceptions.NoSuchKey):
        client.get_object(Bucket="photos", Key="album/00.jpg")

    before = sorted(backend_keys(specs[1]))
    done = _admin(gw, "sync", "--backend", "backend-2", "--bucket", "photos")
    assert (done["imported"], done["skipped"], done["other_bucket"]) == (12, 1, 1)
    imported_bytes = sum(len(d) for k, d in legacy.items() if k != "photos/album/03.jpg") + len(others["loose.txt"])
    assert done["bytes"] == imported_bytes
    assert sorted(backend_keys(specs[1])) == before  # in place: nothing copied, nothing moved
    for key, data in legacy.items():
        name = key[len("photos/"):]
        got = client.get_object(Bucket="photos", Key=name)["Body"].read()
        expected = b"written through s3orch" if name == "album/03.jpg" else data
        assert got == expected, name
    assert client.get_object(Bucket="photos", Key="loose.txt")["Body"].read() == b"no bucket head"
    head = client.head_object(Bucket="photos", Key="loose.txt")  # the listing's ETag, unquoted once
    assert head["ETag"] == f'"{hashlib.md5(b"no bucket head").hexdigest()}"' and head["ContentLength"] == 14
    listed = client.list_objects_v2(Bucket="photos", Prefix="album/")
    assert len(listed["Contents"]) == 12
    assert quota_rows(gw)["backend-2"]["used"] == imported_bytes

    again = _admin(gw, "sync", "--backend", "backend-2", "--bucket", "photos")
    assert (again["imported"], again["skipped"]) == (0, 13)
    assert quota_rows(gw)["backend-2"]["used"] == imported_bytes
    # Imported objects are s3orch's now: a reconcile pass matches them and changes nothing.
    check = _admin(gw, "reconcile", "--backend", "backend-2")
    assert (check["matched"], check["foreign"], check["lost"], check["orphaned"]) == (12, 2, 0, 0)
    # The other bucket's key and the one s3orch's object shadows are not s3orch's.
    for key in ("documents/cv.pdf", "photos/album/03.jpg"):
        old.delete_object(Bucket=specs[1].bucket, Key=key)
    Auditor(lambda: sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10), specs).audit().assert_clean()


# --- memory: a pass over 5,000 and 50,000 keys ---------------------------------------------------


def _populate(spec: BackendSpec, keys: list[str]) -> None:
    """Put ``keys`` (1 byte each) straight on the backend, 32 at a time."""
    client = _direct(spec)

    def put(key: str) -> None:
        client.put_object(Bucket=spec.bucket, Key=key, Body=b"x")

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, keys))


def _rows(gw: GatewayProcess, backend: str, keys: list[str], now: float) -> None:
    """The objects and copies of ``keys`` written straight into the gateway's SQLite (stopped)."""
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=30)
    try:
        with conn:
            objects = []
            copies = []
            for index, key in enumerate(keys):
                write_id = key.rpartition("/")[2]
                objects.append(("photos", f"k{index:06d}", write_id, 1, "etag", now, now))
                copies.append(("photos", f"k{index:06d}", backend, key, write_id, 1, now))
            conn.executemany(
                "INSERT INTO objects (bucket, object_key, write_id, size_bytes, etag, last_modified, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", objects,
            )
            conn.executemany(
                "INSERT INTO object_locations (bucket, object_key, part_number, backend_name, storage_key,"
                " write_id, size_bytes, created_at) VALUES (?, ?, 0, ?, ?, ?, ?, ?)", copies,
            )
            conn.execute(
                "UPDATE backend_quotas SET bytes_used = ?, object_count = ? WHERE backend_name = ?",
                (len(keys), len(keys), backend),
            )
    finally:
        conn.close()


def _peak_rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _pass_growth(weed: WeedServer, tmp_path: Path, count: int) -> tuple[int, dict[str, Any], float]:
    """Peak RSS growth (KiB) of one reconcile pass over ``count`` keys (each a copy in the
    database, plus 1 in 10 extra keys only on the backend), the answer, and its seconds."""
    [spec] = _specs(weed, 1)
    keys = sorted(storage_key("photos", f"k{i:06d}", uuid.uuid4().hex) for i in range(count))
    foreign = [f"foreign/{i:06d}" for i in range(count // 10)]
    _populate(spec, keys + foreign)
    gw = GatewayProcess(tmp_path / f"rss{count}", _config([spec]).render()).start()
    try:
        gw.stop()
        _rows(gw, spec.name, keys, time.time() - 7200)
        gw.start()
        assert gw.proc is not None
        _admin(gw, "reconcile")  # warm: every module and pool in place before the measure
        with contextlib.suppress(OSError):  # reset the high-water mark (Linux: clear_refs 5)
            Path(f"/proc/{gw.proc.pid}/clear_refs").write_text("5")
        rss, _ = _peak_rss_kib(gw.proc.pid)
        started = time.monotonic()
        answer = _admin(gw, "reconcile")
        elapsed = time.monotonic() - started
        _, peak = _peak_rss_kib(gw.proc.pid)
        return max(0, peak - rss), answer, elapsed
    finally:
        gw.stop()


@pytest.mark.slow
def test_peak_rss_of_a_pass_stays_flat_from_5000_to_50000_keys(weed: WeedServer, tmp_path: Path) -> None:
    small, small_answer, small_time = _pass_growth(weed, tmp_path, 5_000)
    large, large_answer, large_time = _pass_growth(weed, tmp_path, 50_000)
    print(
        f"reconcile peak RSS growth: {small / 1024:.1f} MiB over 5,000 keys ({small_time:.1f} s),"
        f" {large / 1024:.1f} MiB over 50,000 keys ({large_time:.1f} s)"
    )
    assert (small_answer["matched"], small_answer["foreign"]) == (5_000, 500)
    assert (large_answer["matched"], large_answer["foreign"]) == (50_000, 5_000)
    assert large_answer["lost"] == 0 and large_answer["orphaned"] == 0
    assert large - small < 20 * 1024, (small, large)
