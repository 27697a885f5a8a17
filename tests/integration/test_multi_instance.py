"""Two s3orch instances on one PostgreSQL database in front of three real backends.

Each test starts two real ``twistd -n s3orch`` processes on different ports,
together (so their start-up migrations race under the advisory lock), sharing
one fresh PostgreSQL database, and drives them with boto3 from many threads.
It then checks what matters across instances: quotas are never exceeded and
stay exact, read-after-write holds, and concurrent overwrites leave one
winner and nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest
from botocore.exceptions import ClientError

from tests.conftest import PHOTOS, backend_keys, postgres_quota_rows, s3_client
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.postgres import database_section

KiB = 1024


@dataclass
class Pair:
    """Two gateways on one database, with a boto3 client for each."""

    a: GatewayProcess
    b: GatewayProcess
    clients: tuple[Any, Any]
    backends: list[BackendSpec]
    dsn: str

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.dsn)
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return list(cur.fetchall())
        finally:
            conn.close()


def start_together(gateways: list[GatewayProcess]) -> None:
    errors: list[BaseException] = []

    def start(gw: GatewayProcess) -> None:
        try:
            gw.start(timeout=60)
        except BaseException as exc:  # reported below, with the log
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(gw,)) for gw in gateways]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture
def pair_factory(
    tmp_path: Any, moto_backends: Callable[..., list[BackendSpec]], postgres_dsn: str
) -> Iterator[Callable[..., Pair]]:
    started: list[GatewayProcess] = []

    def make(quota: int = 64 * 1024 * KiB, routing: str = "pack") -> Pair:
        backends = moto_backends(3, quota=quota)
        config = GatewayConfig(
            backends=backends,
            routing_strategy=routing,
            database=database_section(postgres_dsn, max_conns=16),
        )
        a = GatewayProcess(tmp_path / "a", config.render())
        b = GatewayProcess(tmp_path / "b", config.render())
        started.extend([a, b])
        start_together([a, b])
        clients = tuple(
            s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key, max_pool_connections=64)
            for gw in (a, b)
        )
        return Pair(a, b, clients, backends, postgres_dsn)  # type: ignore[arg-type]

    yield make
    for gw in started:
        gw.stop()


def _status(exc: ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


def test_both_instances_start_together_and_migrate_once(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory()
    versions = pair.query("SELECT version FROM schema_version ORDER BY version")
    assert len(versions) == len(set(versions)) >= 2
    for gw in (pair.a, pair.b):
        assert "Traceback" not in gw.log_text()


def test_concurrent_puts_on_both_instances_never_exceed_tight_quotas_and_stay_exact(
    pair_factory: Callable[..., Pair],
) -> None:
    limit = 64 * KiB
    pair = pair_factory(quota=limit, routing="spread")
    rng = random.Random(7)
    # 200 PUTs of 1-4 KiB (about 500 KiB) into 3 x 64 KiB: most of them cannot fit.
    bodies = {f"load/{i:03d}": os.urandom(rng.randint(1 * KiB, 4 * KiB)) for i in range(200)}

    overrun: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        # Sampled while the writers run: at no moment may any backend be over its limit.
        while not stop.is_set():
            for name, row in postgres_quota_rows(pair.dsn).items():
                if row["used"] + row["orphan"] + row["reserved"] > row["limit"]:
                    overrun.append({name: row})
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()

    def put(index_key: tuple[int, str]) -> tuple[str, int]:
        index, key = index_key
        client = pair.clients[index % 2]
        try:
            client.put_object(Bucket="photos", Key=key, Body=bodies[key])
        except ClientError as exc:
            return key, _status(exc)
        return key, 200

    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            outcomes = dict(pool.map(put, enumerate(bodies)))
    finally:
        stop.set()
        watcher.join()

    statuses = sorted(set(outcomes.values()))
    stored = {key for key, status in outcomes.items() if status == 200}
    print(f"PUTs: {len(stored)} stored, {len(bodies) - len(stored)} refused 507")
    assert statuses == [200, 507], statuses  # nothing else: no 500, no 503
    assert 40 <= len(stored) <= 150
    assert overrun == []
    # Both instances took part in the writes that succeeded.
    assert {i % 2 for i, key in enumerate(bodies) if key in stored} == {0, 1}

    rows = postgres_quota_rows(pair.dsn)
    located = dict(
        pair.query(
            "SELECT backend_name, SUM(size_bytes) FROM object_locations GROUP BY backend_name"
        )
    )
    for spec in pair.backends:
        row = rows[spec.name]
        on_backend = backend_keys(spec)
        assert row["used"] <= limit
        assert (row["reserved"], row["orphan"]) == (0, 0)
        assert row["used"] == int(located.get(spec.name, 0)) == sum(size for _, size in on_backend)
        assert row["objects"] == len(on_backend)
    assert sum(row["used"] for row in rows.values()) == sum(len(bodies[k]) for k in stored)
    assert pair.query("SELECT COUNT(*) FROM pending_objects") == [(0,)]
    # Every acknowledged write reads back, from the other instance than the writer.
    for i, key in enumerate(bodies):
        if key in stored:
            got = pair.clients[(i + 1) % 2].get_object(Bucket="photos", Key=key)["Body"].read()
            assert got == bodies[key]


def test_read_after_write_holds_across_instances(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory()
    for i in range(20):
        writer, reader = pair.clients[i % 2], pair.clients[(i + 1) % 2]
        key = f"raw/{i:02d}"
        body = os.urandom(1 * KiB + i)
        writer.put_object(Bucket="photos", Key=key, Body=body, Metadata={"n": str(i)})
        # immediately, on the other instance: GET, HEAD and LIST see it
        assert reader.get_object(Bucket="photos", Key=key)["Body"].read() == body
        head = reader.head_object(Bucket="photos", Key=key)
        assert (head["ContentLength"], head["Metadata"]) == (len(body), {"n": str(i)})
        listed = reader.list_objects_v2(Bucket="photos", Prefix="raw/")["Contents"]
        assert [o["Key"] for o in listed][-1] == key and len(listed) == i + 1
        # an overwrite on the reader is what the writer sees next
        newer = body[::-1] + b"!"
        reader.put_object(Bucket="photos", Key=key, Body=newer)
        assert writer.get_object(Bucket="photos", Key=key)["Body"].read() == newer
    for i in range(0, 20, 2):
        pair.clients[0].delete_object(Bucket="photos", Key=f"raw/{i:02d}")
        with pytest.raises(ClientError) as missing:
            pair.clients[1].head_object(Bucket="photos", Key=f"raw/{i:02d}")
        assert _status(missing.value) == 404
    keys = [o["Key"] for o in pair.clients[1].list_objects_v2(Bucket="photos")["Contents"]]
    assert keys == [f"raw/{i:02d}" for i in range(1, 20, 2)]


def test_concurrent_overwrites_from_both_instances_leave_one_winner_and_nothing_behind(
    pair_factory: Callable[..., Pair],
) -> None:
    pair = pair_factory(quota=4 * 1024 * KiB)
    writers = 30
    bodies = [os.urandom(8 * KiB + 997 * i) for i in range(writers)]
    by_md5 = {hashlib.md5(b).hexdigest(): b for b in bodies}
    barrier = threading.Barrier(writers)

    def put(index: int) -> int:
        barrier.wait()
        try:
            pair.clients[index % 2].put_object(Bucket="photos", Key="hot", Body=bodies[index])
        except ClientError as exc:
            return _status(exc)
        return 200

    with ThreadPoolExecutor(max_workers=writers) as pool:
        statuses = list(pool.map(put, range(writers)))
    assert statuses == [200] * writers

    got_a = pair.clients[0].get_object(Bucket="photos", Key="hot")
    body = got_a["Body"].read()
    assert pair.clients[1].get_object(Bucket="photos", Key="hot")["Body"].read() == body
    winner = by_md5.get(hashlib.md5(body).hexdigest())
    assert winner == body  # exactly one writer's bytes, whole
    assert got_a["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'

    # Displaced copies are deleted right after each commit; wait for those deletes.
    def leftovers() -> tuple[list[tuple[str, str]], int]:
        on_backends = [(spec.name, key) for spec in pair.backends for key, _ in backend_keys(spec)]
        return on_backends, pair.query("SELECT COUNT(*) FROM cleanup_queue")[0][0]

    on_backends, queued = poll(leftovers, lambda found: (len(found[0]), found[1]) == (1, 0), 20)
    location = pair.query("SELECT backend_name, storage_key FROM object_locations")
    assert on_backends == location  # the winner's copy, and nothing else anywhere
    assert queued == 0
    assert pair.query("SELECT COUNT(*) FROM pending_objects") == [(0,)]
    rows = postgres_quota_rows(pair.dsn)
    assert sum(r["used"] for r in rows.values()) == len(body)
    assert sum(r["orphan"] + r["reserved"] for r in rows.values()) == 0
    assert sum(r["objects"] for r in rows.values()) == 1
