"""Degraded mode in real gateways (twistd) when the database goes away (issue 15's acceptance,
BEHAVIOURS §1.26): every object written before the outage stays readable (all of them, not
only cached ones), writes and listings get 503 with Retry-After, /health says degraded; once
the database is back the breaker closes by itself and writes succeed.

PostgreSQL: a private cluster stopped under load, two instances.  An instance knows its own
writes at once; another instance's writes reach it through the journal refresh
(``circuit_breaker.journal_refresh``), so keys acknowledged more than ``SEEN_BY_PEERS`` before
the stop are checked on both instances, the newest on the instance that wrote them; keys deleted
on one instance before the stop answer 404 on both (the sweep saw the delete).

SQLite: another process holds the database's write lock (``BEGIN EXCLUSIVE``) until released.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from botocore.exceptions import ClientError

from tests.integration.test_crash_points import unsettled
from tests.integration.test_database_restart import cluster, read_body, single_attempt_client
from tests.integration.test_multi_instance import start_together
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll, wait_for
from tests.support.postgres import PostgresCluster, create_database, database_section

__all__ = ["cluster"]  # the fixture, used here by name

OPEN_TIMEOUT = 1.0
REFRESH = 0.5
#: A write acknowledged this long before the stop is in every instance's journal.
SEEN_BY_PEERS = 3.0
BREAKER = {"open_timeout": f"{OPEN_TIMEOUT}s", "journal_refresh": f"{REFRESH}s", "journal_path": "{workdir}/locations.db"}


def health(gw: GatewayProcess) -> str:
    with urllib.request.urlopen(gw.endpoint + "/health", timeout=10) as response:
        assert response.status == 200
        status: str = json.loads(response.read())["status"]
        return status


def status_of(call: Callable[[], Any]) -> tuple[int, str | None, str]:
    """(HTTP status, Retry-After, error code) of a boto call; 200 when it succeeded."""
    try:
        call()
    except ClientError as exc:
        meta = exc.response["ResponseMetadata"]
        return int(meta["HTTPStatusCode"]), meta["HTTPHeaders"].get("retry-after"), str(exc.response["Error"].get("Code", ""))
    return 200, None, ""


class Writer:
    """PUTs fresh keys on every instance in turn until stopped; keeps what was acknowledged
    (key -> (instance, md5, when))."""

    def __init__(self, clients: list[Any], threads: int = 4) -> None:
        self.clients = clients
        self.acknowledged: dict[str, tuple[int, str, float]] = {}
        self.refused: list[tuple[int, str | None, str]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            instance = (worker + n) % len(self.clients)
            key, body = f"w{worker}/{n:05d}", os.urandom(1024 + n % 3000)
            answer = status_of(partial(self.clients[instance].put_object, Bucket="photos", Key=key, Body=body))
            with self._lock:
                if answer[0] == 200:
                    self.acknowledged[key] = (instance, hashlib.md5(body).hexdigest(), time.monotonic())
                else:
                    self.refused.append(answer)
            n += 1
            time.sleep(0.01 if answer[0] == 200 else 0.05)

    def __enter__(self) -> Writer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)


def unreadable(clients: list[Any], expected: list[tuple[str, int, str]]) -> list[str]:
    """The keys that do not read back byte-identical from the instance named with them."""

    def check(item: tuple[str, int, str]) -> str | None:
        key, instance, md5 = item
        try:
            body = read_body(clients[instance], key)
        except ClientError as exc:
            return f"{key}@{instance}: {exc.response['ResponseMetadata']['HTTPStatusCode']}"
        return None if hashlib.md5(body).hexdigest() == md5 else f"{key}@{instance}: other bytes"

    with ThreadPoolExecutor(max_workers=16) as pool:
        return [problem for problem in pool.map(check, expected) if problem]


def assert_refused(answer: tuple[int, str | None, str]) -> None:
    status, retry_after, code = answer
    assert (status, code) == (503, "ServiceUnavailable") and retry_after and int(retry_after) >= 1, answer


@pytest.mark.slow
def test_postgres_stopped_under_load_every_object_stays_readable_and_writes_resume(
    tmp_path: Path, moto_backends: Callable[..., list[BackendSpec]], cluster: PostgresCluster
) -> None:
    dsn = create_database(cluster.dsn)
    specs = moto_backends(2, quota=256 * 1024 * 1024)
    config = GatewayConfig(
        backends=specs,
        database=database_section(dsn, max_conns=8, statement_timeout="10s"),
        # a quick reaper, so the writes the outage cut off are settled before the audit
        extra={"circuit_breaker": BREAKER, "write_path": {"pending_pattern": {"reaper_tick": "1s", "min_age": "3s"}}},
    )
    gateways = [GatewayProcess(tmp_path / name, config.render()) for name in ("a", "b")]
    start_together(gateways)
    try:
        clients = [single_attempt_client(gw.endpoint) for gw in gateways]
        with Writer(clients) as load:
            assert wait_for(lambda: len(load.acknowledged) >= 150, 30), "no traffic before the outage"
            # Deletes, each on one instance: neither may serve the old bytes during the outage.
            deleted = sorted(load.acknowledged)[:20]
            for n, key in enumerate(deleted):
                clients[n % 2].delete_object(Bucket="photos", Key=key)
            time.sleep(SEEN_BY_PEERS + 1)  # some writes are old enough to be checked on the peer
            cluster.stop("fast")
            stopped = time.monotonic()
            time.sleep(1.0)  # the load trips both breakers
            before = {k: v for k, v in load.acknowledged.items() if v[2] < stopped and k not in deleted}
            for client in clients:
                for key in deleted:
                    assert status_of(partial(read_body, client, key))[0] == 404, key
            assert all(health(gw) == "degraded" for gw in gateways)
            # Every object: on the instance that wrote it, and on the other one when older than a refresh.
            expected = [(k, i, md5) for k, (i, md5, _) in before.items()]
            expected += [(k, 1 - i, md5) for k, (i, md5, at) in before.items() if at < stopped - SEEN_BY_PEERS]
            assert len(expected) - len(before) >= 150 and len(before) >= 150
            assert unreadable(clients, expected) == []
            for client in clients:
                assert_refused(status_of(partial(client.put_object, Bucket="photos", Key="during", Body=b"x")))
                assert_refused(status_of(partial(client.delete_object, Bucket="photos", Key=expected[0][0])))
                assert_refused(status_of(partial(client.list_objects_v2, Bucket="photos")))
                assert_refused(status_of(partial(client.create_multipart_upload, Bucket="photos", Key="mp")))
            assert load.refused and all(a[0] == 503 and a[1] for a in load.refused), set(load.refused)
            cluster.start()
            back = time.monotonic()
            # The breakers close by themselves: the load's writes succeed on both instances.
            assert wait_for(
                lambda: {i for i, _, at in list(load.acknowledged.values()) if at > back} == {0, 1}, 30
            ), "writes did not resume on both instances"
            assert wait_for(lambda: all(health(gw) == "ok" for gw in gateways), 10)
        # Nothing acknowledged is lost, and cut-off writes keep exactly their reservations.
        conn = psycopg2.connect(dsn)
        try:
            cur = conn.cursor()
            cur.execute("SELECT object_key, etag FROM objects WHERE bucket = 'photos'")
            committed = dict(cur.fetchall())
            cur.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM pending_objects")
            (pending_bytes,) = cur.fetchone()
            cur.execute("SELECT COALESCE(SUM(reserved_bytes), 0) FROM backend_quotas")
            (reserved,) = cur.fetchone()
        finally:
            conn.close()
        acknowledged = {k: md5 for k, (_, md5, _) in load.acknowledged.items() if k not in deleted}
        assert {k: committed.get(k) for k in acknowledged} == acknowledged
        assert not set(deleted) & set(committed)
        assert reserved == pending_bytes
        for gw in gateways:
            log = gw.log_text()
            assert "Traceback" not in log, log[-4000:]
        # Once the reaper has settled what the outage cut off, the auditor finds nothing leaked
        # and every quota exact (I4, I5).
        left = poll(lambda: unsettled(lambda: psycopg2.connect(dsn)), lambda n: n == 0, timeout=60)
        assert left == 0, "the reaper did not settle the writes the outage cut off"
        report = Auditor(lambda: psycopg2.connect(dsn), specs).audit()
        report.assert_clean()
        print(f"\n[postgres] {len(before)} objects written before the stop, {len(expected)} reads"
              f" during the outage, all served; {len(load.refused)} writes refused with Retry-After")
    finally:
        for gw in gateways:
            gw.stop()


LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
conn.execute("ROLLBACK")
"""


