"""Write fan-out in a real gateway (twistd) over three real SeaweedFS backends (issue 16, item 2).

Three buckets on the session's ``weed mini`` are three backends to s3orch.  With
``write_path.parallel_copies.enabled`` and ``replication.factor: 2``:

* ``ack: all``: the moment a PUT answers 200, two backends hold its bytes (listed and read
  on the backends directly, not through s3orch), and an overwrite does the same;
* ``ack: first``: every object reaches two backends (the second copy in the background);
* quotas exact and nothing leaked, by the fault rig's auditor.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from typing import Any

from tests.conftest import PHOTOS, s3_client
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY, fresh_bucket
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.servers import WeedServer

#: The replicator's start-up pass is jittered within half of it: never during the test, so
#: every second copy seen here was made by the write's fan-out.
INTERVAL = "24h"


def _backends(weed: WeedServer) -> list[BackendSpec]:
    return [
        BackendSpec(f"backend-{i}", weed.endpoint, fresh_bucket(weed), WEED_ACCESS_KEY, WEED_SECRET_KEY,
                    quota_bytes=64 * 1024 * 1024)
        for i in (1, 2, 3)
    ]


def _start(start_gateway: Callable[[GatewayConfig], GatewayProcess], backends: list[BackendSpec], ack: str) -> Any:
    return start_gateway(
        GatewayConfig(
            backends=backends,
            routing_strategy="spread",
            extra={
                "replication": {"factor": 2, "ack": ack, "worker_interval": INTERVAL},
                "write_path": {"parallel_copies": {"enabled": True}},
            },
        )
    )


def _holding(backends: list[BackendSpec], body: bytes) -> list[str]:
    """The backends whose bucket holds an object with exactly ``body`` (read directly)."""
    sha = hashlib.sha256(body).hexdigest()
    found = []
    for spec in backends:
        client: Any = s3_client(spec.endpoint, spec.access_key, spec.secret_key)
        for item in client.list_objects_v2(Bucket=spec.bucket).get("Contents", []):
            if item["Size"] != len(body):
                continue
            data = client.get_object(Bucket=spec.bucket, Key=item["Key"])["Body"].read()
            if hashlib.sha256(data).hexdigest() == sha:
                found.append(spec.name)
                break
    return found


def _audit(gw: GatewayProcess, backends: list[BackendSpec]) -> None:
    Auditor(lambda: sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10), backends).audit().assert_clean()


def test_ack_all_the_bytes_are_on_two_backends_the_moment_the_put_returns(start_gateway, weed: WeedServer) -> None:  # type: ignore[no-untyped-def]
    backends = _backends(weed)
    gw = _start(start_gateway, backends, "all")
    client: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    bodies = {f"k{i}": os.urandom(3000 + i * 70_000) for i in range(6)}
    for key, body in bodies.items():
        client.put_object(Bucket="photos", Key=key, Body=body)
        holding = _holding(backends, body)  # right after the 200, before anything else runs
        assert len(holding) == 2, (key, holding)
    # An overwrite: the new bytes on two backends at once; the old copies go (cleanup).
    new = os.urandom(50_000)
    client.put_object(Bucket="photos", Key="k0", Body=new)
    assert len(_holding(backends, new)) == 2
    assert client.get_object(Bucket="photos", Key="k0")["Body"].read() == new
    poll(lambda: _holding(backends, bodies["k0"]), lambda held: held == [], timeout=90)
    bodies["k0"] = new
    for key, body in bodies.items():
        assert client.get_object(Bucket="photos", Key=key)["Body"].read() == body
    _audit(gw, backends)


def test_ack_first_every_object_reaches_two_backends_with_quotas_exact(start_gateway, weed: WeedServer) -> None:  # type: ignore[no-untyped-def]
    backends = _backends(weed)
    gw = _start(start_gateway, backends, "first")
    client: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    bodies = {f"f{i}": os.urandom(1000 + i * 90_000) for i in range(8)}
    for key, body in bodies.items():
        client.put_object(Bucket="photos", Key=key, Body=body)
        assert len(_holding(backends, body)) >= 1
    for key, body in bodies.items():
        assert len(poll(lambda b=body: _holding(backends, b), lambda held: len(held) == 2, timeout=30)) == 2, key
        assert client.get_object(Bucket="photos", Key=key)["Body"].read() == body
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10)
    try:
        counts = conn.execute(
            "SELECT object_key, COUNT(DISTINCT backend_name) FROM object_locations GROUP BY object_key"
        ).fetchall()
    finally:
        conn.close()
    assert sorted(counts) == sorted((key, 2) for key in bodies)
    _audit(gw, backends)
