"""A drain at scale (issue 16's acceptance): a real gateway (twistd) over three SeaweedFS
backends (three buckets of the session's ``weed mini``, each a backend of its own to s3orch),
a backend holding 500 objects drained while PUTs (new keys and overwrites) go on, the gateway
killed (SIGKILL) in the middle of the drain and started again.  Afterwards: the drained backend
holds nothing (listed on the backend itself), every object, old and new, reads back with its
SHA-256, the replication factor is met on the other backends, and the fault rig's auditor finds
nothing leaked and the quotas exact.  Run with factor 1 (the original's drain: objects move) and
factor 2 (copies are made until two exist elsewhere, then the source is dropped).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli.main import cli
from tests.conftest import PHOTOS, quota_rows, s3_client
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY, fresh_bucket
from tests.support.auditor import Auditor, list_backend
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.servers import WeedServer

TOKEN = "drain-scale-token"
OBJECTS = 500
#: The drained backend (pack: every first write lands there).
DRAINED = "backend-1"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _admin(gw: GatewayProcess, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, [*args, "--json", "--addr", gw.endpoint, "--timeout", "60"], env={"S3ORCH_ADMIN_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


class Writes:
    """What the clients wrote: per key, the SHA-256s a read may give (the last acknowledged
    write, plus any later one whose client got no definitive answer, which I3 lets appear)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.allowed: dict[str, set[str | None]] = {}

    def put(self, client: Any, key: str, body: bytes) -> bool:
        digest = _sha(body)
        with self.lock:
            self.allowed.setdefault(key, {None}).add(digest)
        try:
            client.put_object(Bucket="photos", Key=key, Body=body)
        except Exception:
            return False  # no definitive answer: the old value or this one
        with self.lock:
            self.allowed[key] = {digest}
        return True

    def delete(self, client: Any, key: str) -> bool:
        with self.lock:
            self.allowed.setdefault(key, {None}).add(None)
        try:
            client.delete_object(Bucket="photos", Key=key)
        except Exception:
            return False  # no definitive answer: the old value or absent
        with self.lock:
            self.allowed[key] = {None}
        return True


def _locations(gw: GatewayProcess) -> dict[tuple[str, int], set[str]]:
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10)
    try:
        rows = conn.execute(
            "SELECT object_key, part_number, backend_name FROM object_locations WHERE bucket = 'photos'"
        ).fetchall()
    finally:
        conn.close()
    out: dict[tuple[str, int], set[str]] = {}
    for key, part, backend in rows:
        out.setdefault((str(key), int(part)), set()).add(str(backend))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("factor", [1, 2])
def test_a_drain_of_500_objects_with_puts_going_on_and_a_kill_in_the_middle(
    start_gateway: Callable[[GatewayConfig], GatewayProcess], weed: WeedServer, factor: int
) -> None:
    backends = [
        BackendSpec(f"backend-{i + 1}", weed.endpoint, fresh_bucket(weed), WEED_ACCESS_KEY, WEED_SECRET_KEY,
                    quota_bytes=1 << 30)
        for i in range(3)
    ]
    extra: dict[str, object] = {
        "ui": {"admin_token": TOKEN},
        # A write cut off by the kill is resolved soon after the restart, not in 5 minutes.
        "write_path": {"pending_pattern": {"min_age": "2s", "reaper_tick": "1s"}},
    }
    if factor > 1:
        extra["replication"] = {"factor": factor, "worker_interval": "2s", "batch_size": 100, "concurrency": 8}
    gw = start_gateway(GatewayConfig(backends=backends, extra=extra))
    client = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    writes = Writes()

    def first(index: int) -> None:
        assert writes.put(client, f"old/{index:04d}", os.urandom(1024 + index))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(first, range(OBJECTS)))
    assert len(list_backend(backends[0])) == OBJECTS  # pack: all on the first backend
    if factor > 1:  # the replicator's copies exist before the drain (and are not drained)
        poll(lambda: _locations(gw), lambda found: all(len(b) == factor for b in found.values()), timeout=120)

    stop = threading.Event()

    def writer(n: int) -> None:
        """New keys and overwrites of old ones, for the whole drain and across the kill.  Each
        writer owns its keys (the old ones of its parity): two clients racing on one key would
        make "the last acknowledged write" ambiguous, and the check could not say which won."""
        count = 0
        while not stop.is_set():
            if count % 3 == 2:
                key = f"old/{((count * 37) % (OBJECTS // 2)) * 2 + n:04d}"  # an overwrite racing its move
            else:
                key = f"new/{n}-{count:05d}"
            if not writes.put(client, key, os.urandom(700 + count % 500)):
                stop.wait(0.05)  # the gateway is down: try again shortly
            count += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert _admin(gw, "drain", DRAINED)["status"] == "drain started"
        # The kill comes once the drain is under way (its first copies moved) and not over.
        status = poll(
            lambda: _admin(gw, "drain", DRAINED, "--status"),
            lambda s: s["objects_remaining"] < OBJECTS,
            timeout=120,
        )
        assert 0 < status["objects_remaining"] < OBJECTS, status
        gw.stop(signal.SIGKILL)
        gw.start()  # the drain is persisted: the restarted gateway resumes it
        final = _admin(gw, "drain", DRAINED, "--status", "--wait", "--interval", "0.5")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert final["state"] == "completed" and final["objects_remaining"] == 0, final
    assert sum(1 for key in writes.allowed if key.startswith("new/")) > 0

    # The drained backend holds nothing, on the backend itself (the last dropped copies'
    # deletes may wait for the cleanup queue's next tick after the kill).
    left = poll(lambda: list_backend(backends[0]), lambda found: not found, timeout=180)
    assert left == {}
    # Every key reads back as its last acknowledged write (or a later unacknowledged one).
    reader = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)

    def read(key: str) -> bytes | None:
        try:
            body: bytes = reader.get_object(Bucket="photos", Key=key)["Body"].read()
        except reader.exceptions.NoSuchKey:
            return None
        return body

    problems = Auditor.check_reads(read, writes.allowed)
    assert problems == [], problems
    # The factor is met, never on the drained backend.
    found = poll(
        lambda: _locations(gw),
        lambda f: all(len(b) == factor and DRAINED not in b for b in f.values()),
        timeout=120,
    )
    assert all(len(b) == factor and DRAINED not in b for b in found.values()), found
    # Quotas exact and nothing leaked, once the reaper and the cleanup queue are quiet.
    auditor = Auditor(lambda: sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10), backends)
    report = poll(auditor.audit, lambda r: not r.problems, timeout=180)
    report.assert_clean()
    quotas = quota_rows(gw)
    assert quotas[DRAINED]["used"] == 0 and quotas[DRAINED]["objects"] == 0, quotas
    print(
        f"factor {factor}: drained {OBJECTS} objects, {len(writes.allowed) - OBJECTS} new keys written"
        f" during the drain; killed with {status['objects_remaining']} copies left; moved"
        f" {final['objects_moved']} copies in all"
    )
