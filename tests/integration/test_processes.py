"""``server.processes: 2``: a real twistd group (one supervisor, two gateways) over SeaweedFS.

What must hold for the group as it holds for one process: both children serve the one port
(their pids are on the audit lines; each accepts on its own ``SO_REUSEPORT`` socket of it), quotas stay exact under concurrent PUTs from both (one
SQLite file in WAL mode, ``BEGIN IMMEDIATE`` serialising the writers of both processes),
``/metrics`` counts every child's requests, SIGHUP reloads every child, a crashed child is
replaced, and SIGTERM stops the whole group.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import sqlite3
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3orch.supervisor import bind_group, bind_listener
from tests.conftest import PHOTOS, quota_rows, s3_client
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY, fresh_bucket
from tests.integration.test_tls import PKI, _verified_client
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.servers import WeedServer

pytestmark = pytest.mark.slow

KiB = 1024
LIMIT = 96 * KiB


def _records(gw: GatewayProcess) -> list[dict[str, Any]]:
    out = []
    for line in gw.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(gw: GatewayProcess) -> set[int]:
    """The pids of the gateway processes the supervisor has now (from /proc)."""
    assert gw.proc is not None
    parent = gw.proc.pid
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent:
            found.add(int(entry.name))
    return found


def _metric_total(gw: GatewayProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(gw.endpoint + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def group(tmp_path: Path, weed: WeedServer) -> Iterator[tuple[GatewayProcess, list[BackendSpec]]]:
    backends = [
        BackendSpec(
            f"w{i}", weed.endpoint, fresh_bucket(weed), WEED_ACCESS_KEY, WEED_SECRET_KEY, quota_bytes=LIMIT
        )
        for i in range(2)
    ]
    config = GatewayConfig(backends=backends, routing_strategy="spread", extra_server={"processes": 2})
    gw = GatewayProcess(tmp_path / "gw", config.render())
    gw.start(timeout=90)
    try:
        assert poll(lambda: len(_children(gw)), lambda n: n == 2, 30) == 2
        yield gw, backends
    finally:
        gw.stop(timeout=60)


def test_two_processes_share_the_port_keep_quotas_exact_and_count_in_one_metrics_view(
    group: tuple[GatewayProcess, list[BackendSpec]],
) -> None:
    gw, backends = group
    rng = random.Random(20)
    # 240 PUTs of 1-3 KiB (about 480 KiB) into 2 x 96 KiB from 32 clients: many cannot fit.
    bodies = {f"load/{i:03d}": os.urandom(rng.randint(1 * KiB, 3 * KiB)) for i in range(240)}
    clients = [s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key) for _ in range(8)]

    def put(item: tuple[int, str]) -> tuple[str, int]:
        index, key = item
        try:
            clients[index % len(clients)].put_object(Bucket="photos", Key=key, Body=bodies[key])
        except ClientError as exc:
            return key, int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
        return key, 200

    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = dict(pool.map(put, enumerate(bodies)))
    stored = {key for key, status in outcomes.items() if status == 200}
    assert set(outcomes.values()) == {200, 507}, sorted(set(outcomes.values()))

    # Quotas exact: the database's counters are the bytes on each backend, none over its limit.
    rows = quota_rows(gw)
    assert all(row["used"] <= LIMIT and (row["reserved"], row["orphan"]) == (0, 0) for row in rows.values()), rows
    assert sum(row["used"] for row in rows.values()) == sum(len(bodies[key]) for key in stored)
    Auditor(lambda: sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10), backends).audit().assert_clean()
    # Every acknowledged PUT reads back through the group.
    for key in sorted(stored)[:40]:
        assert clients[0].get_object(Bucket="photos", Key=key)["Body"].read() == bodies[key]

    # Both children served PUTs: two distinct pids on the audit lines of s3.PutObject.
    pids = {r.get("pid") for r in _records(gw) if r.get("event") == "s3.PutObject"}
    assert len(pids - {None}) == 2, pids
    # One /metrics view: the PUTs of both children, whichever child answers the scrape.
    for _ in range(3):
        assert _metric_total(gw, "s3o_requests_total", method="PUT") == len(bodies)
    assert "Traceback" not in gw.log_text()


def test_sighup_reloads_every_child_a_crashed_child_is_replaced_and_sigterm_stops_the_group(
    group: tuple[GatewayProcess, list[BackendSpec]],
) -> None:
    gw, _ = group
    assert gw.proc is not None
    done = "SIGHUP received, reloading configuration"
    children = poll(lambda: _children(gw), lambda now: len(now) == 2, 30)
    # A child installs its SIGHUP handler as it starts serving: wait until each has served a
    # request (its pid on an audit line), so the signal finds every handler in place.  A new
    # client each time: a new connection, which the kernel may hand to either child.

    def serving() -> set[int | None]:
        s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key).list_buckets()
        return {r.get("pid") for r in _records(gw) if str(r.get("event", "")).startswith("s3.")}

    assert children <= poll(serving, lambda pids: children <= pids, 60)
    os.kill(gw.proc.pid, signal.SIGHUP)
    reloaded = poll(lambda: {r.get("pid") for r in _records(gw) if r.get("msg") == done}, lambda got: got == children, 30)
    assert reloaded == children and len(children) == 2

    # kill -9 one child: the supervisor logs it and starts another; the port keeps serving.
    victim = min(children)
    os.kill(victim, signal.SIGKILL)
    replaced = poll(lambda: _children(gw), lambda now: len(now) == 2 and victim not in now, 30)
    assert len(replaced) == 2 and victim not in replaced
    assert any("restarting" in str(r.get("msg", "")) and r.get("child") == victim for r in _records(gw))
    client = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    for i in range(20):
        client.put_object(Bucket="photos", Key=f"after/{i}", Body=b"x" * 100)

    # SIGTERM to the supervisor: every child drains and exits, then the supervisor (twistd ends
    # a SIGTERM shutdown by re-raising the signal, as a single gateway does; systemd counts it clean).
    assert gw.stop(signal.SIGTERM, timeout=60) in (0, -signal.SIGTERM)
    assert not any(_alive(pid) for pid in replaced)
    assert "all processes stopped" in gw.log_text()


def _put_over_tls(clients: list[Any], i: int) -> None:
    clients[i % len(clients)].put_object(Bucket="photos", Key=f"tls/{i}", Body=b"over tls %d" % i)


def test_a_group_serves_tls_from_every_child(
    tmp_path: Path, moto_backends: Callable[..., list[BackendSpec]]
) -> None:
    pki = PKI(tmp_path / "pki")
    config = GatewayConfig(
        backends=moto_backends(1),
        extra_server={"processes": 2, "tls": {"cert_file": pki.server_cert, "key_file": pki.server_key}},
    )
    gw = GatewayProcess(tmp_path / "tls", config.render(), tls_context=pki.client_context())
    gw.start(timeout=90)
    try:
        assert poll(lambda: len(_children(gw)), lambda n: n == 2, 30) == 2
        # Each child accepts on its own SO_REUSEPORT socket and the kernel spreads new connections
        # by a hash of their 4-tuple: 32 new connections (a client each) all on one of the two
        # sockets has a chance of 2**-31.
        clients = [_verified_client(gw, pki.ca_file, None) for _ in range(32)]
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(lambda i: _put_over_tls(clients, i), range(32)))
        assert clients[0].get_object(Bucket="photos", Key="tls/7")["Body"].read() == b"over tls 7"
        pids = {r.get("pid") for r in _records(gw) if r.get("event") == "s3.PutObject"} - {None}
        assert len(pids) == 2, pids  # both children did TLS handshakes and served
    finally:
        gw.stop(timeout=60)


def test_a_group_binds_one_reuseport_socket_per_child_and_still_holds_the_port_alone() -> None:
    group = bind_group("127.0.0.1", 0, 2)
    assert isinstance(group, list) and len(group) == 2
    try:
        port = group[0].getsockname()[1]
        assert group[1].getsockname()[1] == port
        # Another s3orch on the port fails, a single one or another group.
        with pytest.raises(OSError) as single:
            bind_listener("127.0.0.1", port)
        with pytest.raises(OSError) as other_group:
            bind_group("127.0.0.1", port, 2)
        assert single.value.errno == other_group.value.errno == errno.EADDRINUSE
        # The kernel spreads new connections over both sockets (all 32 on one: 2**-31).
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(32)]
        accepted = [0, 0]

        def accept_all() -> int:
            for index, sock in enumerate(group):
                while True:
                    try:
                        conn, _ = sock.accept()
                    except BlockingIOError:
                        break
                    conn.close()
                    accepted[index] += 1
            return sum(accepted)

        assert poll(accept_all, lambda total: total == 32, 10) == 32
        assert min(accepted) > 0, accepted
        for client in clients:
            client.close()
    finally:
        for sock in group:
            sock.close()
