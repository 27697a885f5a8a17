"""Monthly usage limits in real gateways over real backends (BEHAVIOURS §1.8, issue 17 item 1).

Each limit type on each kind of operation it meters, through boto3 against a ``twistd`` gateway
over SeaweedFS: the request that would cross the limit is refused with the original's status and
code (writes 507 InsufficientStorage, reads 429 SlowDown), the one before it succeeds, and deletes
and aborts still run at the limit.  What the database holds after a flush is exactly what the
backends were asked.  Then two gateways on one PostgreSQL: a limit of N requests is passed by
no more than the bound README documents.  (A new month is driven by an injected clock in
``tests/unit/test_usage_limits.py``.)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from botocore.exceptions import ClientError

from tests.conftest import PHOTOS, s3_client
from tests.integration.conftest import fresh_bucket
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.postgres import database_section
from tests.support.servers import WeedServer

TOKEN = "usage-admin-token"


class Limited(GatewayConfig):
    """A gateway config whose backends carry monthly usage limits (``limits[name]``)."""

    limits: dict[str, dict[str, int]]

    def render(self) -> str:
        doc = yaml.safe_load(super().render())
        for backend in doc["backends"]:
            backend.update(self.limits.get(backend["name"], {}))
        doc["ui"] = {"admin_token": TOKEN}
        doc["usage_flush"] = {"interval": "1s", "fast_interval": "500ms"}
        return yaml.safe_dump(doc, sort_keys=False)


def limited(backends: list[BackendSpec], limits: dict[str, dict[str, int]], **kwargs: Any) -> Limited:
    config = Limited(backends=backends, **kwargs)
    config.limits = limits
    return config


def weed_spec(weed: WeedServer, name: str) -> BackendSpec:
    return BackendSpec(name, weed.endpoint, fresh_bucket(weed), weed.access_key, weed.secret_key, 1 << 30)


def admin(gw: GatewayProcess, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{gw.endpoint}/admin/api/{path}", method=method, headers={"X-Admin-Token": TOKEN}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body: dict[str, Any] = json.loads(answer.read())
        return body


def refused(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return int(response["ResponseMetadata"]["HTTPStatusCode"]), str(response["Error"]["Code"])


def stored_usage(gw: GatewayProcess) -> dict[str, tuple[int, int, int]]:
    """This month's rows in the gateway's SQLite database, after a flush."""
    assert admin(gw, "POST", "usage-flush")["status"] == "flushed"
    period = time.strftime("%Y-%m", time.gmtime())
    with sqlite3.connect(gw.workdir / "s3orch.db") as db:
        rows = db.execute(
            "SELECT backend_name, api_requests, egress_bytes, ingress_bytes FROM backend_usage WHERE period = ?",
            (period,),
        ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[[GatewayConfig], GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: GatewayConfig) -> GatewayProcess:
        gw = GatewayProcess(tmp_path / f"gw{len(started)}", config.render())
        started.append(gw)
        return gw.start(timeout=60)

    yield start
    for gw in started:
        gw.stop()


def test_api_request_limit_on_reads_and_writes(weed: WeedServer, gateway: Any) -> None:
    gw = gateway(limited([weed_spec(weed, "b1")], {"b1": {"api_request_limit": 4}}))
    s3: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="a", Body=b"a" * 10)  # 1
    assert s3.get_object(Bucket="photos", Key="a")["Body"].read() == b"a" * 10  # 2
    s3.copy_object(Bucket="photos", Key="b", CopySource={"Bucket": "photos", "Key": "a"})  # 3 (server-side)
    assert s3.get_object(Bucket="photos", Key="b")["Body"].read() == b"a" * 10  # 4: the limit
    assert refused(lambda: s3.get_object(Bucket="photos", Key="a")) == (429, "SlowDown")
    assert refused(lambda: s3.put_object(Bucket="photos", Key="c", Body=b"c")) == (507, "InsufficientStorage")
    assert refused(
        lambda: s3.copy_object(Bucket="photos", Key="d", CopySource={"Bucket": "photos", "Key": "a"})
    ) == (507, "InsufficientStorage")
    assert refused(lambda: s3.create_multipart_upload(Bucket="photos", Key="m")) == (507, "InsufficientStorage")
    s3.delete_object(Bucket="photos", Key="a")  # 5: deletes always run
    # The database holds what the backend was asked: 5 calls, 20 bytes out, 10 in.
    assert stored_usage(gw)["b1"] == (5, 20, 10)
    shown = admin(gw, "GET", "usage?backend=b1")["backends"][0]
    assert (shown["api_requests"], shown["api_request_limit"]) == (5, 4)


def test_egress_limit_on_get_and_copy(weed: WeedServer, gateway: Any) -> None:
    config = limited(
        [weed_spec(weed, "b1"), weed_spec(weed, "b2")],
        {"b1": {"egress_byte_limit": 100, "ingress_byte_limit": 60}},
    )
    gw = gateway(config)
    s3: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="a", Body=b"a" * 60)  # on b1 (pack); b1 ingress now full
    # The copy cannot be placed on b1: it reads a from b1 (60 bytes out) and writes it to b2.
    s3.copy_object(Bucket="photos", Key="b", CopySource={"Bucket": "photos", "Key": "a"})
    assert refused(lambda: s3.get_object(Bucket="photos", Key="a")) == (429, "SlowDown")  # 120 > 100
    got = s3.get_object(Bucket="photos", Key="a", Range="bytes=0-39")  # exactly 100
    assert got["Body"].read() == b"a" * 40
    assert refused(
        lambda: s3.copy_object(Bucket="photos", Key="c", CopySource={"Bucket": "photos", "Key": "a"})
    ) == (429, "SlowDown")  # the copy's read of its source would pass the limit
    assert s3.get_object(Bucket="photos", Key="b")["Body"].read() == b"a" * 60  # from b2
    s3.delete_object(Bucket="photos", Key="a")
    usage = stored_usage(gw)
    assert usage["b1"][1:] == (100, 60) and usage["b2"][1:] == (60, 60)


def test_ingress_limit_on_put_and_upload_part(weed: WeedServer, gateway: Any) -> None:
    gw = gateway(limited([weed_spec(weed, "b1")], {"b1": {"ingress_byte_limit": 100}}))
    s3: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="a", Body=b"a" * 60)
    upload = s3.create_multipart_upload(Bucket="photos", Key="m")["UploadId"]
    s3.upload_part(Bucket="photos", Key="m", UploadId=upload, PartNumber=1, Body=b"p" * 40)  # 100
    assert refused(
        lambda: s3.upload_part(Bucket="photos", Key="m", UploadId=upload, PartNumber=2, Body=b"q")
    ) == (507, "InsufficientStorage")
    assert refused(lambda: s3.put_object(Bucket="photos", Key="b", Body=b"b")) == (507, "InsufficientStorage")
    s3.abort_multipart_upload(Bucket="photos", Key="m", UploadId=upload)  # aborts always run
    s3.delete_object(Bucket="photos", Key="a")
    assert s3.list_objects_v2(Bucket="photos").get("KeyCount") == 0
    assert stored_usage(gw)["b1"][2] == 100


@pytest.mark.slow
def test_two_gateways_on_one_postgres_pass_a_request_limit_by_at_most_the_documented_bound(
    weed: WeedServer, tmp_path: Path, postgres_dsn: str
) -> None:
    limit, interval, threads_per_gateway = 150, 1.0, 2
    config = limited(
        [weed_spec(weed, "b1")], {"b1": {"api_request_limit": limit}},
        database=database_section(postgres_dsn, max_conns=8),
    )
    a = GatewayProcess(tmp_path / "a", config.render()).start(timeout=60)
    b = GatewayProcess(tmp_path / "b", config.render()).start(timeout=60)
    try:
        clients = [s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key) for gw in (a, b)]
        clients[0].put_object(Bucket="photos", Key="k", Body=b"k" * 100)  # type: ignore[attr-defined]
        served = [0, 0]
        slow_down = [0, 0]
        lock = threading.Lock()
        started = time.monotonic()
        last_served = [started]

        def hammer(index: int) -> None:
            s3: Any = clients[index]
            while True:
                try:
                    s3.get_object(Bucket="photos", Key="k")["Body"].read()
                    outcome = served
                except ClientError as exc:
                    assert exc.response["Error"]["Code"] == "SlowDown", exc.response
                    outcome = slow_down
                with lock:
                    outcome[index] += 1
                    if outcome is served:
                        last_served[0] = time.monotonic()
                    if slow_down[index] >= 20:  # refused for long enough: this gateway saw the limit
                        return

        workers = [threading.Thread(target=hammer, args=(i % 2,)) for i in range(2 * threads_per_gateway)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        elapsed = last_served[0] - started  # the rate while requests were served
        for gw in (a, b):
            assert admin(gw, "POST", "usage-flush")["status"] == "flushed"
        conn = psycopg2.connect(postgres_dsn)
        try:
            cur = conn.cursor()
            cur.execute("SELECT SUM(api_requests) FROM backend_usage WHERE backend_name = 'b1'")
            (total,) = cur.fetchone()
        finally:
            conn.close()
        calls = 1 + served[0] + served[1]
        assert total == calls  # every backend call booked, once
        assert total >= limit  # both refused only once the limit was reached
        # README's bound: (instances - 1) x 2 x flush interval x the fastest instance's rate,
        # plus the calls already admitted when the limit was seen (one per client thread).
        rate = max(served) / elapsed
        bound = (2 - 1) * 2 * interval * rate + 2 * threads_per_gateway
        assert total - limit <= bound, (total, limit, bound, served, elapsed)
    finally:
        a.stop()
        b.stop()
