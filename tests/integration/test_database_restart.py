"""PostgreSQL restarting under load, in front of two s3orch instances.

The database is a private cluster (its own ``initdb``, its own port), so
stopping it disturbs no other test.  While it is down every write must be
answered 503 ServiceUnavailable with Retry-After (never a 500), and a read
either served byte-identical (degraded mode: the location journal) or answered
the same 503; once it is back, both instances must take writes again within
seconds on their own (the database breaker's ``open_timeout`` is set to 1 s
here: the default 15 s would be the recovery time), and every write that was
acknowledged must read back byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.conftest import PHOTOS
from tests.integration.test_multi_instance import start_together
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import wait_for
from tests.support.postgres import PostgresCluster, bindir, create_database, database_section

KiB = 1024
#: How long the database stays down, and the bound on recovery once it is back.
OUTAGE = 3.0
RECOVERY_BOUND = 5.0


@dataclass
class Outcome:
    op: str  # PUT or GET
    instance: int
    key: str
    started: float
    ended: float
    status: int
    code: str = ""
    retry_after: str | None = None


@dataclass
class Load:
    """Writer threads that PUT fresh keys (and read acknowledged ones) on both instances."""

    clients: tuple[Any, Any]
    threads: int = 8
    outcomes: list[Outcome] = field(default_factory=list)
    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> md5
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _call(self, op: str, instance: int, key: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            result = fn()
        except ClientError as exc:
            meta = exc.response["ResponseMetadata"]
            self._record(
                Outcome(op, instance, key, started, time.monotonic(), int(meta["HTTPStatusCode"]),
                        str(exc.response["Error"].get("Code", "")), meta["HTTPHeaders"].get("retry-after"))
            )
            return None
        except AssertionError as exc:  # served, but other bytes: fails the status check below
            self._record(Outcome(op, instance, key, started, time.monotonic(), -1, str(exc)))
            return None
        except BotoCoreError as exc:  # no HTTP answer at all (connection reset, timeout)
            self._record(Outcome(op, instance, key, started, time.monotonic(), 0, type(exc).__name__))
            return None
        self._record(Outcome(op, instance, key, started, time.monotonic(), 200))
        return result

    def _run(self, worker: int) -> None:
        rng = random.Random(worker)
        n = 0
        while not self.stop.is_set():
            instance = (worker + n) % 2
            key = f"w{worker}/{n:05d}"
            body = os.urandom(rng.randint(1 * KiB, 4 * KiB))
            put = partial(self.clients[instance].put_object, Bucket="photos", Key=key, Body=body)
            if self._call("PUT", instance, key, put):
                with self._lock:
                    self.acknowledged[key] = hashlib.md5(body).hexdigest()
            if n % 3 == 0:
                with self._lock:
                    known = list(self.acknowledged)[-50:]
                if known:
                    read = rng.choice(known)
                    get = partial(read_checked, self.clients[1 - instance], read, self.acknowledged[read])
                    self._call("GET", 1 - instance, read, get)
            n += 1
            time.sleep(0.005)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]
        for thread in threads:
            thread.start()
        return threads


def read_body(client: Any, key: str) -> bytes:
    return bytes(client.get_object(Bucket="photos", Key=key)["Body"].read())


def read_checked(client: Any, key: str, md5: str) -> bytes:
    """A GET that fails the test's bookkeeping (an AssertionError) on other bytes."""
    body = read_body(client, key)
    assert hashlib.md5(body).hexdigest() == md5, f"{key}: other bytes"
    return body


