"""The data-placement workers racing each other (issue 16's acceptance): two real gateways
(twistd) on one PostgreSQL database over three backends, with every placement worker in
:data:`WORKERS` on short intervals, a drain of one backend, and overwrites and deletes sent
through both gateways at once.  Afterwards (once quiet): the fault rig's auditor is clean
(nothing leaked, referenced bytes present, quotas exact), every surviving key reads back
through either gateway as its last write, every key has exactly ``factor`` copies, and the
drained backend holds nothing.

Each key has one writer, which sends its operations alternately through the two gateways, so
"its last write" is well defined while both instances act on every key.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
from click.testing import CliRunner

from s3orch.cli.main import cli
from tests.conftest import PHOTOS, s3_client
from tests.integration.test_drain_scale import Writes
from tests.support.auditor import Auditor, list_backend
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.postgres import database_section

TOKEN = "placement-races-token"
FACTOR = 2
#: The placement workers that run together, one config fragment each (merged in order).  The
#: replication fragment runs the replicator and the over-replication cleaner (which shares its
#: interval); the drain worker always runs (the test starts a drain).
WORKERS: list[dict[str, Any]] = [
    {"replication": {"factor": FACTOR, "worker_interval": "1s", "batch_size": 20, "concurrency": 4}},
    # {"rebalance": {"enabled": True, "strategy": "spread", "interval": "1s", "threshold": 0.0}},
]
DRAINED = "backend-3"
#: Keys the writers overwrite and delete, and keys written once (the drain must move those).
KEYS = 40
COLD = 60
#: Operations each writer sends at least, and the rounds it goes on while the drain runs.
MIN_OPERATIONS = 120


def _merged(fragments: list[dict[str, Any]]) -> dict[str, Any]:
    """The fragments as one ``extra`` config (a later fragment's keys win, sections merged)."""
    out: dict[str, Any] = {}
    for fragment in fragments:
        for section, values in fragment.items():
            out[section] = {**out.get(section, {}), **values}
    return out


def _admin(gw: GatewayProcess, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, [*args, "--json", "--addr", gw.endpoint, "--timeout", "60"], env={"S3ORCH_ADMIN_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def _copies(dsn: str) -> dict[str, list[str]]:
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT object_key, backend_name FROM object_locations WHERE bucket = 'photos'")
        rows = cur.fetchall()
    finally:
        conn.close()
    out: dict[str, list[str]] = {}
    for key, backend in rows:
        out.setdefault(str(key), []).append(str(backend))
    return out


@pytest.mark.slow
def test_replicator_cleaner_and_drain_race_overwrites_and_deletes_from_two_gateways(
    start_gateway: Callable[..., GatewayProcess],
    moto_backends: Callable[..., list[BackendSpec]],
    postgres_dsn: str,
) -> None:
    backends = moto_backends(3, quota=1 << 30)
    config = GatewayConfig(
        backends=backends,
        routing_strategy="spread",
        database=database_section(postgres_dsn, max_conns=16),
        extra={
            "ui": {"admin_token": TOKEN},
            "write_path": {"pending_pattern": {"min_age": "2s", "reaper_tick": "1s"}},
            **_merged(WORKERS),
        },
    )
    gateways = [start_gateway(config, name="a"), start_gateway(config, name="b")]
    clients = [s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key) for gw in gateways]
    writes = Writes()
    keys = [f"race/{i:03d}" for i in range(KEYS)]
    for index, key in enumerate(keys + [f"cold/{i:03d}" for i in range(COLD)]):
        assert writes.put(clients[index % 2], key, os.urandom(800 + index))
    assert _admin(gateways[0], "drain", DRAINED)["status"] == "drain started"

    stop = threading.Event()
    failures: list[BaseException] = []
    done = [0, 0]

    def writer(side: int) -> None:
        """Overwrites (mostly) and deletes of this writer's keys, through both gateways in turn."""
        mine = keys[side::2]
        gateway_turn = itertools.cycle(clients)
        try:
            for step in itertools.count():
                if stop.is_set() and done[side] >= MIN_OPERATIONS:
                    return
                key = mine[(step * 7) % len(mine)]
                client = next(gateway_turn)
                if step % 5 == 4:
                    writes.delete(client, key)
                else:
                    writes.put(client, key, os.urandom(500 + (step * 13) % 1500))
                done[side] += 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(side,)) for side in (0, 1)]
    for thread in threads:
        thread.start()
    try:
        # The writers go on until the drain (every 30 s, on one instance at a time) has finished.
        status = poll(
            lambda: _admin(gateways[1], "drain", DRAINED, "--status"),
            lambda s: s["state"] == "completed",
            timeout=240,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    assert failures == []
    assert status["state"] == "completed", status
    assert status["objects_moved"] > 0, status  # the cold keys' copies at least
    print(f"racing: {sum(done)} operations from two gateways; drain moved {status['objects_moved']} copies")

    # Quiet now.  Exactly the factor of copies for every surviving key, none on the drained backend.
    surviving = {key for key, allowed in writes.allowed.items() if None not in allowed}
    # A write or delete whose client got no definitive answer may have happened, or not.
    unsure = {key for key, allowed in writes.allowed.items() if None in allowed and len(allowed) > 1}

    def settled(found: dict[str, list[str]]) -> bool:
        return surviving <= set(found) <= surviving | unsure and all(
            len(set(b)) == len(b) == FACTOR and DRAINED not in b for b in found.values()
        )

    copies = poll(lambda: _copies(postgres_dsn), settled, timeout=120)
    assert surviving <= set(copies) <= surviving | unsure, sorted(set(copies) ^ surviving)
    assert all(len(set(b)) == len(b) == FACTOR and DRAINED not in b for b in copies.values()), copies
    # Every key reads back through either gateway as its last write (absent when deleted).
    for client in clients:
        def read(key: str, client: Any = client) -> bytes | None:
            try:
                body: bytes = client.get_object(Bucket="photos", Key=key)["Body"].read()
            except client.exceptions.NoSuchKey:
                return None
            return body

        problems = Auditor.check_reads(read, writes.allowed)
        assert problems == [], problems
    # The drained backend holds nothing, and nothing leaked anywhere; quotas exact.
    drained = next(spec for spec in backends if spec.name == DRAINED)
    assert poll(lambda: list_backend(drained), lambda found: not found, timeout=180) == {}
    auditor = Auditor(lambda: psycopg2.connect(postgres_dsn), backends)
    report = poll(auditor.audit, lambda r: not r.problems, timeout=180)
    report.assert_clean()
