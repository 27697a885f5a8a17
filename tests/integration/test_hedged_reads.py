"""Hedged reads in a real gateway (twistd) over two real SeaweedFS backends (issue 16's acceptance).

Every object has two copies (``replication.factor: 2``, one replicator pass); the backend the
reads go to is then delayed by 2 s through the fault proxy.  With ``read_path.hedge_after:
100ms`` no GET waits for it: the first reads are hedged to the other copy, and the delayed
backend's recorded latency (the hedges' cancelled waits) moves it last in the copy order, so the
later reads go straight to the healthy copy.  The test prints the healthy and the delayed p99 of
~200 GETs each, and their ratio.

What it asserts is what the design guarantees whatever the machine's load: every GET under the
delay answers in well under the delay (< 1 s), the right bytes, hedges were made and won, and the
delayed backend saw only a handful of the GETs.  The p99 ratio (issue 16 asks for < 2x) is
printed, not asserted: on a loaded 2-core runner both p99s are the scheduler's noise (a p99 of
200 samples is the third slowest request) and a ratio of two noise figures would be flaky.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli.main import cli
from s3orch.core.reads import percentile
from tests.conftest import PHOTOS, s3_client
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY, fresh_bucket
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.gateway import GatewayProcess
from tests.support.servers import WeedServer

TOKEN = "hedge-admin-token"
DELAY = 2.0
GETS = 200
OBJECTS = 20


def _metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(gw.endpoint + "/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def _backend_gets(gw: GatewayProcess, backend: str) -> float:
    return _metric(gw, "s3o_backend_requests_total", operation="GetObject", backend=backend)


def _timed_gets(client: Any, bodies: dict[str, bytes]) -> list[float]:
    keys = sorted(bodies)
    latencies = []
    for i in range(GETS):
        key = keys[i % len(keys)]
        started = time.monotonic()
        got = client.get_object(Bucket="photos", Key=key)["Body"].read()
        latencies.append(time.monotonic() - started)
        assert hashlib.sha256(got).digest() == hashlib.sha256(bodies[key]).digest(), key
    return latencies


@pytest.mark.slow
def test_a_backend_delayed_2s_never_holds_a_get_up(start_gateway: Any, weed: WeedServer) -> None:
    direct = [
        BackendSpec(f"backend-{n}", weed.endpoint, fresh_bucket(weed), WEED_ACCESS_KEY, WEED_SECRET_KEY)
        for n in (1, 2)
    ]
    proxies = [FaultProxy.for_endpoint(weed.endpoint).start() for _ in direct]
    try:
        gw = start_gateway(GatewayConfig(
            backends=[BackendSpec(s.name, p.endpoint, s.bucket, s.access_key, s.secret_key)
                      for s, p in zip(direct, proxies, strict=True)],
            extra={
                "ui": {"admin_token": TOKEN},
                "replication": {"factor": 2, "worker_interval": "24h"},
                "read_path": {"hedge_after": "100ms"},
            },
        ))
        client: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
        bodies = {f"obj/{i:02d}": bytes([i]) * 4096 for i in range(OBJECTS)}
        for key, body in bodies.items():
            client.put_object(Bucket="photos", Key=key, Body=body)
        replicated = CliRunner().invoke(
            cli, ["replicate", "--json", "--config", str(gw.config_path)], env={"S3ORCH_ADMIN_TOKEN": TOKEN}
        )
        assert replicated.exit_code == 0 and json.loads(replicated.stdout)["copies_created"] == OBJECTS

        healthy = _timed_gets(client, bodies)
        served = {s.name: _backend_gets(gw, s.name) for s in direct}
        slow = max(served, key=lambda name: served[name])  # where the reads go: delay that one
        proxies[[s.name for s in direct].index(slow)].set(Fault.DELAY, delay=DELAY)
        before = _backend_gets(gw, slow)
        won = _metric(gw, "s3o_hedged_reads_total", result="won")

        # The first GET under the delay is hedged: its range and condition go to both copies.
        etag = client.head_object(Bucket="photos", Key="obj/07")["ETag"]
        started = time.monotonic()
        ranged = client.get_object(Bucket="photos", Key="obj/07", Range="bytes=100-199", IfMatch=etag)
        assert ranged["Body"].read() == bodies["obj/07"][100:200] and ranged["ContentRange"] == "bytes 100-199/4096"
        assert time.monotonic() - started < DELAY / 2
        delayed = _timed_gets(client, bodies)

        healthy_p99, delayed_p99 = percentile(healthy, 0.99), percentile(delayed, 0.99)
        print(
            f"\nhedged reads, {GETS} GETs each: healthy p99 {healthy_p99 * 1000:.1f} ms, "
            f"one backend delayed {DELAY:g} s p99 {delayed_p99 * 1000:.1f} ms, "
            f"ratio {delayed_p99 / healthy_p99:.2f}x; slowest delayed GET {max(delayed) * 1000:.1f} ms; "
            f"GETs sent to the delayed backend {_backend_gets(gw, slow) - before:g}"
        )
        assert max(delayed) < DELAY / 2  # no GET waited for the delayed backend
        assert _metric(gw, "s3o_hedged_reads_total", result="won") > won
        assert _backend_gets(gw, slow) - before < 10  # moved last after the first hedges
        # The losers were cancelled (their connections dropped, not drained) and held nothing.
        assert _metric(gw, "s3o_backend_requests_total", operation="GetObject", backend=slow, status="cancelled") >= 1
        assert _metric(gw, "s3o_admission_slots_in_use") == 0
    finally:
        for proxy in proxies:
            proxy.stop()