def single_attempt_client(endpoint: str, read_timeout: float = 30) -> Any:
    """boto3 as a user has it, but without retries: every 503 must be seen here."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=PHOTOS.access_key,
        aws_secret_access_key=PHOTOS.secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            max_pool_connections=32,
            connect_timeout=5,
            read_timeout=read_timeout,
        ),
    )


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL server (skipped without its binaries, except under CI)."""
    try:
        bindir()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    with PostgresCluster() as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_postgres_restart_under_load_answers_503_then_recovers_without_losing_writes(
    tmp_path: Path, moto_backends: Callable[..., list[BackendSpec]], mode: str, cluster: PostgresCluster
) -> None:
    dsn = create_database(cluster.dsn)
    config = GatewayConfig(
        backends=moto_backends(3, quota=256 * 1024 * KiB),
        database=database_section(dsn, max_conns=8, statement_timeout="10s"),
        extra={"circuit_breaker": {"open_timeout": "1s", "journal_path": "{workdir}/locations.db"}},
    )
    gateways = [GatewayProcess(tmp_path / name, config.render()) for name in ("a", "b")]
    start_together(gateways)
    try:
        clients = tuple(single_attempt_client(gw.endpoint) for gw in gateways)
        load = Load(clients)  # type: ignore[arg-type]
        threads = load.start()
        try:
            assert wait_for(lambda: len(load.acknowledged) >= 100, 20), "no traffic before the outage"
            down_at = time.monotonic()
            cluster.stop(mode)
            down = time.monotonic()  # the server is gone from here on
            time.sleep(OUTAGE)
            restarting = time.monotonic()
            cluster.start()
            up = time.monotonic()

            def recovered(instance: int) -> bool:  # a write: reads may be served all along
                return any(o.op == "PUT" and o.status == 200 and o.instance == instance and o.started >= up
                           for o in list(load.outcomes))

            assert wait_for(lambda: recovered(0) and recovered(1), 30), "the instances did not recover"

            def steady() -> bool:
                """Twenty requests started half a second after both instances took writes again."""
                done = list(load.outcomes)
                since = 0.5 + max(min(o.ended for o in done
                                      if o.op == "PUT" and o.status == 200 and o.instance == i and o.started >= up)
                                  for i in (0, 1))
                return sum(o.started >= since for o in done) >= 20

            assert wait_for(steady, 30), "no steady traffic after the recovery"
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(30)

        outcomes = list(load.outcomes)
        # Only two answers exist: served, or 503 ServiceUnavailable with Retry-After.
        assert {o.status for o in outcomes} <= {200, 503}, {(o.status, o.code) for o in outcomes}
        refused = [o for o in outcomes if o.status == 503]
        assert refused and all(o.code == "ServiceUnavailable" and o.retry_after for o in refused)
        # While the server was down (between stop and start), no write was taken; reads were
        # served (checked byte for byte) or refused with the same 503.
        during = [o for o in outcomes if o.started >= down and o.ended <= restarting]
        assert len(during) >= 20 and {o.status for o in during if o.op == "PUT"} == {503}
        # Both instances take writes again on their own, within seconds of the database.
        first_ok = [
            min(o.ended for o in outcomes
                if o.op == "PUT" and o.status == 200 and o.instance == i and o.started >= up) - up
            for i in (0, 1)
        ]
        assert max(first_ok) < RECOVERY_BOUND, first_ok
        steady = [o for o in outcomes if o.started >= up + max(first_ok) + 0.5]
        assert steady and {o.status for o in steady} == {200}

        # No acknowledged write is lost: each reads back byte-identical, on both instances.
        def check(item: tuple[int, tuple[str, str]]) -> str | None:
            index, (key, md5) = item
            body = read_body(clients[index % 2], key)
            return None if hashlib.md5(body).hexdigest() == md5 else key

        with ThreadPoolExecutor(max_workers=16) as pool:
            lost = [k for k in pool.map(check, enumerate(sorted(load.acknowledged.items()))) if k]
        assert lost == []
        conn = psycopg2.connect(dsn)
        try:
            cur = conn.cursor()
            cur.execute("SELECT object_key, etag FROM objects WHERE bucket = 'photos'")
            committed = dict(cur.fetchall())
            cur.execute("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM pending_objects")
            pending, pending_bytes = cur.fetchone()
            cur.execute("SELECT COALESCE(SUM(reserved_bytes), 0) FROM backend_quotas")
            (reserved,) = cur.fetchone()
        finally:
            conn.close()
        assert {k: committed.get(k) for k in load.acknowledged} == load.acknowledged
        # Writes cut off between reservation and commit keep their intent (and its
        # reservation, exactly) for the pending-intent reaper: counted, never lost.
        assert reserved == pending_bytes
        for gw in gateways:
            log = gw.log_text()
            assert "Traceback" not in log, log[-4000:]
            assert "request failed" not in log
        puts = [o for o in outcomes if o.op == "PUT"]
        latency = sorted(o.ended - o.started for o in refused)
        print(
            f"\n[{mode}] stop took {down - down_at:.2f}s, down {restarting - down:.2f}s,"
            f" start took {up - restarting:.2f}s; first 200 after start: A {first_ok[0]:.2f}s,"
            f" B {first_ok[1]:.2f}s; PUTs {len(puts)} ({sum(o.status == 200 for o in puts)} acknowledged,"
            f" {sum(o.status == 503 for o in puts)} x 503), GETs {len(outcomes) - len(puts)}"
            f" ({sum(o.status == 503 for o in outcomes if o.op == 'GET')} x 503);"
            f" intents left by cut-off commits: {pending}; acknowledged writes lost: 0;"
            f" 503 latency median {latency[len(latency) // 2] * 1000:.1f} ms, max {latency[-1] * 1000:.1f} ms"
        )
    finally:
        for gw in gateways:
            gw.stop()
