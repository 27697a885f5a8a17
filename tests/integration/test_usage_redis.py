"""Monthly usage limits shared through Redis by real gateways (BEHAVIOURS §1.8, issue 17 item 2).

Two ``twistd`` gateways on one PostgreSQL database and one Redis, over SeaweedFS:

* concurrent GETs from both against a backend with ``api_request_limit`` N: the calls the
  backends were asked (the database's counters after the final flushes, which equal the calls
  the clients saw served) pass N by no more than README's bound with Redis;
* a Redis of the test's own (never the shared one) stopped mid-run and restarted: afterwards the
  database holds exactly the calls made -- none lost while counting locally, none doubled by the
  replay;
* a gateway whose ``redis.address`` does not answer refuses to start, naming the key.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from botocore.exceptions import ClientError

from s3orch.usage.shared import LOAD_EVERY
from tests.conftest import PHOTOS, s3_client
from tests.integration.test_usage_limits import admin, limited, weed_spec
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.postgres import database_section
from tests.support.redis import RedisServer, shared_redis_address
from tests.support.servers import WeedServer, free_port


def redis_section(address: str, **more: Any) -> dict[str, Any]:
    return {"address": address, "key_prefix": f"t-{uuid.uuid4().hex[:12]}", **more}


def stored_total(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT COALESCE(SUM(api_requests), 0) FROM backend_usage WHERE backend_name = 'b1'")
        (total,) = cur.fetchone()
        return int(total)
    finally:
        conn.close()


def fallback_active(gw: GatewayProcess) -> float | None:
    """``s3o_redis_fallback_active`` on the gateway's /metrics (None when not found)."""
    with urllib.request.urlopen(f"{gw.endpoint}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("s3o_redis_fallback_active "):
                return float(line.split()[1])
    return None


def wait_fallback(gw: GatewayProcess, value: float) -> float | None:
    """Poll ``s3o_redis_fallback_active`` until it is ``value``; the last value seen."""
    return poll(lambda: fallback_active(gw), lambda found: found == value, timeout=60)


class Load:
    """GETs of one key from client threads spread over the gateways, counted by outcome."""

    def __init__(self, gateways: list[GatewayProcess], threads_per_gateway: int) -> None:
        self.clients = [s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key) for gw in gateways]
        self.threads_per_gateway = threads_per_gateway
        self.served = [0] * len(gateways)
        self.slow_down = [0] * len(gateways)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.last_served = time.monotonic()
        self.threads: list[threading.Thread] = []

    def hammer(self, index: int, until: Callable[[int], bool]) -> None:
        s3: Any = self.clients[index]
        while not self.stop.is_set():
            try:
                s3.get_object(Bucket="photos", Key="k")["Body"].read()
                outcome = self.served
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "SlowDown":
                    with self.lock:
                        self.errors.append(str(exc.response["Error"]))
                    continue
                outcome = self.slow_down
            with self.lock:
                outcome[index] += 1
                if outcome is self.served:
                    self.last_served = time.monotonic()
                if until(index):
                    return

    def start(self, until: Callable[[int], bool] = lambda index: False) -> None:
        count = len(self.clients) * self.threads_per_gateway
        self.threads = [
            threading.Thread(target=self.hammer, args=(i % len(self.clients), until)) for i in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=180)
        assert not any(thread.is_alive() for thread in self.threads)

    def total_served(self) -> int:
        with self.lock:
            return sum(self.served)