@pytest.fixture
def lock_holder() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    held: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        held.append(proc)
        return proc

    yield hold
    for proc in held:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sqlite_locked_by_another_process_degrades_then_recovers_when_released(
    tmp_path: Path, moto_backends: Callable[..., list[BackendSpec]],
    lock_holder: Callable[[Path], subprocess.Popen[str]],
) -> None:
    # SQLite serialises writes on one connection, each waiting out busy_timeout and its retries
    # (about 15 s) while the lock is held: one failure opens the breaker here, and the probe
    # waits long enough for the checks below to meet the open breaker, not a probe.
    breaker = {**BREAKER, "failure_threshold": 1, "open_timeout": "30s"}
    specs = moto_backends(2, quota=256 * 1024 * 1024)
    reaper = {"pending_pattern": {"reaper_tick": "1s", "min_age": "3s"}}
    config = GatewayConfig(backends=specs, extra={"circuit_breaker": breaker, "write_path": reaper})
    with GatewayProcess(tmp_path / "gw", config.render()) as gw:
        client = single_attempt_client(gw.endpoint, read_timeout=60)
        written: dict[str, str] = {}
        for n in range(40):
            body = os.urandom(2048 + n)
            client.put_object(Bucket="photos", Key=f"k{n:03d}", Body=body)
            written[f"k{n:03d}"] = hashlib.md5(body).hexdigest()
        holder = lock_holder(gw.workdir / "s3orch.db")
        assert_refused(status_of(lambda: client.put_object(Bucket="photos", Key="late", Body=b"x")))
        assert health(gw) == "degraded"
        started = time.monotonic()
        assert_refused(status_of(lambda: client.put_object(Bucket="photos", Key="fast", Body=b"x")))
        assert_refused(status_of(lambda: client.list_objects_v2(Bucket="photos")))
        assert time.monotonic() - started < 1.0  # the open breaker answers at once
        assert unreadable([client], [(k, 0, md5) for k, md5 in written.items()]) == []
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
        assert wait_for(lambda: status_of(lambda: client.put_object(Bucket="photos", Key="after", Body=b"y"))[0] == 200, 60)
        assert health(gw) == "ok"
        assert "Traceback" not in gw.log_text()
        # The refused writes leave nothing behind once the reaper has run (I4, I5).
        database = gw.workdir / "s3orch.db"
        left = poll(lambda: unsettled(lambda: sqlite3.connect(str(database), timeout=10)), lambda n: n == 0, timeout=60)
        assert left == 0, "the reaper did not settle the writes the lock cut off"
        Auditor(lambda: sqlite3.connect(str(database), timeout=10), specs).audit().assert_clean()