@pytest.mark.slow
def test_two_gateways_on_one_redis_stay_within_the_documented_bound(
    weed: WeedServer, tmp_path: Path, postgres_dsn: str
) -> None:
    limit, threads_per_gateway = 300, 2
    config = limited(
        [weed_spec(weed, "b1")], {"b1": {"api_request_limit": limit}},
        database=database_section(postgres_dsn, max_conns=8),
        extra={"redis": redis_section(shared_redis_address())},
    )
    a = GatewayProcess(tmp_path / "a", config.render()).start(timeout=60)
    b = GatewayProcess(tmp_path / "b", config.render()).start(timeout=60)
    try:
        s3: Any = s3_client(a.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
        s3.put_object(Bucket="photos", Key="k", Body=b"k" * 100)
        load = Load([a, b], threads_per_gateway)
        started = time.monotonic()
        load.start(until=lambda index: load.slow_down[index] >= 20)  # refused long enough: it saw the limit
        load.join()
        elapsed = load.last_served - started
        assert load.errors == []
    finally:
        a.stop()  # the final flushes: pushed to Redis, drained into PostgreSQL under lock 1007
        b.stop()
    total = stored_total(postgres_dsn)
    calls = 1 + load.total_served()
    assert total == calls  # every backend call booked once, none left in Redis
    assert total >= limit
    # README's bound with Redis: the other gateway's calls during the age of an estimate
    # (LOAD_EVERY plus a Redis round trip, given 0.25 s on this loaded machine), plus the calls
    # already admitted when the limit was seen (one per client thread).
    rate = max(load.served) / elapsed
    bound = (2 - 1) * rate * (LOAD_EVERY + 0.25) + 2 * threads_per_gateway
    assert total - limit <= bound, (total, limit, bound, load.served, elapsed)
    # Without Redis the bound is (instances - 1) x 2 x flush interval x rate: far above.
    assert bound < 2 * 1.0 * rate


@pytest.mark.slow
def test_redis_stopped_and_restarted_mid_run_loses_and_doubles_no_count(
    weed: WeedServer, tmp_path: Path, postgres_dsn: str
) -> None:
    with RedisServer(tmp_path / "redis") as redis:
        config = limited(
            [weed_spec(weed, "b1")], {"b1": {"api_request_limit": 1_000_000}},
            database=database_section(postgres_dsn, max_conns=8),
            extra={"redis": redis_section(redis.endpoint, failure_threshold=2, open_timeout="1s")},
        )
        a = GatewayProcess(tmp_path / "a", config.render()).start(timeout=60)
        b = GatewayProcess(tmp_path / "b", config.render()).start(timeout=60)
        load = Load([a, b], threads_per_gateway=2)
        try:
            s3: Any = s3_client(a.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
            s3.put_object(Bucket="photos", Key="k", Body=b"k" * 100)
            load.start()
            poll(load.total_served, lambda n: n >= 100, timeout=60)
            redis.stop()
            for gw in (a, b):  # each notices and counts locally
                assert wait_fallback(gw, 1.0) == 1.0
            mark = load.total_served()
            poll(load.total_served, lambda n: n >= mark + 100, timeout=60)
            for gw in (a, b):  # a flush while Redis is down writes the local deltas
                assert admin(gw, "POST", "usage-flush")["status"] == "flushed"
            mark = load.total_served()
            poll(load.total_served, lambda n: n >= mark + 50, timeout=60)
            redis.restart()
            for gw in (a, b):  # the probe (every 5 s) replays the local deltas and closes the breaker
                assert wait_fallback(gw, 0.0) == 0.0
            mark = load.total_served()
            poll(load.total_served, lambda n: n >= mark + 100, timeout=60)
        finally:
            load.stop.set()
            load.join()
            a.stop()
            b.stop()
        assert load.errors == []
        assert stored_total(postgres_dsn) == 1 + load.total_served()


def test_a_gateway_refuses_to_start_when_redis_does_not_answer(weed: WeedServer, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = limited([weed_spec(weed, "b1")], {}, extra={"redis": redis_section(address)})
    gw = GatewayProcess(tmp_path / "gw", config.render())
    with pytest.raises(RuntimeError, match="exited early"):
        gw.start(timeout=60)
    log = gw.log_text()
    assert f"redis.address {address}" in log and "did not answer" in log
    assert "Traceback" not in log
